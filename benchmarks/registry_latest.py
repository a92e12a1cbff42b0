"""How fast is "latest version" with 10 / 1,000 / 10,000 versions of a model? (local CDF, real cognite-sdk)

    python benchmarks/registry_latest.py [--sizes 10,1000,10000] [--repeat 21]

For each size: fill a fresh local CDF with that many versions the way the registry lays them out (tiny archives
uploaded through the SDK in a thread pool, plus the block markers), then time get_model_version(latest), one real
upload_new_model_version (number allocation included) and, for contrast, list_model_versions (what a registry that
lists and sorts every version would pay). HTTP requests are counted from the SDK's own debug log of each request.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from akerbp.mlops import __version__, registry
from akerbp.mlops.registry import index as registry_index
from akerbp.mlops.registry.rules import DIRECTORY
from akerbp.mlops.local_cdf import LocalCDF

MODEL, ENV = "bench", "dev"


class RequestCounter(logging.Handler):
    """Counts the SDK's "HTTP/1.1 POST url status" debug lines: one per HTTP request it makes."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record):
        if record.getMessage().startswith("HTTP/"):
            self.count += 1


def count_requests(fn):
    logger = logging.getLogger("cognite.client._basic_api_client")
    counter, level = RequestCounter(), logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        fn()
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
    return counter.count


def fill(client, n: int) -> float:
    """n uploaded versions plus their block markers, as upload_new_model_version would leave them."""
    content = b"tiny archive"
    sha = hashlib.sha256(content).hexdigest()
    data_set_id = registry_index.ensure_data_set(client, "mlops")

    def version(v: int):
        client.files.upload_bytes(
            content, name=f"{MODEL}-{ENV}-{v}.tar.gz", external_id=registry_index.version_xid(MODEL, ENV, v),
            directory=DIRECTORY, data_set_id=data_set_id,
            metadata={"version": str(v), "model_name": MODEL, "env": ENV, "sha256": sha, "size": str(len(content)),
                      "created_by": "benchmark", "git_commit": "", "framework_version": __version__},
        )

    start = time.perf_counter()
    registry_index.ensure_markers(client, MODEL, ENV, 0, n // registry_index.BLOCK, data_set_id)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(version, range(1, n + 1)))
    return time.perf_counter() - start


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(n: int, repeat: int, work: Path) -> dict:
    artifacts = work / "artifacts"
    artifacts.mkdir(parents=True)
    (artifacts / "model.pkl").write_bytes(b"weights" * 100)
    with LocalCDF(work / "cdf") as cdf:
        client = cdf.client(project="bench")
        fill_s = fill(client, n)
        assert registry.get_model_version(MODEL, ENV, client=client).version == n
        latest = lambda: registry.get_model_version(MODEL, ENV, client=client)  # noqa: E731
        latest_s = median_time(latest, repeat)
        latest_requests = count_requests(latest)
        start = time.perf_counter()
        upload = lambda: registry.upload_new_model_version(MODEL, ENV, artifacts, client=client)  # noqa: E731
        upload_requests = count_requests(upload)
        upload_s = time.perf_counter() - start
        assert registry.get_model_version(MODEL, ENV, client=client).version == n + 1
        listing = lambda: registry.list_model_versions(MODEL, ENV, client=client)  # noqa: E731
        list_s = median_time(listing, max(1, repeat // 7))
        list_requests = count_requests(listing)
    return {"n": n, "fill_s": fill_s, "latest_ms": latest_s * 1000, "latest_requests": latest_requests,
            "upload_ms": upload_s * 1000, "upload_requests": upload_requests, "list_ms": list_s * 1000,
            "list_requests": list_requests}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--repeat", type=int, default=21, help="timed runs of the latest lookup (median reported)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            print(f"filling a local CDF with {n} versions ...", file=sys.stderr, flush=True)
            rows.append(bench(n, args.repeat, Path(tmp) / str(n)))
    header = ("versions", "fill (s)", "latest median (ms)", "latest requests", "upload (ms)", "upload requests",
              "list all (ms)", "list requests")
    table = [header] + [
        (f"{r['n']:,}", f"{r['fill_s']:.1f}", f"{r['latest_ms']:.1f}", str(r["latest_requests"]),
         f"{r['upload_ms']:.0f}", str(r["upload_requests"]), f"{r['list_ms']:.0f}", str(r["list_requests"]))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
