"""CDF RAW in the local CDF, through the real cognite-sdk: databases and tables, rows with time filters, partitions,
column selection, CDF's limits, delete by key and ensureParent."""
from __future__ import annotations

import time

import pytest
import requests
from cognite.client.data_classes.raw import Database, DatabaseList, Row, RowWrite, Table, TableList
from cognite.client.exceptions import CogniteAPIError, CogniteNotFoundError

from akerbp.mlops.local_cdf import LocalCDF
from support import TOKEN, inject_faults


def _rows(prefix: str, n: int, start: int = 0) -> dict[str, dict]:
    return {f"{prefix}{i:06d}": {"i": i, "model": "m/prod/1", "ok": True} for i in range(start, start + n)}


def _after_this_millisecond(t_ms: int, timeout_s: float = 1.0) -> None:
    """Return once the wall clock has passed `t_ms`, so the next insert's lastUpdatedTime is later (a clock wait of at
    most a millisecond, with a deadline, not a synchronisation)."""
    deadline = time.monotonic() + timeout_s
    while time.time() * 1000 <= t_ms + 1:
        if time.monotonic() > deadline:
            raise AssertionError("the clock did not move on")


# -- databases and tables ---------------------------------------------------------------------------------------
def test_databases_and_tables_are_created_listed_with_cursors_and_deleted(client):
    created = client.raw.databases.create(["db-a", "db-b", "db/c"])
    assert isinstance(created, DatabaseList) and [d.name for d in created] == ["db-a", "db-b", "db/c"]
    assert all(d.created_time for d in created)
    one = client.raw.databases.create("db-d")
    assert isinstance(one, Database) and one.name == "db-d"
    # chunk_size=1: one database per request, each page continuing from the previous page's cursor
    assert [d.name for d in client.raw.databases(chunk_size=1) for d in d] == ["db-a", "db-b", "db-d", "db/c"]
    assert [d.name for d in client.raw.databases.list(limit=2)] == ["db-a", "db-b"]

    tables = client.raw.tables.create("db/c", ["t1", "t/2", "t3"])
    assert isinstance(tables, TableList) and [t.name for t in tables] == ["t1", "t/2", "t3"]
    assert isinstance(client.raw.tables.create("db/c", "t4"), Table)
    assert [t.name for t in client.raw.tables.list("db/c", limit=None)] == ["t/2", "t1", "t3", "t4"]
    assert [t.name for t in client.raw.tables("db/c", chunk_size=3) for t in t] == ["t/2", "t1", "t3", "t4"]

    with pytest.raises(CogniteAPIError) as dup:
        client.raw.databases.create(["db-a", "db-new"])
    assert dup.value.code == 400 and "'db-a'" in dup.value.message and "db-new" not in dup.value.message
    assert "db-new" not in [d.name for d in client.raw.databases.list(limit=None)]  # all or nothing
    with pytest.raises(CogniteAPIError) as dup_table:
        client.raw.tables.create("db/c", "t1")
    assert dup_table.value.code == 400 and "t1" in dup_table.value.message
    with pytest.raises(CogniteNotFoundError):
        client.raw.tables.create("no-such-db", "t")
    with pytest.raises(CogniteAPIError) as too_long:
        client.raw.databases.create("x" * 33)
    assert too_long.value.code == 400 and "1 to 32 characters" in too_long.value.message

    client.raw.tables.delete("db/c", ["t3", "t4"])
    assert [t.name for t in client.raw.tables.list("db/c")] == ["t/2", "t1"]
    with pytest.raises(CogniteAPIError) as not_empty:
        client.raw.databases.delete("db/c")
    assert not_empty.value.code == 400 and "recursive" in not_empty.value.message
    client.raw.rows.insert("db/c", "t1", {"k": {"v": 1}})
    client.raw.databases.delete(["db/c", "db-d"], recursive=True)
    assert [d.name for d in client.raw.databases.list()] == ["db-a", "db-b"]
    with pytest.raises(CogniteNotFoundError):
        client.raw.databases.delete("db/c")
    client.raw.databases.create("db/c")  # a fresh database: the old tables and rows went with the old one
    assert list(client.raw.tables.list("db/c")) == []
    with pytest.raises(CogniteNotFoundError):
        client.raw.rows.list("db/c", "t1")


