"""Datapoints: insert (upsert on timestamp), delete ranges, latest, and range retrieval of raw datapoints and
aggregates, answered in protobuf as cognite-sdk asks (`accept: application/protobuf`) or JSON otherwise.

Datapoints live in the store's `datapoints` table keyed by (time series id, timestamp). NaN is stored as the text
'NaN' (SQLite turns a NaN float into NULL) and left out of aggregates. Statuses other than Good, time zones,
calendar granularities and unit conversion are refused with a 400 rather than half-supported.

Aggregates follow CDF's definitions: buckets start at `start` rounded down to the granularity unit (1s/1m/1h/1d);
`average` is time-weighted over the interpolated curve (linear, or stepwise for isStep), using the neighbouring
points outside a bucket to interpolate to its edges; `interpolation`/`stepInterpolation` are the values at the
bucket start, and buckets without points inside the data's span are returned for them with NaN elsewhere.

About 430 lines, over the package's ~400: the retrieval routes, the aggregate arithmetic and the protobuf encoding
share one bucket model and are read together; splitting the aggregates out is the next step when this grows. Its
SQL runs on its own `datapoints` table, not the store's resources table.
"""
from __future__ import annotations

import base64
import itertools
import math
import re
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from werkzeug.wrappers import Response

from ..http.app import Ctx, Router, json_response
from ..http.errors import bad_request
from ..store import now_ms
from ..http.validation import check, identifiers

if TYPE_CHECKING:
    import sqlite3

routes = Router()
KIND = "timeseries"
MIN_TS, MAX_TS = -2208988800000, 4102444799999  # 1900-01-01 .. 2099-12-31, CDF's accepted range
MAX_INSERT = 100_000
MAX_STRING = 255
MAX_ABS_NUMBER = 1e100
SPECIAL = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
GRANULARITY_UNITS = {"s": "s", "sec": "s", "second": "s", "seconds": "s", "m": "m", "t": "m", "min": "m",
                     "minute": "m", "minutes": "m", "h": "h", "hour": "h", "hours": "h", "d": "d", "day": "d",
                     "days": "d"}
AGGREGATES = ("average", "max", "min", "count", "sum", "interpolation", "stepInterpolation")
QUERY_FIELDS = {
    "start": (int, str), "end": (int, str), "limit": int, "aggregates": list, "granularity": str,
    "includeOutsidePoints": bool, "cursor": str, "targetUnit": str, "targetUnitSystem": str, "timeZone": str,
    "includeStatus": bool, "ignoreBadDataPoints": bool, "treatUncertainAsBad": bool,
}


# -- shared helpers -------------------------------------------------------------------------------------------
def drop_all(ctx: Ctx, ts_id: int) -> None:
    with ctx.store.write() as db:
        db.execute("DELETE FROM datapoints WHERE ts_id=?", (ts_id,))


