"""The analytics tables in DuckDB: a model's call rows from RAW (kept in a local cache, fetched incrementally) and the
registry's versions of the model.

    calls     one row per prediction call (the row schema the recorder writes to analytics_calls_table(model)):
              `features` and `prediction` are STRUCTs keyed by name (features.GR.mean), `time` a TIMESTAMP (UTC)
    versions  the registry's versions of the model in the environment: metrics as a STRUCT (metrics.rmse), `live`

The cache is a DuckDB file per (CDF base URL, project, database, table) under $XDG_CACHE_HOME/akerbp-mlops/analytics/
(~/.cache when unset; the temp dir when there is no usable home, as inside a CDF function; in memory when neither is
writable or another process has the file open). It holds the rows and the highest lastUpdatedTime seen: a query
fetches only what RAW updated after that, and what RAW stamped in the OVERLAP_MS before the previous sync began (by
the server's clock: a write in flight then), merged by key. A file that does not open, or holds another
SCHEMA_VERSION or another CDF's rows, is deleted and rebuilt. Rows deleted from RAW stay in the cache until its file
is deleted. Queries see the cache read-only, so SQL cannot change it.

Loading: each page's `items` array is written as it comes (the bytes between `{"items":` and `,"nextCursor"...}`),
and DuckDB reads a batch of such files with one read_json(format='array'): row by row, as fast as newline-delimited
JSON. (read_json of each page as one 7 MB document, format='unstructured', with `items` typed as a list, was
~10x slower: 5.5 s against 0.4 s for 50,000 rows.) Then one merge per batch: DELETE the
staged keys, INSERT the staged rows (no PRIMARY KEY index: a key seen twice in a batch is deduplicated there).
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable
from urllib.parse import quote

from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database, function_external_id

if TYPE_CHECKING:
    import duckdb
    from cognite.client import CogniteClient

SCHEMA_VERSION = 3
# A write RAW stamped this long before a sync began may have been invisible to it (committed after the listing; the
# local CDF stamps an insert before it waits for the write lock). Bounded: what it refetches is the rows written in
# that window, deduplicated by key.
OVERLAP_MS = 2_000
PAGE_ROWS = 10_000  # RAW's page limit
BATCH_PAGES = 20  # pages loaded into DuckDB at a time (200,000 rows): bounds the temporary files of a full fetch
PARTITIONS = 4  # parallel cursors of a full fetch (the SDK's default for raw reads is 10; 2 cores locally)
STAT = "STRUCT(count BIGINT, nulls BIGINT, mean DOUBLE, std DOUBLE, min DOUBLE, max DOUBLE)"

# The row schema (contract: one row per call) as DuckDB types; `features` and `prediction` are stored as MAPs (any
# names) and shown as STRUCTs of the names present.
ROW_COLUMNS: dict[str, str] = {
    "time": "BIGINT", "call_id": "BIGINT", "model_id": "VARCHAR", "version": "BIGINT", "env": "VARCHAR",
    "latency_predict_ms": "DOUBLE", "latency_total_ms": "DOUBLE", "status": "VARCHAR", "error_type": "VARCHAR",
    "rows": "BIGINT", "features": f"MAP(VARCHAR, {STAT})", "prediction": f"MAP(VARCHAR, {STAT})",
    "sample": "JSON", "sample_truncated": "BOOLEAN",
}
STRUCT_COLUMNS = ("features", "prediction")

# What `mlops analytics --help` and the README say of each table: (column, DuckDB type, meaning).
CALLS_COLUMNS = (
    ("key", "VARCHAR", "the RAW row key, {time_ms:013d}-{call_id}"),
    ("time", "TIMESTAMP", "when the call started (UTC)"),
    ("time_ms", "BIGINT", "the same in epoch ms"),
    ("call_id", "BIGINT", "the CDF function call id (NULL when unknown)"),
    ("model_id", "VARCHAR", "the artifact served, e.g. well_density/test/3"),
    ("version", "BIGINT", "its registry version (NULL for a local dev artifact)"),
    ("env", "VARCHAR", "dev, test or prod"),
    ("latency_predict_ms", "DOUBLE", "predict() alone"),
    ("latency_total_ms", "DOUBLE", "the whole call: validation, predict, response check"),
    ("status", "VARCHAR", "ok or error"),
    ("error_type", "VARCHAR", "the exception type, InputSchema or ResponseInvalid; NULL when ok"),
    ("rows", "BIGINT", "input records of the call"),
    ("features", "STRUCT", "per numeric input feature: count, nulls, mean, std, min, max (features.GR.mean)"),
    ("prediction", "STRUCT", "the same per numeric prediction output (prediction.prediction.mean)"),
    ("sample", "JSON", "the raw input, only for sampled calls (settings analytics.sample_inputs)"),
    ("sample_truncated", "BOOLEAN", "the sample was cut at 64 kB"),
    ("updated_ms", "BIGINT", "the row's lastUpdatedTime in RAW"),
)
VERSIONS_COLUMNS = (
    ("version", "INTEGER", "the registry version number n of {model}/{env}/{n}"),
    ("model_id", "VARCHAR", "{model}/{env}/{n}, as calls.model_id"),
    ("created", "TIMESTAMP", "when it was uploaded (UTC)"),
    ("created_by", "VARCHAR", "who uploaded it"),
    ("git_commit", "VARCHAR", "the commit it was trained from"),
    ("promoted_from", "VARCHAR", "the version it was promoted from, '' unless promoted"),
    ("live", "BOOLEAN", "the live prediction service of the environment serves it"),
    ("metrics", "STRUCT", "train()'s metrics, by name (metrics.rmse); top-level numeric metadata too"),
)

_LOCK = threading.Lock()  # one sync of a cache file at a time in this process (DuckDB locks across processes)


@dataclass
class Sync:
    """What bringing the cache up to date took: for the CLI's note and the benchmark."""

    fetched: int = 0  # rows received from RAW (the overlap's included)
    min_updated: int | None = None  # the lastUpdatedTime filter of the fetch (None: everything)
    requests: int = 0  # HTTP requests to RAW
    seconds: float = 0.0
    load_seconds: float = 0.0  # of which DuckDB parsing and merging pages (the rest: waiting for RAW)
    full: bool = False  # everything since `since` was fetched (empty or rebuilt cache, earlier `since`)
    cache: str = ":memory:"  # the cache file, or ":memory:"
    rebuilt: str | None = None  # why the cache file was thrown away, if it was
    stored: int = 0  # rows in the cache afterwards


