"""The analytics query engine over a local CDF: rows written to RAW with the real SDK in the contract's schema, read
back through DuckDB as `calls` (STRUCT features) and `versions` (the registry's, with metrics); the errors a query
gets (exit 2); --since; the incremental cache (only new rows fetched, updated rows seen, a corrupt file rebuilt, SQL
cannot change it, the overlap bounded); pages read as JSON arrays; DuckDB within a memory cap; check_sql without
CDF."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from akerbp.mlops import registry
from akerbp.mlops.analytics import cache, pages, rows
from akerbp.mlops.analytics.query import AnalyticsQueryError, check_metric_sql, check_sql, metric_value, run_sql
from akerbp.mlops.analytics.sync import OVERLAP_MS
from akerbp.mlops.local_cdf import LocalCDF
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database
from support import clear_faults, fault_rules, inject_faults

MODEL, ENV = "wd", "dev"
DB = analytics_database(ENV)
NOW = int(time.time() * 1000)
DAY = 86_400_000


def call_row(i: int, t: int, *, version: int = 1, status: str = "ok", gr: float = 50.0) -> tuple[str, dict]:
    """A RAW row as the recorder writes it (the contract's row schema)."""
    stats = {"count": 3, "nulls": 0, "mean": gr, "std": 1.0, "min": gr - 1, "max": gr + 1}
    return f"{t:013d}-{i}", {
        "time": t, "call_id": i, "model_id": f"{MODEL}/{ENV}/{version}", "version": version, "env": ENV,
        "latency_predict_ms": 10.0 + i, "latency_total_ms": 20.0 + i, "status": status,
        "error_type": None if status == "ok" else "ValueError", "rows": 3,
        "features": {"GR": stats, "NPHI": {**stats, "mean": 0.25}},
        "prediction": {"prediction": {**stats, "mean": 2.4}},
    }


@pytest.fixture(scope="module")
def cdf(tmp_path_factory):
    with LocalCDF(tmp_path_factory.mktemp("analytics") / "cdf") as local:
        yield local


@pytest.fixture(scope="module")
def client(cdf, tmp_path_factory):
    """10 calls of `wd`: 2 of them 8 days old (version 1), 8 in the last hour (version 2, one an error); two
    registry versions with metrics."""
    c = cdf.client(project="test")
    data = dict([call_row(0, NOW - 8 * DAY, gr=10.0), call_row(1, NOW - 8 * DAY + 1, gr=10.0)]
                + [call_row(i, NOW - 3_600_000 + i, version=2, status="error" if i == 5 else "ok", gr=40.0 + i)
                   for i in range(2, 10)])
    c.raw.rows.insert(DB, analytics_calls_table(MODEL), data, ensure_parent=True)
    folder = tmp_path_factory.mktemp("artifact")
    (folder / "model.txt").write_text("weights")
    registry.upload_new_model_version(MODEL, ENV, folder, {"metrics": {"rmse": 0.3, "gr_mean": 45.0}}, client=c)
    registry.upload_new_model_version(MODEL, ENV, folder, {"metrics": {"rmse": 0.2}, "r2": 0.9}, client=c)
    return c


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_query_over_the_calls_reads_struct_features(client):
    result = run_sql(client, MODEL, ENV, "SELECT version, count(*) AS calls, count(*) FILTER (status = 'error') AS "
                                         "errors, avg(features.GR.mean) AS gr, max(prediction.prediction.mean) AS p "
                                         "FROM calls GROUP BY version ORDER BY version")
    assert result.columns == ["version", "calls", "errors", "gr", "p"]
    assert result.rows == [(1, 2, 0, 10.0, 2.4), (2, 8, 1, 45.5, 2.4)]
    kinds = run_sql(client, MODEL, ENV, "SELECT typeof(time), typeof(time_ms), epoch_ms(time) = time_ms FROM calls "
                                        "LIMIT 1").rows
    assert kinds == [("TIMESTAMP", "BIGINT", True)]


def test_versions_table_has_metrics_by_name(client):
    result = run_sql(client, MODEL, ENV, "SELECT version, model_id, metrics.rmse, metrics.gr_mean, metrics.r2, live, "
                                         "typeof(created) FROM versions ORDER BY version")
    assert result.rows == [(1, "wd/dev/1", 0.3, 45.0, None, False, "TIMESTAMP"),
                           (2, "wd/dev/2", 0.2, None, 0.9, False, "TIMESTAMP")]
    # Drift: the mean of GR over the last day against the training version's.
    drift = metric_value(client, MODEL, ENV, "SELECT avg(features.GR.mean) - (SELECT metrics.gr_mean FROM versions "
                                             "WHERE version = 1) FROM calls WHERE time > now() - INTERVAL 1 DAY")
    assert drift == pytest.approx(0.5)


def test_since_filters_the_calls_by_time(client):
    assert metric_value(client, MODEL, ENV, "SELECT count(*) FROM calls", since_ms=NOW - DAY) == 8
    assert metric_value(client, MODEL, ENV, "SELECT count(*) FROM calls") == 10
    assert metric_value(client, MODEL, ENV, "SELECT count(*) FROM calls", since_ms=NOW + DAY) == 0


@pytest.mark.parametrize("sql, expected", [
    ("SELECT count(*), avg(latency_total_ms) FROM calls", "must return one column, it returns 2"),
    ("SELECT latency_total_ms FROM calls WHERE status = 'nope'", "must return one row, it returns 0"),
    ("SELECT avg(features.NOT_A_FEATURE.mean) FROM calls", "is NULL"),
    ("SELECT max(model_id) FROM calls", "is VARCHAR, not a number"),
    ("SELEC count(*) FROM calls", "syntax error"),
    ("SELECT count(nope) FROM calls", 'Referenced column "nope" not found'),
])
def test_metric_value_refuses_what_is_not_one_number(client, sql, expected):
    with pytest.raises(AnalyticsQueryError) as caught:
        metric_value(client, MODEL, ENV, sql)
    assert expected in str(caught.value)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"analytics query {sql!r}: ")


