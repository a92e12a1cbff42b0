"""CDF Time series metadata: create, byids, list, count, update, delete (which drops the datapoints too).

The datapoint endpoints live in datapoints.py; their routes are served through this module's router, which is the
one server.py registers.
"""
from __future__ import annotations


from . import datapoints
from .app import Ctx, Router
from .errors import bad_request
from .resources import (Kind, aggregate_count, check_data_set, data_set_ids, eq, metadata, prefix, query_args,
                        time_range)
from .validation import metadata_limits, text_limit

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
    text_limit(body.get("externalId"), f"{where}.externalId", 255)
    text_limit(body.get("name"), f"{where}.name", 255)
    text_limit(body.get("legacyName"), f"{where}.legacyName", 255)
    text_limit(body.get("description"), f"{where}.description", 1000)
    text_limit(body.get("unit"), f"{where}.unit", 32)
    text_limit(body.get("unitExternalId"), f"{where}.unitExternalId", 256)
    metadata_limits(body.get("metadata"), f"{where}.metadata", 256, 128, 10000, 10000)
    categories = body.get("securityCategories")
    if categories is not None and (len(categories) > 100 or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in categories)):
        raise bad_request(f"Field '{where}.securityCategories' must be at most 100 integer ids")


def _checks(ctx: Ctx):
    """Field limits, then the data set reference (which needs the request's project)."""
    def validate(body: dict, where: str) -> None:
        validate_time_series(body, where)
        check_data_set(ctx, body, where)

    return validate


@routes.post("/timeseries")
def create(ctx: Ctx) -> dict:
    return TIME_SERIES.create(ctx, FIELDS, _checks(ctx), defaults={"isString": False, "isStep": False, "metadata": {}})


@routes.post("/timeseries/byids")
def byids(ctx: Ctx) -> dict:
    return TIME_SERIES.byids(ctx)


@routes.get("/timeseries/<int:ts_id>")
def get_one(ctx: Ctx, ts_id: int) -> dict:
    return TIME_SERIES.one(ctx, ts_id)


@routes.post("/timeseries/list")
def list_time_series(ctx: Ctx) -> dict:
    return TIME_SERIES.list(ctx)


@routes.get("/timeseries")
def list_time_series_get(ctx: Ctx) -> dict:
    return TIME_SERIES.list(ctx, body=query_args(ctx))


@routes.post("/timeseries/aggregate")
def aggregate(ctx: Ctx) -> dict:
    return aggregate_count(ctx, TIME_SERIES)


@routes.post("/timeseries/update")
def update(ctx: Ctx) -> dict:
    return TIME_SERIES.update(ctx, validate=_checks(ctx))


@routes.post("/timeseries/delete")
def delete(ctx: Ctx) -> dict:
    return TIME_SERIES.delete(ctx, on_delete=lambda ts: datapoints.drop_all(ctx, ts["id"]))