@dataclass
class Tables:
    """An open DuckDB connection with the `calls` view and the `versions` table, and their names."""

    con: duckdb.DuckDBPyConnection
    feature_names: dict[str, list[str]] = field(default_factory=dict)  # features/prediction/metrics -> names
    sync: Sync = field(default_factory=Sync)

    def close(self) -> None:
        self.con.close()


# -- the cache file ---------------------------------------------------------------------------------------------
def cache_dir() -> Path | None:
    """Where cache files go: $XDG_CACHE_HOME or ~/.cache, else the temp dir (no home: a CDF function); None when
    neither can be written (then the tables live in memory)."""
    home = os.path.expanduser("~")
    bases = [os.environ.get("XDG_CACHE_HOME") or (os.path.join(home, ".cache") if home != "~" else ""),
             tempfile.gettempdir()]
    for base in filter(None, bases):
        folder = Path(base) / "akerbp-mlops" / "analytics"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return None


def identity(client: CogniteClient, db: str, table: str) -> str:
    return json.dumps([client.config.base_url.rstrip("/"), client.config.project, db, table])


def cache_file(client: CogniteClient, db: str, table: str) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(identity(client, db, table).encode()).hexdigest()[:20]
    return folder / f"{digest}.duckdb"


def memory_budget() -> int | None:
    """The bytes this process may use, when something caps it: RLIMIT_DATA (the local CDF's function memory),
    RLIMIT_AS, the cgroup's limit (a container: a CDF function). None when nothing does."""
    limits: list[int] = []
    try:
        import resource

        for which in (resource.RLIMIT_DATA, resource.RLIMIT_AS):
            soft = resource.getrlimit(which)[0]
            if soft != resource.RLIM_INFINITY and soft > 0:
                limits.append(soft)
    except (ImportError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            limits.append(int(text))
    return min(limits) if limits else None


MIN_DUCKDB_MEMORY = 64 << 20
MAX_DUCKDB_MEMORY = 512 << 20


def duckdb_config() -> dict[str, Any]:
    """DuckDB's limits under a memory cap (inside a CDF function): a quarter of the cap, between 64 and 512 MB, and
    two threads (its default, 80 % of the machine's RAM and one thread per core, is what the machine has, not what
    the function may use: a cap on the data segment made an allocation of 2 GB fail). Spilling goes to the temp
    dir (the working directory, DuckDB's default, may be read-only there; DuckDB removes the folder it made).
    Without a cap, DuckDB's defaults."""
    budget = memory_budget()
    if budget is None:
        return {}
    memory = max(MIN_DUCKDB_MEMORY, min(MAX_DUCKDB_MEMORY, budget // 4))
    return {"memory_limit": f"{memory >> 20}MiB", "threads": min(2, os.cpu_count() or 1),
            "temp_directory": os.path.join(tempfile.gettempdir(), f"mlops-duckdb-{os.getpid()}")}  # its own files


def _connect(database: str) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection within the process's memory (duckdb_config) whose session time zone is UTC, as `time` is
    (with the icu extension DuckDB would use the local zone to compare TIMESTAMP with now(); without it, it is UTC
    already)."""
    import duckdb

    con = duckdb.connect(database, config=duckdb_config())
    try:
        con.execute("SET TimeZone = 'UTC'")
    except duckdb.Error:
        pass  # no icu extension: UTC is the only zone
    return con


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


NO_NAMES = "(none)"  # the one field of a STRUCT column before any row had a name (DuckDB has no empty STRUCT)


def _create(con: duckdb.DuckDBPyConnection, ident: str) -> None:
    """The cache's tables. features and prediction are stored as STRUCTs of every name seen (widened when a new one
    comes): reading features.GR of a million rows takes milliseconds, of a MAP seconds."""
    columns = ", ".join(f'"{name}" {f"STRUCT({_ident(NO_NAMES)} {STAT})" if name in STRUCT_COLUMNS else kind}'
                        for name, kind in ROW_COLUMNS.items())
    con.execute("CREATE TABLE meta (schema_version INTEGER, identity VARCHAR, covered_from BIGINT, high BIGINT, "
                "synced_at BIGINT)")
    con.execute("INSERT INTO meta VALUES (?, ?, NULL, NULL, NULL)", [SCHEMA_VERSION, ident])
    con.execute(f"CREATE TABLE raw_calls (key VARCHAR, updated_ms BIGINT, {columns})")
    con.execute("CREATE TABLE names (kind VARCHAR, name VARCHAR)")


def _valid(con: duckdb.DuckDBPyConnection, ident: str) -> str | None:
    """Why this cache cannot be trusted, or None."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = "
                                        "current_database()").fetchall()}
    if tables != {"meta", "raw_calls", "names"}:
        return f"it holds the tables {sorted(tables)}"
    meta = con.execute("SELECT schema_version, identity FROM meta").fetchall()
    if meta != [(SCHEMA_VERSION, ident)]:
        return f"its schema or CDF differ ({meta[:1]})"
    columns = [(r[0], r[1]) for r in con.execute("DESCRIBE raw_calls").fetchall()]
    expected = [("key", "VARCHAR"), ("updated_ms", "BIGINT"), *ROW_COLUMNS.items()]
    if [c for c, _ in columns] != [c for c, _ in expected]:
        return "its columns differ"
    return None


