"""How long does each `mlops ui` page take server-side at 100 models x 3 environments x 1,000 versions? (issue 13's
goal: <= 300 ms per page on the local CDF)

    python benchmarks/ui_pages.py [--models 100] [--envs dev,test,prod] [--versions 1000] [--repeat 20] [--json]

Seeds a fresh local CDF, then times the Snapshot (akerbp/mlops/ui/snapshot.py) reading it through the real
cognite-sdk over HTTP: load() (the first read: every registry file in parallel partitions, the audit events, the
functions, the automations), then each page method --repeat times with min_refresh_s=0, so every call includes its
refresh (what changed in CDF since the previous call: the incremental listings), which is the server-side cost of
a page (the HTML around it is H2's). Reported: the median and p95 per page, and the HTTP requests one call makes
(counted from the log of httpx2, the SDK's HTTP client).

The SEED writes the local CDF's store directly (store.insert in one transaction, stamped a day ago: 300,000 versions through the SDK, a
request each, would take an hour): per model and environment --versions registry files laid out as
upload_new_model_version leaves them (with metrics, the block markers too), a prediction function with the mlops_*
metadata a deploy sets and its verified code file, and 10 audit events. Through the SDK: 5 automations (workflow,
version with the definition, schedule trigger, one run) and 2,000 analytics call rows of the first model in the
first environment. The Snapshot reads everything through the SDK.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from akerbp.mlops import __version__
from akerbp.mlops.deployment.functions import CODE_DIRECTORY
from akerbp.mlops.deployment.records import VERIFIED_KEY
from akerbp.mlops.local_cdf import LocalCDF
from akerbp.mlops.registry import index as registry_index
from akerbp.mlops.registry.rules import DIRECTORY
from akerbp.mlops.ui.snapshot import Snapshot
from akerbp.mlops.vocabulary import (
    analytics_calls_table,
    analytics_database,
    automation_workflow_external_id,
    code_file_external_id,
    function_external_id,
    index_marker_external_id,
    version_external_id,
)

PROJECT = "bench"
AUTOMATIONS = 5
CALLS = 2_000
EVENTS_PER_SERVICE = 10
SHA = hashlib.sha256(b"tiny archive").hexdigest()


class RequestCounter(logging.Handler):
    """Counts httpx2's "HTTP Request: POST url ..." lines: one per HTTP request the SDK makes (its own debug log
    leaves out some, e.g. RAW's)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("HTTP Request:"):
            self.count += 1


def count_requests(fn: Callable[[], Any]) -> int:
    logger = logging.getLogger("httpx2")
    counter, level = RequestCounter(), logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        fn()
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
    return counter.count


def model_names(n: int) -> list[str]:
    return [f"model_{i:03d}" for i in range(n)]


