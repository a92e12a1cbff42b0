"""Function schedules: cron (UTC) plus input data, fired by `serve`'s loop or deterministically by `run_due`.

Firing claims the due time in a write transaction before starting the call, so two processes sharing a data dir
never fire the same occurrence twice.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ..runtime import cron
from ..http.app import Ctx, Router
from ..http.errors import bad_request
from .functions import KIND as FUNCTIONS
from ..http.filters import eq, time_range
from ..http.resources import Kind
from .sessions import consume_nonce
from ..http.validation import check, items, text_limit

if TYPE_CHECKING:
    from ..runtime.host import FunctionRuntime

routes = Router()
KIND = "schedules"
FIELDS = {"name": str, "functionId": int, "functionExternalId": str, "cronExpression": str, "description": str,
          "data": (dict, list, str, int, float, bool), "nonce": str}


# What CDF's schedule carries (and FunctionSchedule._load reads): no input data (GET .../input_data has it), no
# lastUpdatedTime, and no functionExternalId (CDF answers with functionId only; cognite-toolkit maps it back itself).
FIELDS_RETURNED = ("id", "name", "functionId", "description", "cronExpression", "sessionId", "when", "createdTime")


def _view(schedule: dict) -> dict:
    """A schedule as CDF shows it: those fields only, whatever the stored body holds (older versions stored more)."""
    return {k: schedule[k] for k in FIELDS_RETURNED if schedule.get(k) is not None}


def _function_external_id(value, ctx: Ctx):
    """The list filter on functionExternalId (which the SDK still sends) matches the function's schedules."""
    if not isinstance(value, str):
        raise bad_request("Filter 'functionExternalId' must be a string")
    fn = ctx.store.get_xid(ctx.project, FUNCTIONS, value)
    return "json_extract(body, '$.functionId') = ?", [fn["id"] if fn else None]


SCHEDULES = Kind(KIND, "Function schedules", max_limit=10_000, view=_view,
                 filters={"name": eq("name"), "functionId": eq("functionId"), "cronExpression": eq("cronExpression"),
                          "functionExternalId": _function_external_id, "createdTime": time_range("createdTime")})


@routes.post("/functions/schedules")
def create(ctx: Ctx) -> dict:
    item = check(items(ctx.body, max_items=1)[0], FIELDS, "items[0]", required=("name", "cronExpression"))
    text_limit(item.get("name"), "items[0].name", 140)
    text_limit(item.get("description"), "items[0].description", 500)
    try:
        cron.validate(item["cronExpression"])
    except ValueError as e:
        raise bad_request(f"Field 'items[0].cronExpression': {e}") from None
    if item.get("functionId") is not None:
        fn = ctx.store.get(ctx.project, FUNCTIONS, item["functionId"])
    elif item.get("functionExternalId"):
        fn = ctx.store.get_xid(ctx.project, FUNCTIONS, item["functionExternalId"])
    else:
        raise bad_request("items[0] needs 'functionId'")
    if fn is None:
        raise bad_request("Field 'items[0].functionId': no such function")
    existing = ctx.store.query(ctx.project, KIND, ["json_extract(body, '$.functionId') = ?"], [fn["id"]])[0]
    if len(existing) >= ctx.limits.max_schedules_per_function:
        raise bad_request(f"Function {fn['id']} already has {len(existing)} schedules; the limit is "
                          f"{ctx.limits.max_schedules_per_function}")
    session = consume_nonce(ctx, item.get("nonce"))
    body = {"name": item["name"], "functionId": fn["id"], "cronExpression": item["cronExpression"], "description": item.get("description"),
            "sessionId": session["id"], "when": f"cron '{item['cronExpression']}' (UTC)", "_data": item.get("data")}
    with ctx.store.write() as db:
        schedule = ctx.store.insert(db, ctx.project, KIND, {k: v for k, v in body.items() if v is not None})
    return {"items": [_view(schedule)]}


SCHEDULES.serve(routes, "/functions/schedules", "schedule_id", ("byids", "delete", "one"))


@routes.post("/functions/schedules/list")
def list_schedules(ctx: Ctx) -> dict:
    """CDF's schedule list has no cursor (the SDK asks for up to 10,000 at once and reads `items` only)."""
    return {"items": SCHEDULES.list(ctx)["items"]}


@routes.get("/functions/schedules/<int:schedule_id>/input_data")
def input_data(ctx: Ctx, schedule_id: int) -> dict:
    schedule = ctx.store.resolve(ctx.project, KIND, [{"id": schedule_id}], what="Function schedules")[0]
    return {"id": schedule_id, "data": schedule.get("_data")}


def run_due(rt: "FunctionRuntime", now: datetime | None = None, wait: bool = True) -> list[dict]:
    """Fire each schedule's latest due occurrence up to `now` once; with `wait`, return the finished calls."""
    from .calls import KIND as CALLS, start_call, view

    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    started = []
    for project in rt.store.projects():
        for schedule in rt.store.query(project, KIND)[0]:
            due = _claim(rt, project, schedule["id"], now)
            if due is None:
                continue
            fn = rt.store.get(project, FUNCTIONS, schedule["functionId"])
            session = rt.store.get(project, "sessions", schedule["sessionId"])
            if fn is None or fn.get("status") != "Ready" or session is None or session["status"] != "ACTIVE":
                continue
            call, done = start_call(rt, project, fn, schedule.get("_data"), session, schedule["id"],
                                    int(due.timestamp() * 1000))
            started.append((project, call, done))
    if not wait:
        return [view(c) for _, c, _ in started]
    result = []
    for project, call, done in started:
        done.wait(rt.limits.call_timeout_s + 30)
        result.append(view(rt.store.get_known(project, CALLS, call["id"], what="Function calls")))
    return result


def _claim(rt: "FunctionRuntime", project: str, schedule_id: int, now: datetime) -> datetime | None:
    with rt.store.write() as db:
        schedule = rt.store.get(project, KIND, schedule_id, db)
        if schedule is None:
            return None
        last = schedule.get("_lastFired")
        due = cron.due_times(
            schedule["cronExpression"],
            datetime.fromtimestamp(last / 1000, timezone.utc) if last else None,
            datetime.fromtimestamp(schedule["createdTime"] / 1000, timezone.utc),
            now,
        )
        if not due:
            return None
        schedule["_lastFired"] = int(due[-1].timestamp() * 1000)
        rt.store.save(db, project, KIND, schedule, touch=False)
        return due[-1]
