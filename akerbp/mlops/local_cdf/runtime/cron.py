"""Cron arithmetic for local CDF function schedules (5-field expressions, evaluated in UTC like CDF)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

_BAD = (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, KeyError, TypeError)


def _utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    moment = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return moment.replace(fold=0)


def validate(expr: str) -> None:
    """Raise ValueError naming the expression unless it is a valid 5-field cron expression."""
    if not isinstance(expr, str) or len(expr.split()) != 5:
        raise ValueError(
            f"Invalid cron expression {expr!r}: expected 5 fields (minute hour day-of-month month day-of-week)"
        )
    try:
        croniter(expr, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except _BAD as err:
        raise ValueError(f"Invalid cron expression {expr!r}: {err}") from err


def next_time(expr: str, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC."""
    validate(expr)
    return _utc(croniter(expr, _utc(after)).get_next(datetime))


def due_times(expr: str, last_fired: datetime | None, created: datetime, now: datetime) -> list[datetime]:
    """Fire times in (max(last_fired, created), now], in UTC, capped to the latest one.

    CDF does not back-fill runs missed while the scheduler was not running (e.g. the local server was
    stopped), so at most one call is due: the most recent fire time. Empty when nothing is due.
    """
    validate(expr)
    start = _utc(created) if last_fired is None else max(_utc(last_fired), _utc(created))
    now = _utc(now)
    if now <= start:
        return []
    # Step back from just after `now` (so a fire time equal to `now` counts): one step, however long the gap.
    latest = _utc(croniter(expr, now + timedelta(microseconds=1)).get_prev(datetime))
    return [latest] if latest > start else []
