"""The dashboard's Snapshot over a local CDF through the real cognite-sdk: a two-model history built with the real
registry (uploads with metrics, a promotion, a tombstone), audit records, a live prediction function with its
verified code file, an automation's workflow, trigger and a run, and analytics rows in RAW; each page's dict, the
incremental refresh (a new version appears, a deleted one disappears, a new audit record shows) and UnknownModel."""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import (
    FileMetadataUpdate,
    FunctionTaskParameters,
    WorkflowDefinitionUpsert,
    WorkflowTask,
    WorkflowUpsert,
    WorkflowVersionUpsert,
)
from cognite.client.data_classes.workflows import WorkflowScheduledTriggerRule, WorkflowTriggerUpsert

from akerbp.mlops import audit, registry
from akerbp.mlops.deployment.functions import CODE_DIRECTORY
from akerbp.mlops.deployment.records import VERIFIED_KEY
from akerbp.mlops.errors import UsageError
from akerbp.mlops.local_cdf import LocalCDF
from akerbp.mlops.ui.incremental import OVERLAP_MS, Listing
from akerbp.mlops.ui.snapshot import CdfReadFailed, Snapshot, UnknownModel
from akerbp.mlops.ui.versions_index import RegistryIndex
from akerbp.mlops.vocabulary import (
    analytics_calls_table,
    analytics_database,
    automation_workflow_external_id,
    code_file_external_id,
    function_external_id,
)
from support import clear_faults, inject_faults, zipped

NOW = int(time.time() * 1000)
TRAINING = {"GR": {"mean": 50.0, "std": 2.0, "min": 40.0, "max": 60.0, "count": 100}}
DEFINITION = {"name": "nightly", "model": "alpha", "env": "dev",
              "trigger": {"type": "metric", "metric": {"sql_query": "SELECT avg(latency_total_ms) FROM calls"},
                          "direction": "above", "threshold": 100.0, "cooldown_s": 0},
              "action": {"type": "train_and_deploy"}}


def call_row(i: int, t: int, gr: float, status: str = "ok") -> tuple[str, dict]:
    """A RAW row as the analytics recorder writes it."""
    stats = {"count": 4, "nulls": 0, "mean": gr, "std": 1.0, "min": gr - 1, "max": gr + 1}
    return f"{t:013d}-{i}", {
        "time": t, "call_id": i, "model_id": "alpha/dev/3", "version": 3, "env": "dev",
        "latency_predict_ms": 5.0, "latency_total_ms": 10.0 + i, "status": status,
        "error_type": None if status == "ok" else "ValueError", "rows": 4, "features": {"GR": stats},
        "prediction": {"prediction": stats}}


