"""Persistent state of the local CDF: SQLite (WAL) for resources, a folder of blobs for file contents.

Every resource kind (files, events, functions, ...) lives in one table as a JSON body, namespaced by project, so
the API modules stay thin. Several processes may open one data dir at once: SQLite's locking (BEGIN IMMEDIATE with a
busy timeout) serialises writers, and blobs are written to a temporary name and renamed into place, so no write is
lost and no reader sees half a file.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from .runtime import processes
from .http.errors import bad_request, duplicated, not_found

SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    external_id TEXT,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS resources_xid ON resources(project, kind, external_id)
    WHERE external_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS resources_kind ON resources(project, kind, id);
CREATE INDEX IF NOT EXISTS resources_files_updated ON resources(project, json_extract(body, '$.lastUpdatedTime'))
    WHERE kind = 'files';
CREATE TABLE IF NOT EXISTS datapoints (
    ts_id INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    value,
    PRIMARY KEY (ts_id, timestamp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (name TEXT PRIMARY KEY, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS processes (
    pid INTEGER NOT NULL,
    started TEXT NOT NULL,
    owner_pid INTEGER NOT NULL,
    owner_started TEXT NOT NULL,
    folder TEXT,
    PRIMARY KEY (pid, started)
);
"""

# The expression resources_files_updated indexes: files' lastUpdatedTime filter (api/files.py) uses it verbatim.
FILES_UPDATED = "json_extract(body, '$.lastUpdatedTime')"

# Keys of a stored body that start with this are internal (logs, blob paths) and never sent to clients.
HIDDEN = "_"


def now_ms() -> int:
    return int(time.time() * 1000)


def public(body: dict) -> dict:
    return {k: v for k, v in body.items() if not k.startswith(HIDDEN)}


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise bad_request(f"Invalid cursor: {cursor!r}") from None