# -- rows -------------------------------------------------------------------------------------------------------
def test_100000_rows_round_trip_with_time_filters_partitions_and_chunks(client):
    first, second = _rows("a", 50_000), _rows("b", 50_000)
    client.raw.rows.insert("analytics", "calls", first, ensure_parent=True)
    t_first = int(time.time() * 1000)  # the server's clock is this machine's: every first row is at or before it
    _after_this_millisecond(t_first)
    second["a000007"] = {"i": -7}  # an update moves a row to the newer time
    client.raw.rows.insert("analytics", "calls", second)

    every = client.raw.rows.list("analytics", "calls", limit=None, partitions=4)
    assert len(every) == 100_001 - 1  # a000007 is one row, not two
    by_key = {r.key: r for r in every}
    assert set(by_key) == set(first) | set(second)
    assert by_key["a000007"].columns == {"i": -7} and by_key["b000042"].columns == second["b000042"]
    newer = {k for k, r in by_key.items() if r.last_updated_time > t_first}
    assert newer == set(second)

    after = client.raw.rows.list("analytics", "calls", min_last_updated_time=t_first, limit=None, partitions=3)
    assert sorted(r.key for r in after) == sorted(second)  # exclusive lower bound
    until = client.raw.rows.list("analytics", "calls", max_last_updated_time=t_first, limit=None, partitions=3)
    assert sorted(r.key for r in until) == sorted(set(first) - {"a000007"})  # inclusive upper bound

    t_b = by_key["b000000"].last_updated_time
    at_t_b = client.raw.rows.list("analytics", "calls", min_last_updated_time=t_b - 1, max_last_updated_time=t_b,
                                  limit=None)
    assert sorted(r.key for r in at_t_b) == sorted(k for k, r in by_key.items() if r.last_updated_time == t_b)
    assert client.raw.rows.list("analytics", "calls", min_last_updated_time=t_b, max_last_updated_time=t_b) == []

    chunks = list(client.raw.rows("analytics", "calls", chunk_size=7_000, min_last_updated_time=t_first))
    assert [len(c) for c in chunks] == [7_000] * 7 + [1_001]
    keys = [r.key for c in chunks for r in c]
    assert keys == sorted(second)  # one cursor reads in key order, no row twice
    limited = client.raw.rows.list("analytics", "calls", limit=30_000, partitions=2)
    assert len(limited) == 30_000 and len({r.key for r in limited}) == 30_000


def test_columns_select_what_is_returned(client):
    client.raw.rows.insert("db", "t", [RowWrite("r1", {"a": 1, "b": {"nested": [1, 2]}, "c": "x"}),
                                       RowWrite("r2", {"b": None})], ensure_parent=True)
    rows = client.raw.rows.list("db", "t", columns=["b", "missing"])
    assert [(r.key, r.columns) for r in rows] == [("r1", {"b": {"nested": [1, 2]}}), ("r2", {"b": None})]
    assert [r.columns for r in client.raw.rows.list("db", "t", columns=[])] == [{}, {}]
    partitioned = client.raw.rows.list("db", "t", columns=["a"], limit=None, partitions=2)
    assert sorted((r.key, r.columns) for r in partitioned) == [("r1", {"a": 1}), ("r2", {})]
    assert client.raw.rows.retrieve("db", "t", "r1").columns == {"a": 1, "b": {"nested": [1, 2]}, "c": "x"}


def test_rows_are_retrieved_and_deleted_by_key(client):
    client.raw.rows.insert("db", "t", {"keep": {"v": 1}, "go/away?": {"v": 2}, "also gone": {"v": 3}},
                           ensure_parent=True)
    row = client.raw.rows.retrieve("db", "t", "go/away?")
    assert isinstance(row, Row) and row.columns == {"v": 2} and row.last_updated_time > 0
    client.raw.rows.delete("db", "t", ["go/away?", "also gone", "never there"])
    assert client.raw.rows.retrieve("db", "t", "go/away?") is None
    assert [r.key for r in client.raw.rows.list("db", "t")] == ["keep"]


