"""A workflow execution's stored body and CDF's rules for advancing it: which tasks start when, retries, timeouts,
onFailure, groups, and the changes from outside (cancel, retry, the async-task update).

All state lives in the stored execution body (its `_tasks`), and `plan` is a function of that body and the clock, so
any process can pick an execution up from the store and go on with it; workflow_engine.py runs `plan` inside the
write transaction of each change and launches what it returns. Nothing here starts a thread or a request.

CDF's rules followed: a task starts once every task it depends on is COMPLETED or COMPLETED_WITH_ERRORS; a failed
attempt is retried `retries` times; after that an abortWorkflow task is FAILED and fails its workflow (tasks still
running are CANCELLED), a skipTask task is COMPLETED_WITH_ERRORS and the rest runs; a timeout of an abortWorkflow
task is not retried (TIMED_OUT, the workflow FAILED), a skipTask task's is. An execution longer than 24 h is
TIMED_OUT. A subworkflow or dynamic task runs its tasks as a group that fails or completes as one task.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import workflow_definitions as definitions

if TYPE_CHECKING:
    from ..store import Store

KIND = "workflow_executions"
VERSIONS = "workflow_versions"
RUNNING, COMPLETED, FAILED, TERMINATED, TIMED_OUT = "RUNNING", "COMPLETED", "FAILED", "TERMINATED", "TIMED_OUT"
IN_PROGRESS, CANCELLED, WITH_ERRORS = "IN_PROGRESS", "CANCELLED", "COMPLETED_WITH_ERRORS"
TERMINAL_ERROR = "FAILED_WITH_TERMINAL_ERROR"
DONE_OK = (COMPLETED, WITH_ERRORS)  # a dependency in one of these lets its dependants start
ABORTING = (FAILED, TERMINAL_ERROR, TIMED_OUT)  # a task ending so fails its group
MAX_EXECUTION_MS = 24 * 3600 * 1000  # CDF: the longest an execution may run


@dataclass
class Outcome:
    """How one attempt of a task ended: ok with an output, or failed with a reason; terminal: no retry;
    awaiting_update: an async function's call ended, the task waits for POST /workflows/tasks/{id}/update."""

    ok: bool
    output: dict
    reason: str | None = None
    terminal: bool = False
    awaiting_update: bool = False

    def dump(self) -> dict:
        return {"ok": self.ok, "output": self.output, "reason": self.reason, "terminal": self.terminal,
                "awaitingUpdate": self.awaiting_update}


def version_key(workflow: str, version: str) -> str:
    """A workflow version's stored external id (unique per project)."""
    return json.dumps([workflow, version])


def new_execution(version: dict, input: dict | None, metadata: dict | None, session_id: int, now: int,
                  driver: dict | None = None) -> dict:
    """The body of a new RUNNING execution of a stored workflow version (a run request's, a trigger's fire), to
    insert and then `WorkflowEngine.start`; driver: the engine that will drive it."""
    body = {"externalId": str(uuid.uuid4()), "workflowExternalId": version["workflowExternalId"],
            "version": version["version"], "status": RUNNING, "startTime": now, "input": input or {},
            "metadata": metadata, "workflowDefinition": version["workflowDefinition"], "_sessionId": session_id,
            "_tasks": [], "_driver": dict(driver) if driver else None}
    return {k: v for k, v in body.items() if v is not None}


# -- planning: a function of the stored execution and the clock --------------------------------------------------
def plan(store: "Store", db: Any, project: str, ex: dict, now: int) -> list[dict]:
    """Advance `ex` (in place) as far as the clock and the recorded outcomes allow; the tasks to launch now."""
    launches: list[dict] = []
    if ex["status"] != RUNNING:
        return launches
    if now - ex["startTime"] >= MAX_EXECUTION_MS:
        end(ex, TIMED_OUT, now, f"The execution ran longer than {MAX_EXECUTION_MS // 3_600_000} hours")
        return launches
    tasks = {t["externalId"]: t for t in ex["_tasks"]}
    for task in list(tasks.values()):
        if task["status"] != IN_PROGRESS or task["taskType"] in ("subworkflow", "dynamic"):
            continue
        outcome = task.pop("_outcome", None)
        if outcome is not None:
            _apply(task, outcome, now, launches)
        elif now >= task["_deadline"]:
            _timed_out(ex, task, now, launches)
    changed = True
    while changed and ex["status"] == RUNNING:
        changed = _advance_group(store, db, project, ex, None, ex["workflowDefinition"]["tasks"], now, launches)
        for task in [t for t in ex["_tasks"] if t["status"] == IN_PROGRESS and "_group" in t]:
            if now >= task["_deadline"]:
                _timed_out(ex, task, now, launches)
                changed = True
            elif _advance_group(store, db, project, ex, task, task["_group"], now, launches):
                changed = True
    return [t for t in launches if t["status"] == IN_PROGRESS and ex["status"] == RUNNING]


