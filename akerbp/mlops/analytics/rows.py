"""The tables a query sees: a connection whose `calls` view reads the model's call rows from the local cache
(cache.py), brought up to date from RAW first (sync.py), and whose `versions` table lists the registry's versions
(versions.py); their columns are schema.py's.

Queries see the cache read-only, so SQL cannot change it. `calls` shows features and prediction as STRUCTs of the names
the rows have, plus any the query reads that none has (NULL), so a query binds before any call had that feature.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from akerbp.mlops.analytics.cache import Sync, cache_file, connect, create, identity, open_cache, stored_names
from akerbp.mlops.analytics.schema import NO_NAMES, ROW_COLUMNS, STAT, STRUCT_COLUMNS, quote_name, quote_text
from akerbp.mlops.analytics.sync import OVERLAP_MS, sync
from akerbp.mlops.analytics.versions import versions_of, versions_table
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database

if TYPE_CHECKING:
    import duckdb
    from cognite.client import CogniteClient

_LOCK = threading.Lock()  # one sync of a cache file at a time in this process (DuckDB locks across processes)


@dataclass
class Tables:
    """An open DuckDB connection with the `calls` view and the `versions` table, and their names."""

    con: duckdb.DuckDBPyConnection
    feature_names: dict[str, list[str]] = field(default_factory=dict)  # features/prediction/metrics -> names
    sync: Sync = field(default_factory=Sync)

    def close(self) -> None:
        self.con.close()


def with_referenced(column: str, stored: set[str], wanted: set[str]) -> str:
    """The stored STRUCT column plus the names the query reads that no row has (NULL): the query binds."""
    absent = sorted(wanted - stored - {NO_NAMES})
    if not absent:
        return column
    return f"struct_insert({column}, " + ", ".join(f"{quote_name(n)} := NULL::{STAT}" for n in absent) + f") AS {column}"


def referenced(sql: str, column: str) -> set[str]:
    """The field names the query reads of a STRUCT column (`features.GR`, `features."my name"`): present in the
    STRUCT even when no row has them, so a query binds before any call had that feature."""
    pattern = rf'\b{column}\s*\.\s*(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))'
    return {(quoted.replace('""', '"') if quoted else bare) for quoted, bare in re.findall(pattern, sql)}


def calls_view(source: str, stored: dict[str, set[str]], wanted: dict[str, set[str]], since_ms: int | None) -> str:
    plain = [c for c in ROW_COLUMNS if c not in STRUCT_COLUMNS and c not in ("time",)]
    columns = ["key", 'epoch_ms("time") AS "time"', '"time" AS time_ms',
               *(quote_name(c) for c in plain if c not in ("sample", "sample_truncated")),
               *(with_referenced(c, stored[c], wanted[c]) for c in STRUCT_COLUMNS), "sample", "sample_truncated",
               "updated_ms"]
    where = f' WHERE "time" >= {int(since_ms)}' if since_ms is not None else ""
    return f"CREATE OR REPLACE TEMP VIEW calls AS SELECT {', '.join(columns)} FROM {source}{where}"


def empty_tables(sql: str) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with EMPTY tables of the schema (check_sql: no CDF needed)."""

    con = connect(":memory:")
    create(con, "check")
    none: set[str] = set()
    con.execute(calls_view("main.raw_calls", {c: none for c in STRUCT_COLUMNS},
                           {c: referenced(sql, c) for c in STRUCT_COLUMNS}, None))
    versions_table(con, [], referenced(sql, "metrics"))
    return con


def open_tables(client: CogniteClient, model: str, env: str, sql: str, since_ms: int | None = None, *,
                use_cache: bool = True, overlap_ms: int = OVERLAP_MS, versions: bool = True) -> Tables:
    """The cache brought up to date and a connection whose `calls` and `versions` are ready for `sql`; with
    versions=False no `versions` table (it lists the registry: the dashboard has the versions already)."""
    db, table = analytics_database(env), analytics_calls_table(model)
    ident = identity(client, db, table)
    path = cache_file(client, db, table) if use_cache else None
    con = connect(":memory:")
    try:
        with _LOCK:
            sync_ = open_cache(con, path, ident)
            sync(con, sync_, client, db, table, since_ms, overlap_ms)
            stored = {kind: stored_names(con, kind) for kind in STRUCT_COLUMNS}
            source = "memory.main.raw_calls"
            if sync_.cache != ":memory:":  # queries read the file read-only: SQL cannot change the cache
                con.execute("USE memory")
                con.execute("DETACH cache")
                con.execute(f"ATTACH {quote_text(sync_.cache)} AS cache (READ_ONLY)")
                source = "cache.main.raw_calls"
        con.execute(calls_view(source, stored, {kind: referenced(sql, kind) for kind in STRUCT_COLUMNS}, since_ms))
        if versions:
            versions_table(con, versions_of(client, model, env), referenced(sql, "metrics"))
    except BaseException:
        con.close()
        raise
    return Tables(con, {k: sorted(v) for k, v in stored.items()}, sync_)
