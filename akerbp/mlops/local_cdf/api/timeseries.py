"""CDF Time series metadata: create, byids, list, count, update, delete (which drops the datapoints too).

The datapoint endpoints live in datapoints.py; their routes are served through this module's router, which is the
one server.py registers.
"""
from __future__ import annotations


from . import datapoints
from ..http.app import Ctx, Router
from ..http.errors import bad_request
from ..http.filters import data_set_ids, eq, metadata, prefix, time_range
from ..http.resources import Kind, check_data_set
from ..http.validation import metadata_limits, text_limits

routes = Router()
routes.routes.extend(datapoints.routes.routes)
KIND = datapoints.KIND

FIELDS = {
    "externalId": str, "name": str, "legacyName": str, "isString": bool, "metadata": dict, "unit": str,
    "unitExternalId": str, "assetId": int, "isStep": bool, "description": str, "securityCategories": list,
    "dataSetId": int,
}
UPDATABLE = {k: v for k, v in FIELDS.items() if k not in ("isString", "legacyName")}
SORTABLE = frozenset({"name", "externalId", "description", "unit", "unitExternalId", "createdTime",
                      "lastUpdatedTime", "dataSetId", "assetId", "isString", "isStep"})


def _asset_ids(value, ctx):
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad_request("Filter 'assetIds' must be an array of integers")
    marks = ",".join("?" * len(value)) or "NULL"
    return f"json_extract(body, '$.assetId') IN ({marks})", list(value)


TIME_SERIES = Kind(
    KIND,
    "Time series",
    filters={
        "name": eq("name"), "unit": eq("unit"), "unitExternalId": eq("unitExternalId"), "isString": eq("isString"),
        "isStep": eq("isStep"), "metadata": metadata, "assetIds": _asset_ids, "dataSetIds": data_set_ids,
        "externalIdPrefix": prefix("externalId"), "createdTime": time_range("createdTime"),
        "lastUpdatedTime": time_range("lastUpdatedTime"),
    },
    updatable=UPDATABLE,
    sortable=SORTABLE,
)


def validate_time_series(body: dict, where: str) -> None:
    text_limits(body, where, {"externalId": 255, "name": 255, "legacyName": 255, "description": 1000, "unit": 32,
                              "unitExternalId": 256})
    metadata_limits(body.get("metadata"), f"{where}.metadata", 256, 128, 10000, 10000)
    categories = body.get("securityCategories")
    if categories is not None and (len(categories) > 100 or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in categories)):
        raise bad_request(f"Field '{where}.securityCategories' must be at most 100 integer ids")


def _checks(ctx: Ctx, body: dict, where: str) -> None:
    """Field limits, then the data set reference (which needs the request's project)."""
    validate_time_series(body, where)
    check_data_set(ctx, body, where)


TIME_SERIES.serve(routes, "/timeseries", "ts_id", fields=FIELDS, validate=_checks,
                  defaults={"isString": False, "isStep": False, "metadata": {}},
                  on_delete=lambda ctx, ts: datapoints.drop_all(ctx, ts["id"]))