def test_check_sql_binds_against_empty_tables(cdf):
    assert check_sql("SELECT avg(features.GR.mean) FROM calls WHERE time > now() - INTERVAL 1 DAY") is None
    assert check_sql("SELECT v.metrics.rmse FROM versions v WHERE live") is None
    unknown = check_sql("SELECT avg(latency_ms) FROM calls")
    assert unknown is not None and 'Referenced column "latency_ms" not found' in unknown
    assert "syntax error" in (check_sql("SELECT FROM WHERE") or "")
    assert "does not exist" in (check_sql("SELECT * FROM cals") or "")
    assert check_metric_sql("SELECT count(*) FROM calls") is None
    assert "one column" in (check_metric_sql("SELECT 1, 2") or "")
    assert "not a number" in (check_metric_sql("SELECT max(status) FROM calls") or "")


def test_the_cache_fetches_only_new_rows(client, cdf):
    table = analytics_calls_table("inc")
    client.raw.rows.insert(DB, table, dict(call_row(i, NOW - 1000 + i) for i in range(50)), ensure_parent=True)
    first = rows.open_tables(client, "inc", ENV, "SELECT 1")
    first.close()
    assert (first.sync.full, first.sync.fetched, first.sync.stored) == (True, 50, 50)
    assert first.sync.cache.endswith(".duckdb")

    client.raw.rows.insert(DB, table, dict([call_row(i, NOW + i) for i in range(50, 53)]
                                           + [call_row(7, NOW - 1000 + 7, status="error")]), ensure_parent=True)
    counting = [{"path": f"{table}/rows", "method": "GET", "delay": 0, "count": 100},
                {"path": f"{table}/cursors", "method": "GET", "delay": 0, "count": 100}]
    inject_faults(cdf.base_url, counting)
    try:
        second = rows.open_tables(client, "inc", ENV, "SELECT 1", overlap_ms=0)
        hits = [rule["hits"] for rule in fault_rules(cdf.base_url)]
    finally:
        clear_faults(cdf.base_url)
    second.close()
    assert hits == [1, 0]  # one page, no cursors
    assert (second.sync.full, second.sync.fetched, second.sync.stored, second.sync.requests) == (False, 4, 53, 1)
    # The default overlap reaches back OVERLAP_MS before the previous sync began (+1 s: the server's Date header is
    # in whole seconds), not to the start.
    began = int(time.time() * 1000)
    third = rows.open_tables(client, "inc", ENV, "SELECT 1")
    third.close()
    fourth = rows.open_tables(client, "inc", ENV, "SELECT 1")
    try:
        high = fourth.con.execute("SELECT max(updated_ms) FROM calls").fetchone()[0]  # type: ignore[index]
    finally:
        fourth.close()
    assert fourth.sync.min_updated is not None
    assert min(high, began - OVERLAP_MS - 1000) <= fourth.sync.min_updated <= high
    # The default overlap refetches the recent rows, deduplicated by key; the updated row is seen.
    result = run_sql(client, "inc", ENV, "SELECT count(*), count(DISTINCT key), count(*) FILTER (status = 'error') "
                                         "FROM calls")
    assert result.rows == [(53, 53, 1)]


