"""Validating an automation's trigger: a ScheduledTrigger (a cron or a named interval, its timezone) or a
MetricBasedTrigger (its SQL metric checked against the analytics tables, direction, threshold, check cron, cooldown).
"""
from __future__ import annotations

import re
from typing import Any

from akerbp.mlops.automations.checker import DESCRIPTION_MAX, Checker, Loc, sql_problem
from akerbp.mlops.conditions import short

INTERVALS = {"Hourly": "0 * * * *", "Daily": "0 0 * * *", "Weekly": "0 0 * * 0"}  # Weekly: Sunday 00:00
DEFAULT_CHECK_CRON = "*/15 * * * *"
DEFAULT_COOLDOWN = "1d"
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def trigger(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    """An automation's trigger: a schedule (the default in YAML: the one kind before metric triggers came) or a
    metric."""
    return c.kind(value, loc, "trigger", {"schedule": lambda v, at: _trigger(c, v, at),
                                          "metric": lambda v, at: _metric_trigger(c, v, at)}, default="schedule")


def _trigger(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "ScheduledTrigger", ("cron", "interval", "timezone"))
    if f is None:
        return None
    cron, interval = (f.get(k) or None for k in ("cron", "interval"))  # JFrog's defaults are ""
    timezone = f.get("timezone") or "UTC"
    ok = True
    if (cron is None) == (interval is None):
        c.bad(loc + ("cron",), "give exactly one of cron and interval" + (", not both" if cron else
              f": cron='0 0 * * 0' or interval= one of {', '.join(INTERVALS)}"))
        ok = False
    elif cron is not None:
        problem = _cron_problem(cron)
        if problem:
            c.bad(loc + ("cron",), problem)
            ok = False
    else:
        named = {k.lower(): k for k in INTERVALS}.get(interval.lower()) if isinstance(interval, str) else None
        if named is None:
            c.bad(loc + ("interval",), f"{short(interval)} is not an interval; use one of "
                  + ", ".join(f"{k} ({v})" for k, v in INTERVALS.items()) + ", or a cron expression")
            ok = False
        else:
            interval, cron = named, INTERVALS[named]
    problem = _timezone_problem(timezone)
    if problem:
        c.bad(loc + ("timezone",), problem)
        ok = False
    return {"type": "schedule", "cron": cron, "timezone": timezone, "interval": interval} if ok else None


def _metric_trigger(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "MetricBasedTrigger", ("name", "metric", "direction", "threshold", "check_cron",
                                                      "cooldown", "timezone"), ("metric", "threshold"))
    if f is None:
        return None
    ok = True
    name = c.text(f.get("name") or "", loc + ("name",), max_length=DESCRIPTION_MAX)
    metric = c.fields(f.get("metric"), loc + ("metric",), "SqlMetric", ("sql_query",), ("sql_query",)) \
        if f.get("metric") is not None else None
    sql = None
    if metric and metric.get("sql_query") not in (None, ""):
        sql = c.text(metric["sql_query"], loc + ("metric", "sql_query"), empty=False)
        problem = sql_problem(sql) if sql else None
        if problem:
            c.bad(loc + ("metric", "sql_query"), problem)
            ok = False
    direction = c.direction(f.get("direction"), loc + ("direction",))
    bound = c.threshold(f.get("threshold"), loc + ("threshold",)) if f.get("threshold") not in (None, "") else None
    cron = f.get("check_cron") or DEFAULT_CHECK_CRON
    problem = _cron_problem(cron)
    if problem:
        c.bad(loc + ("check_cron",), problem)
        ok = False
    cooldown = f.get("cooldown", DEFAULT_COOLDOWN)
    seconds = _duration(c, DEFAULT_COOLDOWN if cooldown is None else cooldown, loc + ("cooldown",))
    timezone = f.get("timezone") or "UTC"
    problem = _timezone_problem(timezone)
    if problem:
        c.bad(loc + ("timezone",), problem)
        ok = False
    if not ok or sql is None or direction is None or bound is None or seconds is None or name is None:
        return None
    return {"type": "metric", "name": name, "metric": {"sql_query": sql}, "direction": direction, "threshold": bound,
            "cron": cron, "timezone": timezone, "cooldown": str(cooldown).strip(), "cooldown_s": seconds}


def _duration(c: Checker, value: Any, loc: Loc) -> float | None:
    """"30m", "12h", "1d", "1w" (also "45s", "0d": no cooldown) as seconds."""
    found = _DURATION.match(value) if isinstance(value, str) else None
    if found is None:
        c.bad(loc, f"{short(value)} is not a duration: a number and a unit, e.g. '30m', '12h', '1d' or '1w'")
        return None
    return float(found.group(1)) * DURATION_UNITS[found.group(2)]


def _cron_problem(cron: Any) -> str | None:
    if not isinstance(cron, str) or len(cron.split()) != 5:
        return (f"{short(cron)} is not a cron expression of 5 fields (minute hour day-of-month month day-of-week), "
                "e.g. '0 0 * * 0'")
    from datetime import datetime, timezone

    from croniter import croniter

    try:
        croniter(cron, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except Exception as e:  # noqa: BLE001 - croniter's errors are many kinds
        return f"{cron!r} is not a valid cron expression: {e}"
    return None


def _timezone_problem(name: Any) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if isinstance(name, str):
        try:
            ZoneInfo(name)
            return None
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return f"{short(name)} is not a known timezone: use an IANA name, e.g. 'UTC' or 'Europe/Oslo'"

