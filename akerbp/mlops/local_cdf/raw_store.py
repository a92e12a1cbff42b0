"""CDF RAW's storage: databases, tables and rows in three SQLite tables of the store's database file.

The SQL of RAW lives here and only here (the Store keeps the resources table's). Connections and write
transactions are the Store's own (`Store.conn()`, `Store.write()`: BEGIN IMMEDIATE, several processes on one data
dir), so RAW needs no second connection. Rows are kept with their columns as JSON text, in key order (a unique index
on table and key), and every read of rows is one page with LIMIT, so listing a table of millions of rows costs the
server one page at a time. A row's lastUpdatedTime is the time of the insert request that last wrote it.
"""
from __future__ import annotations

import sqlite3
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from .http.errors import CDFError, bad_request
from .store import now_ms

if TYPE_CHECKING:
    from .store import Store

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS raw_dbs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        created_time INTEGER NOT NULL,
        UNIQUE (project, name))""",
    """CREATE TABLE IF NOT EXISTS raw_tables (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        db_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        created_time INTEGER NOT NULL,
        UNIQUE (db_id, name))""",
    # A rowid table with a unique (table, key) index rather than WITHOUT ROWID: a row may hold 5 MiB of columns,
    # and SQLite's clustered tables suit small rows only.
    """CREATE TABLE IF NOT EXISTS raw_rows (
        table_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        last_updated INTEGER NOT NULL,
        columns TEXT NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS raw_rows_key ON raw_rows(table_id, key)",
)


@dataclass(frozen=True)
class Named:
    """A database or a table as CDF lists it."""

    name: str
    created_time: int

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "createdTime": self.created_time}


@dataclass(frozen=True)
class Range:
    """Which rows of a table a page reads: keys after `after` (exclusive) or from `start` (inclusive), below `until`
    (exclusive), last updated in (min_updated, max_updated]."""

    after: str | None = None
    start: str | None = None
    until: str | None = None
    min_updated: int | None = None
    max_updated: int | None = None


RowRecord = tuple[str, int, str]  # key, lastUpdatedTime, columns as JSON text


def db_not_found(names: list[str]) -> CDFError:
    return CDFError(404, f"Database(s) not found: {', '.join(repr(n) for n in names)}",
                    missing=[{"name": n} for n in names])


def table_not_found(db: str, names: list[str]) -> CDFError:
    return CDFError(404, f"Table(s) not found in database {db!r}: {', '.join(repr(n) for n in names)} (create the "
                         "table first, or insert rows with ensureParent=true)",
                    missing=[{"name": n} for n in names])


