"""The standard routes every resource kind shares, declared once: create, byids, get one, filtered cursor lists
(POST and GET), count, update and delete come from `Kind.serve`; an API module names the kind, its fields, filters
and checks, and writes only what is its own (files' uploads, functions' builds, schedules' firing).

Also what events and time series share: sorted lists, counts and the dataSetId check. The store pages in id order
only; a sorted list therefore reads every matching body, sorts in Python and pages with an offset cursor:
O(matching bodies) per page.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Callable

from ..store import public
from .app import Ctx, Router
from .errors import bad_request, duplicated
from .filters import Clause
from .validation import NUMBER, check, identifiers, items, limit, partition

# validate(ctx, body, where): refuse a created or updated body (400 naming `where`).
Validate = Callable[[Ctx, dict, str], None]
# The standard operations a kind can serve (Kind.serve's `ops`).
STANDARD = ("create", "byids", "one", "list", "list_get", "aggregate", "update", "delete")


@dataclass
class Kind:
    """One resource type: its store kind, display name and how its list filter and updates work."""

    kind: str
    what: str
    filters: dict[str, Callable[[Any, Ctx], Clause]] = field(default_factory=dict)
    updatable: dict[str, Any] = field(default_factory=dict)  # field -> type; dict/list fields also take add/remove
    max_limit: int = 1000
    view: Callable[[dict], dict] = public
    sortable: frozenset[str] = frozenset()  # properties CDF's `sort` accepts on this kind's list; empty: no sort
    byids_max_items: int = 1000
    snake_case_ids: bool = False  # byids errors name unknown ids in snake_case (functions do)

    def serve(self, router: Router, path: str, id_name: str, ops: tuple[str, ...] = STANDARD, *,
              fields: dict | None = None, defaults: dict | None = None, validate: Validate | None = None,
              on_delete: Callable[[Ctx, dict], None] | None = None, get_filters: tuple[str, ...] = ()) -> None:
        """Declare the standard routes `ops` of this kind under `path` (e.g. "/events"). id_name names the id in
        GET {path}/{id} (its errors say it); get_filters: the query parameters GET {path} takes as filters."""
        unknown = set(ops) - set(STANDARD)
        if unknown:
            raise ValueError(f"Kind.serve: unknown operations {sorted(unknown)} (known: {', '.join(STANDARD)})")

        def check_with(ctx: Ctx) -> Callable[[dict, str], None] | None:
            return (lambda body, where: validate(ctx, body, where)) if validate else None

        handlers: dict[str, tuple[str, str, Callable[..., dict]]] = {
            "create": ("POST", path, lambda ctx: self.create(ctx, fields or {}, check_with(ctx), defaults)),
            "byids": ("POST", f"{path}/byids", self.byids),
            "one": ("GET", f"{path}/<int:{id_name}>", lambda ctx, **ids: self.one(ctx, ids[id_name])),
            "list": ("POST", f"{path}/list", lambda ctx: self.list(ctx)),
            "list_get": ("GET", path, lambda ctx: self.list(ctx, body=query_args(ctx, get_filters))),
            "aggregate": ("POST", f"{path}/aggregate", lambda ctx: aggregate_count(ctx, self)),
            "update": ("POST", f"{path}/update", lambda ctx: self.update(ctx, validate=check_with(ctx))),
            "delete": ("POST", f"{path}/delete", lambda ctx: self.delete(ctx, on_delete)),
        }
        for op in ops:
            method, route, handler = handlers[op]
            router.route(method, route)(handler)

    def compile_filter(self, ctx: Ctx, flt: Any) -> Clause:
        if flt is None:
            return "", []
        if not isinstance(flt, dict):
            raise bad_request("Field 'filter' must be an object")
        clauses, params = [], []
        for key, value in flt.items():
            if key not in self.filters:
                raise bad_request(f"Unrecognized field 'filter.{key}' (the local CDF supports: "
                                  f"{', '.join(sorted(self.filters))})")
            if value is None:
                continue
            clause, args = self.filters[key](value, ctx)
            clauses.append(f"({clause})")
            params += args
        return " AND ".join(clauses), params

    # -- the shared endpoints ---------------------------------------------------------------------------------
    def create(self, ctx: Ctx, fields: dict, validate: Callable[[dict, str], None] | None,
               defaults: dict | None = None) -> dict:
        """Create items, each checked against `fields` and `validate(item, where)`; all or nothing."""
        bodies = []
        for i, item in enumerate(items(ctx.body)):
            where = f"items[{i}]"
            check(item, fields, where)
            if validate:
                validate(item, where)
            bodies.append({**(defaults or {}), **{k: v for k, v in item.items() if v is not None}})
        return {"items": [self.view(b) for b in ctx.store.insert_many(ctx.project, self.kind, bodies, self.what)]}

    def byids(self, ctx: Ctx) -> dict:
        check(ctx.body, {"items": list, "ignoreUnknownIds": bool}, "", required=("items",))
        found = ctx.store.resolve(ctx.project, self.kind, identifiers(ctx.body, max_items=self.byids_max_items),
                                  ignore_unknown=bool(ctx.body.get("ignoreUnknownIds")), what=self.what,
                                  snake_case=self.snake_case_ids)
        return {"items": [self.view(b) for b in found]}

    def one(self, ctx: Ctx, resource_id: int) -> dict:
        return self.view(ctx.store.resolve(ctx.project, self.kind, [{"id": resource_id}], what=self.what)[0])

    def list(self, ctx: Ctx, extra: Clause | None = None, body: dict | None = None) -> dict:
        body = ctx.body if body is None else body
        if self.sortable and body.get("sort") is not None:
            return sorted_list(ctx, self, body, self.sortable)
        body = {k: v for k, v in body.items() if k != "sort" or not self.sortable}
        check(body, {"filter": dict, "limit": int, "cursor": str, "partition": str}, "")
        where, params = self.compile_filter(ctx, body.get("filter"))
        clauses = [w for w in (where, extra[0] if extra else "") if w]
        rows, cursor = ctx.store.query(ctx.project, self.kind, clauses, params + (extra[1] if extra else []),
                                       limit(body, maximum=self.max_limit), body.get("cursor"), partition(body))
        return {"items": [self.view(b) for b in rows], "nextCursor": cursor}

    def delete(self, ctx: Ctx, on_delete: Callable[[Ctx, dict], None] | None = None) -> dict:
        check(ctx.body, {"items": list, "ignoreUnknownIds": bool}, "", required=("items",))
        with ctx.store.write() as db:
            found = ctx.store.resolve(ctx.project, self.kind, identifiers(ctx.body), db=db,
                                      ignore_unknown=bool(ctx.body.get("ignoreUnknownIds")), what=self.what)
            ctx.store.delete(db, ctx.project, self.kind, [b["id"] for b in found])
        for body in found:
            if on_delete:
                on_delete(ctx, body)
        return {}

    def update(self, ctx: Ctx, validate: Callable[[dict, str], None] | None = None) -> dict:
        check(ctx.body, {"items": list}, "", required=("items",))
        raw = ctx.body["items"]
        if not 1 <= len(raw) <= 1000:
            raise bad_request("Field 'items' must have between 1 and 1000 items")
        with ctx.store.write() as db:
            updated = []
            for i, item in enumerate(raw):
                where = f"items[{i}]"
                check(item, {"id": int, "externalId": str, "update": dict}, where, required=("update",))
                for name, op in item["update"].items():  # the request's shape first, as CDF does
                    self._apply({}, name, op, f"{where}.update.{name}")
                ident = identifiers({"items": [{k: item[k] for k in ("id", "externalId") if k in item}]})
                body = ctx.store.resolve(ctx.project, self.kind, ident, db=db, what=self.what)[0]
                for name, op in item["update"].items():
                    self._apply(body, name, op, f"{where}.update.{name}")
                if validate:
                    validate(body, where)
                if "externalId" in item["update"]:
                    clash = ctx.store.get_xid(ctx.project, self.kind, body.get("externalId"), db)
                    if body.get("externalId") is not None and clash and clash["id"] != body["id"]:
                        raise duplicated([{"externalId": body["externalId"]}], self.what)
                updated.append(ctx.store.save(db, ctx.project, self.kind, body))
        return {"items": [self.view(b) for b in updated]}

    def _apply(self, body: dict, name: str, op: Any, where: str) -> None:
        if name not in self.updatable:
            raise bad_request(f"Unrecognized field '{where}' (updatable: {', '.join(sorted(self.updatable))})")
        expected = self.updatable[name]
        if not isinstance(op, dict) or not op:
            raise bad_request(f"Field '{where}' must be an object like {{\"set\": ...}}")
        allowed = {"set", "setNull"} | ({"add", "remove"} if expected in (dict, list) else set())
        unknown = set(op) - allowed
        if unknown:
            raise bad_request(f"Unrecognized field '{where}.{sorted(unknown)[0]}' (allowed: {', '.join(sorted(allowed))})")
        if op.get("setNull"):
            body.pop(name, None)
            return
        if "set" in op:
            value = op["set"]
            if not isinstance(value, expected) or (isinstance(value, bool) and expected in (int, NUMBER)):
                raise bad_request(f"Field '{where}.set' has the wrong type")
            body[name] = value
            return
        if expected is dict:
            mapping: dict = body.get(name) or {}
            add, remove = op.get("add") or {}, op.get("remove") or []
            if not isinstance(add, dict) or not isinstance(remove, list):
                raise bad_request(f"Field '{where}': add must be an object and remove an array of keys")
            body[name] = {**{k: v for k, v in mapping.items() if k not in remove}, **add}
        else:
            values: list = body.get(name) or []
            add, remove = op.get("add") or [], op.get("remove") or []
            if not isinstance(add, list) or not isinstance(remove, list):
                raise bad_request(f"Field '{where}': add and remove must be arrays")
            body[name] = [v for v in values if v not in remove] + [v for v in add if v not in values]


# -- shared by events and time series ----------------------------------------------------------------------
def query_args(ctx: Ctx, filter_keys: tuple[str, ...] = ()) -> dict:
    """A GET list's query string as the body of the matching POST list."""
    body: dict[str, Any] = {k: ctx.args[k] for k in ("cursor", "partition") if k in ctx.args}
    if "limit" in ctx.args:
        try:
            body["limit"] = int(ctx.args["limit"])
        except ValueError:
            raise bad_request(f"Query parameter 'limit' must be an integer, got {ctx.args['limit']!r}") from None
    flt = {k: ctx.args[k] for k in filter_keys if k in ctx.args}
    if flt:
        body["filter"] = flt
    return body