def wait_ended(client: CogniteClient, execution_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        found = client.workflows.executions.retrieve_detailed(execution_id)
        if found is not None and found.status in ("completed", "failed", "terminated", "timed_out"):
            return str(found.status)
        if time.monotonic() > deadline:
            raise AssertionError(f"execution {execution_id} did not end within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CogniteClient]:
    root = tmp_path_factory.mktemp("ui-snapshot")
    with LocalCDF(root / "cdf") as cdf:
        c = cdf.client(project="test")
        folder = root / "artifact"
        folder.mkdir()
        (folder / "model.txt").write_text("weights")
        for i, r2 in enumerate((0.5, 0.7, 0.9), start=1):
            metadata: dict[str, Any] = {"metrics": {"r2": r2, "rmse": 1.0 - r2}, "owner": "team"}
            if i == 3:
                metadata["training_features"] = TRAINING
            registry.upload_new_model_version("alpha", "dev", folder, metadata, client=c)
        registry.promote_model("alpha", 3, "test", client=c)
        registry.upload_new_model_version("beta", "dev", folder, client=c)
        started = time.time() - 5
        audit.record(c, "deploy", model="alpha", env="dev", outcome="success", started=started,
                     service="prediction", version=3, model_id="alpha/dev/3", code_hash="abc123")
        audit.record(c, "training", model="beta", env="dev", outcome="failed", started=started + 2,
                     message="training data missing")
        live = function_external_id("alpha", "prediction", "dev")
        code = c.files.upload_bytes(zipped({"handler.py": "def handle(data):\n    return data\n"}),
                                    name=f"{live}.zip", external_id=code_file_external_id(live, "abc123"),
                                    directory=CODE_DIRECTORY, metadata={"mlops_status": "deployed"})
        meta = {"mlops_model": "alpha", "mlops_service": "prediction", "mlops_env": "dev", "mlops_version": "3",
                "mlops_model_id": "alpha/dev/3", "mlops_hash": "abc123", "mlops_git_commit": "deadbeef",
                "mlops_deployed_at": "2026-01-02T03:04:05.000+00:00", "mlops_deployed_by": "tester",
                "mlops_code_file": str(code.id)}
        fn = c.functions.create(name=live, external_id=live, file_id=code.id, metadata=meta)
        c.files.update(FileMetadataUpdate(id=code.id).metadata.add({VERIFIED_KEY: str(fn.id)}))
        xid = automation_workflow_external_id("nightly", "dev")
        c.workflows.upsert(WorkflowUpsert(external_id=xid))
        c.workflows.versions.upsert(WorkflowVersionUpsert(
            workflow_external_id=xid, version="1", workflow_definition=WorkflowDefinitionUpsert(tasks=[WorkflowTask(
                external_id="check", parameters=FunctionTaskParameters(
                    external_id="alpha-automation-dev", data={"automation": DEFINITION}))])))
        c.workflows.triggers.upsert(WorkflowTriggerUpsert(
            external_id=xid, workflow_external_id=xid, workflow_version="1",
            trigger_rule=WorkflowScheduledTriggerRule(cron_expression="0 3 * * *", timezone=ZoneInfo("Europe/Oslo")),
            metadata={"mlops_hash": "h1", "mlops_automation": "nightly", "mlops_model": "alpha", "mlops_env": "dev",
                      "mlops_enabled": "true", "mlops_commit": "deadbeef"}))
        run = c.workflows.executions.run(xid, "1")
        wait_ended(c, run.id)
        c.raw.rows.insert(analytics_database("dev"), analytics_calls_table("alpha"),
                          dict(call_row(i, NOW - 3_600_000 + i * 1000, 48.0 + i, "error" if i == 0 else "ok")
                               for i in range(6)), ensure_parent=True)
        yield c


@pytest.fixture(scope="module")
def snapshot(client: CogniteClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshot]:
    lines: list[str] = []
    snap = Snapshot(targets=[(client, ["dev", "test", "prod"])], min_refresh_s=0, progress=lines.append)
    snap.load()
    assert any("registry files" in line for line in lines)
    yield snap
    snap.close()


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def pooled_mean(feature: dict, calls: list[int]) -> float:
    """The mean over every period (each call carries 4 values)."""
    return sum(m * n for m, n in zip(feature["mean"], calls)) / sum(calls)


def assert_page(page: dict) -> None:
    """JSON as it is, and headed by when and from which CDF it was read."""
    assert json.loads(json.dumps(page)) == page
    assert page["generated_at"].endswith("Z") and [c["project"] for c in page["cdf"]] == ["test"]


def test_models_page_shows_each_model_per_env_with_its_live_service(snapshot: Snapshot):
    page = snapshot.models()
    assert_page(page)
    assert page["envs"] == ["dev", "test", "prod"]
    assert page["cdf"][0]["project"] == "test" and page["cdf"][0]["local"] is True
    assert [m["name"] for m in page["models"]] == ["alpha", "beta"]
    alpha = page["models"][0]["envs"]
    assert alpha["dev"]["versions"] == 3 and alpha["test"]["versions"] == 1 and alpha["prod"]["versions"] == 0
    assert alpha["dev"]["latest"]["model_id"] == "alpha/dev/3"
    assert alpha["dev"]["latest"]["created_time"].endswith("Z")
    assert alpha["prod"]["latest"] is None and alpha["test"]["prediction"] is None
    service = alpha["dev"]["prediction"]
    assert service["model_id"] == "alpha/dev/3" and service["hash"] == "abc123"
    assert service["verified"] is True and service["deployed_by"] == "tester"
    assert service["deployed_at"] == "2026-01-02T03:04:05Z" and service["last_call"] is None
    assert alpha["dev"]["training"] is None


def test_model_page_has_versions_metrics_series_live_and_promotions(snapshot: Snapshot):
    page = snapshot.model("alpha")
    assert_page(page)
    assert page["metrics"] == ["r2", "rmse"] and page["metric"] == "r2"
    assert [v["version"] for v in page["versions"]["dev"]] == [3, 2, 1]
    newest = page["versions"]["dev"][0]
    assert newest["metrics"] == {"r2": 0.9, "rmse": pytest.approx(0.1)}
    assert newest["metadata"]["owner"] == "team" and "metrics" not in newest["metadata"]
    assert "sha256" not in newest["metadata"] and len(newest["sha256"]) == 64
    assert newest["live_in"] == ["prediction"] and page["versions"]["dev"][1]["live_in"] == []
    assert page["totals"] == {"dev": 3, "test": 1, "prod": 0}
    assert page["series"]["dev"] == {"version": [1, 2, 3], "value": [0.5, 0.7, 0.9],
                                     "model_id": ["alpha/dev/1", "alpha/dev/2", "alpha/dev/3"]}
    assert page["live"]["dev"] == {"prediction": "alpha/dev/3", "training": None}
    assert [(p["from"], p["to"]) for p in page["promotions"]] == [("alpha/dev/3", "alpha/test/3")]
    assert page["promotions"][0]["time"].endswith("Z")
    assert snapshot.model("alpha", metric="rmse")["series"]["dev"]["value"] == pytest.approx([0.5, 0.3, 0.1])
    assert snapshot.model("beta")["metric"] is None


def test_history_is_the_audit_trail_newest_first(snapshot: Snapshot):
    page = snapshot.history()
    assert_page(page)
    assert [(e["action"], e["model"], e["env"]) for e in page["events"]] == [
        ("promotion", "alpha", "test"), ("training", "beta", "dev"), ("deploy", "alpha", "dev")]  # the registry
    # writes the promotion's record itself
    assert page["total"] == 3 and page["models"] == ["alpha", "beta"]
    deploy = page["events"][-1]
    assert deploy["service"] == "prediction" and deploy["version"] == 3 and deploy["outcome"] == "success"
    assert isinstance(deploy["duration_s"], float) and deploy["time"].endswith("Z")
    only = snapshot.history("alpha", limit=1)
    assert only["total"] == 2 and [e["action"] for e in only["events"]] == ["promotion"]


def test_automations_page_shows_the_trigger_metric_next_run_and_the_run(snapshot: Snapshot):
    page = snapshot.automations()
    assert_page(page)
    [one] = page["automations"]
    assert (one["name"], one["model"], one["env"], one["kind"]) == ("nightly", "alpha", "dev", "metric")
    assert one["cron"] == "0 3 * * *" and one["timezone"] == "Europe/Oslo" and one["paused"] is False
    assert one["next_run"].endswith("Z") and one["next_run"] > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    assert one["metric"]["sql"] == DEFINITION["trigger"]["metric"]["sql_query"]
    assert one["metric"]["threshold"] == 100.0 and one["metric"]["direction"] == "above"
    [run] = one["executions"]
    assert run["status"] == "failed" and run["tasks"][0]["name"] == "check"  # its function does not exist


def test_analytics_page_has_calls_latency_and_drift_against_training(snapshot: Snapshot):
    page = snapshot.analytics("alpha", since="1d")
    assert_page(page)
    assert page["env"] == "dev" and page["envs"] == ["dev"] and page["by"] == "hour" and page["note"] is None
    assert sum(page["series"]["calls"]) == 6 and sum(page["series"]["errors"]) == 1
    assert all(p95 >= p50 for p50, p95 in zip(page["series"]["p50_ms"], page["series"]["p95_ms"]))
    gr = page["features"]["GR"]
    assert gr["time"] == page["series"]["time"]
    assert pooled_mean(gr, page["series"]["calls"]) == pytest.approx(sum(48.0 + i for i in range(6)) / 6)
    assert gr["baseline_note"] is None
    assert gr["baseline"] == {"mean": 50.0, "std": 2.0, "version": 3, "model_id": "alpha/dev/3"}
    quiet = snapshot.analytics("alpha", env="test")
    assert quiet["series"]["calls"] == [] and "no calls of alpha recorded in test" in quiet["note"]
    with pytest.raises(UsageError, match="--since"):
        snapshot.analytics("alpha", since="yesterday")


def test_drift_pools_the_calls_of_a_period(snapshot: Snapshot):
    page = snapshot.analytics("alpha", since="all")
    gr = page["features"]["GR"]
    assert page["by"] == "day"
    assert pooled_mean(gr, page["series"]["calls"]) == pytest.approx(sum(48.0 + i for i in range(6)) / 6)
    assert all(s >= 1.0 for s in gr["std"])  # each call's std 1.0, plus the spread of their means
    if len(gr["std"]) == 1:  # one period: the std of every value the six calls carried
        assert gr["std"][0] == pytest.approx((1.0 + 35 / 12) ** 0.5)


def test_unknown_model_names_the_known_ones(snapshot: Snapshot):
    for page in (lambda: snapshot.model("gamma"), lambda: snapshot.history("gamma"),
                 lambda: snapshot.analytics("gamma")):
        with pytest.raises(UnknownModel, match="gamma.*alpha, beta"):
            page()


def test_a_refresh_sees_a_new_version_a_deleted_one_and_a_new_audit_record(client: CogniteClient,
                                                                             snapshot: Snapshot, tmp_path):
    (tmp_path / "model.txt").write_text("weights 2")
    registry.upload_new_model_version("beta", "dev", tmp_path, {"metrics": {"r2": 0.1}}, client=client)
    registry.delete_model_version("alpha", "dev", 1, client=client, confirm=True)
    audit.record(client, "rollback", model="alpha", env="dev", outcome="success", started=time.time())
    page = snapshot.models()
    beta = next(m for m in page["models"] if m["name"] == "beta")["envs"]["dev"]
    assert beta["versions"] == 2 and beta["latest"]["model_id"] == "beta/dev/2"
    alpha = snapshot.model("alpha")
    assert [v["version"] for v in alpha["versions"]["dev"]] == [3, 2] and alpha["totals"]["dev"] == 2
    assert snapshot.history()["events"][0]["action"] == "rollback"


def test_a_listing_asks_for_everything_once_then_for_what_changed_since_the_previous_read_began(
        client: CogniteClient):
    index = RegistryIndex(client, partitions=2)
    windows: list[tuple[dict | None, int | None]] = []

    def fetch(window: dict | None, partitions: int | None) -> Any:
        windows.append((window, partitions))
        return index._fetch(window, partitions)

    listing = index.listing = Listing(fetch, partitions=2)
    first = listing.changes()
    assert windows == [(None, 2)] and listing.newest_ms == max(f["lastUpdatedTime"] for f in first)
    began = listing.began_ms
    assert began is not None and abs(began - time.time() * 1000) < 60_000  # the server's clock (Date)
    listing.changes()
    assert windows[1] == ({"min": began - OVERLAP_MS}, None)


def test_pages_within_min_refresh_s_read_cdf_once(client: CogniteClient):
    snap = Snapshot(targets=[(client, ["dev"])], min_refresh_s=3600)
    snap.load()
    listing = snap._targets[0].registry.listing
    reads = listing.reads
    for _ in range(3):
        snap.models()
        snap.model("alpha")
    assert listing.reads == reads


def test_a_cdf_that_cannot_be_read_is_named_and_the_next_page_reads_again(client: CogniteClient, snapshot: Snapshot):
    base_url = str(client.config.base_url)
    inject_faults(base_url, [{"path": "/files/list", "status": 403, "count": 1}])
    try:
        with pytest.raises(CdfReadFailed, match="registry's files from CDF project test at " + base_url) as failed:
            snapshot.models()
        assert failed.value.cdf["project"] == "test" and failed.value.cdf["envs"] == ["dev", "test", "prod"]
    finally:
        clear_faults(base_url)
    assert [m["name"] for m in snapshot.models()["models"]] == ["alpha", "beta"]


def test_pages_from_several_threads_read_one_consistent_state(client: CogniteClient, snapshot: Snapshot, tmp_path):
    (tmp_path / "model.txt").write_text("weights 3")
    errors: list[BaseException] = []
    totals: list[int] = []
    before = snapshot.model("beta")["totals"]["dev"]

    def read() -> None:
        try:
            for _ in range(5):
                page = snapshot.model("beta")
                assert page["totals"]["dev"] == len(page["versions"]["dev"]) == len(page["series"]["dev"]["version"])
                totals.append(page["totals"]["dev"])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    registry.upload_new_model_version("beta", "dev", tmp_path, client=client)
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert set(totals) <= {before, before + 1} and len(totals) == 20  # each page saw the state before or after
    assert snapshot.model("beta")["totals"]["dev"] == before + 1
