"""A local CDF killed with SIGKILL leaves nothing running, and the next server on its data dir cleans up what it left:
workers it could not end, half-written blobs and calls still Running. Servers run in subprocesses, driven through
the real cognite-sdk over HTTP.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import Token
from cognite.client.data_classes import FileMetadataWrite

from akerbp.mlops.local_cdf import LocalCDF
from akerbp.mlops.local_cdf.runtime import sandbox
from akerbp.mlops.local_cdf.runtime.processes import start_time
from akerbp.mlops.local_cdf.runtime.runner import descendants
from akerbp.mlops.local_cdf.store import Store, _writer as temp_writer
from akerbp.mlops.local_cdf.runtime.workers import INTERRUPTED

SERVER = """
import sys, threading
from akerbp.mlops.local_cdf import Limits, LocalCDF
cdf = LocalCDF(sys.argv[1], isolation="shared-no-install", limits=Limits(sync_call_wait_s=0)).start()
cdf.announce()
threading.Event().wait()  # until killed
"""

# Writes its pid and the pid of a helper it starts, then runs for as long as asked.
HANDLER = """
    import os, subprocess, time
    from pathlib import Path

    def handle(data):
        helper = subprocess.Popen(["sleep", "600"])
        Path(data["pids"]).write_text(f"{os.getpid()} {helper.pid}")
        time.sleep(data["seconds"])
        return {"ok": True}
"""


def wait_until(condition, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    return start_time(pid) is None  # no such process, or a zombie: nothing runs


@pytest.fixture
def any_server(monkeypatch):
    """Start a local CDF in a subprocess (its workers sandboxed where bubblewrap works); returns (process, client)
    once it answers."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    global_config.disable_pypi_version_check = True
    procs = []

    def start(data_dir: Path):
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(data_dir)])
        procs.append(proc)
        wait_until(lambda: proc.poll() is not None or LocalCDF.server_info(data_dir), "the server did not answer")
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        base_url = LocalCDF.server_info(data_dir)["base_url"]
        config = ClientConfig(client_name="t", project="t", base_url=base_url, credentials=Token("t"))
        return proc, CogniteClient(config)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


@pytest.fixture
def server(any_server, unsandboxed):
    """any_server with unsandboxed workers: HANDLER reports host pids and writes a host file."""
    return any_server


def deploy_function(client, tmp_path, source: str = HANDLER) -> None:
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text(textwrap.dedent(source))
    client.functions.create(name="fn", external_id="fn", folder=str(folder))
    wait_until(lambda: client.functions.retrieve(external_id="fn").status == "Ready", "the function was not Ready",
               timeout=120)


def run(client, tmp_path, name: str, seconds: float, wait: bool):
    """Call the function; returns the call and the pids of its worker and of the helper the handler started."""
    pids = tmp_path / name
    call = client.functions.call(external_id="fn", data={"pids": str(pids), "seconds": seconds}, wait=wait)
    wait_until(pids.exists, f"call {name} did not start")
    worker, helper = map(int, pids.read_text().split())
    return call, worker, helper


def test_workers_die_with_a_server_killed_by_sigkill(server, tmp_path):
    proc, client = server(tmp_path / "cdf")
    deploy_function(client, tmp_path)
    _, busy_worker, helper = run(client, tmp_path, "busy", 600, wait=False)
    done, idle_worker, _ = run(client, tmp_path, "done", 0, wait=True)  # a second worker, warm and idle after it
    assert done.status == "Completed"
    assert busy_worker != idle_worker and not any(map(gone, (idle_worker, busy_worker, helper)))
    proc.kill()
    proc.wait(timeout=30)
    for pid, what in ((idle_worker, "the warm idle worker"), (busy_worker, "the worker running a call"),
                      (helper, "a process the function started")):
        wait_until(lambda pid=pid: gone(pid), f"{what} ({pid}) outlived its SIGKILLed server", timeout=10)


