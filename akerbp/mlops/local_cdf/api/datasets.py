"""Data sets: create, byids, list, update. CDF never deletes data sets, and neither do we."""
from __future__ import annotations

from .app import Ctx, Router
from .resources import Kind, eq, metadata, prefix, time_range
from .validation import metadata_limits, text_limit

routes = Router()
FIELDS = {"externalId": str, "name": str, "description": str, "metadata": dict, "writeProtected": bool}
DATASETS = Kind(
    "datasets",
    "Data sets",
    filters={"metadata": metadata, "externalIdPrefix": prefix("externalId"), "writeProtected": eq("writeProtected"),
             "createdTime": time_range("createdTime"), "lastUpdatedTime": time_range("lastUpdatedTime")},
    updatable={k: v for k, v in FIELDS.items()},
)


def _validate(body: dict, where: str) -> None:
    text_limit(body.get("externalId"), f"{where}.externalId", 255)
    text_limit(body.get("name"), f"{where}.name", 50)
    text_limit(body.get("description"), f"{where}.description", 500)
    metadata_limits(body.get("metadata"), f"{where}.metadata", 256, 128, 10240, 10240)


@routes.post("/datasets")
def create(ctx: Ctx) -> dict:
    return DATASETS.create(ctx, FIELDS, _validate, defaults={"writeProtected": False, "metadata": {}})


@routes.post("/datasets/byids")
def byids(ctx: Ctx) -> dict:
    return DATASETS.byids(ctx)


@routes.post("/datasets/list")
def list_datasets(ctx: Ctx) -> dict:
    return DATASETS.list(ctx)


@routes.post("/datasets/update")
def update(ctx: Ctx) -> dict:
    return DATASETS.update(ctx, validate=_validate)
