"""Model analytics recording benchmark: what recording adds to a prediction call.

    python benchmarks/analytics_recording.py [--calls 300] [--records 100] [--json]

The template's prediction service is deployed three times on one local CDF: analytics on, off, and "client only"
(the on folder with recording switched off: its handler still names `client`, so CDF builds a client per call),
then called --calls times each, in turn, with an input of --records records like
the template's. Prints p50 and p95 of the call latency as the caller sees it for both and their difference, the
latency the service itself reports in its rows (latency_total_ms), and the call-path cost measured in this process:
summarize() alone and summarize + append (call_analytics.record to a Recorder). Goal (issue 12): the added latency
p50 <= 2 ms.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from akerbp.mlops import model_repo
from akerbp.mlops.analytics.summary import summarize
from akerbp.mlops.deployment import build
from akerbp.mlops.function_folder import SERVICE_SETTINGS_FILE
from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.services import call_analytics
from akerbp.mlops.settings import load_settings
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database

CLIENT_ONLY = "bench_client-prediction-test"
SETTINGS = '''
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name=name, model_file="model_code/model.py", analytics={{"enabled": name == "bench_on"}})
          for name in ("bench_on", "bench_off")]
'''


def records(n: int) -> dict:
    rng = random.Random(1)
    return {"data": [{"GR": rng.uniform(20, 150), "NPHI": rng.uniform(0.05, 0.45), "DEPTH": 1500 + i * 0.5}
                     for i in range(n)]}


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": statistics.median(ordered) * 1000, "p95_ms": ordered[int(0.95 * (len(ordered) - 1))] * 1000}


def timed(fn, n: int) -> list[float]:
    found = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        found.append(time.perf_counter() - started)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = records(args.records)
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        repo = root / "repo"
        repo.mkdir()
        model_repo.copy_template(repo)
        (repo / "mlops_settings.py").write_text(SETTINGS.format())
        with LocalCDF(root / "cdf", limits=Limits(call_timeout_s=60)) as cdf:
            client = cdf.client()
            built = []  # referenced until the functions are made: a build folder goes with its BuiltFolder
            for settings in load_settings(repo / "mlops_settings.py"):
                folder = build.build_folder(settings, "prediction", "test", artifact=settings.artifact_path,
                                            model_id=f"{settings.model_name}/test/1", secrets={})
                built.append(folder)
                xid = settings.function_external_id("prediction", "test")
                client.functions.create(name=xid, external_id=xid, folder=str(folder.path), function_path="handler.py")
                if settings.analytics.enabled:  # the same folder recording nothing: what naming `client` costs alone
                    plain = root / "client_only"
                    shutil.copytree(folder.path, plain)
                    service_settings = json.loads((plain / SERVICE_SETTINGS_FILE).read_text())
                    service_settings["analytics"]["enabled"] = False
                    (plain / SERVICE_SETTINGS_FILE).write_text(json.dumps(service_settings))
                    client.functions.create(name=CLIENT_ONLY, external_id=CLIENT_ONLY, folder=str(plain),
                                            function_path="handler.py")
            for xid in ("bench_on-prediction-test", "bench_off-prediction-test", CLIENT_ONLY):
                deadline = time.monotonic() + 300
                while client.functions.retrieve(external_id=xid).status != "Ready":
                    assert time.monotonic() < deadline, f"{xid} not Ready in 300 s"
                    time.sleep(0.2)
                assert client.functions.call(external_id=xid, data=data).get_response()["status"] == "ok"  # warm
            latency: dict[str, list[float]] = {"on": [], "off": [], "client": []}
            for _ in range(args.calls):
                for kind in ("on", "off", "client"):
                    started = time.perf_counter()
                    call = client.functions.call(external_id=f"bench_{kind}-prediction-test" if kind != "client"
                                                 else CLIENT_ONLY, data=data)
                    latency[kind].append(time.perf_counter() - started)
                    assert call.status == "Completed", call.error
            db, table = analytics_database("test"), analytics_calls_table("bench_on")
            deadline, rows = time.monotonic() + 60, []
            while len(rows) < args.calls + 1 and time.monotonic() < deadline:
                rows = client.raw.rows.list(db, table, limit=None)
                time.sleep(0.2)
            reported = [r.columns["latency_total_ms"] / 1000 for r in rows]

            settings_on = {"model_name": "bench_local", "env": "test", "model_id": "bench_local/test/1",
                           "analytics": {"enabled": True, "sample_inputs": 0.0}}
            prediction = [2.4] * args.records
            outcome = call_analytics.Outcome(int(time.time() * 1000), 0.01, 0.005, None, prediction)
            summary_s = timed(lambda: summarize(data, prediction), 2000)
            record_s = timed(lambda: call_analytics.record(root, settings_on, client, {"call_id": 1}, data, outcome),
                             2000)
    thousand = records(1000)
    on, off, named = percentiles(latency["on"]), percentiles(latency["off"]), percentiles(latency["client"])
    result = {
        "calls": args.calls, "records": args.records,
        "call_on": on, "call_off": off, "call_client_only": named,
        "added_ms": {k: on[k] - off[k] for k in on},
        "added_by_recording_ms": {k: on[k] - named[k] for k in on},
        "rows_written": len(rows),
        "service_latency_total": percentiles(reported) if reported else None,
        "summarize": percentiles(summary_s),
        "summarize_1000_records": percentiles(timed(lambda: summarize(thousand, [2.4] * 1000), 500)),
        "summary_and_append": percentiles(record_s),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.calls} calls each, {args.records} records per input")
    print(f"  analytics on : p50 {on['p50_ms']:.1f} ms  p95 {on['p95_ms']:.1f} ms")
    print(f"  analytics off: p50 {off['p50_ms']:.1f} ms  p95 {off['p95_ms']:.1f} ms")
    print(f"  client only  : p50 {named['p50_ms']:.1f} ms  p95 {named['p95_ms']:.1f} ms  (handler names client, "
          "records nothing)")
    print(f"  added        : p50 {result['added_ms']['p50_ms']:+.1f} ms  p95 {result['added_ms']['p95_ms']:+.1f} ms")
    by = result["added_by_recording_ms"]
    print(f"  of which the recording (on - client only): p50 {by['p50_ms']:+.1f} ms  p95 {by['p95_ms']:+.1f} ms")
    print(f"  rows written : {len(rows)} (expected {args.calls + 1})")
    for key in ("summarize", "summarize_1000_records", "summary_and_append"):
        figures = result[key]
        print(f"  {key:<22}: p50 {figures['p50_ms']:.3f} ms  p95 {figures['p95_ms']:.3f} ms")
    if result["service_latency_total"]:
        print(f"  service latency_total_ms (on): p50 {result['service_latency_total']['p50_ms']:.2f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