class Store:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.blob_dir = self.data_dir / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "cdf.sqlite3"
        self._local = threading.local()
        # Switching a new database to WAL needs an exclusive lock that SQLite does not wait for: processes opening
        # one data dir at once take turns on a file lock while they set it up.
        with open(self.data_dir / "cdf.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                conn = self.conn()
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
                self.secret = self._meta_secret()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- connections and transactions -------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE takes the write lock up front so read-then-write is atomic."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _meta_secret(self) -> str:
        with self.write() as db:
            row = db.execute("SELECT value FROM meta WHERE key='secret'").fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(32)
            db.execute("INSERT INTO meta(key, value) VALUES ('secret', ?)", (value,))
            return value

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- resources --------------------------------------------------------------------------------------------
    def insert(self, db: sqlite3.Connection, project: str, kind: str, body: dict) -> dict:
        """Insert one resource; sets id, createdTime and lastUpdatedTime unless the body has them."""
        xid = body.get("externalId")
        cur = db.execute(
            "INSERT INTO resources(project, kind, external_id, body) VALUES (?, ?, ?, '{}')", (project, kind, xid)
        )
        body = {"id": cur.lastrowid, **body}
        t = now_ms()
        body.setdefault("createdTime", t)
        body.setdefault("lastUpdatedTime", t)
        db.execute("UPDATE resources SET body=? WHERE id=?", (json.dumps(body), body["id"]))
        return body

    def insert_many(self, project: str, kind: str, bodies: list[dict], what: str = "Resources") -> list[dict]:
        """All or nothing: a duplicated externalId (in the store or in the request) rejects the whole request."""
        xids = [b["externalId"] for b in bodies if b.get("externalId") is not None]
        dupes_in_request = {x for x in xids if xids.count(x) > 1}
        if dupes_in_request:
            raise duplicated([{"externalId": x} for x in sorted(dupes_in_request)], what)
        with self.write() as db:
            existing = self._existing_xids(db, project, kind, xids)
            if existing:
                raise duplicated([{"externalId": x} for x in existing], what)
            return [self.insert(db, project, kind, b) for b in bodies]

    def _existing_xids(self, db, project: str, kind: str, xids: list[str]) -> list[str]:
        found = []
        for chunk in _chunks(xids, 500):
            marks = ",".join("?" * len(chunk))
            found += [
                r[0]
                for r in db.execute(
                    f"SELECT external_id FROM resources WHERE project=? AND kind=? AND external_id IN ({marks})",
                    (project, kind, *chunk),
                )
            ]
        return found

    def save(self, db: sqlite3.Connection, project: str, kind: str, body: dict, touch: bool = True) -> dict:
        if touch:
            body["lastUpdatedTime"] = now_ms()
        db.execute(
            "UPDATE resources SET body=?, external_id=? WHERE id=? AND project=? AND kind=?",
            (json.dumps(body), body.get("externalId"), body["id"], project, kind),
        )
        return body

    def get(self, project: str, kind: str, id: int, db: sqlite3.Connection | None = None) -> dict | None:
        row = (db or self.conn()).execute(
            "SELECT body FROM resources WHERE project=? AND kind=? AND id=?", (project, kind, id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def get_known(self, project: str, kind: str, id: int, db: sqlite3.Connection | None = None,
                  what: str = "Resources") -> dict:
        """get() of a resource this request created or found: one deleted meanwhile is CDF's 400 naming it."""
        body = self.get(project, kind, id, db)
        if body is None:
            raise not_found([{"id": id}], what)
        return body

    def get_xid(self, project: str, kind: str, xid: str | None, db: sqlite3.Connection | None = None) -> dict | None:
        """The resource with this external id; None (no external id given) matches nothing."""
        row = (db or self.conn()).execute(
            "SELECT body FROM resources WHERE project=? AND kind=? AND external_id=?", (project, kind, xid)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def resolve(
        self,
        project: str,
        kind: str,
        identifiers: Iterable[dict],
        ignore_unknown: bool = False,
        db: sqlite3.Connection | None = None,
        what: str = "Resources",
        snake_case: bool = False,
    ) -> list[dict]:
        """Look up `{"id"}`/`{"externalId"}` items in order; unknown ones are a 400 with `missing` unless ignored."""
        found, missing = [], []
        for ident in identifiers:
            if "id" in ident:
                body = self.get(project, kind, ident["id"], db)
            else:
                xid = ident.get("externalId", ident.get("external_id"))
                body = self.get_xid(project, kind, xid, db)
                if snake_case:
                    ident = {"external_id": xid}
            if body is None:
                missing.append(ident)
            else:
                found.append(body)
        if missing and not ignore_unknown:
            raise not_found(missing, what)
        return found

    def ids_where(self, db: sqlite3.Connection, project: str, kind: str, field: str, value: object) -> list[int]:
        """The ids of `kind` whose body has `field` (a top-level name from the code) equal to `value`, inside `db`'s
        transaction (a nonce's session, a function's schedules)."""
        rows = db.execute(f"SELECT id FROM resources WHERE project=? AND kind=? AND json_extract(body, '$.{field}') = ?",
                          (project, kind, value)).fetchall()
        return [r[0] for r in rows]

    def delete(self, db: sqlite3.Connection, project: str, kind: str, ids: list[int]) -> None:
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            db.execute(f"DELETE FROM resources WHERE project=? AND kind=? AND id IN ({marks})", (project, kind, *chunk))

    def query(
        self,
        project: str,
        kind: str,
        where: list[str] | None = None,
        params: list[Any] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        partition: tuple[int, int] | None = None,
    ) -> tuple[list[dict], str | None]:
        """A page of resources in id order; `where` holds SQL conditions over `id`, `external_id` and `body`."""
        clauses = ["project=?", "kind=?", "id>?", *(where or [])]
        args: list[Any] = [project, kind, decode_cursor(cursor), *(params or [])]
        if partition:
            index, count = partition
            clauses.append("(id % ?) = ?")
            args += [count, index]
        sql = f"SELECT id, body FROM resources WHERE {' AND '.join(clauses)} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit + 1)
        rows = self.conn().execute(sql, args).fetchall()
        next_cursor = None
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            next_cursor = encode_cursor(rows[-1][0])
        return [json.loads(r[1]) for r in rows], next_cursor

    def count(self, project: str, kind: str) -> int:
        return self.conn().execute(
            "SELECT COUNT(*) FROM resources WHERE project=? AND kind=?", (project, kind)
        ).fetchone()[0]

    def projects(self) -> list[str]:
        return [r[0] for r in self.conn().execute("SELECT DISTINCT project FROM resources ORDER BY project")]

    def remember_project(self, project: str, created: int) -> None:
        with self.write() as db:
            db.execute("INSERT OR IGNORE INTO projects(name, created) VALUES (?, ?)", (project, created))

    def remembered_projects(self) -> list[str]:
        return [r[0] for r in self.conn().execute("SELECT name FROM projects ORDER BY name")]

    # -- function workers, so a server can end those of a predecessor that died (see processes.py) ----------------
    def record_process(self, pid: int, started: str, owner_pid: int, owner_started: str, folder: str) -> None:
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO processes VALUES (?, ?, ?, ?, ?)",
                       (pid, started, owner_pid, owner_started, folder))

    def forget_process(self, pid: int, owner_pid: int, owner_started: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM processes WHERE pid=? AND owner_pid=? AND owner_started=?",
                       (pid, owner_pid, owner_started))

    def recorded_processes(self) -> list[tuple[int, str, int, str, str | None]]:
        return self.conn().execute(
            "SELECT pid, started, owner_pid, owner_started, folder FROM processes ORDER BY pid").fetchall()

    def kinds_count(self) -> dict[str, int]:
        return {
            f"{p}/{k}": n
            for p, k, n in self.conn().execute(
                "SELECT project, kind, COUNT(*) FROM resources GROUP BY project, kind ORDER BY project, kind"
            )
        }

    # -- blobs ------------------------------------------------------------------------------------------------
    def blob_path(self, project: str, file_id: int) -> Path:
        return self.blob_dir / _safe(project) / str(file_id)

    def parts_dir(self, project: str, file_id: int, upload_id: str) -> Path:
        return self.blob_dir / _safe(project) / f"{file_id}.{upload_id}.parts"

    def write_blob(self, target: Path, stream, length: int | None, chunk: int = 1 << 20) -> int:
        """Stream a request body to `target` via a temporary name; never holds the whole content in memory."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{_writer()}.{threading.get_ident()}.tmp")
        written = 0
        try:
            with open(tmp, "wb") as out:
                while length is None or written < length:
                    want = chunk if length is None else min(chunk, length - written)
                    data = stream.read(want)
                    if not data:
                        break
                    out.write(data)
                    written += len(data)
            if length is not None and written != length:
                raise bad_request(f"Upload ended after {written} of {length} bytes")
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return written


    def remove_stale_temp_files(self) -> list[Path]:
        """Remove the half-written blobs of writers that are gone (a server killed mid-upload); the ones removed."""
        removed = []
        for path in self.blob_dir.rglob(".*.tmp"):
            match = _TEMP.search(path.name)
            if match and not _writer_runs(int(match["pid"]), match["started"]):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed


# A blob being written is named after its writer: pid and a digest of the process's start time, so a later process
# can tell a dead writer's leftovers from a live one's upload even when the pid was reused. (Older versions wrote
# the pid alone.)
_TEMP = re.compile(r"\.(?P<pid>\d+)(?:-(?P<started>[0-9a-f]{12}))?\.\d+\.tmp$")


def _digest(started: str) -> str:
    return hashlib.sha256(started.encode()).hexdigest()[:12]


def _writer() -> str:
    pid, started = processes.me()
    return f"{pid}-{_digest(started)}"


def _writer_runs(pid: int, started_digest: str | None) -> bool:
    started = processes.start_time(pid)
    return started is not None and (started_digest is None or _digest(started) == started_digest)


def _safe(project: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in project)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