def _busy(error: Exception) -> bool:
    """The file is fine but open elsewhere: another process (DuckDB's file lock) or connection of this one."""
    text = str(error).lower()
    return "lock" in text or "in use" in text or "already attached" in text


def open_cache(con: duckdb.DuckDBPyConnection, path: Path | None, ident: str) -> Sync:
    """Attach the cache file read-write as `cache` and USE it (created or rebuilt as needed); the tables in memory
    when path is None or the file is busy."""
    import duckdb

    sync = Sync()
    for _ in range(2 if path is not None else 0):
        assert path is not None
        try:
            con.execute(f"ATTACH {_literal(str(path))} AS cache")
        except duckdb.Error as e:
            if _busy(e):
                break
            sync.rebuilt = f"it does not open ({str(e).splitlines()[0][:200]})"
            _remove(path)
            continue
        try:
            con.execute("USE cache")
            fresh = not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = "
                                    "current_database()").fetchone()[0]  # type: ignore[index]
            problem = None if fresh else _valid(con, ident)
            if fresh:
                _create(con, ident)
        except duckdb.Error as e:
            problem = f"it cannot be read ({str(e).splitlines()[0][:200]})"
        if problem is None:
            sync.cache = str(path)
            return sync
        con.execute("USE memory")
        con.execute("DETACH cache")
        sync.rebuilt = problem
        _remove(path)
    _create(con, ident)
    return sync