def _advance_group(store: "Store", db: Any, project: str, ex: dict, owner: dict | None, group: list[dict],
                   now: int, launches: list[dict]) -> bool:
    """Start the ready tasks of one group; end the group (the workflow, or its subworkflow/dynamic task) when its
    tasks are done or one of them aborted it. Whether anything changed."""
    states = {t["externalId"]: t for t in ex["_tasks"]}
    mine = [states[d["externalId"]] for d in group if d["externalId"] in states]
    aborted = next((t for t in mine if t["status"] in ABORTING), None)
    if aborted is not None:
        reason = f"Task '{aborted['externalId']}' {aborted['status'].lower()}: {aborted.get('reasonForIncompletion')}"
        _cancel_running(ex, [d["externalId"] for d in group], now)
        if owner is None:
            end(ex, FAILED, now, reason)
        else:
            _finish_failure(owner, FAILED, reason, now)
        return True
    if len(mine) == len(group) and all(t["status"] in DONE_OK for t in mine):
        if owner is None:
            end(ex, COMPLETED, now, None)
        else:
            owner.update(status=COMPLETED, endTime=now, output={})
        return True
    changed = False
    for task_def in group:
        xid = task_def["externalId"]
        if xid in states:
            continue
        if all(states.get(d["externalId"], {}).get("status") in DONE_OK for d in task_def["dependsOn"]):
            task = _start(store, db, project, ex, task_def, now, launches)
            ex["_tasks"].append(task)
            states[xid] = task
            changed = True
    return changed


def _start(store: "Store", db: Any, project: str, ex: dict, task_def: dict, now: int, launches: list[dict]) -> dict:
    task: dict[str, Any] = {"id": str(uuid.uuid4()), "externalId": task_def["externalId"], "status": IN_PROGRESS,
                            "taskType": task_def["type"], "startTime": now, "output": {}, "_def": task_def,
                            "_attempt": 1, "_deadline": now + task_def["timeout"] * 1000}
    try:
        task["input"] = definitions.resolve(task_def["parameters"], lambda expr: _lookup(ex, expr))
        if task_def["type"] == "dynamic":
            task["_group"] = _dynamic_tasks(ex, task["input"]["dynamic"]["tasks"], task_def["externalId"])
            task["input"] = {"dynamic": {"tasks": task["_group"]}}
        elif task_def["type"] == "subworkflow":
            task["_group"] = _subworkflow_tasks(store, db, project, task["input"]["subworkflow"])
        else:
            launches.append(task)
    except definitions.DefinitionError as e:
        task.setdefault("input", task_def["parameters"])
        _finish_failure(task, TERMINAL_ERROR, str(e), now)
    return task


def _dynamic_tasks(ex: dict, generated: Any, owner: str) -> list[dict]:
    if isinstance(generated, dict) and "tasks" in generated:
        generated = generated["tasks"]
    seen = {t["externalId"] for t in ex["_tasks"]} | {owner}
    seen |= {t["externalId"] for t in definitions.flatten(ex["workflowDefinition"]["tasks"])}
    tasks = definitions.normalize_tasks(generated, f"dynamic task '{owner}' tasks", seen, nested=True)
    definitions.check_references(tasks, seen)
    return tasks


def _subworkflow_tasks(store: "Store", db: Any, project: str, params: dict) -> list[dict]:
    if "tasks" in params:
        return params["tasks"]
    found = store.get_xid(project, VERSIONS, version_key(params["workflowExternalId"], params["version"]), db)
    if found is None:
        raise definitions.DefinitionError(f"Subworkflow {params['workflowExternalId']} version {params['version']} "
                                          "does not exist")
    return found["workflowDefinition"]["tasks"]


def _lookup(ex: dict, expr: str) -> Any:
    parts = expr.split(".")
    if parts[0] == "workflow":
        return definitions.walk(ex.get("input"), parts[2:])
    task = next((t for t in ex["_tasks"] if t["externalId"] == parts[0]), None)
    return definitions.walk(task.get(parts[1]) if task else None, parts[2:])


def _apply(task: dict, outcome: dict, now: int, launches: list[dict]) -> None:
    if outcome["ok"]:
        task["output"] = outcome["output"]
        if outcome.get("awaitingUpdate"):
            task["_awaitingUpdate"] = True
            return
        task.update(status=COMPLETED, endTime=now)
        return
    task["output"] = outcome.get("output") or {}
    _failed_attempt(task, outcome.get("reason") or "The task failed", bool(outcome.get("terminal")), now, launches)


def _failed_attempt(task: dict, reason: str, terminal: bool, now: int, launches: list[dict]) -> None:
    if not terminal and task["_attempt"] <= task["_def"]["retries"]:
        _retry(task, reason, now, launches)
        return
    _finish_failure(task, TERMINAL_ERROR if terminal else FAILED, reason, now)