def test_ensure_parent_creates_the_database_and_table_only_when_asked(client):
    with pytest.raises(CogniteNotFoundError):
        client.raw.rows.insert("new-db", "new-table", {"k": {"v": 1}})
    assert "new-db" not in [d.name for d in client.raw.databases.list()]
    client.raw.databases.create("new-db")
    with pytest.raises(CogniteNotFoundError) as no_table:
        client.raw.rows.insert("new-db", "new-table", {"k": {"v": 1}})
    assert "ensureParent" in no_table.value.message
    client.raw.rows.insert("new-db", "new-table", {"k": {"v": 1}}, ensure_parent=True)
    client.raw.rows.insert("other-db", "t", {"k": {"v": 2}}, ensure_parent=True)
    assert [t.name for t in client.raw.tables.list("new-db")] == ["new-table"]
    assert client.raw.rows.retrieve("other-db", "t", "k").columns == {"v": 2}


def test_cdf_limits_are_refused_with_a_400_saying_which_row(client):
    client.raw.rows.insert("db", "t", {"ok": {"v": 1}}, ensure_parent=True)
    url = f"/api/v1/projects/{client.config.project}/raw/dbs/db/tables/t/rows"
    with pytest.raises(CogniteAPIError) as too_many:  # the SDK sends 5,000 per request; CDF takes up to 10,000
        client.post(url, json={"items": [{"key": f"k{i}", "columns": {}} for i in range(10_001)]})
    assert too_many.value.code == 400 and "10000 rows per request" in too_many.value.message
    client.post(url, json={"items": [{"key": f"k{i}", "columns": {}} for i in range(10_000)]})

    with pytest.raises(CogniteAPIError) as long_key:
        client.raw.rows.insert("db", "t", {"k" * 1025: {"v": 1}})
    assert long_key.value.code == 400 and "1 to 1024 characters" in long_key.value.message
    client.raw.rows.insert("db", "t", {"é" * 1024: {"v": 1}})  # characters, not bytes

    with pytest.raises(CogniteAPIError) as big_value:
        client.raw.rows.insert("db", "t", {"big": {"text": "x" * 2_621_440}})  # 2 quotes over the limit as JSON
    assert big_value.value.code == 400 and "2621440 characters" in big_value.value.message
    with pytest.raises(CogniteAPIError) as big_row:
        client.raw.rows.insert("db", "t", {"huge": {f"c{i}": "x" * 2_000_000 for i in range(3)}})
    assert big_row.value.code == 400 and "huge" in big_row.value.message and "5242880 bytes" in big_row.value.message
    assert client.raw.rows.retrieve("db", "t", "huge") is None and client.raw.rows.retrieve("db", "t", "big") is None

    with pytest.raises(CogniteAPIError) as not_an_object:
        client.post(url, json={"items": [{"key": "k", "columns": [1, 2]}]})
    assert not_an_object.value.code == 400 and "items[0].columns" in not_an_object.value.message
    nan = requests.post(f"{client.config.base_url}{url}", data='{"items": [{"key": "k", "columns": {"v": NaN}}]}',
                        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}, timeout=30)
    assert nan.status_code == 400 and "NaN" in nan.json()["error"]["message"]
    with pytest.raises(CogniteAPIError) as bad_limit:
        client.get(url, params={"limit": 10_001})
    assert bad_limit.value.code == 400 and "limit" in bad_limit.value.message
    with pytest.raises(CogniteAPIError) as bad_cursor:
        client.get(url, params={"cursor": "not-a-cursor"})
    assert bad_cursor.value.code == 400 and "cursor" in bad_cursor.value.message


def test_rows_survive_a_restart_and_faults_cover_raw(tmp_path):
    with LocalCDF(tmp_path / "cdf") as cdf:
        client = cdf.client(project="test")
        inject_faults(cdf.base_url, [{"path": "/raw/dbs/db/tables/t/rows", "method": "POST", "status": 503,
                                      "count": 2}])
        client.raw.rows.insert("db", "t", _rows("k", 10), ensure_parent=True)  # retried by the SDK after 503s
    with LocalCDF(tmp_path / "cdf") as cdf:
        client = cdf.client(project="test")
        assert sorted(r.key for r in client.raw.rows.list("db", "t", limit=None)) == sorted(_rows("k", 10))
        assert client.raw.rows.list("db", "t", limit=None) and not cdf.client(project="other").raw.databases.list()
