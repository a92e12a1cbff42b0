"""Data sets: create, byids, list, update. CDF never deletes data sets, and neither do we."""
from __future__ import annotations

from ..http.app import Router
from ..http.filters import eq, metadata, prefix, time_range
from ..http.resources import Kind
from ..http.validation import metadata_limits, text_limits

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
    text_limits(body, where, {"externalId": 255, "name": 50, "description": 500})
    metadata_limits(body.get("metadata"), f"{where}.metadata", 256, 128, 10240, 10240)


DATASETS.serve(routes, "/datasets", "dataset_id", ("create", "byids", "list", "update"), fields=FIELDS,
               validate=lambda ctx, body, where: _validate(body, where),
               defaults={"writeProtected": False, "metadata": {}})