# -- fetching from RAW ------------------------------------------------------------------------------------------
# The page's own nextCursor: the last '"nextCursor":"' of the body. Inside strings quotes are escaped, so the text
# occurs only as a key; CDF writes it after "items", so a sampled input holding such a key cannot be taken for it.
_NEXT = re.compile(rb'"nextCursor"\s*:\s*"([^"\\]*)"')


def _rows_url(client: CogniteClient, db: str, table: str) -> str:
    return (f"/api/v1/projects/{quote(client.config.project, safe='')}/raw/dbs/{quote(db, safe='')}"
            f"/tables/{quote(table, safe='')}")


# A page as CDF writes it: {"items": [ ... ], "nextCursor": "..."} (the cursor absent or null on the last page).
_HEAD = re.compile(rb'\s*\{\s*"items"\s*:\s*\[')
_TAIL = re.compile(rb'\]\s*(?:,\s*"nextCursor"\s*:\s*(?:"[^"\\\]]*"|null)\s*)?\}\s*')


def items_array(body: bytes) -> memoryview | bytes:
    """The page's `items` as a JSON array, without parsing it: the bytes from its '[' to its ']' when the page has
    CDF's shape (the last ']' is the array's when only the cursor follows it); else parsed and written again."""
    head = _HEAD.match(body)
    end = body.rfind(b"]")
    if head is not None and end >= head.end() - 1 and _TAIL.fullmatch(body, end):
        return memoryview(body)[head.end() - 1:end + 1]
    return json.dumps(json.loads(body).get("items") or []).encode()


