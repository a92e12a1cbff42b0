"""CDF list filters compiled to SQL where-clauses over the stored JSON bodies (SQLite's json_extract), which the
store runs: a list of 10,000 files with a metadata filter is one indexed scan, not 10,000 decoded bodies. Each
builder takes the filter's value and the request's Ctx and returns (clause, parameters); values are always
parameters, never spliced into the SQL (names come from the code, not the request).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from .errors import bad_request
from .validation import check, identifiers

if TYPE_CHECKING:
    from .app import Ctx

Clause = tuple[str, list]


def _path(name: str) -> str:
    return "$." + ".".join(f'"{part}"' for part in name.split("."))


def eq(name: str) -> Callable[[Any, Ctx], Clause]:
    def build(value, ctx):
        if isinstance(value, bool):
            return f"json_extract(body, '{_path(name)}') = ?", [1 if value else 0]
        return f"json_extract(body, '{_path(name)}') = ?", [value]

    return build


def prefix(name: str) -> Callable[[Any, Ctx], Clause]:
    def build(value, ctx):
        if not isinstance(value, str):
            raise bad_request(f"Filter '{name}Prefix' must be a string")
        column = "external_id" if name == "externalId" else f"json_extract(body, '{_path(name)}')"
        # A range, so the externalId index serves it; chr(0x10FFFF) sorts after every real character.
        return f"{column} >= ? AND {column} < ?", [value, value + "\U0010ffff"]

    return build


def time_range(name: str) -> Callable[[Any, Ctx], Clause]:
    def build(value, ctx):
        check(value, {"min": int, "max": int}, f"filter.{name}")
        clauses, params = [], []
        if value.get("min") is not None:
            clauses.append(f"json_extract(body, '{_path(name)}') >= ?")
            params.append(value["min"])
        if value.get("max") is not None:
            clauses.append(f"json_extract(body, '{_path(name)}') <= ?")
            params.append(value["max"])
        return " AND ".join(clauses) or "1", params

    return build


def metadata(value, ctx) -> Clause:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise bad_request("Filter 'metadata' must be an object of strings")
    params: list = []
    for k, v in value.items():
        params += ['$.metadata."' + k.replace('"', '\\"') + '"', v]
    return " AND ".join("json_extract(body, ?) = ?" for _ in value) or "1", params


def contains_any(name: str) -> Callable[[Any, Ctx], Clause]:
    def build(value, ctx):
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            raise bad_request(f"Filter '{name}' must be an array of integers")
        marks = ",".join("?" * len(value)) or "NULL"
        return f"EXISTS (SELECT 1 FROM json_each(body, '{_path(name)}') WHERE value IN ({marks}))", list(value)

    return build


def data_set_ids(value, ctx) -> Clause:
    if not isinstance(value, list):
        raise bad_request("Filter 'dataSetIds' must be an array of {id} or {externalId}")
    found = ctx.store.resolve(ctx.project, "datasets", identifiers({"items": value}, max_items=100),
                              ignore_unknown=True)
    ids = [d["id"] for d in found]
    marks = ",".join("?" * len(ids)) or "NULL"
    return f"json_extract(body, '$.dataSetId') IN ({marks})", ids
