"""`mlops analytics` as a user runs it (three subprocesses over one model repo with its own local CDF): the default
summary as --json, an unknown model and a query DuckDB refuses (exit 2); --since parsing in-process."""
from __future__ import annotations

import time

import pytest

from akerbp.mlops.cli.analytics import since_ms
from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database
from support import Repo, copy_template

NOW = int(time.time() * 1000)


def row(i: int, t: int, status: str = "ok") -> tuple[str, dict]:
    stats = {"count": 2, "nulls": 0, "mean": 40.0, "std": 1.0, "min": 39.0, "max": 41.0}
    return f"{t:013d}-{i}", {"time": t, "call_id": i, "model_id": "well_density/dev/1", "version": 1, "env": "dev",
                             "latency_predict_ms": 5.0, "latency_total_ms": 10.0 * i, "status": status,
                             "error_type": None if status == "ok" else "ValueError", "rows": 2,
                             "features": {"GR": stats}, "prediction": {"prediction": stats}}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_template(tmp_path_factory.mktemp("analytics") / "repo")
    repo = Repo(root)
    calls = dict([row(i, NOW - 60_000 + i, "error" if i == 4 else "ok") for i in range(1, 5)]
                 + [row(9, NOW - 30 * 86_400_000)])  # a month old: outside --since 1d
    repo.client.raw.rows.insert(analytics_database("dev"), analytics_calls_table("well_density"), calls,
                                ensure_parent=True)
    yield repo
    repo.close()


def test_the_summary_as_json(repo, tmp_path):
    run = repo.run("mlops", "analytics", "well_density", "--since", "1d", "--json", XDG_CACHE_HOME=str(tmp_path))
    assert run.code == 0, run.stderr
    doc = run.json
    assert set(doc) == {"model", "env", "since", "columns", "rows", "cache"}
    assert (doc["model"], doc["env"]) == ("well_density", "dev") and doc["since"].endswith("Z")
    assert doc["columns"] == ["hour", "version", "calls", "errors", "p50_ms", "p95_ms", "input_rows"]
    ((hour, version, calls, errors, p50, p95, input_rows),) = doc["rows"]
    assert (version, calls, errors, p50, p95, input_rows) == (1, 4, 1, 25.0, 38.5, 8)
    assert hour.startswith(time.strftime("%Y-%m-%d", time.gmtime(NOW / 1000 - 60)))
    assert doc["cache"]["stored"] == 5 and doc["cache"]["file"].startswith(str(tmp_path))


def test_an_unknown_model_is_exit_2_naming_the_known_ones(repo, tmp_path):
    run = repo.cli("analytics", "wel_density", XDG_CACHE_HOME=str(tmp_path))
    assert run.code == 2, run.stderr
    assert "unknown model 'wel_density'" in run.stderr and "well_density" in run.stderr


def test_a_query_duckdb_refuses_is_exit_2_with_its_message(repo, tmp_path):
    run = repo.cli("analytics", "well_density", "--sql", "SELECT avg(latency) FROM calls",
                   XDG_CACHE_HOME=str(tmp_path))
    assert run.code == 2, run.stderr
    assert "analytics query 'SELECT avg(latency) FROM calls'" in run.stderr
    assert 'Referenced column "latency" not found' in run.stderr
    assert "Traceback" not in run.stderr


def test_since_is_a_duration_or_all():
    assert since_ms("30m", now_ms=10_000_000) == 10_000_000 - 1_800_000
    assert since_ms("2w", now_ms=2_000_000_000) == 2_000_000_000 - 14 * 86_400_000
    assert since_ms("all") is None
    for bad in ("7x", "0d", "-1d", "d", ""):
        with pytest.raises(UsageError, match="--since .* is invalid"):
            since_ms(bad)