def seed_store(cdf: LocalCDF, data_set_id: int, models: list[str], envs: list[str], versions: int) -> int:
    """Registry files, functions with their code files, and audit events, written to the store in one transaction."""
    store, now = cdf.store, int(time.time() * 1000)
    past = now - 86_400_000  # written a day ago, as a project's history is: the refreshes list what changes now
    written = 0
    with store.write() as db:
        for m, model in enumerate(models):
            for env in envs:
                for n in range(1, versions + 1):
                    r2 = round(0.5 + 0.4 * n / versions, 4)
                    store.insert(db, PROJECT, "files", {
                        "externalId": version_external_id(model, env, n), "name": f"{model}-{env}-{n}.tar.gz",
                        "directory": DIRECTORY, "dataSetId": data_set_id, "mimeType": "application/gzip",
                        "uploaded": True, "uploadedTime": now, "createdTime": past - (versions - n) * 60_000,
                        "lastUpdatedTime": past - (versions - n) * 60_000,
                        "metadata": {"version": str(n), "model_name": model, "env": env, "sha256": SHA,
                                     "size": "12", "created_by": "benchmark", "git_commit": "0" * 40,
                                     "framework_version": __version__,
                                     "metrics": json.dumps({"r2": r2, "rmse": round(1 - r2, 4)})}})
                for block in range(versions // registry_index.BLOCK + 1):
                    store.insert(db, PROJECT, "files", {
                        "externalId": index_marker_external_id(model, env, block), "name": f"{model}-{env}-block",
                        "directory": registry_index.INDEX_DIRECTORY, "dataSetId": data_set_id, "uploaded": True,
                        "createdTime": past, "lastUpdatedTime": past,
                        "metadata": {"model_name": model, "env": env, "block": str(block)}})
                live = function_external_id(model, "prediction", env)
                code = store.insert(db, PROJECT, "files", {
                    "externalId": code_file_external_id(live, "c0de" * 4), "name": f"{live}.zip",
                    "directory": CODE_DIRECTORY, "uploaded": True, "metadata": {"mlops_status": "deployed"},
                    "createdTime": past, "lastUpdatedTime": past})
                meta = {"mlops_model": model, "mlops_service": "prediction", "mlops_env": env,
                        "mlops_version": str(versions), "mlops_model_id": version_external_id(model, env, versions),
                        "mlops_hash": "c0de" * 4, "mlops_git_commit": "0" * 40,
                        "mlops_deployed_at": "2026-01-01T00:00:00.000+00:00", "mlops_deployed_by": "benchmark",
                        "mlops_code_file": str(code["id"])}
                fn = store.insert(db, PROJECT, "functions", {
                    "name": live, "externalId": live, "fileId": code["id"], "functionPath": "handler.py",
                    "status": "Ready", "runtime": "py311", "metadata": meta, "createdTime": past,
                    "lastUpdatedTime": past})
                code["metadata"][VERIFIED_KEY] = str(fn["id"])
                store.save(db, PROJECT, "files", code, touch=False)
                for e in range(EVENTS_PER_SERVICE):
                    t = past - (m * EVENTS_PER_SERVICE + e) * 1000
                    store.insert(db, PROJECT, "events", {
                        "externalId": f"mlops-audit/{model}-{env}-{e}", "type": "mlops", "subtype": "deploy",
                        "startTime": t - 5000, "endTime": t, "source": "akerbp.mlops", "createdTime": t,
                        "lastUpdatedTime": t,
                        "description": f"deploy {model} prediction in {env}: success",
                        "metadata": {"model": model, "service": "prediction", "env": env, "version": str(versions),
                                     "model_id": version_external_id(model, env, versions), "hash": "c0de" * 4,
                                     "git_commit": "0" * 40, "who": "benchmark", "outcome": "success",
                                     "duration_s": "5.0", "message": ""}})
                written += versions + versions // registry_index.BLOCK + 3 + EVENTS_PER_SERVICE
    return written


def seed_sdk(client: Any, models: list[str], env: str) -> None:
    """Automations (with one run each) and analytics rows, through the SDK."""
    from cognite.client.data_classes import (
        FunctionTaskParameters,
        WorkflowDefinitionUpsert,
        WorkflowTask,
        WorkflowUpsert,
        WorkflowVersionUpsert,
    )
    from cognite.client.data_classes.workflows import WorkflowScheduledTriggerRule, WorkflowTriggerUpsert

    for i, model in enumerate(models[:AUTOMATIONS]):
        name = f"nightly_{i}"
        xid = automation_workflow_external_id(name, env)
        definition = {"name": name, "model": model, "env": env, "action": {"type": "train_and_deploy"},
                      "trigger": {"type": "metric", "metric": {"sql_query": "SELECT 1.0"}, "direction": "above",
                                  "threshold": 0.5} if i % 2 else {"type": "schedule"}}
        client.workflows.upsert(WorkflowUpsert(external_id=xid))
        client.workflows.versions.upsert(WorkflowVersionUpsert(
            workflow_external_id=xid, version="1", workflow_definition=WorkflowDefinitionUpsert(tasks=[WorkflowTask(
                external_id="train", parameters=FunctionTaskParameters(
                    external_id=f"{model}-automation-{env}", data={"automation": definition}))])))
        client.workflows.triggers.upsert(WorkflowTriggerUpsert(
            external_id=xid, workflow_external_id=xid, workflow_version="1",
            trigger_rule=WorkflowScheduledTriggerRule(cron_expression="0 3 * * *", timezone=ZoneInfo("Europe/Oslo")),
            metadata={"mlops_hash": f"h{i}", "mlops_automation": name, "mlops_model": model, "mlops_env": env}))
        client.workflows.executions.run(xid, "1")
    now = int(time.time() * 1000)
    model = models[0]
    rows = {}
    for i in range(CALLS):
        t = now - 7 * 86_400_000 + i * (7 * 86_400_000 // CALLS)
        gr = {"count": 10, "nulls": 0, "mean": 50.0 + i % 7, "std": 2.0, "min": 40.0, "max": 60.0}
        rows[f"{t:013d}-{i}"] = {
            "time": t, "call_id": i, "model_id": version_external_id(model, env, 1), "version": 1, "env": env,
            "latency_predict_ms": 3.0, "latency_total_ms": 5.0 + i % 11, "status": "error" if i % 50 == 0 else "ok",
            "error_type": None, "rows": 10, "features": {"GR": gr, "NPHI": {**gr, "mean": 0.25}},
            "prediction": {"prediction": {**gr, "mean": 2.4}}}
    client.raw.rows.insert(analytics_database(env), analytics_calls_table(model), rows, ensure_parent=True)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, int]:
    """(median ms, p95 ms, requests of one call) over `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return statistics.median(times), p95, count_requests(fn)


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    envs = args.envs.split(",")
    models = model_names(args.models)
    with LocalCDF(work / "cdf", isolation="shared-no-install") as cdf:
        client = cdf.client(project=PROJECT)
        data_set_id = registry_index.ensure_data_set(client, "mlops")
        start = time.perf_counter()
        files = seed_store(cdf, data_set_id, models, envs, args.versions)
        seed_sdk(client, models, envs[0])
        seed_s = time.perf_counter() - start
        print(f"seeded {files:,} resources in {seed_s:.1f} s", file=sys.stderr, flush=True)
        snap = Snapshot(targets=[(client, envs)], min_refresh_s=0,
                        progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
        start = time.perf_counter()
        snap.load()
        load_s = time.perf_counter() - start
        one = models[0]
        pages = {
            "/models": snap.models,
            f"/models/{one}": lambda: snap.model(one),
            "/history": snap.history,
            "/automations": snap.automations,
            f"/analytics/{one}": lambda: snap.analytics(one, envs[0], "7d"),
        }
        rows = []
        for path, page in pages.items():
            page()  # warm: the first call of a page may build caches (the analytics DuckDB file)
            median, p95, requests = timed(page, args.repeat)
            rows.append({"page": path, "median_ms": round(median, 1), "p95_ms": round(p95, 1),
                         "requests": requests})
        size = len(json.dumps(snap.models()))
        http = http_pages(snap, list(pages), args.repeat)
        snap.close()
    return {"models": args.models, "envs": envs, "versions": args.versions, "seed_s": round(seed_s, 1),
            "load_s": round(load_s, 2), "models_json_bytes": size, "pages": rows, "http": http}


def http_pages(snap: Snapshot, paths: list[str], repeat: int) -> list[dict[str, Any]]:
    """Each page as the browser gets it from `mlops ui`'s server (the Snapshot's dict rendered to HTML): the server's
    own time from its Server-Timing header (the figure the issue's goal is about), and the client's round trip."""
    import threading

    import requests

    from akerbp.mlops.ui.server import Server, make_app

    logging.getLogger("akerbp.mlops.ui.server").setLevel(logging.WARNING)  # no request log lines in the figures
    server = Server(make_app(snap), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rows = []
    try:
        with requests.Session() as http:
            for path in paths:
                url = server.url.rstrip("/") + path
                server_ms, wall_ms, size = [], [], 0
                for i in range(repeat + 1):
                    start = time.perf_counter()
                    response = http.get(url, timeout=60)
                    took = (time.perf_counter() - start) * 1000
                    response.raise_for_status()
                    if i == 0:
                        continue  # warm
                    timing = response.headers["Server-Timing"]
                    server_ms.append(float(timing.split("dur=")[1]))
                    wall_ms.append(took)
                    size = len(response.content)
                rows.append({"page": path, "server_median_ms": round(statistics.median(server_ms), 1),
                             "server_p95_ms": round(_p95(server_ms), 1),
                             "wall_median_ms": round(statistics.median(wall_ms), 1), "html_bytes": size})
    finally:
        server.close()
        thread.join(timeout=10)
    return rows


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--envs", default="dev,test,prod")
    parser.add_argument("--versions", type=int, default=1000, help="per model and environment")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per page (median and p95 reported)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mlops-bench-ui-") as tmp:
        result = bench(args, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    total = args.models * len(result["envs"]) * args.versions
    print(f"{args.models} models x {len(result['envs'])} envs x {args.versions:,} versions = {total:,} versions; "
          f"load() {result['load_s']:.2f} s; /models JSON {result['models_json_bytes']:,} bytes")
    table = [("page", "median (ms)", "p95 (ms)", "requests")] + [
        (r["page"], f"{r['median_ms']:.1f}", f"{r['p95_ms']:.1f}", str(r["requests"])) for r in result["pages"]]
    print("the Snapshot's page methods (data only, refresh included):")
    _print_table(table)
    print("the pages over HTTP (rendered HTML; server = its Server-Timing header, the issue's figure):")
    _print_table([("page", "server median (ms)", "server p95 (ms)", "round trip median (ms)", "HTML bytes")] + [
        (r["page"], f"{r['server_median_ms']:.1f}", f"{r['server_p95_ms']:.1f}", f"{r['wall_median_ms']:.1f}",
         f"{r['html_bytes']:,}") for r in result["http"]])


def _print_table(table: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))


if __name__ == "__main__":
    main()
