"""The `check` step of a metric-based automation: evaluate its metric, compare it with its threshold, apply the
cooldown, and answer the tasks the workflow's `run` task then holds (tasks.py: the action's tasks when it fired,
`not_triggered` otherwise, `notify` alone when the query failed).

The metric is analytics.query.metric_value over the model's tables in the environment the automation is registered
in (the live service it watches), over every call those tables hold: the query says its window itself (WHERE time >
now() - INTERVAL 1 DAY; or WHERE version = (SELECT max(version) FROM calls) to judge the live version alone). A
window fixed here (say, since the last triggered run) would leave a quiet service right after a retraining with no
rows, an error rather than a verdict.

The cooldown is read from the automation's audit events: the notify step of every run the trigger fired writes one,
with the check's verdict (`check`, fired true); the newest one's start is the last triggered run. Only those runs
write events: a check that does not fire leaves its value and verdict in its task output alone (the execution
keeps it; executions.py reads it), so a check every 15 minutes adds no event.
"""
from __future__ import annotations

import datetime
import json
import time
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.vocabulary import AUTOMATION, automation_function_external_id, automation_workflow_external_id

if TYPE_CHECKING:
    from cognite.client import CogniteClient


def check(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
          root: object) -> dict[str, Any]:
    from akerbp.mlops import conditions
    from akerbp.mlops.automations import tasks
    from akerbp.mlops.automations.upstream import running_execution

    began, t = time.time(), time.monotonic()
    trigger = definition["trigger"]
    model, env = definition["model"], definition["env"]
    fxid = automation_function_external_id(model, env)
    execution_id, started_by = running_execution(client, definition)
    last_ms = last_triggered_ms(client, definition)
    out: dict[str, Any] = {"ok": False, "execution_id": execution_id, "trigger": started_by,
                           "started_at": round(began, 3),
                           "last_triggered": _iso(last_ms / 1000) if last_ms else None,
                           "phases": {"look-up": round(time.monotonic() - t, 3)}}
    sql, given = trigger["metric"]["sql_query"], trigger["threshold"]
    t = time.monotonic()
    try:
        from akerbp.mlops.analytics.query import metric_value

        value = metric_value(client, model, env, sql)
        threshold_sql = str(given) if conditions.is_sql(given) else None
        bound = metric_value(client, model, env, threshold_sql) if threshold_sql else float(given)
    except Exception as e:  # noqa: BLE001 - a query that fails at run time: notify reports it on_error
        out["phases"]["metric"] = round(time.monotonic() - t, 3)
        out["error"] = f"the trigger's metric could not be evaluated: {type(e).__name__}: {e}"[:4000]
        out["tasks"] = _dumped(tasks.action_tasks(definition, fxid, after_check=True, steps=("notify",)))
        return out
    out["phases"]["metric"] = round(time.monotonic() - t, 3)
    cooldown_s = float(trigger.get("cooldown_s") or 0)
    until = last_ms / 1000 + cooldown_s if last_ms and cooldown_s else None
    verdict = conditions.trigger_verdict(sql, trigger["direction"], bound, value, threshold_sql=threshold_sql,
                                         cooldown_until=_iso(until) if until and until > began else None)
    chosen = tasks.action_tasks(definition, fxid, after_check=True) if verdict.fired else \
        [tasks.not_triggered_task(automation_workflow_external_id(definition["name"], env))]
    out.update(ok=True, verdict=verdict.as_dict(), tasks=_dumped(chosen))
    return out


def _dumped(found: list) -> list[dict[str, Any]]:
    return [task.dump(camel_case=True) for task in found]


def last_triggered_ms(client: CogniteClient, definition: Mapping[str, Any]) -> int | None:
    """The start (epoch ms) of the newest run this automation's trigger fired, from its audit events."""
    from akerbp.mlops.audit import EVENT_TYPE

    found = client.events.list(type=EVENT_TYPE, subtype=AUTOMATION, limit=None, metadata={
        "model": definition["model"], "env": definition["env"], "automation": definition["name"]})
    starts = [e.start_time for e in found if e.start_time is not None and _fired((e.metadata or {}).get("check"))]
    return max(starts) if starts else None


def _fired(text: object) -> bool:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("fired") is True


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")