def check_data_set(ctx: Ctx, body: dict, where: str) -> None:
    """CDF refuses a dataSetId that does not exist instead of storing a dangling reference."""
    ds = body.get("dataSetId")
    if ds is not None and ctx.store.get(ctx.project, "datasets", ds) is None:
        raise bad_request(f"Field '{where}.dataSetId': data set {ds} does not exist")


def sorted_list(ctx: Ctx, kind: Kind, body: dict, sortable: frozenset[str]) -> dict:
    """A list with CDF's `sort` (events, time series): reads all matches, sorts, pages by offset."""
    check(body, {"filter": dict, "limit": int, "cursor": str, "sort": list, "partition": str}, "")
    if body.get("partition") is not None:
        raise bad_request("Fields 'sort' and 'partition' cannot be used together")
    specs = _sort_specs(body["sort"], sortable)
    where, params = kind.compile_filter(ctx, body.get("filter"))
    rows, _ = ctx.store.query(ctx.project, kind.kind, [where] if where else [], params)
    for prop, desc, nulls_first in reversed(specs):  # stable sorts, least significant key first
        rows = _sort_by(rows, prop, desc, nulls_first)
    size, offset = limit(body, maximum=kind.max_limit), _offset(body.get("cursor"))
    page = rows[offset:offset + size]
    more = offset + size < len(rows)
    return {"items": [kind.view(b) for b in page], "nextCursor": _cursor(offset + size) if more else None}


