"""The workflow execution engine: which tasks start when, retries, timeouts, onFailure and the execution's status.

All state lives in the stored execution body (its `_tasks`), and `plan` is a function of that body and the clock:
whoever changes an execution (the driver thread, a task finishing, the async-task update, a cancel) does so inside
one store write transaction and runs `plan` there, then launches what it returned. So any process can pick an
execution up from the store and go on with it.

Restarts: one engine drives an execution at a time, the one named by its `_driver` (pid, process start time and the
engine's claim); only the driver launches task attempts, others mark them `_pending` and wake it. A server that
stops hands its executions back (no driver); a server starting claims, in one write transaction, each RUNNING
execution whose driver is gone (`WorkflowEngine.claim`) and carries on from the stored state: tasks not started
run, a function attempt whose call had started follows that call's own record (which the restart logic ends Failed
when the process running it died, so the task's retries apply), a cdf request in flight counts as a failed attempt.

CDF's rules followed: a task starts once every task it depends on is COMPLETED or COMPLETED_WITH_ERRORS; a failed
attempt is retried `retries` times; after that an abortWorkflow task is FAILED and fails its workflow (tasks still
running are CANCELLED), a skipTask task is COMPLETED_WITH_ERRORS and the rest runs; a timeout of an abortWorkflow
task is not retried (TIMED_OUT, the workflow FAILED), a skipTask task's is. An execution longer than 24 h is
TIMED_OUT. A subworkflow or dynamic task runs its tasks as a group that fails or completes as one task.

Over 400 lines on purpose: `plan` and the transitions it applies are one state machine over one body, and the
WorkflowEngine below is the only code that launches what it returns; apart, each would be read through the other.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from . import processes
from . import workflow_definitions as definitions

if TYPE_CHECKING:
    from ..store import Store
    from .host import FunctionRuntime

log = logging.getLogger("akerbp.mlops.local_cdf")
KIND = "workflow_executions"
VERSIONS = "workflow_versions"
RUNNING, COMPLETED, FAILED, TERMINATED, TIMED_OUT = "RUNNING", "COMPLETED", "FAILED", "TERMINATED", "TIMED_OUT"
IN_PROGRESS, CANCELLED, WITH_ERRORS = "IN_PROGRESS", "CANCELLED", "COMPLETED_WITH_ERRORS"
TERMINAL_ERROR = "FAILED_WITH_TERMINAL_ERROR"
DONE_OK = (COMPLETED, WITH_ERRORS)  # a dependency in one of these lets its dependants start
ABORTING = (FAILED, TERMINAL_ERROR, TIMED_OUT)  # a task ending so fails its group
MAX_EXECUTION_MS = 24 * 3600 * 1000  # CDF: the longest an execution may run
POLL_S = 1.0  # the driver looks again at least this often (deadlines, a task finished in another process)
FOLLOW_POLL_S = 0.05  # how often an attempt resumed after a restart reads the record of the call it follows
RESTARTED = "the local CDF process running this task stopped before it finished"


class Abandoned(Exception):
    """An attempt given up because the server stops, not ended: nothing is recorded, the next start follows it."""


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


# run_function(project, function external id, data, session id, timeout s, follow, started) -> Outcome
# (api/workflows.py gives it: a call through the function runtime, as any call). follow: the id of a call this attempt
# already started (before a restart): wait for that call instead of starting one; started(call id) is told the id of
# a call it starts, before waiting for it, so a restart can follow it.
RunFunction = Callable[[str, str, Any, int, float, "int | None", Callable[[int], None]], Outcome]


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
        _end(ex, TIMED_OUT, now, f"The execution ran longer than {MAX_EXECUTION_MS // 3_600_000} hours")
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
            _end(ex, FAILED, now, reason)
        else:
            _finish_failure(owner, FAILED, reason, now)
        return True
    if len(mine) == len(group) and all(t["status"] in DONE_OK for t in mine):
        if owner is None:
            _end(ex, COMPLETED, now, None)
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


def _end(ex: dict, status: str, now: int, reason: str | None) -> None:
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


def current_call(task: dict) -> int | None:
    """The id of the call the task's current attempt started, if it started one."""
    call = task.get("_call") or {}
    return call.get("id") if call.get("attempt") == task.get("_attempt") else None


def driver_alive(ex: dict) -> bool:
    driver = ex.get("_driver") or {}
    return processes.is_running(driver.get("pid"), driver.get("started"))