@pytest.mark.skipif(sandbox.bwrap() is None, reason="bubblewrap cannot sandbox workers on this machine")
def test_sandboxed_workers_die_with_a_server_killed_by_sigkill(any_server, tmp_path):
    data_dir = tmp_path / "cdf"
    proc, client = any_server(data_dir)
    deploy_function(client, tmp_path, "import time\ndef handle(data):\n    time.sleep(600)\n")
    client.functions.call(external_id="fn", wait=False)
    # A sandboxed handler sees only its namespace's pids: take the worker the server recorded, and what runs under it.
    [worker] = [row[0] for row in Store(data_dir).recorded_processes()]
    wait_until(lambda: descendants(worker), "the sandboxed worker had no processes")
    running = [worker, *descendants(worker)]
    proc.kill()
    proc.wait(timeout=30)
    for pid in running:
        wait_until(lambda pid=pid: gone(pid), f"process {pid} of a sandboxed worker outlived its SIGKILLed server", timeout=10)


def partial_upload(client, tmp_path) -> socket.socket:
    """Start a PUT of 1 MB to a new file's upload URL and send only half of it (the upload stays open)."""
    _, upload_url = client.files.create(FileMetadataWrite(name="half.bin", external_id="half"))
    url = urlsplit(upload_url)
    conn = socket.create_connection((url.hostname, url.port), timeout=30)
    conn.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: 1000000\r\n\r\n"
                 .encode() + b"x" * 500_000)
    return conn


def test_a_new_server_ends_what_a_killed_one_left_and_fails_its_running_call(server, tmp_path):
    data_dir = tmp_path / "cdf"
    proc, client = server(data_dir)
    deploy_function(client, tmp_path)
    call, worker, helper = run(client, tmp_path, "stuck", 600, wait=False)
    os.kill(worker, signal.SIGSTOP)  # a worker that cannot end itself (stopped, or stuck in C code holding the GIL)
    upload = partial_upload(client, tmp_path)
    wait_until(lambda: list((data_dir / "blobs").rglob(".*.tmp")), "the upload did not start writing a blob")
    proc.kill()
    proc.wait(timeout=30)
    upload.close()
    assert not gone(worker)  # the premise: it survived its server
    worker_dirs = [row[4] for row in Store(data_dir).recorded_processes()]
    assert worker_dirs and all(Path(d).exists() for d in worker_dirs)

    with LocalCDF(data_dir, isolation="shared-no-install") as cdf:
        wait_until(lambda: gone(worker) and gone(helper), "the stuck worker and its helper were not ended")
        assert list((data_dir / "blobs").rglob(".*.tmp")) == []
        got = cdf.client(project="t").functions.calls.retrieve(call_id=call.id, function_id=call.function_id)
        assert got.status == "Failed" and got.error["message"] == INTERRUPTED
        assert cdf.client(project="t").files.retrieve(external_id="half").uploaded is False
        assert Store(data_dir).recorded_processes() == []
    assert not any(Path(d).exists() for d in worker_dirs)


def test_the_cleanup_leaves_live_owners_and_reused_pids_alone(tmp_path):
    data_dir = tmp_path / "cdf"
    store = Store(data_dir)
    me = os.getpid(), start_time(os.getpid())
    dead = (2 ** 22 + 1, "x.1")  # above Linux's largest pid_max: no process has this identity
    owned_by_me = subprocess.Popen(["sleep", "600"], start_new_session=True)
    reused = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        store.record_process(owned_by_me.pid, start_time(owned_by_me.pid), *me, None)
        # A dead owner's worker whose pid now belongs to another process: the start time tells them apart.
        store.record_process(reused.pid, "x.12345", *dead, None)
        live_blob = data_dir / "blobs" / "t" / f".7.{temp_writer()}.1.tmp"  # as this process names its uploads
        dead_blob = data_dir / "blobs" / "t" / f".8.{dead[0]}-0123456789ab.1.tmp"
        old_style_dead_blob = data_dir / "blobs" / "t" / f".9.{dead[0]}.1.tmp"
        live_blob.parent.mkdir(parents=True)
        for blob in (live_blob, dead_blob, old_style_dead_blob):
            blob.write_bytes(b"half")
        with LocalCDF(data_dir, isolation="shared-no-install"):
            pass
        assert owned_by_me.poll() is None and reused.poll() is None  # neither was killed
        assert [row[0] for row in store.recorded_processes()] == [owned_by_me.pid]  # only the dead owner's record
        assert live_blob.exists() and not dead_blob.exists() and not old_style_dead_blob.exists()
    finally:
        for proc in (owned_by_me, reused):
            proc.kill()
            proc.wait(timeout=30)
        store.close()