class RawStore:
    """RAW's databases, tables and rows on one Store; get it with `raw_store(store)`."""

    def __init__(self, store: "Store") -> None:
        self.store = store
        with store.write() as db:
            for statement in SCHEMA:
                db.execute(statement)

    # -- databases --------------------------------------------------------------------------------------------
    def create_dbs(self, project: str, names: list[str]) -> list[Named]:
        """All or nothing: a name that exists (or comes twice) refuses the request with CDF's 400 naming it."""
        with self.store.write() as db:
            existing = [n for n in names if self._db_id(db, project, n) is not None]
            existing += sorted({n for n in names if names.count(n) > 1} - set(existing))
            if existing:
                raise CDFError(400, f"Database(s) already exist: {', '.join(repr(n) for n in existing)}",
                               duplicated=[{"name": n} for n in existing])
            t = now_ms()
            db.executemany("INSERT INTO raw_dbs(project, name, created_time) VALUES (?, ?, ?)",
                           [(project, n, t) for n in names])
        return [Named(n, t) for n in names]

    def list_dbs(self, project: str, after: str | None, limit: int) -> list[Named]:
        rows = self.store.conn().execute(
            "SELECT name, created_time FROM raw_dbs WHERE project=? AND name>? ORDER BY name LIMIT ?",
            (project, after or "", limit)).fetchall()
        return [Named(*r) for r in rows]

    def delete_dbs(self, project: str, names: list[str], recursive: bool) -> None:
        """All or nothing: unknown databases are a 404 naming them; a database with tables needs `recursive`."""
        with self.store.write() as db:
            ids = {n: self._db_id(db, project, n) for n in names}
            missing = [n for n, i in ids.items() if i is None]
            if missing:
                raise db_not_found(missing)
            for name, db_id in ids.items():
                tables = [r[0] for r in db.execute("SELECT id FROM raw_tables WHERE db_id=?", (db_id,))]
                if tables and not recursive:
                    raise bad_request(f"Database {name!r} is not empty ({len(tables)} table(s)): delete its tables "
                                      "first, or delete it with recursive=true")
                db.executemany("DELETE FROM raw_rows WHERE table_id=?", [(t,) for t in tables])
                db.execute("DELETE FROM raw_tables WHERE db_id=?", (db_id,))
                db.execute("DELETE FROM raw_dbs WHERE id=?", (db_id,))

    # -- tables -----------------------------------------------------------------------------------------------
    def create_tables(self, project: str, db_name: str, names: list[str], ensure_parent: bool) -> list[Named]:
        with self.store.write() as db:
            db_id = self._db_id(db, project, db_name)
            if db_id is None:
                if not ensure_parent:
                    raise db_not_found([db_name])
                db_id = self._ensure_db(db, project, db_name)
            existing = [n for n in names if self._table_id(db, db_id, n) is not None]
            existing += sorted({n for n in names if names.count(n) > 1} - set(existing))
            if existing:
                raise CDFError(400, f"Table(s) already exist in database {db_name!r}: "
                                    f"{', '.join(repr(n) for n in existing)}",
                               duplicated=[{"name": n} for n in existing])
            t = now_ms()
            db.executemany("INSERT INTO raw_tables(db_id, name, created_time) VALUES (?, ?, ?)",
                           [(db_id, n, t) for n in names])
        return [Named(n, t) for n in names]

    def list_tables(self, project: str, db_name: str, after: str | None, limit: int) -> list[Named]:
        conn = self.store.conn()
        db_id = self._db_id(conn, project, db_name)
        if db_id is None:
            raise db_not_found([db_name])
        rows = conn.execute("SELECT name, created_time FROM raw_tables WHERE db_id=? AND name>? ORDER BY name "
                            "LIMIT ?", (db_id, after or "", limit)).fetchall()
        return [Named(*r) for r in rows]

    def delete_tables(self, project: str, db_name: str, names: list[str]) -> None:
        with self.store.write() as db:
            db_id = self._db_id(db, project, db_name)
            if db_id is None:
                raise db_not_found([db_name])
            ids = {n: self._table_id(db, db_id, n) for n in names}
            missing = [n for n, i in ids.items() if i is None]
            if missing:
                raise table_not_found(db_name, missing)
            db.executemany("DELETE FROM raw_rows WHERE table_id=?", [(i,) for i in ids.values()])
            db.executemany("DELETE FROM raw_tables WHERE id=?", [(i,) for i in ids.values()])

    def table_id(self, project: str, db_name: str, table_name: str) -> int:
        """The table's id for reads; an unknown database or table is CDF's 404 naming it."""
        conn = self.store.conn()
        db_id = self._db_id(conn, project, db_name)
        if db_id is None:
            raise db_not_found([db_name])
        table_id = self._table_id(conn, db_id, table_name)
        if table_id is None:
            raise table_not_found(db_name, [table_name])
        return table_id

    # -- rows -------------------------------------------------------------------------------------------------
    def insert_rows(self, project: str, db_name: str, table_name: str, rows: Iterable[tuple[str, str]],
                    ensure_parent: bool) -> int:
        """Upsert (key, columns JSON) pairs: a row's columns are replaced, its lastUpdatedTime set to now."""
        t = now_ms()
        with self.store.write() as db:
            db_id = self._db_id(db, project, db_name)
            table_id = None if db_id is None else self._table_id(db, db_id, table_name)
            if table_id is None:
                if not ensure_parent:
                    raise db_not_found([db_name]) if db_id is None else table_not_found(db_name, [table_name])
                db_id = db_id if db_id is not None else self._ensure_db(db, project, db_name)
                table_id = self._ensure_table(db, db_id, table_name)
            cur = db.executemany(
                "INSERT INTO raw_rows(table_id, key, last_updated, columns) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(table_id, key) DO UPDATE SET last_updated=excluded.last_updated, columns=excluded.columns",
                ((table_id, key, t, columns) for key, columns in rows))
            return cur.rowcount

    def row(self, table_id: int, key: str) -> RowRecord | None:
        found = self.store.conn().execute(
            "SELECT key, last_updated, columns FROM raw_rows WHERE table_id=? AND key=?", (table_id, key)).fetchone()
        return None if found is None else (found[0], found[1], found[2])

    def page(self, table_id: int, where: Range, limit: int) -> list[RowRecord]:
        """At most `limit` rows of `where`, in key order: one LIMIT query, never the whole table."""
        clauses, args = self._range(table_id, where)
        sql = f"SELECT key, last_updated, columns FROM raw_rows WHERE {' AND '.join(clauses)} ORDER BY key LIMIT ?"
        return self.store.conn().execute(sql, (*args, limit)).fetchall()

    def split_keys(self, table_id: int, where: Range, parts: int) -> list[str]:
        """Up to parts-1 keys that cut the rows of `where` into `parts` runs of about equal size (one pass over the
        key index), for the parallel cursors."""
        clauses, args = self._range(table_id, where)
        conn = self.store.conn()
        total = conn.execute(f"SELECT COUNT(*) FROM raw_rows WHERE {' AND '.join(clauses)}", args).fetchone()[0]
        if parts <= 1 or total <= 1:
            return []
        step = -(-total // parts)
        rows = conn.execute(
            f"SELECT key FROM (SELECT key, row_number() OVER (ORDER BY key) - 1 AS n FROM raw_rows "
            f"WHERE {' AND '.join(clauses)}) WHERE n > 0 AND n % ? = 0 ORDER BY key", (*args, step)).fetchall()
        return [r[0] for r in rows]

    def delete_rows(self, table_id: int, keys: list[str]) -> None:
        """Unknown keys are no error, as in CDF."""
        with self.store.write() as db:
            db.executemany("DELETE FROM raw_rows WHERE table_id=? AND key=?", [(table_id, k) for k in keys])

    # -- helpers ----------------------------------------------------------------------------------------------
    @staticmethod
    def _range(table_id: int, where: Range) -> tuple[list[str], list[object]]:
        clauses: list[str] = ["table_id=?"]
        args: list[object] = [table_id]
        for clause, value in (("key>?", where.after), ("key>=?", where.start), ("key<?", where.until),
                              ("last_updated>?", where.min_updated), ("last_updated<=?", where.max_updated)):
            if value is not None:
                clauses.append(clause)
                args.append(value)
        return clauses, args

    @staticmethod
    def _db_id(db: sqlite3.Connection, project: str, name: str) -> int | None:
        row = db.execute("SELECT id FROM raw_dbs WHERE project=? AND name=?", (project, name)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _table_id(db: sqlite3.Connection, db_id: int, name: str) -> int | None:
        row = db.execute("SELECT id FROM raw_tables WHERE db_id=? AND name=?", (db_id, name)).fetchone()
        return None if row is None else int(row[0])

    def _ensure_db(self, db: sqlite3.Connection, project: str, name: str) -> int:
        db.execute("INSERT OR IGNORE INTO raw_dbs(project, name, created_time) VALUES (?, ?, ?)",
                   (project, name, now_ms()))
        found = self._db_id(db, project, name)
        assert found is not None  # inserted above, inside this write transaction
        return found

    def _ensure_table(self, db: sqlite3.Connection, db_id: int, name: str) -> int:
        db.execute("INSERT OR IGNORE INTO raw_tables(db_id, name, created_time) VALUES (?, ?, ?)",
                   (db_id, name, now_ms()))
        found = self._table_id(db, db_id, name)
        assert found is not None
        return found


_STORES: "weakref.WeakKeyDictionary[Store, RawStore]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def raw_store(store: "Store") -> RawStore:
    """The RawStore of this Store, its tables created on first use (once per Store)."""
    with _LOCK:
        found = _STORES.get(store)
        if found is None:
            found = _STORES[store] = RawStore(store)
        return found
