"""CDF Data Workflows triggers: schedule rules (cron + IANA timezone), pause/resume and run history, fired by the
one clock that fires function schedules (`run_due`, called by server.run_due_schedules: `serve`'s loop, `tick`).

Firing claims the due time, records the run and inserts the execution in one write transaction, so several
processes on one data dir fire each due time once. A paused trigger's due times are claimed and dropped, and resuming
claims up to the resume time, so nothing missed while paused is replayed. Cron in a timezone: runtime/cron.py's rule.
Only schedule rules are served: data-modeling and record-stream triggers are refused.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..http.app import Ctx, Router
from ..http.errors import bad_request, not_found
from ..http.resources import query_args
from ..http.validation import check, items, limit, text_limit
from ..runtime import cron
from ..runtime.workflow_executions import KIND as EXECUTIONS, RUNNING, VERSIONS, new_execution, version_key
from ..store import decode_cursor, encode_cursor, now_ms
from .sessions import KIND as SESSIONS, consume_nonce
from .workflows import WORKFLOWS, engine

if TYPE_CHECKING:
    import sqlite3

    from ..runtime.host import FunctionRuntime

routes = Router()
KIND = "workflow_triggers"
RUNS = "workflow_trigger_runs"
FIELDS = {"externalId": str, "triggerRule": dict, "workflowExternalId": str, "workflowVersion": str, "input": dict,
          "metadata": dict, "authentication": dict}
OTHER_RULES = {"dataModeling": "data-modeling", "recordStream": "record-stream"}
ENDED_POLL_S = 0.05  # how often run_due(wait=True) looks whether the executions it started ended


def trigger_view(body: dict) -> dict:
    return {k: body[k] for k in ("externalId", "triggerRule", "workflowExternalId", "workflowVersion", "input",
                                 "metadata", "isPaused", "createdTime", "lastUpdatedTime") if k in body}


def run_view(run: dict) -> dict:
    """A history item as CDF lists it: externalId is the trigger's."""
    out = {"externalId": run["triggerExternalId"], **{k: run[k] for k in ("fireTime", "workflowExternalId",
                                                                        "workflowVersion", "status")}}
    return {**out, **{k: run[k] for k in ("workflowExecutionId", "reasonForFailure") if run.get(k)}}


def _rule(rule: dict, where: str) -> dict:
    """A schedule rule, normalized (timezone only when given, as CDF echoes it); other rule types are a 400."""
    kind = rule.get("triggerType")
    if kind in OTHER_RULES:
        raise bad_request(f"Field '{where}.triggerType': {OTHER_RULES[kind]} triggers are not supported by the local "
                          "CDF (only 'schedule' triggers are); test them against a CDF project")
    if kind != "schedule":
        raise bad_request(f"Field '{where}.triggerType' must be 'schedule', got {kind!r}")
    check(rule, {"triggerType": str, "cronExpression": str, "timezone": str}, where, required=("cronExpression",))
    try:
        cron.validate(rule["cronExpression"])
        if rule.get("timezone") is not None:
            cron.zone(rule["timezone"])
    except ValueError as e:
        raise bad_request(f"Field '{where}': {e}") from None
    return {k: rule[k] for k in ("triggerType", "cronExpression", "timezone") if rule.get(k) is not None}


@routes.post("/workflows/triggers")
def upsert(ctx: Ctx) -> dict:
    item = check(items(ctx.body, max_items=1)[0], FIELDS, "items[0]",
                 required=("externalId", "triggerRule", "workflowExternalId", "workflowVersion", "authentication"))
    text_limit(item["externalId"], "items[0].externalId", 255)
    rule = _rule(item["triggerRule"], "items[0].triggerRule")
    check(item["authentication"], {"nonce": str}, "items[0].authentication", required=("nonce",))
    key = version_key(item["workflowExternalId"], item["workflowVersion"])
    if ctx.store.get_xid(ctx.project, VERSIONS, key) is None:
        raise bad_request(f"Workflow '{item['workflowExternalId']}' has no version '{item['workflowVersion']}': "
                          "upsert the version first, then the trigger")
    session = consume_nonce(ctx, item["authentication"]["nonce"])
    body: dict[str, Any] = {"externalId": item["externalId"], "triggerRule": rule,
                            "workflowExternalId": item["workflowExternalId"],
                            "workflowVersion": item["workflowVersion"], "input": item.get("input"),
                            "metadata": item.get("metadata"), "isPaused": False, "_sessionId": session["id"]}
    with ctx.store.write() as db:
        existing = ctx.store.get_xid(ctx.project, KIND, item["externalId"], db)
        if existing is None:
            saved = ctx.store.insert(db, ctx.project, KIND, {k: v for k, v in body.items() if v is not None})
        else:  # replaced, its pause kept; due times before the change never fire under the new rule
            body.update(id=existing["id"], createdTime=existing["createdTime"], isPaused=existing["isPaused"],
                        _lastFired=max(existing.get("_lastFired") or 0, now_ms()))
            saved = ctx.store.save(db, ctx.project, KIND, {k: v for k, v in body.items() if v is not None})
    return {"items": [trigger_view(saved)]}


