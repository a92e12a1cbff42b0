"""CDF RAW: databases, tables and rows, as cognite-sdk 8.x's `client.raw.databases`, `.tables` and `.rows` use them.

    GET/POST /raw/dbs, POST /raw/dbs/delete {"items", "recursive"}
    GET/POST /raw/dbs/{db}/tables[?ensureParent], POST /raw/dbs/{db}/tables/delete
    GET/POST /raw/dbs/{db}/tables/{t}/rows[?ensureParent], POST .../rows/delete, GET .../rows/{key}
    GET /raw/dbs/{db}/tables/{t}/cursors?numberOfCursors=N (the SDK's parallel reads: one cursor per partition)

Names and keys are percent-encoded path segments (the SDK quotes '/' too), so the routes are parsed from the raw
request URI rather than werkzeug's decoded path. Limits are CDF's documented ones: a row key is 1-1024 characters,
a row's columns at most 5 MiB as JSON, a column name or value at most 2,621,440 characters, 10,000 rows per insert
and per page; database names 1-32 and table names 1-64 characters. Rows are listed in key order; a cursor carries
the key it continues after, its partition's end and the time filters, so the SDK's partition reads (which send the
cursor alone) keep the filters. Each page is one LIMIT query (raw_store.py) and is encoded from the stored JSON text
without parsing it unless `columns` selects some.
"""
from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Response

from ..http.app import Ctx, Router
from ..http.errors import CDFError, bad_request
from ..http.validation import MAX_LONG
from ..raw_store import Named, Range, RawStore, RowRecord, raw_store

routes = Router()

MAX_KEY_CHARS = 1024
MAX_COLUMNS_BYTES = 5 << 20
MAX_COLUMN_CHARS = 2_621_440
MAX_ROWS_PER_REQUEST = 10_000
MAX_DB_NAME = 32
MAX_TABLE_NAME = 64
MAX_LIST = {"dbs": 1000, "tables": 1000, "rows": 10_000}
MAX_CURSORS = 10_000
DEFAULT_LIMIT = 25
# One encoder for every row: json.dumps with options builds a new encoder per call (a third of
# the time an insert spends checking rows).
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


# -- routing ----------------------------------------------------------------------------------------------------
@routes.get("/raw/<path:rest>")
def get(ctx: Ctx, rest: str) -> Any:
    return _dispatch(ctx, "GET")


@routes.post("/raw/<path:rest>")
def post(ctx: Ctx, rest: str) -> Any:
    return _dispatch(ctx, "POST")


def _segments(ctx: Ctx) -> list[str]:
    """The path after /raw/, split on '/' before percent-decoding (a name may hold an encoded '/')."""
    raw = ctx.request.environ.get("RAW_URI") or ctx.request.environ.get("REQUEST_URI") or ctx.request.path
    path = raw.split("?", 1)[0]
    marker = f"/projects/{ctx.project}/raw/"
    if marker not in path:  # a client that does not send the request URI: fall back to the decoded path
        path = ctx.request.path
    tail = path.split(marker, 1)[1] if marker in path else path.split("/raw/", 1)[1]
    return [unquote(part) for part in tail.split("/")]


def _dispatch(ctx: Ctx, method: str) -> Any:
    """The RAW operation for this method and path."""
    parts = _segments(ctx)
    store = raw_store(ctx.store)
    n = len(parts)
    if n and parts[0] == "dbs":
        if n == 1:
            return list_dbs(ctx, store) if method == "GET" else create_dbs(ctx, store)
        if n == 2 and parts[1] == "delete" and method == "POST":
            return delete_dbs(ctx, store)
        if n >= 3 and parts[2] == "tables":
            db = parts[1]
            if n == 3:
                return list_tables(ctx, store, db) if method == "GET" else create_tables(ctx, store, db)
            if n == 4 and parts[3] == "delete" and method == "POST":
                return delete_tables(ctx, store, db)
            table = parts[3]
            if n == 5 and parts[4] == "cursors" and method == "GET":
                return cursors(ctx, store, db, table)
            if n >= 5 and parts[4] == "rows":
                if n == 5:
                    return list_rows(ctx, store, db, table) if method == "GET" else insert_rows(ctx, store, db, table)
                if n == 6 and method == "POST" and parts[5] == "delete":
                    return delete_rows(ctx, store, db, table)
                if method == "GET":
                    return retrieve_row(ctx, store, db, table, "/".join(parts[5:]))
    raise CDFError(404, f"Not found: {method} {ctx.request.path}")


# -- databases and tables ---------------------------------------------------------------------------------------
def _names(ctx: Ctx, maximum: int, what: str, extra: tuple[str, ...] = ()) -> list[str]:
    body = ctx.body
    unknown = set(body) - {"items", *extra}
    if unknown:
        raise bad_request(f"Unrecognized field '{sorted(unknown)[0]}'")
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= 1000:
        raise bad_request("Field 'items' must be an array of 1 to 1000 objects like {\"name\": \"...\"}")
    names = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"name"}:
            raise bad_request(f"items[{i}] must be an object with exactly the field 'name'")
        names.append(_name(item["name"], maximum, f"items[{i}].name", what))
    return names