def _retry(task: dict, reason: str, now: int, launches: list[dict]) -> None:
    task["_attempt"] += 1
    task["_deadline"] = now + task["_def"]["timeout"] * 1000
    task["reasonForIncompletion"] = f"Attempt {task['_attempt'] - 1} failed: {reason}"
    task.pop("_awaitingUpdate", None)
    launches.append(task)


def _timed_out(ex: dict, task: dict, now: int, launches: list[dict]) -> None:
    reason = f"The task timed out after {task['_def']['timeout']} s (attempt {task['_attempt']})"
    if task["_def"]["onFailure"] == "skipTask" and task["_attempt"] <= task["_def"]["retries"]:
        _retry(task, reason, now, launches)
        return
    _cancel_running(ex, [c["externalId"] for c in task.get("_group") or []], now)
    _finish_failure(task, TIMED_OUT, reason, now)


def _finish_failure(task: dict, status: str, reason: str, now: int) -> None:
    """skipTask: COMPLETED_WITH_ERRORS (the rest runs); abortWorkflow: `status`, which aborts the task's group."""
    skip = task["_def"]["onFailure"] == "skipTask"
    task.update(status=WITH_ERRORS if skip else status, endTime=now, reasonForIncompletion=reason)
    task.pop("_awaitingUpdate", None)


def _cancel_running(ex: dict, xids: list[str], now: int) -> None:
    for task in ex["_tasks"]:
        if task["externalId"] in xids and task["status"] == IN_PROGRESS:
            task.update(status=CANCELLED, endTime=now, reasonForIncompletion="Cancelled: another task of its "
                        "group failed")
            for child in task.get("_group") or []:
                _cancel_running(ex, [child["externalId"]], now)


def end(ex: dict, status: str, now: int, reason: str | None) -> None:
    """End the execution with `status` (and a reason); its tasks still in progress are CANCELLED."""
    ex.update(status=status, endTime=now)
    if reason:
        ex["reasonForIncompletion"] = reason
    for task in ex["_tasks"]:
        if task["status"] == IN_PROGRESS:
            task.update(status=CANCELLED, endTime=now,
                        reasonForIncompletion=f"The execution ended {status.lower()}" + (f": {reason}" if reason else ""))


def next_deadline(ex: dict) -> int | None:
    due = [t["_deadline"] for t in ex["_tasks"] if t["status"] == IN_PROGRESS]
    return min(due) if due else None


def find_task(ex: dict, task_id: str) -> dict | None:
    return next((t for t in ex["_tasks"] if t["id"] == task_id), None)


def io_size(value: Any) -> int:
    """A task input's or output's size as CDF's limit counts it (compact JSON, UTF-8; CDF does not say how)."""
    return len(json.dumps(value, separators=(",", ":")).encode())


def too_big(what: str, value: Any, limit: int) -> str | None:
    """The reason a task fails when its input or output is over the limit, else None."""
    size = io_size(value)
    if size <= limit:
        return None
    return (f"The task's {what} is {size} bytes, over CDF's limit of {limit} bytes for a task's input or output: "
            "pass a reference (a file or RAW row id) instead of the data")


# -- changes from outside the engine: cancel, retry, async update ------------------------------------------------
def cancel(ex: dict, reason: str | None, now: int) -> None:
    end(ex, TERMINATED, now, reason or "Cancelled by a user")


def reset_for_retry(ex: dict, session_id: int, now: int) -> None:
    """Run again what did not complete: failed, timed out and cancelled tasks are forgotten (they start afresh),
    the groups they were in are running again; completed tasks keep their outputs."""
    ex["_tasks"] = [t for t in ex["_tasks"] if t["status"] in DONE_OK or "_group" in t]
    for task in ex["_tasks"]:
        if "_group" in task and task["status"] not in DONE_OK:
            task.update(status=IN_PROGRESS, _deadline=now + task["_def"]["timeout"] * 1000)
            task.pop("endTime", None)
            task.pop("reasonForIncompletion", None)
    ex.update(status=RUNNING, startTime=now, _sessionId=session_id)
    ex.pop("endTime", None)
    ex.pop("reasonForIncompletion", None)


def record_update(task: dict, status: str, output: dict | None) -> None:
    """The async-task update: COMPLETED with an output, FAILED (retried) or FAILED_WITH_TERMINAL_ERROR."""
    response = {**task.get("output", {}), "response": output} if output is not None else task.get("output", {})
    if status == COMPLETED:
        task["_outcome"] = Outcome(True, response).dump()
    else:
        task["_outcome"] = Outcome(False, response, f"The task was updated to {status}",
                                   terminal=status == TERMINAL_ERROR).dump()