def take_over(ex: dict, driver: dict, now: int) -> None:
    """Make `driver` the execution's driver and pick up the attempts its dead driver had launched: a function attempt
    that never started its call starts again (its timeout counted from now), one that did follows that call's record;
    a cdf request may or may not have been served, so it is a failed attempt (retried as any other)."""
    ex["_driver"] = driver
    for task in ex["_tasks"]:
        if (task["status"] != IN_PROGRESS or "_group" in task or "_outcome" in task or task.get("_awaitingUpdate")
                or task.get("_pending")):
            continue
        if task["taskType"] == "function":
            if current_call(task) is None:
                task["_deadline"] = now + task["_def"]["timeout"] * 1000
            task["_pending"] = True
        else:
            task["_outcome"] = Outcome(False, {}, f"Attempt {task['_attempt']} was cut short: {RESTARTED}").dump()


# -- changes from outside the engine: cancel, retry, async update ------------------------------------------------
def cancel(ex: dict, reason: str | None, now: int) -> None:
    _end(ex, TERMINATED, now, reason or "Cancelled by a user")


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


# -- running executions ------------------------------------------------------------------------------------------
class WorkflowEngine:
    """Drives the executions of one runtime: a driver thread per running execution, a thread per task attempt;
    both are the runtime's call threads, so its stop waits for them."""

    def __init__(self, rt: "FunctionRuntime", run_function: RunFunction) -> None:
        self.rt, self.store, self.run_function = rt, rt.store, run_function
        self._lock = threading.Lock()
        self._wakes: dict[str, threading.Event] = {}
        pid, started = processes.me()
        self.driver = {"pid": pid, "started": started, "engine": uuid.uuid4().hex}  # stored as an execution's _driver

    def mine(self, ex: dict) -> bool:
        return (ex.get("_driver") or {}).get("engine") == self.driver["engine"]

    def claim(self, project: str, execution_id: str) -> bool:
        """Take over a RUNNING execution whose driver is gone (compare-and-set in one write transaction, so of
        several processes starting on one data dir exactly one resumes it); whether this engine now drives it."""
        with self.store.write() as db:
            ex = self.store.get_xid(project, KIND, execution_id, db)
            if ex is None or ex["status"] != RUNNING or driver_alive(ex):
                return False
            take_over(ex, dict(self.driver), int(time.time() * 1000))
            self.store.save(db, project, KIND, ex)
        self.start(project, execution_id)
        return True

    def stop(self) -> None:
        """Wake every driver, so each sees the stop and hands its execution back at once."""
        with self._lock:
            wakes = list(self._wakes.values())
        for wake in wakes:
            wake.set()

    def start(self, project: str, execution_id: str) -> None:
        """Drive a RUNNING execution from its stored state until it ends (or the server stops)."""
        with self._lock:
            if execution_id in self._wakes:
                self._wakes[execution_id].set()
                return
            wake = self._wakes[execution_id] = threading.Event()
        self.rt.call_threads.start(f"local-cdf-workflow-{execution_id}", self._drive, project, execution_id, wake)

    def wake(self, execution_id: str) -> None:
        with self._lock:
            wake = self._wakes.get(execution_id)
        if wake is not None:
            wake.set()

    def step(self, project: str, execution_id: str, change: Callable[[dict, int], Any] | None = None,
             launch: bool = False) -> dict | None:
        """Apply `change(execution, now)` (if any) and plan, in one transaction; with `launch` (the driver's own
        steps), launch what became due if this engine drives the execution and is not stopping, else leave it
        `_pending` for the driver. The execution as stored after it, or None if there is none. change's result, if
        a dict, is kept under '_changeResult' of the returned execution (not stored)."""
        now = int(time.time() * 1000)
        with self.store.write() as db:
            ex = self.store.get_xid(project, KIND, execution_id, db)
            if ex is None:
                return None
            result = change(ex, now) if change else None
            due = plan(self.store, db, project, ex, now)
            launches: list[dict] = []
            if launch and self.mine(ex) and not self.rt.stopping and ex["status"] == RUNNING:
                launches = [t for t in ex["_tasks"] if t.get("_pending") and t["status"] == IN_PROGRESS]
                launches += [t for t in due if t not in launches]
                for task in launches:
                    task.pop("_pending", None)
            else:
                for task in due:
                    task["_pending"] = True
            self.store.save(db, project, KIND, ex)
        for task in launches:
            self._launch(project, ex, task)
        if result is not None:
            ex["_changeResult"] = result
        return ex

    def _drive(self, project: str, execution_id: str, wake: threading.Event) -> None:
        try:
            while not self.rt.stopping:
                ex = self.step(project, execution_id, launch=True)
                if ex is None or ex["status"] != RUNNING or not self.mine(ex):
                    return
                due = next_deadline(ex)
                wait = POLL_S if due is None else min(POLL_S, max(0.0, due / 1000 - time.time()) + 0.01)
                wake.wait(wait)
                wake.clear()
        except Exception:  # never leave an execution running with no one driving it
            log.exception("Local CDF: workflow execution %s failed in the engine", execution_id)
            self.step(project, execution_id, lambda ex, now: _end(ex, FAILED, now, "Local CDF engine error"))
        finally:
            with self._lock:
                self._wakes.pop(execution_id, None)
            if self.rt.stopping:  # hand it back: the next server on this data dir resumes it
                self.step(project, execution_id, self._hand_back)

    def _hand_back(self, ex: dict, now: int) -> None:
        if self.mine(ex):
            ex.pop("_driver", None)

    def _launch(self, project: str, ex: dict, task: dict) -> None:
        self.rt.call_threads.start(f"local-cdf-task-{task['id']}-{task['_attempt']}", self._attempt, project,
                                   ex["externalId"], ex["_sessionId"], dict(task))

    def _attempt(self, project: str, execution_id: str, session_id: int, task: dict) -> None:
        timeout_s = max(0.0, task["_deadline"] / 1000 - time.time())
        limit = self.rt.limits.max_task_io_bytes
        try:
            refused = too_big("input", task["input"], limit)
            if refused:
                outcome = Outcome(False, {}, refused, terminal=True)
            elif task["taskType"] == "function":
                outcome = self._function(project, execution_id, task, session_id, timeout_s)
            else:
                outcome = self._cdf_request(project, task["input"]["cdfRequest"], session_id, timeout_s)
        except Abandoned:
            return
        except Exception as e:  # an attempt that could not run is a failed attempt, retried as any other
            outcome = Outcome(False, {}, f"Local CDF error: {e!r}")
        refused = too_big("output", outcome.output, limit) if outcome.ok else None
        if refused:
            kept = {k: v for k, v in outcome.output.items() if k in ("callId", "functionId", "statusCode")}
            outcome = Outcome(False, kept, refused, terminal=True)

        def record(ex: dict, now: int) -> None:
            current = find_task(ex, task["id"])
            if (current is not None and current["status"] == IN_PROGRESS and current["_attempt"] == task["_attempt"]
                    and "_outcome" not in current):
                current["_outcome"] = outcome.dump()

        self.step(project, execution_id, record)
        self.wake(execution_id)

    def _function(self, project: str, execution_id: str, task: dict, session_id: int, timeout_s: float) -> Outcome:
        params = task["input"]
        data = params["function"].get("data")
        if params.get("isAsyncComplete"):
            data = {**(data if isinstance(data, dict) else {"data": data}), "cogniteOrchestrationTaskId": task["id"]}
        def started(call_id: int) -> None:
            def record(ex: dict, now: int) -> None:
                current = find_task(ex, task["id"])
                if current is not None and current["_attempt"] == task["_attempt"]:
                    current["_call"] = {"id": call_id, "attempt": task["_attempt"]}

            self.step(project, execution_id, record)

        outcome = self.run_function(project, params["function"]["externalId"], data, session_id, timeout_s,
                                    current_call(task), started)
        if outcome.ok and params.get("isAsyncComplete"):
            outcome.awaiting_update = True
        return outcome

    def _cdf_request(self, project: str, request: dict, session_id: int, timeout_s: float) -> Outcome:
        """A cdf task: the request sent to this local CDF's own API, as the execution's session."""
        path = "/" + request["resourcePath"].lstrip("/")
        query = urllib.parse.urlencode(request.get("queryParameters") or {})
        url = f"{self.rt.base_url}/api/v1/projects/{project}{path}" + (f"?{query}" if query else "")
        body = json.dumps(request.get("body") or {}).encode() if request["method"] in ("POST", "PUT") else None
        headers = {"Authorization": f"Bearer {self.rt.session_token(project, session_id)}",
                   "Content-Type": "application/json"}
        timeout = min(timeout_s, float(request.get("requestTimeoutInMillis") or 10000) / 1000)
        req = urllib.request.Request(url, data=body, method=request["method"], headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=max(timeout, 0.001)) as response:
                text = response.read().decode() or "{}"
                return Outcome(True, {"response": json.loads(text), "statusCode": response.status})
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            return Outcome(False, {"response": _json_or_text(text), "statusCode": e.code},
                           f"{request['method']} {path} answered {e.code}: {text[:500]}")


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
