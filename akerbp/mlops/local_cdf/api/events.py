"""CDF Events: create, byids, filtered and sorted lists, count, update, delete.

The framework writes an audit event per deploy, rollback and promotion and reads them back newest first, so `sort`
matters here (resources.sorted_list: O(matching events) per page, fine for audit trails of thousands, not millions).
"""
from __future__ import annotations


from ..http.app import Ctx, Router
from ..http.errors import bad_request
from ..http.filters import contains_any, data_set_ids, eq, metadata, prefix, time_range
from ..http.resources import Kind, check_data_set
from ..http.validation import check, metadata_limits, text_limits

routes = Router()
KIND = "events"
MAX_TS = 9007199254740991

FIELDS = {
    "externalId": str, "startTime": int, "endTime": int, "type": str, "subtype": str, "description": str,
    "metadata": dict, "assetIds": list, "source": str, "dataSetId": int,
}
SORTABLE = frozenset({"startTime", "endTime", "createdTime", "lastUpdatedTime", "type", "subtype", "externalId",
                      "description", "source", "dataSetId"})


def _end_time(value, ctx):
    """`endTime` takes a range, or `{"isNull": true|false}` for open events."""
    if isinstance(value, dict) and "isNull" in value:
        check(value, {"isNull": bool}, "filter.endTime")
        return f"json_extract(body, '$.endTime') IS {'' if value['isNull'] else 'NOT '}NULL", []
    return time_range("endTime")(value, ctx)


def _active_at(value, ctx):
    """Active from startTime to endTime inclusive; no startTime = never active; no endTime = active from start on."""
    check(value, {"min": int, "max": int}, "filter.activeAtTime")
    clauses, params = ["json_extract(body, '$.startTime') IS NOT NULL"], []
    if value.get("max") is not None:
        clauses.append("json_extract(body, '$.startTime') <= ?")
        params.append(value["max"])
    if value.get("min") is not None:
        clauses.append("(json_extract(body, '$.endTime') IS NULL OR json_extract(body, '$.endTime') >= ?)")
        params.append(value["min"])
    return " AND ".join(clauses), params


EVENTS = Kind(
    KIND,
    "Events",
    filters={
        "startTime": time_range("startTime"), "endTime": _end_time, "activeAtTime": _active_at,
        "type": eq("type"), "subtype": eq("subtype"), "metadata": metadata, "assetIds": contains_any("assetIds"),
        "dataSetIds": data_set_ids, "source": eq("source"), "externalIdPrefix": prefix("externalId"),
        "createdTime": time_range("createdTime"), "lastUpdatedTime": time_range("lastUpdatedTime"),
    },
    updatable={k: v for k, v in FIELDS.items()},
    sortable=SORTABLE,
)


def validate_event(body: dict, where: str) -> None:
    text_limits(body, where, {"externalId": 255, "type": 64, "subtype": 64, "description": 500, "source": 128})
    metadata_limits(body.get("metadata"), f"{where}.metadata", 256, 128, 128000, 200000)
    for name in ("startTime", "endTime"):
        value = body.get(name)
        if value is not None and not 0 <= value <= MAX_TS:
            raise bad_request(f"Field '{where}.{name}' must be a timestamp in ms between 0 and {MAX_TS}, got {value}")
    start, end = body.get("startTime"), body.get("endTime")
    if start is not None and end is not None and end < start:
        raise bad_request(f"Field '{where}.endTime' ({end}) must not be before startTime ({start})")
    asset_ids = body.get("assetIds")
    if asset_ids is not None:
        if len(asset_ids) > 10000 or not all(
                isinstance(a, int) and not isinstance(a, bool) and a > 0 for a in asset_ids):
            raise bad_request(f"Field '{where}.assetIds' must be at most 10000 positive integer ids")


def _checks(ctx: Ctx, body: dict, where: str) -> None:
    """Field limits, then the data set reference (which needs the request's project)."""
    validate_event(body, where)
    check_data_set(ctx, body, where)


EVENTS.serve(routes, "/events", "event_id", fields=FIELDS, validate=_checks,
             get_filters=("type", "subtype", "source", "externalIdPrefix"))
