"""Model analytics of batch executions: the template's prediction service deployed with analytics enabled to a local
CDF, a batch over a small csv, then its rows in RAW and through `mlops analytics` (test_batch.py's service has
analytics disabled: its batches record nothing, checked there)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from akerbp.mlops import batch
from akerbp.mlops.deployment.deploy import deploy_model
from akerbp.mlops.deployment.target import Target
from akerbp.mlops.settings import load_settings
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database
from support import Repo, copy_template

MODEL, ENV = "well_density", "dev"
CSV = b"GR,NPHI,DEPTH\n" + b"".join(
    (b"x" if i == 3 else str(80 + i).encode()) + b",0.25,2000\n" for i in range(25))  # row 3 is bad


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = copy_template(tmp_path_factory.mktemp("batch-analytics") / "repo")
    settings_file = root / "mlops_settings.py"
    settings_file.write_text(settings_file.read_text().replace('analytics={"enabled": False}',
                                                               'analytics={"enabled": True}'))
    r = Repo(root, isolation="shared-no-install")
    try:
        (settings,) = load_settings(settings_file)
        assert settings.analytics.enabled
        result = deploy_model(settings, "prediction", ENV, Target(ENV, client=r.client), dry_run=False,
                              force=False, timeout=300, progress=lambda message: None)
        assert result.ok, result.message
        r.client.files.upload_bytes(CSV, external_id="in/wells.csv", name="wells.csv")
        yield r
    finally:
        r.close()


def test_each_batch_is_a_row_of_the_models_analytics(repo: Repo, tmp_path: Path) -> None:
    result = batch.run(repo.client, MODEL, ENV, "in/wells.csv", batch_size=10, execution="b1", say=lambda m: None)

    assert result.ok and (result.rows_in, result.rows_out, result.bad_row_count) == (25, 24, 1)
    listed = repo.client.raw.rows.list(analytics_database(ENV), analytics_calls_table(MODEL), limit=None)
    rows = sorted((r for r in listed if r.columns.get("source") == "batch"),  # written before the call answered
                  key=lambda r: int(r.key.rsplit("-", 1)[1]))
    service = [r.columns for r in listed if "source" not in r.columns]  # the deploy's test calls: rows without one
    assert service and all(c["call_id"] is not None for c in service)
    assert [r.key.rsplit("-", 1)[1] for r in rows] == ["0", "10", "20"]
    cols = [r.columns for r in rows]
    assert [(c["source"], c["execution"], c["rows"], c["status"]) for c in cols] == [
        ("batch", "b1", 10, "error"), ("batch", "b1", 10, "ok"), ("batch", "b1", 5, "ok")]
    assert cols[0]["error_type"] == "ModelException" and cols[0]["prediction"] == {}  # as the service's error rows
    assert cols[0]["features"]["GR"]["count"] == 9 and cols[1]["features"]["GR"]["mean"] == pytest.approx(94.5)
    assert cols[1]["prediction"]["prediction"]["count"] == 10 and cols[1]["error_type"] is None
    assert all(c["model_id"] == result.model_id and c["env"] == ENV and c["call_id"] is not None
               and c["latency_total_ms"] >= c["latency_predict_ms"] > 0 for c in cols)

    run = repo.cli("analytics", MODEL, "--env", ENV, "--sql", "SELECT source, sum(rows) FROM calls GROUP BY 1",
                   "--json", XDG_CACHE_HOME=str(tmp_path))
    assert run.code == 0, run.stderr
    assert sorted(run.json["rows"]) == [["batch", 25], ["service", sum(c["rows"] for c in service)]]
    run = repo.cli("analytics", MODEL, "--env", ENV, "--sql", "SELECT DISTINCT execution FROM calls "
                   "WHERE source = 'batch'", "--json", XDG_CACHE_HOME=str(tmp_path))
    assert run.json["rows"] == [["b1"]]
