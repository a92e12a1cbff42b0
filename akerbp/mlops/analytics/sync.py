"""Bringing the cache up to date: the pages RAW updated since the last sync (pages.py) merged into raw_calls by key.

A sync fetches only what RAW updated after the highest lastUpdatedTime the cache has seen, and what RAW stamped in
the OVERLAP_MS before the previous sync began (by the server's clock: a write in flight then), merged by key; a query
reaching back before what the cache covers fetches everything since then.

Loading: DuckDB reads a batch of page files (their items arrays) with one read_json(format='array'): row by row, as
fast as newline-delimited JSON. (read_json of each page as one 7 MB document, format='unstructured', with `items`
typed as a list, was ~10x slower: 5.5 s against 0.4 s for 50,000 rows.) Then one merge per batch: DELETE the staged
keys, INSERT the staged rows (no PRIMARY KEY index: a key seen twice in a batch is deduplicated there).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from akerbp.mlops.analytics.cache import Sync, stored_names
from akerbp.mlops.analytics.pages import PARTITIONS, Pages, fetch
from akerbp.mlops.analytics.schema import NO_NAMES, ROW_COLUMNS, STAT, STRUCT_COLUMNS, quote_name, quote_text

if TYPE_CHECKING:
    import duckdb
    from cognite.client import CogniteClient

# A write RAW stamped this long before a sync began may have been invisible to it (committed after the listing; the
# local CDF stamps an insert before it waits for the write lock). Bounded: what it refetches is the rows written in
# that window, deduplicated by key.
OVERLAP_MS = 2_000
BATCH_PAGES = 20  # pages loaded into DuckDB at a time (200,000 rows): bounds the temporary files of a full fetch


def _max_size(files: list[Path]) -> int:
    """DuckDB's buffer for one JSON value (a row): bounded by the largest page, not a fixed 1 GB (which, doubled,
    failed to allocate under a function's memory cap)."""
    return max(1 << 20, max(f.stat().st_size for f in files) + 1)


def _listed(files: list[Path]) -> str:
    return "[" + ", ".join(quote_text(str(f)) for f in files) + "]"


def _typed_select(files: list[Path]) -> str:
    columns = ", ".join(f"{quote_name(name)} {kind}" for name, kind in ROW_COLUMNS.items())
    shape = {"key": "VARCHAR", "lastUpdatedTime": "BIGINT", "columns": f"STRUCT({columns})"}
    return (f"SELECT key, lastUpdatedTime AS updated_ms, unnest(columns) FROM read_json({_listed(files)}, "
            f"columns={{{', '.join(f'{quote_text(k)}: {quote_text(v)}' for k, v in shape.items())}}}, format='array', "
            f"maximum_object_size={_max_size(files)})")


def _lenient_select(files: list[Path]) -> str:
    """Row by row through JSON: a value of the wrong type becomes NULL instead of failing the whole batch."""
    casts = ", ".join(
        f"TRY_CAST(c->'{name}' AS {kind}) AS \"{name}\"" if kind.startswith("MAP") or kind == "JSON"
        else f"TRY_CAST(c->>'{name}' AS {kind}) AS \"{name}\""
        for name, kind in ROW_COLUMNS.items())
    return (f"SELECT j->>'key' AS key, TRY_CAST(j->>'lastUpdatedTime' AS BIGINT) AS updated_ms, {casts} FROM "
            f"(SELECT json AS j, json->'columns' AS c FROM read_json_objects({_listed(files)}, format='array', "
            f"maximum_object_size={_max_size(files)}))")


def _packed(column: str, names: Iterable[str]) -> str:
    """A staged MAP column as the stored STRUCT of these names."""
    names = sorted(set(names))
    if not names:
        return f"NULL::STRUCT({quote_name(NO_NAMES)} {STAT})"
    return "struct_pack(" + ", ".join(f"{quote_name(n)} := {column}[{quote_text(n)}]" for n in names) + ")"


def _widened(column: str, known: set[str], new: set[str]) -> str:
    """The stored STRUCT column with the new names added (NULL in the rows stored before them)."""
    fields = [f"{quote_name(n)} := {column}.{quote_name(n)}" for n in sorted(known)]
    fields += [f"{quote_name(n)} := NULL::{STAT}" for n in sorted(new)]
    return "struct_pack(" + ", ".join(fields) + ")"


