"""Local CDF RAW benchmark: insert and list N rows through cognite-sdk, with the server's peak RSS.

    python benchmarks/local_cdf_raw.py [--rows 100000] [--json]      # --rows 1000000: the server's RSS stays flat

The server runs in its own process (`mlops local-cdf serve`, started as in benchmarks/local_cdf.py), so its peak RSS
(VmHWM) is the server's alone; the client is the real cognite-sdk in this process. Rows look like model analytics
records (a timestamp, a model id, a few numbers and a short text). Goals (issue 10): >= 20,000 rows/s insert,
>= 50,000 rows/s list, server peak RSS <= 150 MB.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from local_cdf import client_for, peak_rss_mb, serve  # noqa: E402  (the benchmark next to this one)

DB, TABLE = "analytics", "calls"
# list(limit=None) holds every row in the client (a million Row objects: gigabytes); above this only the chunked
# iteration runs, which is what shows the server streaming.
MAX_LISTED = 200_000


def rows(n: int) -> dict[str, dict]:
    return {f"call-{i:08d}": {"timestamp": 1_767_225_600_000 + i, "model_id": "well_density/prod/3",
                              "latency_ms": 12.5 + i % 100, "status": "ok", "prediction": [2.38, 2.41]}
            for i in range(n)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    data = rows(args.rows)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as name:
        proc, base_url = serve(Path(name))
        try:
            client = client_for(base_url)
            t = time.perf_counter()
            client.raw.rows.insert(DB, TABLE, data, ensure_parent=True)
            insert_s = time.perf_counter() - t
            list_s = float("nan")
            if args.rows <= MAX_LISTED:
                t = time.perf_counter()
                listed = client.raw.rows.list(DB, TABLE, limit=None)  # the SDK's parallel cursors (partitions)
                list_s = time.perf_counter() - t
                assert len(listed) == args.rows, len(listed)
                del listed
            t = time.perf_counter()
            iterated = sum(len(chunk) for chunk in client.raw.rows(DB, TABLE, chunk_size=10_000))
            iterate_s = time.perf_counter() - t
            assert iterated == args.rows, iterated
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {
        "rows": args.rows,
        "insert_s": insert_s, "insert_rows_per_s": args.rows / insert_s,
        "list_partitions_s": list_s, "list_partitions_rows_per_s": args.rows / list_s,
        "iterate_chunks_s": iterate_s, "iterate_chunks_rows_per_s": args.rows / iterate_s,
        "server_peak_rss_mb": rss,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"RAW, {args.rows:,} rows through cognite-sdk (server in its own process)")
    print(f"  insert (ensureParent, 5,000 rows per request): {insert_s:.2f} s = {result['insert_rows_per_s']:,.0f} "
          "rows/s (goal >= 20,000)")
    print(f"  list(limit=None), parallel cursors:            {list_s:.2f} s = "
          f"{result['list_partitions_rows_per_s']:,.0f} rows/s (goal >= 50,000)")
    print(f"  rows(chunk_size=10000), one cursor:            {iterate_s:.2f} s = "
          f"{result['iterate_chunks_rows_per_s']:,.0f} rows/s")
    print(f"  server peak RSS: {rss:.0f} MB (goal <= 150)")


if __name__ == "__main__":
    main()
