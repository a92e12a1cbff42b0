"""The RAW rows' lastUpdatedTime index: the time filters' edges on both ways of reading a page (the time index for a
narrow window, the key index for a wide one), partitions, and a data dir made before the index."""
from __future__ import annotations

import sqlite3

import pytest

from akerbp.mlops.local_cdf import raw_store as raw_store_module
from akerbp.mlops.local_cdf.raw_store import Range, raw_store
from akerbp.mlops.local_cdf.store import Store


def _table(tmp_path, monkeypatch):
    """30 rows: k00-k09 written at 100, k10-k19 at 200, k20-k29 at 300, then k05 rewritten at 300."""
    raw = raw_store(Store(tmp_path))
    for t, keys in ((100, range(0, 10)), (200, range(10, 20)), (300, range(20, 30)), (300, [5])):
        monkeypatch.setattr(raw_store_module, "now_ms", lambda t=t: t)
        raw.insert_rows("p", "db", "t", [(f"k{i:02d}", f'{{"i":{i}}}') for i in keys], ensure_parent=True)
    return raw, raw.table_id("p", "db", "t")


def _walk(raw, table_id: int, where: Range, limit: int = 3) -> list[tuple[str, int]]:
    """Every row of `where` a page at a time, each page continuing after the last key, as a cursor does."""
    found: list[tuple[str, int]] = []
    while True:
        after = found[-1][0] if found else where.after
        page = raw.page(table_id, Range(after=after, start=where.start, until=where.until,
                                        min_updated=where.min_updated, max_updated=where.max_updated), limit)
        found += [(key, updated) for key, updated, _ in page]
        if len(page) < limit:
            return found


@pytest.mark.parametrize("time_index_rows", [1_000, 0], ids=["time-index", "key-index"])
def test_the_time_window_is_exclusive_below_inclusive_above_on_both_plans(tmp_path, monkeypatch, time_index_rows):
    raw, table_id = _table(tmp_path, monkeypatch)
    monkeypatch.setattr(raw_store_module, "TIME_INDEX_ROWS", time_index_rows)
    at = {100: [f"k{i:02d}" for i in range(10) if i != 5], 200: [f"k{i:02d}" for i in range(10, 20)],
          300: ["k05", *(f"k{i:02d}" for i in range(20, 30))]}

    def keys(lo: int | None, hi: int | None) -> list[str]:
        return sorted(k for t, ks in at.items() if (lo is None or t > lo) and (hi is None or t <= hi) for k in ks)

    for lo, hi in [(100, 200), (99, 100), (None, 100), (200, None), (299, 300), (199, 200), (200, 200),
                   (300, None), (None, 99), (0, None), (None, None)]:
        rows = _walk(raw, table_id, Range(min_updated=lo, max_updated=hi))
        assert [k for k, _ in rows] == keys(lo, hi), (lo, hi)  # key order, each row once
        assert all((lo is None or t > lo) and (hi is None or t <= hi) for _, t in rows)
    # the update moved k05 into the newest window and out of the oldest
    assert ("k05", 300) in _walk(raw, table_id, Range(min_updated=200))
    assert "k05" not in [k for k, _ in _walk(raw, table_id, Range(max_updated=200))]
    # a partition's run [start, until) with the filter, as the /cursors items carry it
    assert [k for k, _ in _walk(raw, table_id, Range(start="k05", until="k21", min_updated=100))] == \
        ["k05", *(f"k{i:02d}" for i in range(10, 21))]

    for lo in (None, 100, 200):
        where = Range(min_updated=lo)
        cuts = raw.split_keys(table_id, where, 4)
        bounds = list(zip([None, *cuts], [*cuts, None]))
        parts = [_walk(raw, table_id, Range(start=s, until=u, min_updated=lo)) for s, u in bounds]
        assert [k for part in parts for k in (r[0] for r in part)] == keys(lo, None)
        assert len(cuts) == 3 and max(map(len, parts)) - min(map(len, parts)) <= len(cuts)


def test_a_narrow_window_reads_the_time_index_and_a_wide_one_the_key_index(tmp_path, monkeypatch):
    raw, table_id = _table(tmp_path, monkeypatch)
    monkeypatch.setattr(raw_store_module, "TIME_INDEX_ROWS", 15)
    conn = raw.store.conn()
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        raw.page(table_id, Range(min_updated=200), 5)  # 11 rows in the window
        narrow = seen[-1]
        raw.page(table_id, Range(min_updated=100), 5)  # 21 rows
        wide = seen[-1]
    finally:
        conn.set_trace_callback(None)

    def plan(sql: str) -> str:
        return " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))

    assert "COVERING INDEX raw_rows_updated" in plan(narrow) and "SCAN raw_rows" not in plan(narrow)
    assert "INDEX raw_rows_key" in plan(wide) and "TEMP B-TREE" not in plan(wide)  # key order, no sort


def test_a_data_dir_made_before_the_index_gets_it_when_opened(tmp_path, monkeypatch):
    Store(tmp_path)  # the store's own tables; RAW's as they were before the time index
    db = sqlite3.connect(tmp_path / "cdf.sqlite3")
    for statement in raw_store_module.SCHEMA:
        if "raw_rows_updated" not in statement:
            db.execute(statement)
    db.execute("INSERT INTO raw_dbs(project, name, created_time) VALUES ('p', 'db', 1)")
    db.execute("INSERT INTO raw_tables(db_id, name, created_time) VALUES (1, 't', 1)")
    db.executemany("INSERT INTO raw_rows VALUES (1, ?, ?, '{}')", [(f"k{i}", i) for i in range(10)])
    db.commit()
    assert "raw_rows_updated" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    db.close()

    raw = raw_store(Store(tmp_path))
    indexes = {r[0] for r in raw.store.conn().execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "raw_rows_updated" in indexes
    assert [r[0] for r in raw.page(raw.table_id("p", "db", "t"), Range(min_updated=6), 10)] == ["k7", "k8", "k9"]
