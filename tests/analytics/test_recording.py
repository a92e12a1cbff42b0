"""Model analytics recording: a prediction function with analytics enabled, deployed once on a local CDF, writes one
RAW row per call that is not a ping (ok and error answers alike), with input and prediction stats; a RAW outage
never fails or slows a call; the recorder's buffer is bounded (drops counted)."""
from __future__ import annotations

import ast
import json
import statistics
import sys
import time
from pathlib import Path

import pytest

from akerbp.mlops.analytics.recorder import Recorder
from akerbp.mlops.deployment import build, bundle
from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.services import call_analytics
from akerbp.mlops.settings import load_settings
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database
from support import clear_faults, copy_template, fault_rules, inject_faults, wait_built

XID = "well_density-prediction-test"
DB, TABLE = analytics_database("test"), analytics_calls_table("well_density")
SCHEMA = {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}}
SETTINGS = '''
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name="well_density", model_file="model_code/model.py",
                        input_schema="model_code/input.schema.json", analytics={"sample_inputs": 1.0})]
'''
GOOD = {"data": [{"GR": 35.0, "NPHI": 0.18, "DEPTH": 1800.0}, {"GR": 90.0, "NPHI": 0.32, "DEPTH": 2500.0},
                 {"GR": 140.0, "NPHI": 0.42, "DEPTH": 3300.0}]}
RAW_WRITES = {"path": "re:/raw/dbs/[^/]+/tables/[^/]+/rows$", "method": "POST"}


@pytest.fixture(scope="module")
def cdf(tmp_path_factory):
    root = tmp_path_factory.mktemp("recording")
    with LocalCDF(root / "cdf", limits=Limits(call_timeout_s=60)) as local:
        yield local


@pytest.fixture(scope="module")
def client(cdf):
    return cdf.client()


@pytest.fixture(scope="module")
def function(cdf, client, tmp_path_factory):
    """The template's prediction service with analytics on (every input sampled), built by the deploy step's code."""
    repo = copy_template(tmp_path_factory.mktemp("repo") / "repo")
    (repo / "mlops_settings.py").write_text(SETTINGS)
    (repo / "model_code" / "input.schema.json").write_text(json.dumps(SCHEMA))
    (settings,) = load_settings(repo / "mlops_settings.py")
    built = build.build_folder(settings, "prediction", "test", artifact=settings.artifact_path,
                               model_id="well_density/test/3", secrets={})
    assert (built.path / "handler.py").read_text().count("def handle(data, client,") == 1
    client.functions.create(name=XID, external_id=XID, folder=str(built.path), function_path="handler.py")
    assert wait_built(client, XID).status == "Ready"
    return XID


def call(client, data) -> tuple[int, dict, float]:
    """(call id, answer, seconds the call took as the caller sees it)."""
    started = time.monotonic()
    done = client.functions.call(external_id=XID, data=data)
    assert done.status == "Completed", done.error
    return done.id, done.get_response(), time.monotonic() - started


def rows_of(client, call_ids, timeout: float = 30.0) -> dict[int, dict]:
    """The rows of these calls once they are all in RAW; AssertionError after `timeout` seconds."""
    deadline, found = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        try:
            rows = client.raw.rows.list(DB, TABLE, limit=None)
        except Exception:  # noqa: BLE001 - the table does not exist before the first write
            rows = []
        found = {r.columns["call_id"]: r.columns for r in rows if r.columns.get("call_id") in call_ids}
        if len(found) == len(call_ids):
            return found
        time.sleep(0.1)
    raise AssertionError(f"rows of {sorted(set(call_ids) - set(found))} not in RAW after {timeout} s")


