"""Local CDF Data Workflows benchmark: a workflow of three trivial function tasks (a -> b -> c) on a warm function,
run through cognite-sdk; how long an execution takes beyond its three calls' own time.

    python benchmarks/local_cdf_workflows.py [--runs 20] [--json]

The server runs in this process (LocalCDF, isolation shared-no-install: the function is the trivial handler below).
Per run: the server's own measure (the execution's endTime - startTime minus the three calls' endTime - startTime),
and the client's (run() to the SDK seeing COMPLETED, polled every 5 ms, minus the same call time). Goal (issue 10):
<= 0.5 s beyond the three calls' own time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cognite.client import CogniteClient
from cognite.client.data_classes import (
    FunctionTaskParameters,
    WorkflowDefinitionUpsert,
    WorkflowTask,
    WorkflowUpsert,
    WorkflowVersionUpsert,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import deploy_function  # noqa: E402  (the tests' helper: deploy a folder, wait until Ready)

from akerbp.mlops.local_cdf import LocalCDF  # noqa: E402

HANDLER = "def handle(data):\n    return {'step': data.get('step')}\n"


def one_run(client: CogniteClient) -> dict[str, float]:
    """One execution: the server's and the client's overhead beyond the calls, in seconds."""
    t0 = time.perf_counter()
    started = client.workflows.executions.run("bench", "1")
    deadline = time.monotonic() + 60
    while True:
        ex = client.workflows.executions.retrieve_detailed(started.id)
        if ex is not None and ex.status != "running":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {started.id} still running after 60 s")
        time.sleep(0.005)
    seen = time.perf_counter() - t0
    if ex.status != "completed":
        raise RuntimeError(f"execution {started.id} ended {ex.status}: {ex.reason_for_incompletion}")
    calls = [client.functions.calls.retrieve(call_id=t.output.call_id, function_external_id="bench-fn")
             for t in ex.executed_tasks]
    call_s = sum(c.end_time - c.start_time for c in calls) / 1000
    return {"server_s": (ex.end_time - ex.start_time) / 1000 - call_s, "client_s": seen - call_s, "calls_s": call_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalCDF(Path(tmp) / "cdf", isolation="shared-no-install") as cdf:
        client = cdf.client(project="bench")
        assert deploy_function(client, Path(tmp), HANDLER, xid="bench-fn").status == "Ready"
        client.workflows.upsert(WorkflowUpsert(external_id="bench"))
        tasks = [WorkflowTask(external_id=x, parameters=FunctionTaskParameters("bench-fn", {"step": x}),
                              depends_on=[d] if d else None) for x, d in (("a", None), ("b", "a"), ("c", "b"))]
        client.workflows.versions.upsert(WorkflowVersionUpsert("bench", "1", WorkflowDefinitionUpsert(tasks=tasks)))
        one_run(client)  # warm: the function's worker, the SDK's connections
        runs = [one_run(client) for _ in range(args.runs)]
    figures = {}
    for key in ("server_s", "client_s", "calls_s"):
        values = sorted(r[key] for r in runs)
        figures[key] = {"median": round(statistics.median(values), 4),
                        "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 4),
                        "max": round(values[-1], 4)}
    if args.json:
        print(json.dumps({"runs": args.runs, **figures}))
        return
    print(f"3 function tasks on a warm function, {args.runs} runs (seconds: median / p95 / max)")
    for key, what in (("server_s", "beyond the calls, server (endTime - startTime - calls)"),
                      ("client_s", "beyond the calls, client (run() to COMPLETED seen)"),
                      ("calls_s", "the three calls' own time")):
        f = figures[key]
        print(f"  {what:<58} {f['median']:.3f} / {f['p95']:.3f} / {f['max']:.3f}")
    print("  goal: <= 0.5 s beyond the calls")


if __name__ == "__main__":
    main()
