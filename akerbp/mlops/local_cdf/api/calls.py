"""Function calls: run `handle` in the function's warm worker, record status, response and logs.

The injected client is authorised by the call's session (a session token this server can revoke), and points back
at this server. A crashing or hanging handler only ever costs its worker process.
"""
from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from ..runtime import processes
from ..http.app import Ctx, Router
from ..http.errors import bad_request
from .functions import KIND as FUNCTIONS, alive, ready_function, worker_key
from ..http.filters import eq, time_range
from ..http.resources import Kind, query_args
from .sessions import consume_nonce
from ..store import now_ms, public
from ..http.validation import check
from ..runtime.workers import INTERRUPTED

if TYPE_CHECKING:
    from ..runtime.host import FunctionRuntime
    from ..store import Store

routes = Router()
KIND = "calls"


def view(call: dict) -> dict:
    """A call as CDF shows it: id, status, startTime, endTime, functionId, schedule fields and error; no
    createdTime/lastUpdatedTime (the store's bookkeeping)."""
    return {k: v for k, v in public(call).items() if k not in ("createdTime", "lastUpdatedTime")}


CALLS = Kind(KIND, "Function calls", view=view,
             filters={"status": eq("status"), "scheduleId": eq("scheduleId"), "startTime": time_range("startTime"),
                      "endTime": time_range("endTime")})


def start_call(rt: "FunctionRuntime", project: str, fn: dict, data, session: dict, schedule_id: int | None = None,
               scheduled_time: int | None = None) -> tuple[dict, threading.Event]:
    """Record a Running call and execute it on a thread; the event is set when the call has ended.

    The call records the process running it (pid and start time): if that process dies mid-call, the next start
    marks the call Failed."""
    pid, started = processes.me()
    body = {"functionId": fn["id"], "status": "Running", "startTime": now_ms(), "_sessionId": session["id"],
            "_runnerPid": pid, "_runnerStarted": started}
    if schedule_id is not None:
        body.update(scheduleId=schedule_id, scheduledTime=scheduled_time)
    with rt.store.write() as db:
        call = rt.store.insert(db, project, KIND, body)
    done = threading.Event()
    rt.call_threads.start(f"local-cdf-call-{project}-{call['id']}", _execute, rt, project, fn, call, data, session,
                           done)
    return call, done


def _execute(rt, project, fn, call, data, session, done) -> None:
    try:
        call_info = {"function_id": fn["id"], "call_id": call["id"]}
        if call.get("scheduleId") is not None:
            call_info["schedule_id"] = call["scheduleId"]
            call_info["scheduled_time"] = datetime.fromtimestamp(call["scheduledTime"] / 1000, timezone.utc).isoformat()
        client = {"base_url": rt.base_url, "project": project, "token": rt.session_token(project, session["id"])}
        result = rt.workers.call(
            worker_key(project, fn["id"]), Path(fn["_folder"]), fn["functionPath"], fn["_python"],
            fn.get("envVars") or {}, data, fn.get("_secrets") or {}, call_info, client,
            rt.limits.call_timeout_s, rt.limits.max_response_bytes, memory_gb=fn.get("memory"),
        )
        changes = {"status": result.status, "endTime": now_ms(), "_response": result.response, "_logs": result.logs}
        if result.error:
            changes["error"] = result.error
    except Exception as e:  # record the failure; never leave a call Running forever
        message = INTERRUPTED if rt.stopping else f"Local CDF error: {e!r}"
        changes = {"status": "Failed", "endTime": now_ms(), "error": {"message": message, "trace": ""}}
    try:
        _finish(rt.store, project, call["id"], changes)
    finally:
        done.set()


def _finish(store: "Store", project: str, call_id: int, changes: dict) -> None:
    with store.write() as db:
        current = store.get(project, KIND, call_id, db)
        if current is not None and current.get("status") == "Running":
            current.update(changes)
            store.save(db, project, KIND, current)


def fail_orphans(store: "Store") -> None:
    """Calls still Running whose process has exited never finish: record them Failed, as CDF would."""
    for project in store.projects():
        rows, _ = store.query(project, KIND, ["json_extract(body, '$.status') = 'Running'"])
        for found in rows:
            if not _runner_runs(found):
                _finish(store, project, found["id"], {"status": "Failed", "endTime": now_ms(),
                                                      "error": {"message": INTERRUPTED, "trace": ""}})


def _runner_runs(call: dict) -> bool:
    if call.get("_runnerStarted"):  # a reused pid is another process, whose death would go unnoticed
        return processes.is_running(call.get("_runnerPid"), call["_runnerStarted"])
    return alive(call.get("_runnerPid"))  # recorded by an older version


@routes.post("/functions/<int:function_id>/call")
def call(ctx: Ctx, function_id: int) -> dict:
    check(ctx.body, {"data": (dict, list, str, int, float, bool), "nonce": str}, "")
    fn = ready_function(ctx, function_id)
    data = ctx.body.get("data")
    size = len(json.dumps(data))
    if size > ctx.limits.max_call_data_bytes:
        raise bad_request(f"Call data is {size} bytes; the limit is {ctx.limits.max_call_data_bytes}")
    session = consume_nonce(ctx, ctx.body.get("nonce"))
    record, done = start_call(ctx.runtime, ctx.project, fn, data, session)
    done.wait(ctx.limits.sync_call_wait_s)
    return view(ctx.store.get_known(ctx.project, KIND, record["id"], what="Function calls"))


def _function_calls(ctx: Ctx, function_id: int) -> tuple[str, list]:
    if ctx.store.get(ctx.project, FUNCTIONS, function_id) is None:
        raise bad_request(f"Function {function_id} not found")
    return "json_extract(body, '$.functionId') = ?", [function_id]


def _one(ctx: Ctx, function_id: int, call_id: int) -> dict:
    found = ctx.store.get(ctx.project, KIND, call_id)
    if found is None or found.get("functionId") != function_id:
        from ..http.errors import not_found

        raise not_found([{"id": call_id}], "Function calls")
    return found


@routes.post("/functions/<int:function_id>/calls/byids")
def byids(ctx: Ctx, function_id: int) -> dict:
    _function_calls(ctx, function_id)
    result = CALLS.byids(ctx)
    result["items"] = [c for c in result["items"] if c["functionId"] == function_id]
    return result


@routes.post("/functions/<int:function_id>/calls/list")
def list_calls(ctx: Ctx, function_id: int) -> dict:
    return CALLS.list(ctx, extra=_function_calls(ctx, function_id))


@routes.get("/functions/<int:function_id>/calls")
def list_calls_get(ctx: Ctx, function_id: int) -> dict:
    return CALLS.list(ctx, extra=_function_calls(ctx, function_id), body=query_args(ctx))


@routes.get("/functions/<int:function_id>/calls/<int:call_id>")
def get_one(ctx: Ctx, function_id: int, call_id: int) -> dict:
    return view(_one(ctx, function_id, call_id))


@routes.get("/functions/<int:function_id>/calls/<int:call_id>/response")
def response(ctx: Ctx, function_id: int, call_id: int) -> dict:
    return {"response": _one(ctx, function_id, call_id).get("_response")}


@routes.get("/functions/<int:function_id>/calls/<int:call_id>/logs")
def logs(ctx: Ctx, function_id: int, call_id: int) -> dict:
    return {"items": _one(ctx, function_id, call_id).get("_logs") or []}
