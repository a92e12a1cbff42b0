"""CDF Data Workflows over HTTP: workflows, versions (definitions), executions and the async-task update.

Executions follow runtime/workflow_executions.py's rules, driven by runtime/workflow_engine.py; a function task is a
call of this local CDF's own function through the same runtime as any call (api/calls.start_call), as the
execution's session (from the nonce of the run request).
A server start resumes the executions whose driver is gone (`resume_running`, see the engine's docstring); a stop
hands its own back (`stop`).
Over 400 lines: the four resources share their views, id checks and version filters, and CDF serves them under
one path prefix; triggers, which are a resource of their own, live in workflow_triggers.py.
"""
from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

from ..http.app import Ctx, Router
from ..http.errors import CDFError, bad_request, not_found
from ..http.resources import Kind, query_args
from ..http.validation import check, items, limit
from ..runtime import workflow_definitions as definitions
from ..runtime import workflow_engine as engine_mod
from ..runtime import workflow_executions as executions
from ..runtime.workflow_engine import WorkflowEngine
from ..runtime.workflow_executions import KIND as EXECUTIONS, VERSIONS, Outcome, new_execution, version_key
from ..store import now_ms, public
from .calls import KIND as CALLS, start_call
from .functions import KIND as FUNCTIONS
from .sessions import KIND as SESSIONS, consume_nonce

if TYPE_CHECKING:
    from ..runtime.host import FunctionRuntime

routes = Router()
WORKFLOWS = "workflows"
WORKFLOW_FIELDS = {"externalId": str, "description": str, "dataSetId": int, "maxConcurrentExecutions": int}
STATUSES = ("RUNNING", "COMPLETED", "FAILED", "TERMINATED", "TIMED_OUT")
UPDATE_STATUSES = ("COMPLETED", "FAILED", "FAILED_WITH_TERMINAL_ERROR")


def _workflow_view(body: dict) -> dict:
    return {k: v for k, v in public(body).items() if k != "id"}


def _version_view(body: dict) -> dict:
    return {k: body[k] for k in ("workflowExternalId", "version", "workflowDefinition", "createdTime",
                                 "lastUpdatedTime") if k in body}


def execution_view(ex: dict) -> dict:
    """An execution as CDF lists it: its id is the UUID (stored as the resource's external id)."""
    out = {"id": ex["externalId"], **{k: ex[k] for k in ("workflowExternalId", "version", "status", "createdTime",
                                                          "startTime", "endTime", "reasonForIncompletion",
                                                          "metadata") if ex.get(k) is not None}}
    return out


def task_view(task: dict) -> dict:
    return {k: task[k] for k in ("id", "externalId", "status", "taskType", "input", "output", "startTime", "endTime",
                                 "reasonForIncompletion") if task.get(k) is not None}


def detailed_view(ex: dict) -> dict:
    return {**execution_view(ex), "workflowDefinition": ex["workflowDefinition"], "input": ex.get("input") or {},
            "executedTasks": [task_view(t) for t in ex["_tasks"]]}


WORKFLOW_KIND = Kind(WORKFLOWS, "Workflows", view=_workflow_view)


# -- the engine of a runtime -------------------------------------------------------------------------------------
_ENGINES: "weakref.WeakKeyDictionary[FunctionRuntime, WorkflowEngine]" = weakref.WeakKeyDictionary()
_ENGINES_LOCK = threading.Lock()


def engine(rt: "FunctionRuntime") -> WorkflowEngine:
    """The runtime's workflow engine, made on first use (one per started server)."""
    with _ENGINES_LOCK:
        found = _ENGINES.get(rt)
        if found is None:
            found = _ENGINES[rt] = WorkflowEngine(rt, lambda *a: _run_function(rt, *a))
        return found


def _run_function(rt: "FunctionRuntime", project: str, xid: str, data: Any, session_id: int,
                  timeout_s: float, follow: int | None, started: Callable[[int], None]) -> Outcome:
    """One attempt of a function task: a call as any other, waited for up to the task's timeout (a little past
    it, so the engine's deadline, not this wait, decides that the attempt timed out). follow: the call this attempt
    started before a restart, whose record decides the attempt."""
    if follow is not None:
        return _follow_call(rt, project, xid, follow, timeout_s)
    fn = rt.store.get_xid(project, FUNCTIONS, xid)
    if fn is None:
        return Outcome(False, {}, f"Function '{xid}' does not exist: deploy it, then retry the execution")
    if fn["status"] != "Ready":
        return Outcome(False, {}, f"Function '{xid}' is {fn['status']}, not Ready")
    session = rt.store.get(project, SESSIONS, session_id)
    if session is None:
        return Outcome(False, {}, "The execution's session no longer exists: retry the execution", terminal=True)
    call, done = start_call(rt, project, fn, data, session)
    started(call["id"])
    done.wait(timeout_s + 2 * engine_mod.POLL_S)
    return _call_outcome(rt.store.get(project, CALLS, call["id"]) or {"id": call["id"]}, xid)