def test_every_call_but_a_ping_has_a_row_with_its_status_error_type_and_stats(client, function):
    calls = {
        "ok": GOOD,
        "ModelException": {"data": [{"GR": 1.0}]},  # the model's own refusal (no NPHI)
        "InputSchema": {"data": "not records"},
        "ResponseInvalid": {"data": [{"GR": 1e308, "NPHI": 1e308, "DEPTH": 1e308}]},  # a prediction of -inf
    }
    ids = {}
    for kind, data in calls.items():
        ids[kind], answer, _ = call(client, data)
        assert answer["status"] == ("ok" if kind == "ok" else "error"), answer
    ping, answer, _ = call(client, {})
    assert answer["warm"] is True
    rows = rows_of(client, set(ids.values()))
    for kind, call_id in ids.items():
        row = rows[call_id]
        assert (row["status"], row["error_type"]) == (("ok", None) if kind == "ok" else ("error", kind)), row
        assert (row["model_id"], row["version"], row["env"]) == ("well_density/test/3", 3, "test")
        assert row["latency_total_ms"] > 0 and row["sample"] == calls[kind], "sample_inputs 1.0 samples every call"
    assert rows[ids["InputSchema"]]["latency_predict_ms"] is None, "predict() did not run"
    assert 0 < rows[ids["ok"]]["latency_predict_ms"] <= rows[ids["ok"]]["latency_total_ms"]

    ok = rows[ids["ok"]]
    assert ok["rows"] == 3 and set(ok["features"]) == {"GR", "NPHI", "DEPTH"}
    for name in ("GR", "NPHI", "DEPTH"):
        values = [r[name] for r in GOOD["data"]]
        stats = ok["features"][name]
        assert (stats["count"], stats["nulls"], stats["min"], stats["max"]) == (3, 0, min(values), max(values))
        assert stats["mean"] == pytest.approx(statistics.fmean(values))
        assert stats["std"] == pytest.approx(statistics.pstdev(values))
    prediction = call(client, GOOD)[1]["prediction"]
    assert ok["prediction"]["prediction"]["mean"] == pytest.approx(statistics.fmean(prediction))
    assert ok["prediction"]["prediction"]["std"] == pytest.approx(statistics.pstdev(prediction))

    keys = [r.key for r in client.raw.rows.list(DB, TABLE, limit=None)]
    assert not [k for k in keys if k.endswith(f"-{ping}")], "a ping has no row"
    assert f"{ok['time']:013d}-{ids['ok']}" in keys


def test_a_raw_outage_neither_fails_nor_slows_a_call_and_the_rows_arrive_after_it(cdf, client, function):
    _, _, warm_s = call(client, GOOD)
    # Every RAW write hangs 3 s and fails with 503, for the next 6 writes (the SDK's retries and ours included).
    inject_faults(cdf.base_url, [{**RAW_WRITES, "status": 503, "delay": 3, "count": 6}])
    try:
        during, after_hit, deadline = [], 0, time.monotonic() + 30
        while after_hit < 5:  # calls until a write hangs in the outage, and 5 more while it does
            assert time.monotonic() < deadline, "the function wrote no row to RAW in 30 s"
            during.append(call(client, GOOD))
            after_hit += fault_rules(cdf.base_url)[0]["hits"] >= 1
    finally:
        clear_faults(cdf.base_url)
    assert all(answer["status"] == "ok" for _, answer, _ in during)
    slowest = max(seconds for _, _, seconds in during)
    assert slowest < warm_s + 1.5, f"a call took {slowest:.2f} s during the outage (a warm one {warm_s:.2f} s)"
    rows_of(client, {call_id for call_id, _, _ in during}, timeout=60)


