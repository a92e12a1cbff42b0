"""Local CDF benchmark: server start, warm function call round trip, 1 GiB upload/download vs cp, server RSS.

    python benchmarks/local_cdf.py [--size-mib 1024] [--calls 200]

The server runs in its own process (`mlops local-cdf serve`), so its peak RSS (VmHWM) is the server's alone; the
client is the real cognite-sdk in this process.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HANDLER = "def handle(data):\n    return {'echo': data}\n"


def start_times(tmp: Path, runs: int = 10) -> list[float]:
    from akerbp.mlops.local_cdf import LocalCDF

    times = []
    for i in range(runs):
        t = time.perf_counter()
        cdf = LocalCDF(tmp / f"start{i}").start()
        times.append(time.perf_counter() - t)
        cdf.stop()
    return times


def cold_start(tmp: Path) -> float:
    """A fresh Python process importing the package and starting a server, until the health URL answers."""
    code = ("import time,urllib.request;t=time.perf_counter();from akerbp.mlops.local_cdf import LocalCDF;"
            f"c=LocalCDF(r'{tmp / 'cold'}').start();urllib.request.urlopen(c.base_url+'/_local/health').read();"
            "print(time.perf_counter()-t);c.stop()")
    return float(subprocess.check_output([sys.executable, "-c", code]).decode())


def serve(tmp: Path) -> tuple[subprocess.Popen, str]:
    data_dir = tmp / "served"
    proc = subprocess.Popen([sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "serve", "--port", "0",
                             "--data-dir", str(data_dir)], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()  # "Local CDF serving ... at http://127.0.0.1:PORT ..."
    base_url = line.split(" at ")[1].split()[0]
    return proc, base_url


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def client_for(base_url: str):
    from cognite.client import ClientConfig, CogniteClient, global_config
    from cognite.client.credentials import Token

    global_config.disable_pypi_version_check = True
    return CogniteClient(ClientConfig(client_name="bench", project="bench", base_url=base_url,
                                      credentials=Token("t")))


def warm_calls(client, tmp: Path, n: int) -> list[float]:
    folder = tmp / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text(HANDLER)
    fn = client.functions.create(name="echo", external_id="echo", folder=str(folder))
    while client.functions.retrieve(id=fn.id).status not in ("Ready", "Failed"):
        time.sleep(0.05)
    client.functions.call(id=fn.id, data={"warm": 1})
    times = []
    for i in range(n):
        t = time.perf_counter()
        call = client.functions.call(id=fn.id, data={"i": i})
        assert call.status == "Completed", call.error
        times.append(time.perf_counter() - t)
    return times


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def transfer(client, tmp: Path, size_mib: int) -> dict:
    src = tmp / "big.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for _ in range(size_mib):
            f.write(block)
    os.sync()
    t = time.perf_counter()
    shutil.copyfile(src, tmp / "copy.bin")  # page cache to page cache, like the upload and download below
    cp_s = time.perf_counter() - t
    (tmp / "copy.bin").unlink()
    t = time.perf_counter()
    client.files.upload(str(src), external_id="big", name="big.bin")
    up_s = time.perf_counter() - t
    out = tmp / "out"
    out.mkdir()
    t = time.perf_counter()
    client.files.download(str(out), external_id="big")
    down_s = time.perf_counter() - t
    same = sha256(src) == sha256(out / "big.bin")
    return {"cp_s": cp_s, "upload_s": up_s, "download_s": down_s, "same_sha256": same,
            "cp_mib_s": size_mib / cp_s, "upload_mib_s": size_mib / up_s, "download_mib_s": size_mib / down_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as name:
        tmp = Path(name)
        starts = start_times(tmp)
        cold = cold_start(tmp)
        proc, base_url = serve(tmp)
        try:
            client = client_for(base_url)
            calls = warm_calls(client, tmp, args.calls)
            xfer = transfer(client, tmp, args.size_mib)
            rss = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    result = {
        "server_start_s_median": statistics.median(starts),
        "server_cold_process_start_s": cold,
        "warm_call_p50_ms": statistics.median(calls) * 1000,
        "warm_call_p95_ms": sorted(calls)[int(len(calls) * 0.95) - 1] * 1000,
        **{k: v for k, v in xfer.items()},
        "upload_vs_cp": xfer["upload_mib_s"] / xfer["cp_mib_s"],
        "download_vs_cp": xfer["download_mib_s"] / xfer["cp_mib_s"],
        "server_peak_rss_mb": rss,
        "size_mib": args.size_mib,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"server start (in process, median of 10)   {result['server_start_s_median'] * 1000:8.1f} ms   target <= 500")
    print(f"server start (fresh process incl. import) {cold * 1000:8.1f} ms")
    print(f"warm call round trip via SDK p50 / p95    {result['warm_call_p50_ms']:8.1f} / "
          f"{result['warm_call_p95_ms']:.1f} ms   target p50 <= 30")
    print(f"{args.size_mib} MiB: cp {xfer['cp_mib_s']:.0f} MiB/s, upload {xfer['upload_mib_s']:.0f} MiB/s "
          f"({result['upload_vs_cp']:.0%} of cp), download {xfer['download_mib_s']:.0f} MiB/s "
          f"({result['download_vs_cp']:.0%} of cp)   target >= 50%; sha256 equal: {xfer['same_sha256']}")
    print(f"server peak RSS                           {rss:8.1f} MB   target <= 150")


if __name__ == "__main__":
    main()