def parse_time(value: Any, where: str, now: int) -> int:
    """Milliseconds since epoch, 'now', or '<N><unit>-ago' / '<N><unit>-ahead' with unit s, m, h, d or w."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value == "now":
            return now
        match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)-(ago|ahead)", value)
        if match:
            shift = int(match[1]) * (1 if match[2] == "ms" else UNIT_MS[match[2]])
            return now - shift if match[3] == "ago" else now + shift
    raise bad_request(f"Field '{where}' must be a timestamp in ms, 'now' or like '2d-ago', got {value!r}")


def _resolve(ctx: Ctx, raw_items: list, what: str, ignore_unknown: bool = False, db=None) -> list[dict | None]:
    """The time series for each item (None when unknown and ignored); instanceId is not supported locally."""
    for i, item in enumerate(raw_items):
        if isinstance(item, dict) and "instanceId" in item:
            raise bad_request(f"items[{i}].instanceId: the local CDF does not support data modeling instance ids")
    idents = identifiers({"items": [{k: it[k] for k in ("id", "externalId") if k in it}
                                    if isinstance(it, dict) else it for it in raw_items]}, max_items=10_000)
    found = {}
    for ts in ctx.store.resolve(ctx.project, KIND, idents, ignore_unknown=ignore_unknown, db=db, what=what):
        found[("id", ts["id"])] = ts
        if ts.get("externalId") is not None:
            found[("externalId", ts["externalId"])] = ts
    return [found.get(next(iter(ident.items()))) for ident in idents]


def _resolve_all(ctx: Ctx, raw_items: list, what: str, db: sqlite3.Connection | None = None) -> list[dict]:
    """_resolve without ignore_unknown: an unknown item is a 400, so there is a time series for every item."""
    series = _resolve(ctx, raw_items, what, db=db)
    known = [ts for ts in series if ts is not None]
    assert len(known) == len(series), "Store.resolve raises for unknown items unless they are ignored"
    return known


def _name(ts: dict) -> str:
    return repr(ts["externalId"]) if ts.get("externalId") else f"id {ts['id']}"


def _from_db(value: Any, is_string: bool) -> Any:
    if is_string:
        return value
    return math.nan if isinstance(value, str) else float(value)


def _header(ts: dict) -> dict:
    head = {"id": ts["id"], "isString": ts["isString"], "isStep": ts.get("isStep", False),
            "type": "string" if ts["isString"] else "numeric"}
    for key in ("externalId", "unit", "unitExternalId"):
        if ts.get(key) is not None:
            head[key] = ts[key]
    return head


# -- insert and delete ----------------------------------------------------------------------------------------
def _value(value: Any, ts: dict, where: str) -> Any:
    if ts["isString"]:
        if not isinstance(value, str):
            raise bad_request(f"{where}: time series {_name(ts)} is a string time series (isString=true) "
                              f"but the value {value!r} is not a string")
        if len(value) > MAX_STRING:
            raise bad_request(f"{where}: string value is {len(value)} characters; the limit is {MAX_STRING}")
        return value
    if isinstance(value, str) and value in SPECIAL:
        return "NaN" if value == "NaN" else SPECIAL[value]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise bad_request(f"{where}: time series {_name(ts)} is numeric (isString=false) "
                          f"but the value {value!r} is not a number")
    if math.isnan(value):
        return "NaN"
    if math.isfinite(value) and abs(value) > MAX_ABS_NUMBER:
        raise bad_request(f"{where}: numeric values must be within +-1e100, got {value!r}")
    return float(value)


def _datapoint_rows(ts: dict, dps: Any, where: str) -> Iterator[tuple]:
    if not isinstance(dps, list):
        raise bad_request(f"Field '{where}.datapoints' must be an array")
    for j, dp in enumerate(dps):
        at = f"{where}.datapoints[{j}]"
        check(dp, {"timestamp": int, "value": (int, float, str), "status": dict}, at, required=("timestamp",))
        if "value" not in dp:
            raise bad_request(f"Missing field '{at}.value'")
        status = dp.get("status") or {}
        if status.get("code", 0) != 0 or status.get("symbol", "Good") != "Good":
            raise bad_request(f"{at}.status: the local CDF stores only Good datapoints, got {status!r}")
        if not MIN_TS <= dp["timestamp"] <= MAX_TS:
            raise bad_request(f"Field '{at}.timestamp' must be between {MIN_TS} and {MAX_TS}, got {dp['timestamp']}")
        yield ts["id"], dp["timestamp"], _value(dp["value"], ts, f"{at}.value")


@routes.post("/timeseries/data")
def insert(ctx: Ctx) -> dict:
    check(ctx.body, {"items": list}, "", required=("items",))
    raw = ctx.body["items"]
    if not 1 <= len(raw) <= 10_000:
        raise bad_request(f"Field 'items' must have between 1 and 10000 items, got {len(raw)}")
    total = sum(len(it.get("datapoints") or []) for it in raw if isinstance(it, dict))
    if total > MAX_INSERT:
        raise bad_request(f"A request may insert at most {MAX_INSERT} datapoints, got {total}")
    for i, item in enumerate(raw):
        check(item, {"id": int, "externalId": str, "instanceId": dict, "datapoints": list}, f"items[{i}]",
              required=("datapoints",))
    with ctx.store.write() as db:
        series = _resolve_all(ctx, raw, "Time series", db=db)
        rows = [row for i, (item, ts) in enumerate(zip(raw, series))
                for row in _datapoint_rows(ts, item["datapoints"], f"items[{i}]")]
        db.executemany("INSERT OR REPLACE INTO datapoints(ts_id, timestamp, value) VALUES (?, ?, ?)", rows)
    return {}


@routes.post("/timeseries/data/delete")
def delete_ranges(ctx: Ctx) -> dict:
    check(ctx.body, {"items": list}, "", required=("items",))
    raw = ctx.body["items"]
    if not 1 <= len(raw) <= 10_000:
        raise bad_request(f"Field 'items' must have between 1 and 10000 items, got {len(raw)}")
    spec = {"id": int, "externalId": str, "instanceId": dict, "inclusiveBegin": (int, str), "exclusiveEnd": (int, str)}
    now = now_ms()
    ranges = []
    for i, item in enumerate(raw):
        check(item, spec, f"items[{i}]", required=("inclusiveBegin",))
        begin = parse_time(item["inclusiveBegin"], f"items[{i}].inclusiveBegin", now)
        end = begin + 1 if item.get("exclusiveEnd") is None else parse_time(
            item["exclusiveEnd"], f"items[{i}].exclusiveEnd", now)
        ranges.append((begin, end))
    with ctx.store.write() as db:
        series = _resolve_all(ctx, raw, "Time series", db=db)
        db.executemany("DELETE FROM datapoints WHERE ts_id=? AND timestamp>=? AND timestamp<?",
                       [(ts["id"], begin, end) for ts, (begin, end) in zip(series, ranges)])
    return {}


# -- latest -----------------------------------------------------------------------------------------------------
@routes.post("/timeseries/data/latest")
def latest(ctx: Ctx) -> dict:
    check(ctx.body, {"items": list, "ignoreUnknownIds": bool}, "", required=("items",))
    raw = ctx.body["items"]
    if not 1 <= len(raw) <= 100:
        raise bad_request(f"Field 'items' must have between 1 and 100 items, got {len(raw)}")
    spec = {"id": int, "externalId": str, "instanceId": dict, "before": (int, str), "targetUnit": str,
            "targetUnitSystem": str, "includeStatus": bool, "ignoreBadDataPoints": bool, "treatUncertainAsBad": bool}
    now = now_ms()
    befores = []
    for i, item in enumerate(raw):
        check(item, spec, f"items[{i}]")
        _refuse_units(item, f"items[{i}]")
        befores.append(now if item.get("before") is None else parse_time(item["before"], f"items[{i}].before", now))
    series = _resolve(ctx, raw, "Time series", bool(ctx.body.get("ignoreUnknownIds")))
    conn = ctx.store.conn()
    result = []
    for ts, before in zip(series, befores):
        if ts is None:
            continue
        row = conn.execute("SELECT timestamp, value FROM datapoints WHERE ts_id=? AND timestamp<? "
                           "ORDER BY timestamp DESC LIMIT 1", (ts["id"], before)).fetchone()
        dps = [{"timestamp": row[0], "value": _from_db(row[1], ts["isString"])}] if row else []
        result.append({**_header(ts), "datapoints": dps})
    return {"items": result}


def _refuse_units(item: dict, where: str) -> None:
    for key in ("targetUnit", "targetUnitSystem"):
        if item.get(key) is not None:
            raise bad_request(f"{where}.{key}: the local CDF does not convert units")


# -- retrieve ---------------------------------------------------------------------------------------------------
@routes.post("/timeseries/data/list")
def retrieve(ctx: Ctx) -> Response:
    body = ctx.body
    check(body, {"items": list, "ignoreUnknownIds": bool, **QUERY_FIELDS}, "", required=("items",))
    raw = body["items"]
    if not 1 <= len(raw) <= 100:
        raise bad_request(f"Field 'items' must have between 1 and 100 items, got {len(raw)}")
    defaults = {k: v for k, v in body.items() if k in QUERY_FIELDS and v is not None}
    queries = []
    now = now_ms()
    for i, item in enumerate(raw):
        check(item, {"id": int, "externalId": str, "instanceId": dict, **QUERY_FIELDS}, f"items[{i}]")
        queries.append(_query({**defaults, **{k: v for k, v in item.items() if v is not None}}, f"items[{i}]", now))
    series = _resolve(ctx, raw, "Time series", bool(body.get("ignoreUnknownIds")))
    results = []
    for i, (ts, query) in enumerate(zip(series, queries)):
        if ts is None:
            continue
        if query["aggregates"] and ts["isString"]:
            raise bad_request(f"items[{i}]: aggregates are not supported for string time series {_name(ts)}")
        fetch = _aggregates if query["aggregates"] else _raw
        results.append((ts, query, *fetch(ctx.store.conn(), ts, query)))
    if "application/protobuf" in ctx.request.headers.get("Accept", ""):
        return _protobuf(results)
    return _json(results)


def _query(q: dict, where: str, now: int) -> dict:
    _refuse_units(q, where)
    if q.get("timeZone") not in (None, "UTC", "Z", "+00:00"):
        raise bad_request(f"{where}.timeZone: the local CDF supports only UTC, got {q['timeZone']!r}")
    start = parse_time(q.get("start", 0), f"{where}.start", now)
    end = parse_time(q.get("end", now), f"{where}.end", now)
    if q.get("cursor"):
        start = max(start, _decode_cursor(q["cursor"]))
    aggs = q.get("aggregates") or []
    unknown = [a for a in aggs if a not in AGGREGATES]
    if unknown:
        raise bad_request(f"{where}.aggregates: the local CDF does not support {unknown} (supported: "
                          f"{', '.join(AGGREGATES)})")
    if aggs and not q.get("granularity"):
        raise bad_request(f"Missing field '{where}.granularity' (required with aggregates)")
    granularity = unit = None
    if aggs:
        match = re.fullmatch(r"(\d+)([a-z]+)", q["granularity"])
        if not match or match[2] not in GRANULARITY_UNITS or int(match[1]) < 1:
            raise bad_request(f"{where}.granularity: expected like '1h', '15m', '30s' or '1d' (calendar units are "
                              f"not supported locally), got {q['granularity']!r}")
        unit = UNIT_MS[GRANULARITY_UNITS[match[2]]]
        granularity = int(match[1]) * unit
        start -= start % unit
    maximum = 10_000 if aggs else 100_000
    limit = q.get("limit", 100)
    if not 0 <= limit <= maximum:
        raise bad_request(f"Field '{where}.limit' must be between 0 and {maximum}, got {limit}")
    if end <= start and not q.get("cursor"):
        raise bad_request(f"{where}: end ({end}) must be later than start ({start})")
    return {"start": start, "end": end, "limit": limit, "aggregates": aggs, "granularity": granularity,
            "outside": bool(q.get("includeOutsidePoints")) and not aggs, "first_page": not q.get("cursor")}


def _cursor(next_start: int) -> str:
    return base64.urlsafe_b64encode(f"dps:{next_start}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        tag, value = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if tag == "dps":
            return int(value)
    except ValueError:
        pass
    raise bad_request(f"Invalid datapoints cursor: {cursor!r}")


def _raw(conn, ts: dict, q: dict) -> tuple[list, str | None]:
    rows = conn.execute("SELECT timestamp, value FROM datapoints WHERE ts_id=? AND timestamp>=? AND timestamp<? "
                        "ORDER BY timestamp LIMIT ?", (ts["id"], q["start"], q["end"], q["limit"] + 1)).fetchall()
    cursor = None
    if len(rows) > q["limit"]:
        rows = rows[:q["limit"]]
        cursor = _cursor(rows[-1][0] + 1) if rows else None
    if q["outside"]:
        before = conn.execute("SELECT timestamp, value FROM datapoints WHERE ts_id=? AND timestamp<? "
                              "ORDER BY timestamp DESC LIMIT 1", (ts["id"], q["start"])).fetchone()
        after = conn.execute("SELECT timestamp, value FROM datapoints WHERE ts_id=? AND timestamp>=? "
                             "ORDER BY timestamp LIMIT 1", (ts["id"], q["end"])).fetchone()
        rows = ([before] if before and q["first_page"] else []) + rows + ([after] if after and not cursor else [])
    is_string = ts["isString"]
    return [(t, _from_db(v, is_string)) for t, v in rows], cursor


def _aggregates(conn, ts: dict, q: dict) -> tuple[list, str | None]:
    start, g, limit = q["start"], q["granularity"], q["limit"]
    end = start + -(-(q["end"] - start) // g) * g  # the last bucket covers the original end in full
    numeric = "AND value BETWEEN -1e100 AND 1e100"  # finite numbers only: text ('NaN') sorts above any number
    prev = conn.execute(f"SELECT timestamp, value FROM datapoints WHERE ts_id=? AND timestamp<? {numeric} "
                        "ORDER BY timestamp DESC LIMIT 1", (ts["id"], start)).fetchone()
    after = conn.execute(f"SELECT timestamp, value FROM datapoints WHERE ts_id=? AND timestamp>=? {numeric} "
                         "ORDER BY timestamp LIMIT 1", (ts["id"], end)).fetchone()
    points = conn.execute(f"SELECT timestamp, value FROM datapoints WHERE ts_id=? AND timestamp>=? AND timestamp<? "
                          f"{numeric} ORDER BY timestamp", (ts["id"], start, end))
    buckets = list(itertools.islice(
        _buckets(points, prev, after, start, end, g, q["aggregates"], ts.get("isStep", False)), limit + 1))
    cursor = None
    if len(buckets) > limit:
        buckets = buckets[:limit]
        cursor = _cursor(buckets[-1]["timestamp"] + g) if buckets else None
    return buckets, cursor


def _buckets(points: Iterable, prev, after, start: int, end: int, g: int, aggs: list, step: bool) -> Iterator[dict]:
    """Aggregate datapoints in time order into buckets [start + k*g, start + (k+1)*g), streaming."""
    interp = "interpolation" in aggs or "stepInterpolation" in aggs
    groups = ((k, list(pts)) for k, pts in itertools.groupby(points, key=lambda p: (p[0] - start) // g))
    current = next(groups, None)
    last, last_k = prev, -1  # the last point before the current bucket, and its bucket index
    while current is not None:
        k, pts = current
        following = next(groups, None)
        nxt = following[1][0] if following else after
        if interp and last is not None:  # empty buckets inside the data's span still interpolate
            for empty in range(max(last_k + 1, 0), k):
                yield _bucket(start + empty * g, g, [], last, pts[0], aggs, step)
        yield _bucket(start + k * g, g, pts, last, nxt, aggs, step)
        last, last_k, current = pts[-1], k, following
    if interp and last is not None and after is not None:
        for empty in range(max(last_k + 1, 0), (end - start) // g):
            yield _bucket(start + empty * g, g, [], last, after, aggs, step)


def _bucket(b0: int, g: int, pts: list, before, after, aggs: list, step: bool) -> dict:
    """One aggregate datapoint; `before`/`after` are the nearest points outside [b0, b0 + g) (or None)."""
    values = [v for _, v in pts]
    out: dict[str, Any] = {"timestamp": b0}
    nan = math.nan
    for agg in aggs:
        if agg == "count":
            out[agg] = float(len(values)) if values else nan
        elif agg == "sum":
            out[agg] = float(math.fsum(values)) if values else nan
        elif agg == "min":
            out[agg] = float(min(values)) if values else nan
        elif agg == "max":
            out[agg] = float(max(values)) if values else nan
        elif agg == "average":
            out[agg] = _time_weighted_average(b0, b0 + g, pts, before, after, step) if values else nan
        else:
            out[agg] = _value_at(b0, pts, before, after, step or agg == "stepInterpolation")
    return out


def _value_at(t: int, pts: list, before, after, step: bool) -> float:
    """The curve's value at t (a bucket start): the point at t, else interpolated from its neighbours."""
    right = pts[0] if pts else after
    if right is not None and right[0] == t:
        return float(right[1])
    if before is None or right is None:
        return math.nan
    if step:
        return float(before[1])
    (t0, v0), (t1, v1) = before, right
    return v0 + (v1 - v0) * (t - t0) / (t1 - t0)