def test_a_corrupt_or_foreign_cache_file_is_rebuilt(client):
    path = cache.cache_file(client, DB, analytics_calls_table(MODEL))
    assert path is not None
    path.write_bytes(b"not a duckdb file" * 100)
    result = run_sql(client, MODEL, ENV, "SELECT count(*) FROM calls")
    assert result.rows == [(10,)] and result.sync is not None
    assert result.sync.rebuilt is not None and "does not open" in result.sync.rebuilt

    import duckdb

    path.unlink()
    with duckdb.connect(str(path)) as con:  # another schema: a file of another version of this code
        con.execute("CREATE TABLE raw_calls (key VARCHAR)")
    result = run_sql(client, MODEL, ENV, "SELECT count(*) FROM calls")
    assert result.rows == [(10,)] and "holds the tables" in (result.sync.rebuilt or "")  # type: ignore[union-attr]
    assert run_sql(client, MODEL, ENV, "SELECT count(*) FROM calls").sync.rebuilt is None  # type: ignore[union-attr]


def test_queries_cannot_change_the_cache(client):
    with pytest.raises(AnalyticsQueryError) as caught:
        run_sql(client, MODEL, ENV, "DELETE FROM cache.main.raw_calls")
    assert "read-only" in str(caught.value).lower()
    assert metric_value(client, MODEL, ENV, "SELECT count(*) FROM calls") == 10


def test_no_calls_and_no_cache(client):
    assert run_sql(client, "nothing_yet", ENV, "SELECT count(*) FROM calls").rows == [(0,)]
    memory = run_sql(client, MODEL, ENV, "SELECT count(*) FROM calls", use_cache=False)
    assert memory.rows == [(10,)] and memory.sync is not None and memory.sync.cache == ":memory:"


def test_a_value_of_the_wrong_type_is_null_not_a_failed_page(client):
    key, columns = call_row(1, NOW)
    client.raw.rows.insert(DB, analytics_calls_table("odd"), {key: {**columns, "call_id": "not a number"},
                                                             "k2": call_row(2, NOW + 1)[1]}, ensure_parent=True)
    result = run_sql(client, "odd", ENV, "SELECT call_id, features.GR.mean FROM calls ORDER BY time")
    assert result.rows == [(None, 50.0), (2, 50.0)]


def test_a_feature_that_comes_later_widens_the_cached_struct(client):
    table = analytics_calls_table("wide")
    client.raw.rows.insert(DB, table, dict([call_row(1, NOW)]), ensure_parent=True)
    assert metric_value(client, "wide", ENV, "SELECT count(*) FROM calls") == 1
    key, columns = call_row(2, NOW + 1)
    columns["features"]["DEPTH"] = {**columns["features"]["GR"], "mean": 2200.0}
    client.raw.rows.insert(DB, table, {key: columns}, ensure_parent=True)
    result = run_sql(client, "wide", ENV, "SELECT call_id, features.DEPTH.mean, features.GR.mean FROM calls ORDER BY 1")
    assert result.rows == [(1, None, 50.0), (2, 2200.0, 50.0)]
    assert result.sync is not None and not result.sync.full


def test_a_page_is_loaded_as_its_items_array():
    items = [{"key": "a", "columns": {"sample": {"x": "]}", "nextCursor": "[1]"}}, "lastUpdatedTime": 1}]
    for tail in (', "nextCursor": "Y3Vyc29y"}', ', "nextCursor": null}', "}", ' , "nextCursor":"x" }\n'):
        body = ('{"items": ' + json.dumps(items) + tail).encode()
        cut = pages.items_array(body)
        assert isinstance(cut, memoryview) and json.loads(bytes(cut)) == items
    for odd in ({"nextCursor": "x", "items": items}, {"items": items, "nextCursor": "x]"}, {"items": []}):
        assert json.loads(bytes(pages.items_array(json.dumps(odd).encode()))) == odd["items"]  # parsed instead


def test_duckdb_stays_within_a_memory_cap():
    """Under RLIMIT_DATA (the local CDF's function memory) DuckDB gets a quarter of it and two threads, and a page
    load does not ask for a 2 GB buffer; without a cap, DuckDB's defaults."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_DATA, (int(sys.argv[1]), int(sys.argv[1])))\n"
            "from akerbp.mlops.analytics import cache\n"
            "con = cache.connect(':memory:')\n"
            "print(con.execute(\"SELECT current_setting('memory_limit'), current_setting('threads')\").fetchone())")
    capped = subprocess.run([sys.executable, "-c", code, str(1536 << 20)], capture_output=True, text=True, timeout=60)
    assert capped.returncode == 0, capped.stderr
    assert capped.stdout.strip() == "('384.0 MiB', 2)"
    assert cache.duckdb_config() == {}  # this test process has no cap