@routes.get("/workflows/triggers")
def list_triggers(ctx: Ctx) -> dict:
    body = query_args(ctx)
    rows, cursor = ctx.store.query(ctx.project, KIND, [], [], limit(body), body.get("cursor"))
    return {"items": [trigger_view(t) for t in rows], "nextCursor": cursor}


def _known(ctx: Ctx, xid: str, db: "sqlite3.Connection | None" = None) -> dict:
    found = ctx.store.get_xid(ctx.project, KIND, xid, db)
    if found is None:
        raise not_found([{"externalId": xid}], "Workflow triggers")
    return found


@routes.post("/workflows/triggers/delete")
def delete(ctx: Ctx) -> dict:
    check(ctx.body, {"items": list, "ignoreUnknownIds": bool}, "", required=("items",))
    wanted = []
    for i, item in enumerate(items(ctx.body, max_items=100)):
        check(item, {"externalId": str}, f"items[{i}]", required=("externalId",))
        wanted.append({"externalId": item["externalId"]})
    ignore = bool(ctx.body.get("ignoreUnknownIds")) or ctx.flag("ignoreUnknownIds")
    with ctx.store.write() as db:
        found = ctx.store.resolve(ctx.project, KIND, wanted, ignore_unknown=ignore, db=db, what="Workflow triggers")
        for trigger in found:  # its history goes with it
            ctx.store.delete(db, ctx.project, RUNS,
                             ctx.store.ids_where(db, ctx.project, RUNS, "triggerExternalId", trigger["externalId"]))
        ctx.store.delete(db, ctx.project, KIND, [t["id"] for t in found])
    return {}


@routes.post("/workflows/triggers/<xid>/pause")
def pause(ctx: Ctx, xid: str) -> dict:
    with ctx.store.write() as db:
        trigger = _known(ctx, xid, db)
        if not trigger["isPaused"]:
            trigger["isPaused"] = True
            ctx.store.save(db, ctx.project, KIND, trigger)
    return {}


@routes.post("/workflows/triggers/<xid>/resume")
def resume(ctx: Ctx, xid: str) -> dict:
    """Resuming claims every due time up to now: what a paused trigger missed is not replayed."""
    with ctx.store.write() as db:
        trigger = _known(ctx, xid, db)
        if trigger["isPaused"]:
            trigger.update(isPaused=False, _lastFired=max(trigger.get("_lastFired") or 0, now_ms()))
            ctx.store.save(db, ctx.project, KIND, trigger)
    return {}


@routes.get("/workflows/triggers/<xid>/history")
def history(ctx: Ctx, xid: str) -> dict:
    """Newest first (fire times only grow per trigger, so that is descending id order), a cursor per page."""
    _known(ctx, xid)
    body = query_args(ctx)
    size, before = limit(body), decode_cursor(body.get("cursor"))
    sql = ("SELECT id, body FROM resources WHERE project=? AND kind=? AND "
           "json_extract(body, '$.triggerExternalId') = ?" + (" AND id < ?" if before else "") +
           " ORDER BY id DESC LIMIT ?")
    args: list[Any] = [ctx.project, RUNS, xid, *([before] if before else []), size + 1]
    rows = ctx.store.conn().execute(sql, args).fetchall()
    cursor = encode_cursor(rows[size - 1][0]) if len(rows) > size else None
    return {"items": [run_view(json.loads(r[1])) for r in rows[:size]], "nextCursor": cursor}