def _time_weighted_average(b0: int, b1: int, pts: list, before, after, step: bool) -> float:
    """Integral of the curve over the part of [b0, b1) where it is defined, divided by that part's length."""
    curve = ([before] if before else []) + pts + ([after] if after else [])
    lo, hi = max(b0, curve[0][0]), min(b1, curve[-1][0])
    if hi <= lo:
        return float(math.fsum(v for _, v in pts) / len(pts))
    area = 0.0
    for (t0, v0), (t1, v1) in zip(curve, curve[1:]):
        a, c = max(t0, lo), min(t1, hi)
        if c <= a:
            continue
        if step:
            area += v0 * (c - a)
        else:
            slope = (v1 - v0) / (t1 - t0)
            area += (c - a) * (v0 + slope * (a - t0) + v0 + slope * (c - t0)) / 2
    return area / (hi - lo)


# -- encoding ---------------------------------------------------------------------------------------------------
def _protobuf(results: list) -> Response:
    # The SDK's own generated messages: imported here so the rest of the local CDF never needs cognite-sdk.
    from cognite.client._proto.data_point_list_response_pb2 import DataPointListItem, DataPointListResponse
    from cognite.client._proto.data_points_pb2 import AggregateDatapoint, NumericDatapoint, StringDatapoint

    response = DataPointListResponse()
    for ts, query, dps, cursor in results:
        item: DataPointListItem = response.items.add(
            id=ts["id"], externalId=ts.get("externalId") or "", isString=ts["isString"],
            isStep=ts.get("isStep", False), unit=ts.get("unit") or "", unitExternalId=ts.get("unitExternalId") or "",
            type="TIMESERIES_TYPE_STRING" if ts["isString"] else "TIMESERIES_TYPE_NUMERIC", nextCursor=cursor or "")
        if query["aggregates"]:
            item.aggregateDatapoints.datapoints.extend(AggregateDatapoint(**dp) for dp in dps)
        elif ts["isString"]:
            item.stringDatapoints.datapoints.extend(StringDatapoint(timestamp=t, value=v) for t, v in dps)
        else:
            item.numericDatapoints.datapoints.extend(NumericDatapoint(timestamp=t, value=v) for t, v in dps)
    return Response(response.SerializeToString(), mimetype="application/protobuf")


def _json(results: list) -> Response:
    items = []
    for ts, query, dps, cursor in results:
        if query["aggregates"]:  # JSON leaves an undefined aggregate out instead of sending NaN
            dps = [{k: int(v) if k == "count" else v for k, v in dp.items()
                    if not (isinstance(v, float) and math.isnan(v))} for dp in dps]
        else:
            dps = [{"timestamp": t, "value": v} for t, v in dps]
        items.append({**_header(ts), "datapoints": dps, **({"nextCursor": cursor} if cursor else {})})
    return json_response({"items": items})
