"""Batch benchmark (issue 12): the throughput of `mlops batch` against predict() called directly, and the batch
function worker's peak memory on a large file against the file's size.

    python benchmarks/batch.py [--rows 1000000] [--large-rows 3000000] [--batch-size 1000] [--json]

In a temporary copy of the template repo with its own local CDF (served in this process, isolation
shared-no-install), the template's prediction service deployed once (in process, as `mlops deploy` does), then:
  warm-up     a 1,000-row csv: makes the batch function and initialises the model in its worker; the worker's peak
              memory after it is the baseline.
  large       a --large-rows csv (the worker's first big file): its peak memory against the file's size. Goal: the
              peak does not grow with the file (bounded by the batch size).
  throughput  a --rows csv and the same rows as parquet, each a batch run (wall time of batch.run: the call, its
              download, parse, predict, write and upload); against predict() called here, in one process, on the
              same rows already in memory as records, --batch-size at a time. Goal: batch >= 50 % of direct. Also shown: the
              csv module reading the file and predict() in one process (what a user's own loop would do).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support import copy_template  # noqa: E402  (the tests' helper: a template repo)

MODEL, ENV = "well_density", "dev"


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["GR", "NPHI", "DEPTH", "well"])
        for i in range(rows):
            writer.writerow([round(20.0 + (i * 7919) % 13000 / 100, 2), round(0.05 + (i % 35) / 100, 3),
                             1500.0 + (i * 31) % 2000, f"w{i % 97}"])


def direct(repo: Path, path: Path, batch_size: int) -> float:
    """Rows per second of predict() on the file's rows, read into records first (not timed)."""
    from akerbp.mlops.batch import formats
    from akerbp.mlops.services.model_import import import_model

    model = import_model(repo, "model_code.model", "prediction")
    state = model.initialization(str(repo / "model_artifact"), {})
    records = [r for b in formats.Source(str(path), ".csv", 0, batch_size).batches() for r in b.records]
    started = time.perf_counter()
    for i in range(0, len(records), batch_size):
        model.predict({"data": records[i:i + batch_size]}, state, {})
    return len(records) / (time.perf_counter() - started)


def read_and_predict(repo: Path, path: Path, batch_size: int) -> float:
    """Rows per second of what a user would write in one process: the csv module, numbers parsed, predict()."""
    from akerbp.mlops.services.model_import import import_model

    model = import_model(repo, "model_code.model", "prediction")
    state = model.initialization(str(repo / "model_artifact"), {})
    started = time.perf_counter()
    n = 0
    with path.open(newline="") as f:
        batch: list[dict] = []
        for row in csv.DictReader(f):
            batch.append({"GR": float(row["GR"]), "NPHI": float(row["NPHI"]), "DEPTH": float(row["DEPTH"]),
                          "well": row["well"]})
            if len(batch) == batch_size:
                model.predict({"data": batch}, state, {})
                n, batch = n + len(batch), []
        if batch:
            model.predict({"data": batch}, state, {})
            n += len(batch)
    return n / (time.perf_counter() - started)


def one_batch(client, xid: str, batch_size: int) -> dict[str, Any]:
    from akerbp.mlops import batch

    started = time.perf_counter()
    result = batch.run(client, MODEL, ENV, xid, batch_size=batch_size, say=lambda message: None)
    seconds = time.perf_counter() - started
    assert result.ok, result.as_dict()
    (f,) = result.files
    return {"rows": f.rows, "seconds": round(seconds, 2), "rows_per_s": round(f.rows / seconds),
            "phases": f.phases, "peak_rss_mb": f.peak_rss_mb, "function": result.function_outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--large-rows", type=int, default=3_000_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import duckdb

    from akerbp.mlops.deployment.deploy import deploy_model
    from akerbp.mlops.deployment.target import Target
    from akerbp.mlops.local_cdf import Limits, LocalCDF
    from akerbp.mlops.settings import load_settings

    out: dict[str, Any] = {"batch_size": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="mlops-batch-bench-") as tmp:
        root = Path(tmp)
        repo = copy_template(root / "repo")
        with LocalCDF(root / "cdf", isolation="shared-no-install", limits=Limits(call_timeout_s=600)) as cdf:
            client = cdf.client(project="bench")
            (settings,) = load_settings(repo / "mlops_settings.py")
            deployed = deploy_model(settings, "prediction", ENV, Target(ENV, client=client), dry_run=False,
                                    force=False, timeout=600, progress=lambda message: None)
            assert deployed.ok, deployed.message

            def upload(path: Path, xid: str) -> None:
                client.files.upload(str(path), external_id=xid, name=path.name, overwrite=True)

            small = root / "warm.csv"
            write_csv(small, 1000)
            upload(small, "bench/warm.csv")
            warm = one_batch(client, "bench/warm.csv", args.batch_size)
            out["warm_up"] = warm

            large = root / "large.csv"
            write_csv(large, args.large_rows)
            upload(large, "bench/large.csv")
            big = one_batch(client, "bench/large.csv", args.batch_size)
            out["large"] = {**big, "file_mb": round(large.stat().st_size / 2**20, 1),
                            "peak_before_mb": warm["peak_rss_mb"]}
            large.unlink()

            rows = root / "rows.csv"
            write_csv(rows, args.rows)
            upload(rows, "bench/rows.csv")
            parquet = root / "rows.parquet"
            duckdb.connect().execute(f"COPY (SELECT * FROM read_csv('{rows}')) TO '{parquet}' (FORMAT parquet)")
            upload(parquet, "bench/rows.parquet")
            by_csv = one_batch(client, "bench/rows.csv", args.batch_size)
            by_parquet = one_batch(client, "bench/rows.parquet", args.batch_size)
            rate = direct(repo, rows, args.batch_size)
            by_hand = read_and_predict(repo, rows, args.batch_size)
            out["throughput"] = {"direct_rows_per_s": round(rate), "read_and_predict_rows_per_s": round(by_hand),
                                 "csv": by_csv, "parquet": by_parquet,
                                 "csv_share": round(by_csv["rows_per_s"] / rate, 2),
                                 "parquet_share": round(by_parquet["rows_per_s"] / rate, 2)}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    t, big = out["throughput"], out["large"]
    print(f"direct predict() in one process: {t['direct_rows_per_s']:,} rows/s (batch size {args.batch_size}); "
          f"csv module + predict() in one process: {t['read_and_predict_rows_per_s']:,} rows/s")
    for fmt in ("csv", "parquet"):
        r = t[fmt]
        print(f"batch over {r['rows']:,} {fmt} rows: {r['seconds']} s, {r['rows_per_s']:,} rows/s = "
              f"{t[fmt + '_share']:.0%} of direct (goal >= 50%); phases {r['phases']}")
    print(f"large csv: {big['rows']:,} rows, {big['file_mb']} MB; the worker's peak memory {big['peak_rss_mb']} MB "
          f"({big['peak_before_mb']} MB after the warm-up), {big['seconds']} s")


if __name__ == "__main__":
    main()