def load(con: duckdb.DuckDBPyConnection, files: list[Path]) -> tuple[int, int | None]:
    """Merge the rows of these pages into raw_calls by key (a key's newest lastUpdatedTime wins): (rows loaded,
    their highest lastUpdatedTime)."""
    import duckdb

    if not files:
        return 0, None
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE staging AS {_typed_select(files)}")
    except (duckdb.ConversionException, duckdb.InvalidInputException):
        con.execute(f"CREATE OR REPLACE TEMP TABLE staging AS {_lenient_select(files)}")
    count, keys, high = con.execute("SELECT count(key), count(DISTINCT key), max(updated_ms) "  # type: ignore[misc]
                                    "FROM staging").fetchone()
    rows_ = "staging WHERE key IS NOT NULL"
    if keys < count:  # a key seen twice (a partition boundary, a page refetched): its latest version
        rows_ += " QUALIFY row_number() OVER (PARTITION BY key ORDER BY updated_ms DESC) = 1"
    con.execute("BEGIN")
    known = {kind: stored_names(con, kind) for kind in STRUCT_COLUMNS}
    new = {kind: {r[0] for r in con.execute(f"SELECT DISTINCT unnest(map_keys({kind})) FROM staging WHERE {kind} "
                                            "IS NOT NULL").fetchall()} - known[kind] for kind in STRUCT_COLUMNS}
    if any(new.values()):  # widen the STRUCTs (rare: a new feature)
        widened = ", ".join(f"{_widened(kind, known[kind], new[kind])} AS {kind}" for kind in STRUCT_COLUMNS)
        con.execute(f"CREATE OR REPLACE TABLE raw_calls AS SELECT * REPLACE ({widened}) FROM raw_calls")
        con.executemany("INSERT INTO names VALUES (?, ?)", [[k, n] for k in STRUCT_COLUMNS for n in sorted(new[k])])
    con.execute("DELETE FROM raw_calls WHERE key IN (SELECT key FROM staging)")
    packed = ", ".join(f"{_packed(kind, known[kind] | new[kind])} AS {kind}" for kind in STRUCT_COLUMNS)
    con.execute(f"INSERT INTO raw_calls SELECT * REPLACE ({packed}) FROM {rows_}")
    con.execute("COMMIT")
    con.execute("DROP TABLE staging")
    return int(count), high


def started_ms(client_ms: int, server_ms: int | None) -> int:
    """When a sync began by the server's clock (lastUpdatedTime is its): this machine's, moved into the second the
    server's first response names (Date, whole seconds) when the two clocks disagree by more than that."""
    if server_ms is None:
        return client_ms
    return min(max(client_ms, server_ms), server_ms + 999)


def sync(con: duckdb.DuckDBPyConnection, sync_: Sync, client: CogniteClient, db: str, table: str,
         since_ms: int | None, overlap_ms: int = OVERLAP_MS, partitions: int = PARTITIONS) -> Sync:
    """Bring the cache up to date for a query of the calls since `since_ms` (None: all of them)."""
    started = time.perf_counter()
    covered_from, high, synced_at = con.execute("SELECT covered_from, high, synced_at FROM meta").fetchone()  # type: ignore[misc]
    now = int(time.time() * 1000)  # the sync's start when the server's clock is unknown
    # Full: nothing cached yet, or the cache starts after what this query wants.
    sync_.full = high is None or (covered_from is not None and (since_ms is None or since_ms < covered_from))
    if sync_.full:
        min_updated = None if since_ms is None else since_ms - overlap_ms  # calls are written after they start
    else:
        # Rows stamped after the newest one seen, and those stamped shortly before the last sync started (a write
        # in flight then may commit with an earlier time than rows that sync saw).
        min_updated = max(0, min(high, (synced_at or high) - overlap_ms))
    sync_.min_updated = min_updated
    folder = Path(tempfile.mkdtemp(prefix="mlops-analytics-"))
    pages = Pages(client, db, table, folder)
    top: int | None = None
    try:
        with ThreadPoolExecutor(1) as runner:  # DuckDB loads a batch of pages while the next ones are fetched
            fetching = runner.submit(fetch, pages, min_updated, full=sync_.full, partitions=partitions)
            try:
                batch: list[Path] = []
                done = False
                while not done:
                    page = pages.ready.get()  # fetch() always ends with None
                    done = page is None
                    if page is not None:
                        batch.append(page)
                    if batch and (done or len(batch) >= BATCH_PAGES):
                        loading = time.perf_counter()
                        count, high_ = load(con, sorted(batch))
                        sync_.load_seconds += time.perf_counter() - loading
                        sync_.fetched += count
                        top = high_ if top is None or (high_ is not None and high_ > top) else top
                        for f in batch:
                            f.unlink()
                        batch = []
            except BaseException:
                pages.stopped = True
                raise
            fetching.result()
    finally:
        sync_.requests = pages.requests
        shutil.rmtree(folder, ignore_errors=True)
    # Only now that every page is in: a failed fetch leaves `high` where it was, so its rows are fetched again.
    if top is not None:
        con.execute("UPDATE meta SET high = greatest(coalesce(high, 0), ?)", [top])
    con.execute("UPDATE meta SET synced_at = ?", [started_ms(now, pages.server_ms)])
    if sync_.full:
        con.execute("UPDATE meta SET covered_from = ?", [since_ms])
    sync_.stored = con.execute("SELECT count(*) FROM raw_calls").fetchone()[0]  # type: ignore[index]
    sync_.seconds = time.perf_counter() - started
    return sync_
