"""Cron arithmetic for local CDF function schedules (5-field expressions, UTC like CDF) and workflow triggers (the
same expressions in an IANA timezone, e.g. Europe/Oslo).

The rule in a timezone with daylight-saving changes: the expression selects local wall-clock times, and each one is
the instant java.time's `LocalDateTime.atZone` (and Python's PEP 495 `fold=0`) gives it. A local time that does not
exist (in the spring-forward gap) fires once, shifted forward by the length of the gap (02:30 Europe/Oslo on that
day fires at 03:30 CEST, 01:30 UTC); a local time that occurs twice (autumn) fires once, at its first occurrence
(02:30 CEST, 00:30 UTC). Two local times naming one instant (02:00 shifted to 03:00, and 03:00) fire once. CDF's
own rule is not documented; this is the JVM's, a guess at what CDF's scheduler does.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, croniter

_BAD = (CroniterBadCronError, CroniterBadDateError, CroniterNotAlphaError, ValueError, KeyError, TypeError)
# More than any UTC offset change in the tz database (2 h): local times this far on either side of a moment's wall
# clock can name instants on the other side of it.
_SLACK = timedelta(hours=3)


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


def zone(name: str | None) -> ZoneInfo:
    """The IANA timezone `name` (None: UTC); ValueError naming it if the tz database does not know it."""
    if name is None:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"Unknown timezone {name!r}: use an IANA name such as 'Europe/Oslo' or 'UTC'") from None


def due_times(expr: str, last_fired: datetime | None, created: datetime, now: datetime,
              tz: str | None = None) -> list[datetime]:
    """Fire times in (max(last_fired, created), now], in UTC, capped to the latest one.

    CDF does not back-fill runs missed while the scheduler was not running (e.g. the local server was
    stopped), so at most one call is due: the most recent fire time. Empty when nothing is due. tz: the IANA
    timezone the expression is read in (None: UTC), by the rule in this module's docstring.
    """
    validate(expr)
    start = _utc(created) if last_fired is None else max(_utc(last_fired), _utc(created))
    now = _utc(now)
    if now <= start:
        return []
    if tz is not None and zone(tz).key != "UTC":
        latest_local = _latest_in_zone(expr, zone(tz), start, now)
        return [latest_local] if latest_local is not None else []
    # Step back from just after `now` (so a fire time equal to `now` counts): one step, however long the gap.
    latest = _utc(croniter(expr, now + timedelta(microseconds=1)).get_prev(datetime))
    return [latest] if latest > start else []


def _instant(local: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of a naive local wall-clock time: fold=0 (a gap's time shifted by the gap, a repeated
    time's first occurrence)."""
    return local.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)


def _latest_in_zone(expr: str, tz: ZoneInfo, start: datetime, now: datetime) -> datetime | None:
    """The latest instant in (start, now] of the local times `expr` selects in `tz`, or None.

    Walks the naive local times back from `now`'s wall clock plus a slack: instants are in wall-clock order except
    within a DST change, and none of the local times further back than the slack can be later than one found."""
    wall_now = now.astimezone(tz).replace(tzinfo=None)
    offsets = {(now + d).astimezone(tz).utcoffset() for d in (-2 * _SLACK, timedelta(0), _SLACK)}
    if len(offsets) == 1:  # no change near `now` (changes are months apart): wall clock and instants in step
        local = croniter(expr, wall_now + timedelta(microseconds=1)).get_prev(datetime)
        if local >= wall_now - 2 * _SLACK:
            instant = _instant(local, tz)
            return instant if instant > start else None
    floor = start.astimezone(tz).replace(tzinfo=None) - _SLACK
    steps = croniter(expr, wall_now + _SLACK)
    best: datetime | None = None
    best_wall: datetime | None = None
    while True:
        local = steps.get_prev(datetime)
        if local < floor or (best_wall is not None and local < best_wall - _SLACK):
            return best
        instant = _instant(local, tz)
        if start < instant <= now and (best is None or instant > best):
            best, best_wall = instant, local