def _server_ms(response: Any) -> int | None:
    """The server's clock at a response (its Date header, whole seconds: rounded down), or None."""
    try:
        return int(email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _next_cursor(body: bytes) -> str | None:
    at = body.rfind(b'"nextCursor"')
    if at < 0:
        return None
    match = _NEXT.match(body, at)
    return match.group(1).decode() if match else None


class _Pages:
    """RAW's row pages written as they come (their items arrays, unparsed: DuckDB parses them)."""

    def __init__(self, client: CogniteClient, db: str, table: str, folder: Path):
        self.client, self.url, self.folder = client, _rows_url(client, db, table), folder
        self.ready: queue.Queue[Path | None] = queue.Queue()  # pages written, None when the fetch has ended
        self.requests = 0
        self.server_ms: int | None = None  # the server's clock at the first response
        self.stopped = False  # the loader failed: fetch no further
        self._lock = threading.Lock()

    def _get(self, path: str, params: dict[str, Any]) -> bytes:
        with self._lock:
            self.requests += 1
        response = self.client.get(self.url + path, params=params)
        if self.server_ms is None:
            self.server_ms = _server_ms(response)
        return response.content

    def read(self, cursor: str | None, min_updated: int | None, part: int) -> None:
        """Every page from `cursor` (a partition's) or from the start, filtered by lastUpdatedTime > min_updated."""
        page = 0
        while not self.stopped:
            params: dict[str, Any] = {"limit": PAGE_ROWS}
            if cursor:
                params["cursor"] = cursor
            elif min_updated is not None:
                params["minLastUpdatedTime"] = min_updated
            body = self._get("/rows", params)
            if b'"key"' in body:  # an empty page adds nothing
                path = self.folder / f"{part:04d}-{page:06d}.json"
                with path.open("wb") as out:
                    out.write(items_array(body))
                self.ready.put(path)
            page += 1
            cursor = _next_cursor(body)
            if not cursor:
                return

    def read_all(self, min_updated: int | None, partitions: int) -> None:
        params: dict[str, Any] = {"numberOfCursors": partitions}
        if min_updated is not None:
            params["minLastUpdatedTime"] = min_updated
        cursors = json.loads(self._get("/cursors", params))["items"]
        with ThreadPoolExecutor(max(1, len(cursors))) as pool:
            list(pool.map(lambda pc: self.read(pc[1], None, pc[0]), enumerate(cursors)))


def _missing(error: Exception) -> bool:
    """RAW answers 404 when the database or table does not exist yet: no call was recorded."""
    return getattr(error, "code", None) == 404


def fetch(pages: _Pages, min_updated: int | None, *, full: bool, partitions: int = PARTITIONS) -> None:
    """The pages of rows RAW updated after min_updated (all when None) into pages.ready, then None: parallel cursors
    for a full fetch, one cursor for an increment (usually one page; the SDK's partitioned reads poll every 0.5 s)."""
    from cognite.client.exceptions import CogniteAPIError

    try:
        if full:
            pages.read_all(min_updated, partitions)
        else:
            pages.read(None, min_updated, 0)
    except CogniteAPIError as e:
        if not _missing(e):
            raise
    finally:
        pages.ready.put(None)


# -- loading pages into the cache -------------------------------------------------------------------------------
def _max_size(files: list[Path]) -> int:
    """DuckDB's buffer for one JSON value (a row): bounded by the largest page, not a fixed 1 GB (which, doubled,
    failed to allocate under a function's memory cap)."""
    return max(1 << 20, max(f.stat().st_size for f in files) + 1)


def _listed(files: list[Path]) -> str:
    return "[" + ", ".join(_literal(str(f)) for f in files) + "]"


def _typed_select(files: list[Path]) -> str:
    columns = ", ".join(f"{_ident(name)} {kind}" for name, kind in ROW_COLUMNS.items())
    shape = {"key": "VARCHAR", "lastUpdatedTime": "BIGINT", "columns": f"STRUCT({columns})"}
    return (f"SELECT key, lastUpdatedTime AS updated_ms, unnest(columns) FROM read_json({_listed(files)}, "
            f"columns={{{', '.join(f'{_literal(k)}: {_literal(v)}' for k, v in shape.items())}}}, format='array', "
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
    known = {kind: _names(con, kind) for kind in STRUCT_COLUMNS}
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
    pages = _Pages(client, db, table, folder)
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


# -- the tables a query sees ------------------------------------------------------------------------------------
def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _names(con: duckdb.DuckDBPyConnection, kind: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM names WHERE kind = ?", [kind]).fetchall()}


def _packed(column: str, names: Iterable[str]) -> str:
    """A staged MAP column as the stored STRUCT of these names."""
    names = sorted(set(names))
    if not names:
        return f"NULL::STRUCT({_ident(NO_NAMES)} {STAT})"
    return "struct_pack(" + ", ".join(f"{_ident(n)} := {column}[{_literal(n)}]" for n in names) + ")"


def _widened(column: str, known: set[str], new: set[str]) -> str:
    """The stored STRUCT column with the new names added (NULL in the rows stored before them)."""
    fields = [f"{_ident(n)} := {column}.{_ident(n)}" for n in sorted(known)]
    fields += [f"{_ident(n)} := NULL::{STAT}" for n in sorted(new)]
    return "struct_pack(" + ", ".join(fields) + ")"


def with_referenced(column: str, stored: set[str], wanted: set[str]) -> str:
    """The stored STRUCT column plus the names the query reads that no row has (NULL): the query binds."""
    absent = sorted(wanted - stored - {NO_NAMES})
    if not absent:
        return column
    return f"struct_insert({column}, " + ", ".join(f"{_ident(n)} := NULL::{STAT}" for n in absent) + f") AS {column}"


def referenced(sql: str, column: str) -> set[str]:
    """The field names the query reads of a STRUCT column (`features.GR`, `features."my name"`): present in the
    STRUCT even when no row has them, so a query binds before any call had that feature."""
    pattern = rf'\b{column}\s*\.\s*(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))'
    return {(quoted.replace('""', '"') if quoted else bare) for quoted, bare in re.findall(pattern, sql)}


def calls_view(source: str, stored: dict[str, set[str]], wanted: dict[str, set[str]], since_ms: int | None) -> str:
    plain = [c for c in ROW_COLUMNS if c not in STRUCT_COLUMNS and c not in ("time",)]
    columns = ["key", 'epoch_ms("time") AS "time"', '"time" AS time_ms',
               *(_ident(c) for c in plain if c not in ("sample", "sample_truncated")),
               *(with_referenced(c, stored[c], wanted[c]) for c in STRUCT_COLUMNS), "sample", "sample_truncated",
               "updated_ms"]
    where = f' WHERE "time" >= {int(since_ms)}' if since_ms is not None else ""
    return f"CREATE OR REPLACE TEMP VIEW calls AS SELECT {', '.join(columns)} FROM {source}{where}"


@dataclass(frozen=True)
class VersionRow:
    version: int
    model_id: str
    created: str  # ISO 8601 UTC or ""
    created_by: str
    git_commit: str
    promoted_from: str
    live: bool
    metrics: dict[str, float]


def version_metrics(metadata: dict[str, str]) -> dict[str, float]:
    """A version's metrics: metadata['metrics'] (train()'s), then top-level numeric metadata (as conditions.metric
    reads them); the registry's own keys are not metrics."""
    from akerbp.mlops.registry.rules import RESERVED_KEYS, decoded_metadata

    decoded = decoded_metadata(metadata)
    out: dict[str, float] = {}

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

    metrics = decoded.get("metrics")
    if isinstance(metrics, dict):
        out.update({str(k): float(v) for k, v in metrics.items() if number(v)})
    for key, value in decoded.items():
        if key not in RESERVED_KEYS and key not in out and number(value):
            out[key] = float(value)
    return out


def versions_of(client: CogniteClient, model: str, env: str) -> list[VersionRow]:
    """The registry's versions of model in env, and which one the live prediction service serves (one request)."""
    from akerbp.mlops import registry

    fn = client.functions.retrieve(external_id=function_external_id(model, "prediction", env))
    live_id = (fn.metadata or {}).get("mlops_model_id") if fn is not None else None
    return [VersionRow(v.version, v.model_id, v.created_time, v.created_by, v.git_commit, v.promoted_from,
                       v.model_id == live_id, version_metrics(v.metadata))
            for v in registry.list_model_versions(model, env, client=client)]


def versions_table(con: duckdb.DuckDBPyConnection, versions: list[VersionRow], names: set[str]) -> None:
    """The TEMP table `versions`; metrics a STRUCT of every metric name (of any version or the query) as DOUBLE."""
    con.execute("CREATE OR REPLACE TEMP TABLE versions_raw (version INTEGER, model_id VARCHAR, created VARCHAR, "
                "created_by VARCHAR, git_commit VARCHAR, promoted_from VARCHAR, live BOOLEAN, metrics JSON)")
    if versions:
        con.executemany("INSERT INTO versions_raw VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [[v.version, v.model_id, v.created, v.created_by, v.git_commit, v.promoted_from, v.live,
                          json.dumps(v.metrics)] for v in versions])
    all_names = sorted(names.union(*(v.metrics for v in versions)))
    shape = json.dumps({n: "DOUBLE" for n in all_names or ["(none)"]})
    con.execute(f"CREATE OR REPLACE TEMP TABLE versions AS SELECT version, model_id, "
                f"CAST(nullif(replace(created, '+00:00', ''), '') AS TIMESTAMP) AS created, created_by, git_commit, "
                f"promoted_from, live, json_transform(metrics, {_literal(shape)}) AS metrics "
                f"FROM versions_raw ORDER BY version")
    con.execute("DROP TABLE versions_raw")


def empty_tables(sql: str) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with EMPTY tables of the schema (check_sql: no CDF needed)."""

    con = _connect(":memory:")
    _create(con, "check")
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
    con = _connect(":memory:")
    try:
        with _LOCK:
            sync_ = open_cache(con, path, ident)
            sync(con, sync_, client, db, table, since_ms, overlap_ms)
            stored = {kind: _names(con, kind) for kind in STRUCT_COLUMNS}
            source = "memory.main.raw_calls"
            if sync_.cache != ":memory:":  # queries read the file read-only: SQL cannot change the cache
                con.execute("USE memory")
                con.execute("DETACH cache")
                con.execute(f"ATTACH {_literal(sync_.cache)} AS cache (READ_ONLY)")
                source = "cache.main.raw_calls"
        con.execute(calls_view(source, stored, {kind: referenced(sql, kind) for kind in STRUCT_COLUMNS}, since_ms))
        if versions:
            versions_table(con, versions_of(client, model, env), referenced(sql, "metrics"))
    except BaseException:
        con.close()
        raise
    return Tables(con, {k: sorted(v) for k, v in stored.items()}, sync_)