def test_sampling_off_stores_no_input_and_a_large_input_is_cut_whole_records_first():
    settings = {"model_name": "m", "env": "test", "model_id": "m/test/1",
                "analytics": {"enabled": True, "sample_inputs": 0.0}}
    outcome = call_analytics.Outcome(time_ms=1, latency_total_s=0.01, latency_predict_s=0.005, prediction=[1.0])
    key, row = call_analytics.call_row(settings, {"call_id": 7}, GOOD, outcome)
    assert key == "0000000000001-7" and "sample" not in row and row["version"] == 1
    settings["analytics"]["sample_inputs"] = 1.0
    assert call_analytics.call_row(settings, None, GOOD, outcome)[1]["sample"] == GOOD
    assert "sample" not in call_analytics.call_row(settings, None, GOOD, outcome, sample=False)[1], \
        "a backed-up buffer takes no samples"
    big = {"data": [{"GR": float(i), "NPHI": 0.1, "DEPTH": 1000.0 + i} for i in range(5000)]}
    sample, truncated = call_analytics.sample_of(big)
    assert truncated and 0 < len(sample["data"]) < 5000 and sample["data"] == big["data"][:len(sample["data"])]
    assert len(json.dumps(sample)) <= call_analytics.SAMPLE_LIMIT_BYTES
    assert call_analytics.sample_of(GOOD) == (GOOD, False)


def test_a_burst_beyond_the_buffer_drops_the_oldest_counts_them_and_says_so_in_the_next_row(cdf, client):
    recorder = Recorder(DB, "burst-calls", capacity=50, batch=20, interval_s=0.05)
    inject_faults(cdf.base_url, [{**RAW_WRITES, "status": 403, "count": 1000}])  # RAW refuses: nothing drains
    try:
        for i in range(500):
            recorder.record(f"{i:05d}", {"i": i}, client)
            assert recorder.buffered <= 50
    finally:
        clear_faults(cdf.base_url)
    assert recorder.dropped >= 450, recorder.dropped
    assert recorder.flush(timeout=30), "the buffer drains once RAW answers"
    rows = {r.key: r.columns for r in client.raw.rows.list(DB, "burst-calls", limit=None)}
    assert "00499" in rows and len(rows) <= 50
    reported = [c["dropped_before"] for c in rows.values() if "dropped_before" in c]
    assert sum(reported) == recorder.dropped, reported


def test_the_recording_half_of_analytics_is_bundled_into_a_prediction_folder(function, tmp_path):
    names = {Path(p).relative_to(Path(bundle.mlops_package.__file__).resolve().parent).as_posix()
             for p in bundle.runtime_files("prediction")}
    assert {"analytics/summary.py", "analytics/recorder.py", "services/call_analytics.py"} <= names
    assert "analytics/query.py" not in names
    for module in ("summary", "recorder"):  # bundled into every prediction: the standard library only
        tree = ast.parse((Path(bundle.mlops_package.__file__).parent / "analytics" / f"{module}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
            {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert {name.split(".")[0] for name in imported} <= set(sys.stdlib_module_names), (module, imported)


def test_analytics_settings_change_the_folder_so_a_deploy_replaces_the_function(tmp_path):
    """The settings reach the folder (its service settings, and the handler when on or off): a change redeploys."""
    repo = copy_template(tmp_path / "repo")
    hashes, handlers = {}, {}
    for value in ('{"enabled": False}', '{"enabled": True}', '{"sample_inputs": 0.5}'):
        (repo / "mlops_settings.py").write_text(SETTINGS.replace('{"sample_inputs": 1.0}', value)
                                                .replace('input_schema="model_code/input.schema.json", ', ""))
        (settings,) = load_settings(repo / "mlops_settings.py")
        built = build.build_folder(settings, "prediction", "test", artifact=settings.artifact_path,
                                   model_id="well_density/test/3", secrets={})
        hashes[value] = built.content_hash
        handlers[value] = "client" in (built.path / "handler.py").read_text().split("def handle(")[1].split(")")[0]
        carried = json.loads((built.path / "mlops_service_settings.json").read_text())["analytics"]
        assert carried == settings.analytics.model_dump()
    assert len(set(hashes.values())) == 3
    assert handlers == {'{"enabled": False}': False, '{"enabled": True}': True, '{"sample_inputs": 0.5}': True}
