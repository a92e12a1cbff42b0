"""Workflow definitions: the defaults CDF fills in, the checks that refuse a bad definition (naming the task), and
`${...}` references resolved against an execution's input and its tasks' inputs and outputs.

Kept apart from the engine so the HTTP layer can refuse a definition before anything runs.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable

DEFAULT_RETRIES = 3
MAX_RETRIES = 10
DEFAULT_TIMEOUT_S = 3600
ON_FAILURE = ("abortWorkflow", "skipTask")
METHODS = ("GET", "POST", "PUT", "DELETE")
SUPPORTED = ("function", "cdf", "subworkflow", "dynamic")
REFUSED = ("transformation", "simulation")
MAX_TASKS = 200  # CDF: tasks in one execution, including those a dynamic task generates
REFERENCE = re.compile(r"\$\{([^}]*)\}")
TASK_FIELDS = {"externalId": str, "type": str, "parameters": dict, "name": str, "description": str, "retries": int,
               "timeout": int, "onFailure": str, "dependsOn": list}


class DefinitionError(ValueError):
    """A definition (or a dynamic task's generated tasks) CDF would refuse; the message names the task."""


def normalize(definition: Any, where: str = "workflowDefinition") -> dict:
    """The definition with CDF's defaults filled in and its hash, or DefinitionError naming the bad task."""
    if not isinstance(definition, dict):
        raise DefinitionError(f"Field '{where}' must be an object with 'tasks'")
    unknown = set(definition) - {"tasks", "description", "hash"}
    if unknown:
        raise DefinitionError(f"Unrecognized field '{where}.{sorted(unknown)[0]}'")
    seen: set[str] = set()
    tasks = normalize_tasks(definition.get("tasks"), f"{where}.tasks", seen, nested=False)
    check_references(tasks, seen)
    out: dict[str, Any] = {"tasks": tasks}
    if definition.get("description") is not None:
        out["description"] = definition["description"]
    out["hash"] = hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()[:32].upper()
    return out


def normalize_tasks(tasks: Any, where: str, seen: set[str], nested: bool) -> list[dict]:
    """Check one list of sibling tasks (ids unique in `seen`, dependencies among siblings, no cycle); nested: inside
    a subworkflow or dynamic task, where CDF allows no further subworkflow or dynamic task."""
    if not isinstance(tasks, list) or not tasks:
        raise DefinitionError(f"Field '{where}' must be a non-empty array of tasks")
    if len(seen) + len(tasks) > MAX_TASKS:
        raise DefinitionError(f"Field '{where}': more than {MAX_TASKS} tasks in one workflow")
    out = [_task(task, f"{where}[{i}]", seen, nested) for i, task in enumerate(tasks)]
    siblings = {t["externalId"] for t in out}
    for task in out:
        for dep in task["dependsOn"]:
            if dep["externalId"] not in siblings:
                raise DefinitionError(f"Task '{task['externalId']}' depends on '{dep['externalId']}', which is not a "
                                      "task of the same workflow (or subworkflow)")
    _refuse_cycles(out)
    return out


def _task(task: Any, where: str, seen: set[str], nested: bool) -> dict:
    if not isinstance(task, dict):
        raise DefinitionError(f"Expected a task object at {where}")
    xid = task.get("externalId")
    if not isinstance(xid, str) or not xid:
        raise DefinitionError(f"Missing field '{where}.externalId'")
    name = f"Task '{xid}'"
    for key, value in task.items():
        if key not in TASK_FIELDS:
            raise DefinitionError(f"{name}: unrecognized field '{key}'")
        if value is not None and (not isinstance(value, TASK_FIELDS[key]) or isinstance(value, bool)):
            raise DefinitionError(f"{name}: field '{key}' has the wrong type")
    if xid in seen:
        raise DefinitionError(f"{name} is defined twice: task external ids are unique within a workflow")
    seen.add(xid)
    kind = task.get("type")
    if kind in REFUSED:
        raise DefinitionError(f"{name}: {kind} tasks are not supported by the local CDF (supported: "
                              f"{', '.join(SUPPORTED)})")
    if kind not in SUPPORTED:
        raise DefinitionError(f"{name}: unknown task type {kind!r} (supported: {', '.join(SUPPORTED)})")
    if nested and kind in ("subworkflow", "dynamic"):
        raise DefinitionError(f"{name}: a {kind} task cannot be inside a subworkflow or dynamic task (as in CDF)")
    retries = DEFAULT_RETRIES if task.get("retries") is None else task["retries"]
    if not 0 <= retries <= MAX_RETRIES:
        raise DefinitionError(f"{name}: retries must be between 0 and {MAX_RETRIES}, got {retries}")
    timeout = DEFAULT_TIMEOUT_S if task.get("timeout") is None else task["timeout"]
    if timeout < 1:
        raise DefinitionError(f"{name}: timeout must be at least 1 second, got {timeout}")
    on_failure = task.get("onFailure") or "abortWorkflow"
    if on_failure not in ON_FAILURE:
        raise DefinitionError(f"{name}: onFailure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    depends = []
    for dep in task.get("dependsOn") or []:
        if not isinstance(dep, dict) or not isinstance(dep.get("externalId"), str):
            raise DefinitionError(f"{name}: dependsOn items must be objects like {{\"externalId\": \"task\"}}")
        depends.append({"externalId": dep["externalId"]})
    out: dict[str, Any] = {"externalId": xid, "type": kind,
                           "parameters": _parameters(name, kind, task.get("parameters"), seen),
                           "retries": retries, "timeout": timeout, "onFailure": on_failure, "dependsOn": depends}
    for key in ("name", "description"):
        if task.get(key) is not None:
            out[key] = task[key]
    return out


def _parameters(name: str, kind: str, params: Any, seen: set[str]) -> dict:
    key = "cdfRequest" if kind == "cdf" else kind
    if not isinstance(params, dict) or key not in params:
        raise DefinitionError(f"{name}: parameters must be an object with '{key}'")
    if kind == "function":
        fn = params["function"]
        if not isinstance(fn, dict) or not isinstance(fn.get("externalId"), str):
            raise DefinitionError(f"{name}: parameters.function.externalId (the function's external id) is required")
        if set(fn) - {"externalId", "data"} or set(params) - {"function", "isAsyncComplete"}:
            raise DefinitionError(f"{name}: function parameters take function.externalId, function.data and "
                                  "isAsyncComplete")
        out: dict[str, Any] = {"function": {k: fn[k] for k in ("externalId", "data") if fn.get(k) is not None},
                               "isAsyncComplete": bool(params.get("isAsyncComplete"))}
        return out
    if kind == "cdf":
        req = params["cdfRequest"]
        if not isinstance(req, dict) or not isinstance(req.get("resourcePath"), str):
            raise DefinitionError(f"{name}: parameters.cdfRequest.resourcePath is required")
        if str(req.get("method", "")).upper() not in METHODS:
            raise DefinitionError(f"{name}: cdfRequest.method must be one of {', '.join(METHODS)}")
        return {"cdfRequest": {"resourcePath": req["resourcePath"], "method": req["method"].upper(),
                               "queryParameters": req.get("queryParameters") or {}, "body": req.get("body") or {},
                               "requestTimeoutInMillis": req.get("requestTimeoutInMillis", 10000)}}
    if kind == "dynamic":
        tasks = params["dynamic"].get("tasks") if isinstance(params["dynamic"], dict) else None
        if not isinstance(tasks, str) or not REFERENCE.fullmatch(tasks.strip()):
            raise DefinitionError(f"{name}: dynamic.tasks must be a reference like '${{task.output.tasks}}'")
        return {"dynamic": {"tasks": tasks}}
    sub = params["subworkflow"]
    if isinstance(sub, dict) and "tasks" in sub:
        return {"subworkflow": {"tasks": normalize_tasks(sub["tasks"], f"{name} subworkflow.tasks", seen, True)}}
    if isinstance(sub, dict) and isinstance(sub.get("workflowExternalId"), str) and isinstance(sub.get("version"), str):
        return {"subworkflow": {"workflowExternalId": sub["workflowExternalId"], "version": sub["version"]}}
    raise DefinitionError(f"{name}: subworkflow takes 'tasks' or 'workflowExternalId' and 'version'")


def _refuse_cycles(tasks: list[dict]) -> None:
    deps = {t["externalId"]: [d["externalId"] for d in t["dependsOn"]] for t in tasks}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(xid: str, path: list[str]) -> None:
        if state.get(xid) == 2:
            return
        if state.get(xid) == 1:
            cycle = path[path.index(xid):] + [xid]
            raise DefinitionError(f"Task '{xid}' is in a dependency cycle: {' -> '.join(cycle)}")
        state[xid] = 1
        for dep in deps[xid]:
            visit(dep, path + [xid])
        state[xid] = 2

    for xid in deps:
        visit(xid, [])


def references(value: Any) -> list[str]:
    """The expressions inside `${...}` anywhere in value."""
    if isinstance(value, str):
        return REFERENCE.findall(value)
    if isinstance(value, dict):
        return [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def check_references(tasks: list[dict], known: set[str]) -> None:
    """Every reference is `workflow.input[...]` or `TASK.input|output[...]` of a task of this workflow."""
    for task in flatten(tasks):
        for expr in references(task["parameters"]):
            parts = expr.strip().split(".")
            root = parts[0]
            bad = len(parts) < 2 or (root == "workflow" and parts[1] != "input") or (
                root != "workflow" and (root not in known or parts[1] not in ("input", "output")))
            if bad:
                raise DefinitionError(f"Task '{task['externalId']}' has a bad reference '${{{expr}}}': use "
                                      "${workflow.input[.key]} or ${TASK.output[.key]} / ${TASK.input[.key]} of a "
                                      "task of this workflow")


def flatten(tasks: list[dict]) -> list[dict]:
    out = []
    for task in tasks:
        out.append(task)
        inner = task["parameters"].get("subworkflow", {}).get("tasks") if task["type"] == "subworkflow" else None
        if isinstance(inner, list):
            out += flatten(inner)
    return out


def resolve(value: Any, lookup: Callable[[str], Any]) -> Any:
    """value with each reference replaced: a string that is one reference becomes the referenced value (any JSON
    type); a reference inside a longer string is replaced by its text."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value.strip())
        if whole:
            return lookup(whole.group(1).strip())
        return REFERENCE.sub(lambda m: _text(lookup(m.group(1).strip())), value)
    if isinstance(value, dict):
        return {k: resolve(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, lookup) for v in value]
    return value


def walk(value: Any, path: list[str]) -> Any:
    """value[path[0]][path[1]]...; None where a key is missing (CDF resolves a missing key to null)."""
    for key in path:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