def _name(value: object, maximum: int, where: str, what: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= maximum:
        shown = value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value
        raise bad_request(f"Field '{where}': a {what} name must be a string of 1 to {maximum} characters, "
                          f"got {shown!r}")
    return value


def _listing(items: list[Named], limit: int) -> dict:
    page = items[:limit]
    result: dict[str, Any] = {"items": [n.as_json() for n in page]}
    if len(items) > limit:
        result["nextCursor"] = _encode({"after": page[-1].name})
    return result


def list_dbs(ctx: Ctx, store: RawStore) -> dict:
    limit = _limit(ctx, "dbs")
    after = _decode(ctx.args.get("cursor")).get("after")
    return _listing(store.list_dbs(ctx.project, after, limit + 1), limit)


def create_dbs(ctx: Ctx, store: RawStore) -> tuple[int, dict]:
    created = store.create_dbs(ctx.project, _names(ctx, MAX_DB_NAME, "database"))
    return 201, {"items": [n.as_json() for n in created]}


def delete_dbs(ctx: Ctx, store: RawStore) -> dict:
    names = _names(ctx, MAX_DB_NAME, "database", extra=("recursive",))
    recursive = ctx.body.get("recursive", False)
    if not isinstance(recursive, bool):
        raise bad_request("Field 'recursive' must be true or false")
    store.delete_dbs(ctx.project, names, recursive)
    return {}


def list_tables(ctx: Ctx, store: RawStore, db: str) -> dict:
    limit = _limit(ctx, "tables")
    after = _decode(ctx.args.get("cursor")).get("after")
    return _listing(store.list_tables(ctx.project, db, after, limit + 1), limit)


def create_tables(ctx: Ctx, store: RawStore, db: str) -> tuple[int, dict]:
    names = _names(ctx, MAX_TABLE_NAME, "table")
    created = store.create_tables(ctx.project, db, names, ctx.flag("ensureParent"))
    return 201, {"items": [n.as_json() for n in created]}


def delete_tables(ctx: Ctx, store: RawStore, db: str) -> dict:
    store.delete_tables(ctx.project, db, _names(ctx, MAX_TABLE_NAME, "table"))
    return {}


# -- rows -------------------------------------------------------------------------------------------------------
def insert_rows(ctx: Ctx, store: RawStore, db: str, table: str) -> tuple[int, dict]:
    body = ctx.body
    if set(body) - {"items"}:
        raise bad_request(f"Unrecognized field '{sorted(set(body) - {'items'})[0]}'")
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ROWS_PER_REQUEST:
        count = len(items) if isinstance(items, list) else "no"
        raise bad_request(f"Field 'items' must be an array of 1 to {MAX_ROWS_PER_REQUEST} rows, got {count}: "
                          f"insert at most {MAX_ROWS_PER_REQUEST} rows per request")
    _name(db, MAX_DB_NAME, "database", "database")
    _name(table, MAX_TABLE_NAME, "table", "table")
    rows = [_row(item, i) for i, item in enumerate(items)]
    store.insert_rows(ctx.project, db, table, rows, ctx.flag("ensureParent"))
    return 201, {}


def _row(item: object, i: int) -> tuple[str, str]:
    """(key, columns as compact JSON), refused with a 400 naming the row when it breaks CDF's limits."""
    if not isinstance(item, dict) or set(item) - {"key", "columns"}:
        raise bad_request(f"items[{i}] must be an object with the fields 'key' and 'columns'")
    key, columns = item.get("key"), item.get("columns")
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS:
        size = len(key) if isinstance(key, str) else "not a string"
        raise bad_request(f"items[{i}].key: a row key must be a string of 1 to {MAX_KEY_CHARS} characters "
                          f"(got {size})")
    if not isinstance(columns, dict):
        raise bad_request(f"items[{i}].columns (row {key[:40]!r}) must be an object of column name to value")
    try:
        text = _COMPACT(columns) if columns else "{}"
    except ValueError:  # NaN or Infinity: Python's json reads them, JSON (and CDF) has none
        raise bad_request(f"items[{i}].columns (row {key[:40]!r}) holds NaN or Infinity, which JSON does not "
                          "allow: send null or a string") from None
    if len(text) > MAX_COLUMNS_BYTES or len(text.encode()) > MAX_COLUMNS_BYTES:
        raise bad_request(f"items[{i}].columns (row {key[:40]!r}) is {len(text.encode())} bytes as JSON; a row's "
                          f"columns may hold at most {MAX_COLUMNS_BYTES} bytes: store large data in Files")
    if len(text) > MAX_COLUMN_CHARS:  # only then can one name or value be over the limit
        for name, value in columns.items():
            size = len(_COMPACT(value))
            if len(name) > MAX_COLUMN_CHARS or size > MAX_COLUMN_CHARS:
                raise bad_request(f"items[{i}].columns.{name[:40]} (row {key[:40]!r}): a column name and a "
                                  f"column value may each be at most {MAX_COLUMN_CHARS} characters")
    return key, text


def list_rows(ctx: Ctx, store: RawStore, db: str, table: str) -> Response:
    limit = _limit(ctx, "rows")
    cursor = _decode(ctx.args.get("cursor"))
    where = Range(after=cursor.get("after"), start=cursor.get("start"), until=cursor.get("until"),
                  min_updated=_time(ctx, "minLastUpdatedTime", cursor.get("min")),
                  max_updated=_time(ctx, "maxLastUpdatedTime", cursor.get("max")))
    selected = _columns(ctx.args.get("columns"))
    table_id = store.table_id(ctx.project, db, table)
    rows = store.page(table_id, where, limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = _encode({"after": rows[-1][0], "until": where.until, "min": where.min_updated,
                               "max": where.max_updated})
    encoded = ",".join(_row_json(r, selected) for r in rows)
    tail = f',"nextCursor":{json.dumps(next_cursor)}' if next_cursor else ""
    return Response(f'{{"items":[{encoded}]{tail}}}', mimetype="application/json")


def _row_json(row: RowRecord, selected: list[str] | None) -> str:
    key, updated, columns = row
    if selected is not None:
        values = json.loads(columns)
        columns = _COMPACT({c: values[c] for c in selected if c in values})
    return f'{{"key":{json.dumps(key)},"columns":{columns},"lastUpdatedTime":{updated}}}'


def _columns(value: str | None) -> list[str] | None:
    """`columns=a,b` selects those columns; `columns=,` (the SDK's empty list) keys only; absent or empty: all."""
    if not value:
        return None
    return [c for c in value.split(",") if c]


def retrieve_row(ctx: Ctx, store: RawStore, db: str, table: str, key: str) -> Response:
    found = store.row(store.table_id(ctx.project, db, table), key)
    if found is None:
        raise CDFError(404, f"Row {key[:100]!r} not found in table {table!r} of database {db!r}",
                       missing=[{"key": key}])
    return Response(_row_json(found, None), mimetype="application/json")


def delete_rows(ctx: Ctx, store: RawStore, db: str, table: str) -> dict:
    items = ctx.body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ROWS_PER_REQUEST:
        raise bad_request(f"Field 'items' must be an array of 1 to {MAX_ROWS_PER_REQUEST} objects like "
                          "{\"key\": \"...\"}")
    keys = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"key"} or not isinstance(item["key"], str):
            raise bad_request(f"items[{i}] must be an object with exactly the string field 'key'")
        keys.append(item["key"])
    store.delete_rows(store.table_id(ctx.project, db, table), keys)
    return {}


def cursors(ctx: Ctx, store: RawStore, db: str, table: str) -> dict:
    """numberOfCursors cursors, each reading one run of the table's keys (fewer when the table has fewer rows)."""
    count = _int_arg(ctx, "numberOfCursors")
    if count is None or not 1 <= count <= MAX_CURSORS:
        raise bad_request(f"Query parameter 'numberOfCursors' must be an integer from 1 to {MAX_CURSORS}, "
                          f"got {ctx.args.get('numberOfCursors')!r}")
    where = Range(min_updated=_time(ctx, "minLastUpdatedTime", None),
                  max_updated=_time(ctx, "maxLastUpdatedTime", None))
    cuts = store.split_keys(store.table_id(ctx.project, db, table), where, count)
    starts: list[str | None] = [None, *cuts]
    ends: list[str | None] = [*cuts, None]
    return {"items": [_encode({"start": s, "until": e, "min": where.min_updated, "max": where.max_updated})
                      for s, e in zip(starts, ends)]}


# -- query parameters and cursors -------------------------------------------------------------------------------
def _int_arg(ctx: Ctx, name: str) -> int | None:
    value = ctx.args.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Query parameter '{name}' must be an integer, got {value!r}") from None


def _limit(ctx: Ctx, what: str) -> int:
    limit = _int_arg(ctx, "limit")
    maximum = MAX_LIST[what]
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= maximum:
        raise bad_request(f"Query parameter 'limit' must be from 1 to {maximum}, got {limit}")
    return limit


def _time(ctx: Ctx, name: str, from_cursor: object) -> int | None:
    """A time filter in ms (>= 0): the query parameter, else the one the cursor carries."""
    value = _int_arg(ctx, name)
    if value is None:
        return from_cursor if isinstance(from_cursor, int) else None
    if not 0 <= value <= MAX_LONG:
        raise bad_request(f"Query parameter '{name}' must be a time in ms since the epoch (0 or more), got {value}")
    return value


def _encode(state: dict[str, Any]) -> str:
    text = json.dumps({k: v for k, v in state.items() if v is not None}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


def _decode(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        state = None
    if not isinstance(state, dict) or not all(isinstance(state.get(k), (str, type(None)))
                                              for k in ("after", "start", "until")):
        raise bad_request(f"Invalid cursor {cursor[:60]!r}: pass a nextCursor or a /cursors item unchanged")
    return state