def _follow_call(rt: "FunctionRuntime", project: str, xid: str, call_id: int, timeout_s: float) -> Outcome:
    """Wait (up to the attempt's timeout) for a call started before a restart: its record ends it (Failed, naming
    the stopped process, when that process died with it)."""
    deadline = time.monotonic() + timeout_s + 2 * engine_mod.POLL_S
    while True:
        call = rt.store.get(project, CALLS, call_id)
        if call is None or call.get("status") != "Running" or time.monotonic() > deadline:
            return _call_outcome(call or {"id": call_id, "status": "Deleted"}, xid)
        if rt.stopping:
            raise engine_mod.Abandoned()
        time.sleep(engine_mod.FOLLOW_POLL_S)


def _call_outcome(call: dict, xid: str) -> Outcome:
    output: dict[str, Any] = {"callId": call["id"], "functionId": call.get("functionId")}
    if call.get("status") == "Completed":
        return Outcome(True, {**output, "response": call.get("_response")})
    error = (call.get("error") or {}).get("message") or "no error message"
    return Outcome(False, {**output, "response": None},
                   f"Function call {call['id']} of '{xid}' {str(call.get('status', 'Running')).lower()}: {error}")


def resume_running(rt: "FunctionRuntime") -> int:
    """At a server start: take over each RUNNING execution whose driver is gone (a process that died or stopped)
    and drive it on; one claimed by a live process is left to it. How many this server took over."""
    count = 0
    for project in rt.store.projects():
        rows, _ = rt.store.query(project, EXECUTIONS, ["json_extract(body, '$.status') = 'RUNNING'"])
        count += sum(engine(rt).claim(project, ex["externalId"]) for ex in rows)
    return count


def stop(rt: "FunctionRuntime") -> None:
    """At a server stop: wake the drivers, which hand their executions back for the next start."""
    with _ENGINES_LOCK:
        found = _ENGINES.get(rt)
    if found is not None:
        found.stop()


# -- workflows ---------------------------------------------------------------------------------------------------
@routes.post("/workflows")
def upsert_workflows(ctx: Ctx) -> dict:
    out = []
    for i, item in enumerate(items(ctx.body, max_items=100)):
        check(item, WORKFLOW_FIELDS, f"items[{i}]", required=("externalId",))
        ds = item.get("dataSetId")
        if ds is not None and ctx.store.get(ctx.project, "datasets", ds) is None:
            raise bad_request(f"Field 'items[{i}].dataSetId': data set {ds} does not exist")
        with ctx.store.write() as db:
            out.append(_upsert_workflow(ctx, db, item))
    return {"items": [_workflow_view(b) for b in out]}


def _upsert_workflow(ctx: Ctx, db: Any, item: dict) -> dict:
    fields = {k: v for k, v in item.items() if v is not None}
    existing = ctx.store.get_xid(ctx.project, WORKFLOWS, item["externalId"], db)
    if existing is None:
        return ctx.store.insert(db, ctx.project, WORKFLOWS, fields)
    body = {"id": existing["id"], "createdTime": existing["createdTime"], **fields}  # replace mode, as the SDK says
    return ctx.store.save(db, ctx.project, WORKFLOWS, body)


@routes.get("/workflows")
def list_workflows(ctx: Ctx) -> dict:
    return WORKFLOW_KIND.list(ctx, body=query_args(ctx))


@routes.post("/workflows/byids")
def workflows_byids(ctx: Ctx) -> dict:
    return WORKFLOW_KIND.byids(ctx)


@routes.get("/workflows/<xid>")
def get_workflow(ctx: Ctx, xid: str) -> dict:
    found = ctx.store.get_xid(ctx.project, WORKFLOWS, xid)
    if found is None:
        raise not_found([{"externalId": xid}], "Workflows")
    return _workflow_view(found)


def _ignore_unknown(ctx: Ctx) -> bool:
    """The SDK sends ignoreUnknownIds as a query parameter of its delete requests; CDF's docs put it in the body."""
    return bool(ctx.body.get("ignoreUnknownIds")) or ctx.flag("ignoreUnknownIds")


