"""Analytics query benchmark: N call rows (the recorder's schema) in RAW of a local CDF, then `calls` queries.

    python benchmarks/analytics_query.py [--rows 1000000] [--new 1000] [--pause S] [--json]

The server runs in its own process (`mlops local-cdf serve`, as benchmarks/local_cdf.py starts it); rows go in with
10,000-row insert requests, two at a time. Then, with a fresh cache dir (XDG_CACHE_HOME):
  (a) cold: the first query, which fetches every row from RAW into the DuckDB cache; it starts --pause seconds after
      the bulk insert (default: the overlap + 1 s, as a cache synced a while after the last write; --pause 0: right
      after it, when the next query refetches what RAW stamped in the overlap before this one began);
  (b) warm: after --new rows are inserted, the same query again (fetches only rows updated since the last one);
  (c) DuckDB alone: the query on the open tables, no sync;
  (d) RAW alone: every row's page fetched as (a) fetches them (4 parallel cursors), not parsed: the cold floor.
The issue's goal: a `calls` query over 1,000,000 rows <= 1 s including fetching from RAW.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from local_cdf import client_for, peak_rss_mb, serve  # noqa: E402  (the benchmark next to this one)

MODEL, ENV = "well_density", "prod"
QUERY = ("SELECT count(*) AS calls, count(*) FILTER (status = 'error') AS errors, "
         "quantile_cont(latency_total_ms, 0.95) AS p95_ms, avg(features.GR.mean) AS gr FROM calls")
SUMMARY = ("SELECT date_trunc('day', time) AS day, version, count(*), quantile_cont(latency_total_ms, 0.5), "
           "quantile_cont(latency_total_ms, 0.95) FROM calls GROUP BY ALL")
BATCH = 10_000
START = 1_767_225_600_000  # 2026-01-01


def row(i: int) -> dict:
    t = START + i * 1000
    stats = {"count": 100, "nulls": 0, "mean": 40.0 + i % 90, "std": 11.5, "min": 10.0, "max": 150.0}
    return {"key": f"{t:013d}-{i}", "columns": {
        "time": t, "call_id": i, "model_id": f"{MODEL}/{ENV}/{3 + i % 2}", "version": 3 + i % 2, "env": ENV,
        "latency_predict_ms": 8.0 + i % 40, "latency_total_ms": 12.0 + i % 60, "status": "error" if i % 97 == 0 else "ok",
        "error_type": "ValueError" if i % 97 == 0 else None, "rows": 100,
        "features": {"GR": stats, "NPHI": {**stats, "mean": 0.3}, "DEPTH": {**stats, "mean": 2200.0}},
        "prediction": {"prediction": {**stats, "mean": 2.4}}}}


def insert(client, first: int, count: int) -> float:
    from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database

    url = (f"/api/v1/projects/{client.config.project}/raw/dbs/{analytics_database(ENV)}/tables/"
           f"{analytics_calls_table(MODEL)}/rows")
    started = time.perf_counter()

    def post(start: int) -> None:
        items = [row(i) for i in range(start, min(start + BATCH, first + count))]
        client.post(url, json={"items": items}, params={"ensureParent": "true"})

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(post, range(first, first + count, BATCH)))
    return time.perf_counter() - started


def raw_alone(client, folder: Path) -> float:
    """The pages of the whole table as the cold sync fetches them (pages.Pages, 4 cursors), written, not loaded."""
    from akerbp.mlops.analytics import pages as raw_pages
    from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database

    pages_dir = folder / "raw-alone"
    pages_dir.mkdir()
    pages = raw_pages.Pages(client, analytics_database(ENV), analytics_calls_table(MODEL), pages_dir)
    started = time.perf_counter()
    with ThreadPoolExecutor(1) as runner:
        fetching = runner.submit(raw_pages.fetch, pages, None, full=True)
        while (page := pages.ready.get()) is not None:
            page.unlink()
        fetching.result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--pause", type=float, default=None, help="seconds between the bulk insert and (a)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.pause is None:
        from akerbp.mlops.analytics.sync import OVERLAP_MS

        args.pause = OVERLAP_MS / 1000 + 1
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as name:
        os.environ["XDG_CACHE_HOME"] = str(Path(name) / "cache")
        proc, base_url = serve(Path(name))
        try:
            from akerbp.mlops.analytics import rows
            from akerbp.mlops.analytics.query import run_sql

            client = client_for(base_url)
            insert_s = insert(client, 0, args.rows)
            run_sql(client, "warmup", ENV, "SELECT 1")  # imports (duckdb, the registry) outside the timings
            time.sleep(args.pause)  # a benchmark's pause, not a synchronisation: how long ago RAW was last written

            started = time.perf_counter()
            cold = run_sql(client, MODEL, ENV, QUERY)
            cold_s = time.perf_counter() - started
            assert cold.rows[0][0] == args.rows, cold.rows

            new_insert_s = insert(client, args.rows, args.new)
            started = time.perf_counter()
            warm = run_sql(client, MODEL, ENV, QUERY)
            warm_s = time.perf_counter() - started
            assert warm.rows[0][0] == args.rows + args.new, warm.rows

            tables = rows.open_tables(client, MODEL, ENV, QUERY)
            try:
                duck = []
                for sql in (QUERY, SUMMARY):
                    times = []
                    for _ in range(5):
                        started = time.perf_counter()
                        tables.con.execute(sql).fetchall()
                        times.append(time.perf_counter() - started)
                    duck.append(statistics.median(times))
            finally:
                tables.close()
            raw_s = raw_alone(client, Path(name))
            cache_mb = Path(cold.sync.cache).stat().st_size / 1e6 if cold.sync else float("nan")
            rss = peak_rss_mb(os.getpid())
        finally:
            proc.terminate()
            proc.wait(30)
    assert cold.sync is not None and warm.sync is not None
    result = {
        "rows": args.rows, "new_rows": args.new, "insert_rows_per_s": args.rows / insert_s,
        "cold_s": cold_s, "cold_load_s": cold.sync.load_seconds, "cold_requests": cold.sync.requests,
        "cold_rows_per_s": args.rows / cold_s,
        "warm_s": warm_s, "warm_fetched": warm.sync.fetched, "warm_requests": warm.sync.requests,
        "warm_sync_s": warm.sync.seconds, "duckdb_query_s": duck[0], "duckdb_summary_s": duck[1],
        "raw_alone_s": raw_s, "pause_s": args.pause, "cache_file_mb": cache_mb, "client_peak_rss_mb": rss, "new_insert_s": new_insert_s,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"Analytics query over {args.rows:,} calls in RAW of a local CDF (server in its own process)")
    print(f"  insert ({BATCH:,}-row requests, 2 at a time):  {insert_s:.1f} s = {result['insert_rows_per_s']:,.0f} rows/s")
    print(f"  (a) cold cache, first query ({args.pause:g} s after):    {cold_s:.2f} s = {result['cold_rows_per_s']:,.0f} rows/s "
          f"({cold.sync.requests} requests; DuckDB loading {cold.sync.load_seconds:.2f} s of it)")
    print(f"  (b) warm cache after {args.new:,} new rows:       {warm_s:.3f} s ({warm.sync.fetched:,} rows fetched in "
          f"{warm.sync.requests} request(s), sync {warm.sync.seconds:.3f} s)  goal <= 1 s")
    print(f"  (c) DuckDB alone: the query {duck[0] * 1000:.0f} ms, a per-day/version summary {duck[1] * 1000:.0f} ms")
    print(f"  (d) RAW alone, every page fetched, not parsed: {raw_s:.2f} s = {args.rows / raw_s:,.0f} rows/s")
    print(f"  cache file {cache_mb:.0f} MB; client peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