# -- firing ------------------------------------------------------------------------------------------------------
def run_due(rt: "FunctionRuntime", now: datetime | None = None, wait: bool = True) -> list[dict]:
    """Fire each trigger's latest due time up to `now` once (a run in its history, an execution unless the run
    failed); the runs, as the history lists them. With `wait`, the executions started have ended (or the call
    timeout plus 30 s passed) when it returns."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    fired: list[tuple[str, dict]] = []
    for project in rt.store.projects():
        for trigger in rt.store.query(project, KIND)[0]:
            run = _fire(rt, project, trigger["id"], now)
            if run is not None:
                fired.append((project, run))
    for project, run in fired:
        if run.get("workflowExecutionId"):
            engine(rt).start(project, run["workflowExecutionId"])
    if wait:
        _wait_ended(rt, [(p, r["workflowExecutionId"]) for p, r in fired if r.get("workflowExecutionId")],
                    time.monotonic() + rt.limits.call_timeout_s + 30)
    return [run_view(r) for _, r in fired]


def _fire(rt: "FunctionRuntime", project: str, trigger_id: int, now: datetime) -> dict | None:
    """Claim the trigger's due time and, unless paused, record its run and insert its execution: one transaction."""
    with rt.store.write() as db:
        trigger = rt.store.get(project, KIND, trigger_id, db)
        if trigger is None:
            return None
        rule, last = trigger["triggerRule"], trigger.get("_lastFired")
        due = cron.due_times(rule["cronExpression"], datetime.fromtimestamp(last / 1000, timezone.utc) if last else None,
                             datetime.fromtimestamp(trigger["createdTime"] / 1000, timezone.utc), now,
                             rule.get("timezone"))
        if not due:
            return None
        fire_ms = int(due[-1].timestamp() * 1000)
        trigger["_lastFired"] = fire_ms
        rt.store.save(db, project, KIND, trigger, touch=False)
        if trigger["isPaused"]:
            return None
        run: dict[str, Any] = {"triggerExternalId": trigger["externalId"], "fireTime": fire_ms,
                               "workflowExternalId": trigger["workflowExternalId"],
                               "workflowVersion": trigger["workflowVersion"]}
        reason = _refusal(rt, db, project, trigger)
        if reason is None:
            version = rt.store.get_xid(project, VERSIONS, version_key(trigger["workflowExternalId"],
                                                                      trigger["workflowVersion"]), db) or {}
            body = new_execution(version, trigger.get("input"), trigger.get("metadata"), trigger["_sessionId"],
                                 now_ms(), engine(rt).driver)
            execution = rt.store.insert(db, project, EXECUTIONS, body)
            run.update(status="success", workflowExecutionId=execution["externalId"])
        else:
            run.update(status="failed", reasonForFailure=reason)
        return rt.store.insert(db, project, RUNS, run)


def _refusal(rt: "FunctionRuntime", db: "sqlite3.Connection", project: str, trigger: dict) -> str | None:
    """Why this fire cannot start an execution (CDF records the run failed), or None."""
    xid, version = trigger["workflowExternalId"], trigger["workflowVersion"]
    if rt.store.get_xid(project, VERSIONS, version_key(xid, version), db) is None:
        return f"Workflow '{xid}' version '{version}' does not exist: upsert it, or point the trigger elsewhere"
    session = rt.store.get(project, SESSIONS, trigger["_sessionId"], db)
    if session is None or session.get("status") != "ACTIVE":
        state = session["status"] if session else "gone"
        return f"The trigger's session is {state}: upsert the trigger again with new credentials"
    cap = (rt.store.get_xid(project, WORKFLOWS, xid, db) or {}).get("maxConcurrentExecutions")
    if cap:
        running = len(rt.store.query(project, EXECUTIONS, ["json_extract(body, '$.status') = 'RUNNING'",
                                                           "json_extract(body, '$.workflowExternalId') = ?"], [xid])[0])
        if running >= cap:
            return f"Workflow '{xid}' already has {running} running executions, its maxConcurrentExecutions"
    return None


def _wait_ended(rt: "FunctionRuntime", executions: list[tuple[str, str]], deadline: float) -> None:
    """Until every execution is no longer RUNNING, or the deadline (time.monotonic()) passed."""
    pending = list(executions)
    while pending and time.monotonic() < deadline and not rt.stopping:
        pending = [(p, x) for p, x in pending
                   if (rt.store.get_xid(p, EXECUTIONS, x) or {}).get("status") == RUNNING]
        if pending:
            time.sleep(ENDED_POLL_S)