@routes.post("/workflows/delete")
def delete_workflows(ctx: Ctx) -> dict:
    check(ctx.body, {"items": list, "ignoreUnknownIds": bool}, "", required=("items",))
    with ctx.store.write() as db:
        found = ctx.store.resolve(ctx.project, WORKFLOWS, [_xid(x, f"items[{i}]") for i, x in
                                                           enumerate(items(ctx.body, max_items=100))],
                                  ignore_unknown=_ignore_unknown(ctx), db=db, what="Workflows")
        for wf in found:  # its versions go with it, as in CDF; its executions stay readable
            ctx.store.delete(db, ctx.project, VERSIONS,
                             ctx.store.ids_where(db, ctx.project, VERSIONS, "workflowExternalId", wf["externalId"]))
        ctx.store.delete(db, ctx.project, WORKFLOWS, [wf["id"] for wf in found])
    return {}


def _xid(item: Any, where: str) -> dict:
    check(item, {"externalId": str}, where, required=("externalId",))
    return {"externalId": item["externalId"]}


# -- versions ----------------------------------------------------------------------------------------------------
@routes.post("/workflows/versions")
def upsert_versions(ctx: Ctx) -> dict:
    out = []
    for i, item in enumerate(items(ctx.body, max_items=100)):
        where = f"items[{i}]"
        check(item, {"workflowExternalId": str, "version": str, "workflowDefinition": dict}, where,
              required=("workflowExternalId", "version", "workflowDefinition"))
        try:
            definition = definitions.normalize(item["workflowDefinition"], f"{where}.workflowDefinition")
        except definitions.DefinitionError as e:
            raise bad_request(f"{where}.workflowDefinition: {e}") from None
        with ctx.store.write() as db:
            if ctx.store.get_xid(ctx.project, WORKFLOWS, item["workflowExternalId"], db) is None:
                _upsert_workflow(ctx, db, {"externalId": item["workflowExternalId"]})  # CDF creates it too
            key = version_key(item["workflowExternalId"], item["version"])
            body = {"externalId": key, "workflowExternalId": item["workflowExternalId"], "version": item["version"],
                    "workflowDefinition": definition}
            existing = ctx.store.get_xid(ctx.project, VERSIONS, key, db)
            if existing is None:
                out.append(ctx.store.insert(db, ctx.project, VERSIONS, body))
            else:
                body.update(id=existing["id"], createdTime=existing["createdTime"])
                out.append(ctx.store.save(db, ctx.project, VERSIONS, body))
    return {"items": [_version_view(b) for b in out]}


def _version_filter(flt: Any, where: str) -> tuple[list[str], list]:
    """workflowFilters: [{externalId, version?}, ...] as one OR'ed where-clause."""
    if flt is None:
        return [], []
    if not isinstance(flt, list):
        raise bad_request(f"Field '{where}' must be an array of {{externalId, version?}}")
    ors, params = [], []
    for i, f in enumerate(flt):
        check(f, {"externalId": str, "version": str}, f"{where}[{i}]", required=("externalId",))
        clause = "json_extract(body, '$.workflowExternalId') = ?"
        params.append(f["externalId"])
        if f.get("version") is not None:
            clause += " AND json_extract(body, '$.version') = ?"
            params.append(f["version"])
        ors.append(f"({clause})")
    return ([f"({' OR '.join(ors)})"] if ors else []), params


@routes.post("/workflows/versions/list")
def list_versions(ctx: Ctx) -> dict:
    check(ctx.body, {"filter": dict, "limit": int, "cursor": str}, "")
    flt = ctx.body.get("filter") or {}
    check(flt, {"workflowFilters": list}, "filter")
    where, params = _version_filter(flt.get("workflowFilters"), "filter.workflowFilters")
    rows, cursor = ctx.store.query(ctx.project, VERSIONS, where, params, limit(ctx.body), ctx.body.get("cursor"))
    return {"items": [_version_view(b) for b in rows], "nextCursor": cursor}


@routes.get("/workflows/versions")
def list_versions_get(ctx: Ctx) -> dict:
    body = query_args(ctx)
    rows, cursor = ctx.store.query(ctx.project, VERSIONS, [], [], limit(body), body.get("cursor"))
    return {"items": [_version_view(b) for b in rows], "nextCursor": cursor}


def _version_ids(ctx: Ctx) -> list[dict]:
    ids = []
    for i, item in enumerate(items(ctx.body, max_items=100)):
        check(item, {"workflowExternalId": str, "version": str}, f"items[{i}]",
              required=("workflowExternalId", "version"))
        ids.append({"externalId": version_key(item["workflowExternalId"], item["version"])})
    return ids


