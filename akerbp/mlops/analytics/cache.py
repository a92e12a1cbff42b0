"""The local cache of a model's call rows: a DuckDB file per (CDF base URL, project, database, table), so a query
fetches from RAW only what changed since the last one (sync.py brings it up to date).

It lives under $XDG_CACHE_HOME/akerbp-mlops/analytics/ (~/.cache when unset; the temp dir when there is no usable
home, as inside a CDF function; in memory when neither is writable or another process has the file open). It holds
the rows (raw_calls), the STRUCT field names seen (names) and the sync's marks (meta: the highest lastUpdatedTime
seen, when the last sync began, the earliest time covered). A file that does not open, or holds another
SCHEMA_VERSION or another CDF's rows, is deleted and rebuilt. Rows deleted from RAW stay in the cache until its file
is deleted.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from akerbp.mlops.analytics.schema import NO_NAMES, ROW_COLUMNS, STAT, STRUCT_COLUMNS, quote_name, quote_text

if TYPE_CHECKING:
    import duckdb
    from cognite.client import CogniteClient

SCHEMA_VERSION = 3


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


def connect(database: str) -> duckdb.DuckDBPyConnection:
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


def create(con: duckdb.DuckDBPyConnection, ident: str) -> None:
    """The cache's tables. features and prediction are stored as STRUCTs of every name seen (widened when a new one
    comes): reading features.GR of a million rows takes milliseconds, of a MAP seconds."""
    columns = ", ".join(f'"{name}" {f"STRUCT({quote_name(NO_NAMES)} {STAT})" if name in STRUCT_COLUMNS else kind}'
                        for name, kind in ROW_COLUMNS.items())
    con.execute("CREATE TABLE meta (schema_version INTEGER, identity VARCHAR, covered_from BIGINT, high BIGINT, "
                "synced_at BIGINT)")
    con.execute("INSERT INTO meta VALUES (?, ?, NULL, NULL, NULL)", [SCHEMA_VERSION, ident])
    con.execute(f"CREATE TABLE raw_calls (key VARCHAR, updated_ms BIGINT, {columns})")
    con.execute("CREATE TABLE names (kind VARCHAR, name VARCHAR)")


def stored_names(con: duckdb.DuckDBPyConnection, kind: str) -> set[str]:
    """The field names of a STRUCT column (features, prediction) the cache's rows have."""
    return {r[0] for r in con.execute("SELECT name FROM names WHERE kind = ?", [kind]).fetchall()}


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
            con.execute(f"ATTACH {quote_text(str(path))} AS cache")
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
                create(con, ident)
        except duckdb.Error as e:
            problem = f"it cannot be read ({str(e).splitlines()[0][:200]})"
        if problem is None:
            sync.cache = str(path)
            return sync
        con.execute("USE memory")
        con.execute("DETACH cache")
        sync.rebuilt = problem
        _remove(path)
    create(con, ident)
    return sync