def _sort_specs(raw: list, sortable: frozenset[str]) -> list[tuple[list[str], bool, bool]]:
    if not 1 <= len(raw) <= 2:
        raise bad_request("Field 'sort' must have 1 or 2 items")
    specs = []
    for i, spec in enumerate(raw):
        where = f"sort[{i}]"
        check(spec, {"property": list, "order": str, "nulls": str}, where, required=("property",))
        prop = spec["property"]
        valid = (len(prop) == 1 and prop[0] in sortable) or (
            len(prop) == 2 and prop[0] == "metadata" and isinstance(prop[1], str))
        if not valid:
            raise bad_request(f"Field '{where}.property' cannot sort on {prop!r} (sortable: "
                              f"{', '.join(sorted(sortable))}, or ['metadata', key])")
        order, nulls = spec.get("order") or "asc", spec.get("nulls") or "auto"
        if order not in ("asc", "desc"):
            raise bad_request(f"Field '{where}.order' must be 'asc' or 'desc', got {order!r}")
        if nulls not in ("auto", "first", "last"):
            raise bad_request(f"Field '{where}.nulls' must be 'auto', 'first' or 'last', got {nulls!r}")
        desc = order == "desc"
        # auto: nulls count as the largest value, so they come last ascending and first descending.
        specs.append((prop, desc, nulls == "first" or (nulls == "auto" and desc)))
    return specs


def _sort_by(rows: list[dict], prop: list[str], desc: bool, nulls_first: bool) -> list[dict]:
    def value(row):
        for part in prop:
            row = row.get(part) if isinstance(row, dict) else None
        return row

    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    present.sort(key=value, reverse=desc)
    return missing + present if nulls_first else present + missing


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"sorted:{offset}".encode()).decode()


def _offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        tag, offset = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        if tag == "sorted":
            return int(offset)
    except ValueError:
        pass
    raise bad_request(f"Invalid cursor for a sorted list: {cursor!r}")


def aggregate_count(ctx: Ctx, kind: Kind) -> dict:
    """Only `count` with a simple filter (client.<api>.aggregate_count()); no advancedFilter or properties."""
    check(ctx.body, {"filter": dict, "aggregate": str}, "")
    if ctx.body.get("aggregate", "count") != "count":
        raise bad_request(f"The local CDF supports only aggregate 'count', got {ctx.body['aggregate']!r}")
    where, params = kind.compile_filter(ctx, ctx.body.get("filter"))
    rows, _ = ctx.store.query(ctx.project, kind.kind, [where] if where else [], params)
    return {"items": [{"count": len(rows)}]}