def _unknown_versions(e: CDFError) -> CDFError:
    """A not-found error naming versions as the client did, not by their stored key."""
    import json

    missing = [dict(zip(("workflowExternalId", "version"), json.loads(m["externalId"]))) for m in e.missing or []]
    return not_found(missing, "Workflow versions")


@routes.post("/workflows/versions/byids")
def versions_byids(ctx: Ctx) -> dict:
    check(ctx.body, {"items": list, "ignoreUnknownIds": bool}, "", required=("items",))
    try:
        found = ctx.store.resolve(ctx.project, VERSIONS, _version_ids(ctx), ignore_unknown=_ignore_unknown(ctx))
    except CDFError as e:
        raise _unknown_versions(e) from None
    return {"items": [_version_view(b) for b in found]}


@routes.get("/workflows/<xid>/versions/<version>")
def get_version(ctx: Ctx, xid: str, version: str) -> dict:
    found = ctx.store.get_xid(ctx.project, VERSIONS, version_key(xid, version))
    if found is None:
        raise not_found([{"workflowExternalId": xid, "version": version}], "Workflow versions")
    return _version_view(found)


@routes.post("/workflows/versions/delete")
def delete_versions(ctx: Ctx) -> dict:
    check(ctx.body, {"items": list, "ignoreUnknownIds": bool}, "", required=("items",))
    with ctx.store.write() as db:
        try:
            found = ctx.store.resolve(ctx.project, VERSIONS, _version_ids(ctx), ignore_unknown=_ignore_unknown(ctx),
                                      db=db)
        except CDFError as e:
            raise _unknown_versions(e) from None
        ctx.store.delete(db, ctx.project, VERSIONS, [v["id"] for v in found])
    return {}


# -- executions --------------------------------------------------------------------------------------------------
@routes.post("/workflows/<xid>/versions/<version>/run")
def run(ctx: Ctx, xid: str, version: str) -> dict:
    check(ctx.body, {"authentication": dict, "input": dict, "metadata": dict}, "", required=("authentication",))
    check(ctx.body["authentication"], {"nonce": str}, "authentication", required=("nonce",))
    found = ctx.store.get_xid(ctx.project, VERSIONS, version_key(xid, version))
    if found is None:
        raise not_found([{"workflowExternalId": xid, "version": version}], "Workflow versions")
    _check_concurrency(ctx, xid, None)
    session = consume_nonce(ctx, ctx.body["authentication"]["nonce"])
    body = new_execution(found, ctx.body.get("input"), ctx.body.get("metadata"), session["id"], now_ms(),
                         engine(ctx.runtime).driver)
    with ctx.store.write() as db:
        _check_concurrency(ctx, xid, db)  # again inside the transaction: two runs at once cannot both slip in
        ex = ctx.store.insert(db, ctx.project, EXECUTIONS, body)
    engine(ctx.runtime).start(ctx.project, ex["externalId"])
    return execution_view(ex)


def _check_concurrency(ctx: Ctx, xid: str, db: Any) -> None:
    wf = ctx.store.get_xid(ctx.project, WORKFLOWS, xid, db)
    cap = (wf or {}).get("maxConcurrentExecutions")
    if not cap:
        return
    running, _ = ctx.store.query(ctx.project, EXECUTIONS, ["json_extract(body, '$.status') = 'RUNNING'",
                                                           "json_extract(body, '$.workflowExternalId') = ?"], [xid])
    if len(running) >= cap:
        raise bad_request(f"Workflow '{xid}' has {len(running)} running executions, its maxConcurrentExecutions: "
                          "wait for one to end (or cancel one), or raise the workflow's limit")


@routes.post("/workflows/executions/list")
def list_executions(ctx: Ctx) -> dict:
    check(ctx.body, {"filter": dict, "limit": int, "cursor": str}, "")
    flt = ctx.body.get("filter") or {}
    check(flt, {"workflowFilters": list, "status": list, "createdTimeStart": int, "createdTimeEnd": int}, "filter")
    where, params = _version_filter(flt.get("workflowFilters"), "filter.workflowFilters")
    if flt.get("status"):
        wanted = [str(s).upper() for s in flt["status"]]
        unknown = [s for s in wanted if s not in STATUSES]
        if unknown:
            raise bad_request(f"Field 'filter.status': unknown status {unknown[0]!r} (known: {', '.join(STATUSES)})")
        where.append(f"json_extract(body, '$.status') IN ({','.join('?' * len(wanted))})")
        params += wanted
    for key, op in (("createdTimeStart", ">="), ("createdTimeEnd", "<")):
        if flt.get(key) is not None:
            where.append(f"json_extract(body, '$.createdTime') {op} ?")
            params.append(flt[key])
    rows, cursor = ctx.store.query(ctx.project, EXECUTIONS, where, params, limit(ctx.body), ctx.body.get("cursor"))
    return {"items": [execution_view(b) for b in rows], "nextCursor": cursor}


