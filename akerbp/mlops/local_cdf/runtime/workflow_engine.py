"""The workflow engine: drives the executions of one runtime, launching each task attempt that
workflow_executions.plan makes due (a function call, a cdf request) and recording how it ended.

Whoever changes an execution (the driver thread, a task finishing, the async-task update, a cancel) does so inside
one store write transaction and runs `plan` there (`WorkflowEngine.step`), then launches what it returned.

Restarts: one engine drives an execution at a time, the one named by its `_driver` (pid, process start time and the
engine's claim); only the driver launches task attempts, others mark them `_pending` and wake it. A server that
stops hands its executions back (no driver); a server starting claims, in one write transaction, each RUNNING
execution whose driver is gone (`WorkflowEngine.claim`) and carries on from the stored state: tasks not started
run, a function attempt whose call had started follows that call's own record (which the restart logic ends Failed
when the process running it died, so the task's retries apply), a cdf request in flight counts as a failed attempt.
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
from typing import TYPE_CHECKING, Any, Callable

from . import processes
from .workflow_executions import FAILED, IN_PROGRESS, KIND, RUNNING, Outcome, end, find_task, next_deadline, plan, too_big

if TYPE_CHECKING:
    from .host import FunctionRuntime

log = logging.getLogger("akerbp.mlops.local_cdf")
POLL_S = 1.0  # the driver looks again at least this often (deadlines, a task finished in another process)
FOLLOW_POLL_S = 0.05  # how often an attempt resumed after a restart reads the record of the call it follows
RESTARTED = "the local CDF process running this task stopped before it finished"


class Abandoned(Exception):
    """An attempt given up because the server stops, not ended: nothing is recorded, the next start follows it."""


# run_function(project, function external id, data, session id, timeout s, follow, started) -> Outcome
# (api/workflows.py gives it: a call through the function runtime, as any call). follow: the id of a call this attempt
# already started (before a restart): wait for that call instead of starting one; started(call id) is told the id of
# a call it starts, before waiting for it, so a restart can follow it.
RunFunction = Callable[[str, str, Any, int, float, "int | None", Callable[[int], None]], Outcome]


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
            self.step(project, execution_id, lambda ex, now: end(ex, FAILED, now, "Local CDF engine error"))
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