def _execution(ctx: Ctx, execution_id: str) -> dict:
    found = ctx.store.get_xid(ctx.project, EXECUTIONS, execution_id)
    if found is None:  # CDF answers 400 for an unknown execution (the SDK's retrieve_detailed then returns None)
        raise not_found([{"id": execution_id}], "Workflow executions")
    return found


@routes.get("/workflows/executions/<execution_id>")
def get_execution(ctx: Ctx, execution_id: str) -> dict:
    return detailed_view(_execution(ctx, execution_id))


@routes.post("/workflows/executions/<execution_id>/cancel")
def cancel_execution(ctx: Ctx, execution_id: str) -> dict:
    check(ctx.body, {"reason": str}, "")
    _execution(ctx, execution_id)

    def change(ex: dict, now: int) -> None:
        if ex["status"] != "RUNNING":
            raise bad_request(f"Execution {execution_id} is {ex['status']}: only a RUNNING execution can be "
                              "cancelled")
        executions.cancel(ex, ctx.body.get("reason"), now)

    ex = engine(ctx.runtime).step(ctx.project, execution_id, change)
    return execution_view(ex or {})


@routes.post("/workflows/executions/<execution_id>/retry")
def retry_execution(ctx: Ctx, execution_id: str) -> dict:
    check(ctx.body, {"authentication": dict}, "", required=("authentication",))
    check(ctx.body["authentication"], {"nonce": str}, "authentication", required=("nonce",))
    current = _execution(ctx, execution_id)
    if current["status"] not in ("FAILED", "TERMINATED", "TIMED_OUT"):
        raise bad_request(f"Execution {execution_id} is {current['status']}: only a FAILED, TERMINATED or "
                          "TIMED_OUT execution can be retried")
    _check_concurrency(ctx, current["workflowExternalId"], None)
    session = consume_nonce(ctx, ctx.body["authentication"]["nonce"])

    def change(ex: dict, now: int) -> None:
        if ex["status"] not in ("FAILED", "TERMINATED", "TIMED_OUT"):
            raise bad_request(f"Execution {execution_id} is {ex['status']} and cannot be retried")
        executions.reset_for_retry(ex, session["id"], now)
        ex["_driver"] = dict(engine(ctx.runtime).driver)

    ex = engine(ctx.runtime).step(ctx.project, execution_id, change) or {}
    engine(ctx.runtime).start(ctx.project, execution_id)
    return execution_view(ex)


@routes.post("/workflows/tasks/<task_id>/update")
def update_task(ctx: Ctx, task_id: str) -> dict:
    check(ctx.body, {"status": str, "output": dict}, "", required=("status",))
    status = ctx.body["status"].upper()
    if status not in UPDATE_STATUSES:
        raise bad_request(f"Field 'status' must be one of {', '.join(UPDATE_STATUSES)}, got {ctx.body['status']!r}")
    refused = executions.too_big("output", ctx.body.get("output"), ctx.limits.max_task_io_bytes)
    if refused:
        raise bad_request(f"Field 'output': {refused}")
    rows, _ = ctx.store.query(ctx.project, EXECUTIONS, [
        "EXISTS (SELECT 1 FROM json_each(body, '$._tasks') WHERE json_extract(value, '$.id') = ?)"], [task_id])
    if not rows:
        raise not_found([{"id": task_id}], "Workflow tasks")

    def change(ex: dict, now: int) -> None:
        task = executions.find_task(ex, task_id) or {}
        if task.get("status") != "IN_PROGRESS" or not (task.get("input") or {}).get("isAsyncComplete"):
            raise bad_request(f"Task {task_id} is {task.get('status')}: only an IN_PROGRESS function task with "
                              "isAsyncComplete can be updated")
        executions.record_update(task, status, ctx.body.get("output"))

    ex = engine(ctx.runtime).step(ctx.project, rows[0]["externalId"], change) or {}
    engine(ctx.runtime).wake(rows[0]["externalId"])
    return task_view(executions.find_task(ex, task_id) or {})
