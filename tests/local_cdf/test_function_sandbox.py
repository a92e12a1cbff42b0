"""Attacks from inside a local CDF Function (issue 8, item 1): a handler reaches only what is its own.

Each case runs hostile handler code through the real cognite-sdk and checks that the server's environment, its store
(signing secret, every function's secrets), the blobs, other functions' folders and the server process stay out of
reach; that what a call starts ends with it; that the function's memory is enforced; that a flood of output keeps the
server's memory bounded; and that code zips and artifact archives cannot expand without bound. Every case is bounded
in time (call timeouts, deadlines) and memory (allocations are virtual or capped).
"""
from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import Token

from akerbp.mlops.errors import MlopsError
from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.local_cdf.runtime.builder import BuildError, extract_code
from akerbp.mlops.local_cdf.runtime import sandbox
from akerbp.mlops.local_cdf.api.functions import code_dir
from akerbp.mlops.local_cdf.runtime.worker_process import RUNNER
from akerbp.mlops.registry.archive import extract_archive, sha256_file

# Bubblewrap (what CI installs), or a root server whose Python other users can reach (a uid per function).
ISOLATED = sandbox.bwrap() is not None or sandbox.worker_uid("probe", sys.executable, RUNNER, "/tmp/probe") is not None
needs_isolation = pytest.mark.skipif(not ISOLATED, reason="neither bubblewrap nor a uid switch works here: the "
                                                          "README says what holds without them")


def zipped(entries: dict, links: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in entries.items():
            z.writestr(name, text)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buffer.getvalue()


def wait_until(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)
    return result


def deploy_function(client, source: str, xid: str = "fn", **kw):
    file = client.files.upload_bytes(zipped({"handler.py": source}), name=f"{xid}.zip", external_id=f"{xid}-code")
    client.functions.create(name=xid, external_id=xid, file_id=file.id, **kw)
    fn = wait_until(lambda: (f := client.functions.retrieve(external_id=xid)).status in ("Ready", "Failed") and f,
                    f"{xid} built")
    assert fn.status == "Ready", fn.error
    return fn


def call(client, fn, data=None):
    result = client.functions.call(id=fn.id, data=data or {}, wait=True)
    return result, (result.get_response() if result.status == "Completed" else None)


@pytest.fixture
def reachable_dir():
    """A folder other users can search (pytest's tmp_path is inside a 0700 one), so a root server can run workers as
    users of their own when bubblewrap is not there."""
    path = Path(tempfile.mkdtemp(prefix="attacks-", dir="/tmp"))
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def cdf(reachable_dir):
    with LocalCDF(reachable_dir / "cdf", isolation="shared-no-install", limits=Limits(call_timeout_s=60)) as server:
        yield server


@pytest.fixture
def client(cdf):
    return cdf.client(project="alpha")


SERVER = """
import sys, threading
from akerbp.mlops.local_cdf import Limits, LocalCDF
cdf = LocalCDF(sys.argv[1], isolation="shared-no-install", limits=Limits(call_timeout_s=120)).start()
cdf.announce()
threading.Event().wait()  # until killed
"""


@pytest.fixture
def served(reachable_dir, monkeypatch):
    """A local CDF in a process of its own, started with `env` (its initial environment, the one /proc shows);
    returns (process, client)."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    global_config.disable_pypi_version_check = True
    procs = []

    def start(env: dict | None = None):
        data_dir = reachable_dir / "served"
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(data_dir)], env={**os.environ, **(env or {})})
        procs.append(proc)
        info = wait_until(lambda: proc.poll() is not None or LocalCDF.server_info(data_dir), "the server answered")
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        return proc, CogniteClient(ClientConfig(client_name="t", project="t", base_url=info["base_url"],
                                                credentials=Token("t")))

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


SNOOP_ENVIRON = """
import os
def handle(data):
    found = {}
    for pid in [os.getppid(), *(int(p) for p in os.listdir("/proc") if p.isdigit())]:
        try:
            text = open(f"/proc/{pid}/environ", "rb").read().decode("utf-8", "replace")
        except OSError:
            continue
        if data["needle"] in text:
            found[str(pid)] = text[::-1][:200]  # reversed: past any masking of the secret value
    return found
"""


@needs_isolation
def test_a_handler_reads_no_environment_but_its_own(served):
    _, client = served({"COGNITE_CLIENT_SECRET": "deployer-secret-7d1c", "MLOPS_SECRET_TOKEN": "deployer-secret-7d1c"})
    fn = deploy_function(client, SNOOP_ENVIRON)
    result, found = call(client, fn, {"needle": "deployer-secret-7d1c"})
    assert result.status == "Completed", result.error
    assert found == {}, f"the handler read the server's environment in /proc/{list(found)}/environ"


SNOOP_FILES = """
import os
def handle(data):
    got = {}
    for path in data["read"]:
        try:
            with open(path, "rb") as f:
                got[path] = len(f.read())
        except OSError as e:
            pass
    for path in data["list"]:
        try:
            got[path] = os.listdir(path)
        except OSError:
            pass
    for path in data["write"]:
        try:
            with open(path, "a") as f:
                f.write("\\nRESULT = 'tampered'\\n")
            got[path] = "written"
        except OSError:
            pass
    return got
"""

VICTIM = """
RESULT = "genuine"
def handle(secrets):
    return {"result": RESULT, "secret": secrets.get("key")}
"""


@needs_isolation
def test_a_handler_cannot_read_the_store_the_blobs_or_other_functions_folders(cdf, client):
    other = cdf.client(project="beta")
    victim = deploy_function(other, VICTIM, "victim", secrets={"key": "beta-secret"})
    attacker = deploy_function(client, SNOOP_FILES, "attacker")
    data_dir = cdf.data_dir.resolve()
    victim_dir = code_dir(cdf.data_dir, "beta", victim.id).resolve()
    reads = [str(data_dir / "cdf.sqlite3"), str(victim_dir / "handler.py"), "../../../cdf.sqlite3",
             f"../../beta/{victim.id}/handler.py"]
    lists = [str(data_dir), str(data_dir / "blobs"), str(data_dir / "functions"), str(victim_dir)]
    writes = [str(victim_dir / "handler.py"), f"../../beta/{victim.id}/handler.py", "handler.py"]
    result, got = call(client, attacker, {"read": reads, "list": lists, "write": writes})
    assert result.status == "Completed", result.error
    listed = {path: names for path, names in got.items() if isinstance(names, list)}
    assert {path: v for path, v in got.items() if path not in listed} == {}, f"the handler reached {got}"
    # A sandbox may show the way down to the function's own folder, nothing else of the data dir
    own_way = {"functions", "alpha", "venvs", str(attacker.id)}
    assert all(set(names) <= own_way for names in listed.values()), f"the handler listed {listed}"
    result, answer = call(other, victim)
    assert answer == {"result": "genuine", "secret": "beta-secret"}


SIGNAL = """
import os
def handle(data):
    reached = []
    for pid in {os.getppid(), data["server"]}:
        try:
            os.kill(pid, 0)
            reached.append(pid)
        except OSError:
            pass
    return reached
"""


@needs_isolation
def test_a_handler_cannot_signal_the_server(client):
    fn = deploy_function(client, SIGNAL)
    result, reached = call(client, fn, {"server": os.getpid()})
    assert result.status == "Completed", result.error
    # Under bubblewrap the parent is the sandbox's own init (pid 1), not the server: signalling it reaches nothing
    # outside the sandbox; what must fail is reaching the server's pid.
    assert os.getpid() not in reached and (reached in ([], [1])), reached


DETACH = """
import os, time
def handle(data):
    if data.get("check"):
        try:
            os.kill(data["check"], 0)
            return "alive"
        except ProcessLookupError:
            return "gone"
    r, w = os.pipe()
    if os.fork() == 0:  # child: a new session, then a grandchild that outlives it
        os.setsid()
        if os.fork() == 0:
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            time.sleep(60)
            os._exit(0)
        os._exit(0)
    os.close(w)
    pid = int(os.read(r, 32))
    os.wait()
    return pid
"""


def test_what_a_call_starts_ends_with_it(client):
    fn = deploy_function(client, DETACH)
    result, pid = call(client, fn)
    assert result.status == "Completed", result.error
    result, state = call(client, fn, {"check": pid})  # the same warm worker: the same view of the processes
    assert state == "gone", "a detached grandchild of the call still runs after it"


MEMORY_HOG = """
import numpy as np
def handle(data):
    if data.get("hog"):
        block = np.empty(4 * 1024**3, dtype=np.uint8)  # virtual: no real memory is used even without the cap
        return int(block.nbytes)
    return "fine"
"""


def test_the_functions_memory_is_enforced(client, cdf):
    fn = deploy_function(client, MEMORY_HOG, memory=1.0)
    result, _ = call(client, fn, {"hog": True})
    assert result.status == "Failed"
    assert "out of memory" in result.error["message"] and "1 GB" in result.error["message"], result.error
    result, answer = call(client, fn)  # the server and the function go on
    assert answer == "fine"


FLOOD = """
import os
def handle(data):
    chunk = b"x" * 1023 + b"\\n"
    for _ in range(data["mb"] * 1024):
        os.write(1, chunk)
    return "done"
"""


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_flood_of_output_keeps_the_servers_memory_bounded(served):
    proc, client = served()
    fn = deploy_function(client, FLOOD)
    before = _peak_mb(proc.pid)
    result, answer = call(client, fn, {"mb": 600})
    assert answer == "done", result.error
    assert "truncated" in result.get_logs()[-1].message
    grown = _peak_mb(proc.pid) - before
    assert grown < 200, f"the server's peak memory grew by {grown:.0f} MB for 600 MB of output"


# -- code zips and artifact archives --------------------------------------------------------------------------
def test_a_chained_symlink_out_of_the_code_folder_is_refused(tmp_path):
    archive = tmp_path / "code.zip"
    archive.write_bytes(zipped({"handler.py": "def handle(): pass\n"}, {"b": ".", "d": "b/b/../etc"}))
    with pytest.raises(BuildError, match="Symlink .* points outside"):
        extract_code(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_chained_symlink_ordered_link_first_is_refused(tmp_path):
    archive = tmp_path / "code.zip"
    archive.write_bytes(zipped({"handler.py": "def handle(): pass\n"}, {"d": "b/b/../../etc", "b": "."}))
    with pytest.raises(BuildError, match="Symlink .* points outside"):
        extract_code(archive, tmp_path / "out")


def test_a_zip_bomb_is_refused_with_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LOCAL_CDF_MAX_CODE_BYTES", str(20 * 1024 * 1024))
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("handler.py", "def handle(): pass\n")
        z.writestr("zeros.bin", b"\0" * (64 * 1024 * 1024))
    assert archive.stat().st_size < 1024 * 1024
    with pytest.raises(BuildError, match="extracts to more than 20 MB"):
        extract_code(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_zip_of_too_many_files_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_LOCAL_CDF_MAX_CODE_FILES", "100")
    archive = tmp_path / "many.zip"
    archive.write_bytes(zipped({f"f{i}.py": "" for i in range(101)}))
    with pytest.raises(BuildError, match="101 entries; the limit is 100"):
        extract_code(archive, tmp_path / "out")


def test_the_default_code_limit_refuses_a_gigabyte_bomb(tmp_path):
    """The default cap (500 MB) stops a 1 GiB bomb early: only the cap's worth is ever written."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros.bin", "w", force_zip64=True) as f:
        block = b"\0" * (16 * 1024 * 1024)
        for _ in range(64):
            f.write(block)
    with pytest.raises(BuildError, match="extracts to more than 500 MB"):
        extract_code(archive, tmp_path / "out")


def test_an_artifact_bomb_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_ARTIFACT_MAX_BYTES", str(20 * 1024 * 1024))
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 * 1024 * 1024
        tar.addfile(info, io.BytesIO(b"\0" * info.size))
    assert sha256_file(archive)  # a correct checksum proves nothing about the size
    with pytest.raises(MlopsError, match="extracts to 67108864 bytes, the limit is 20971520"):
        extract_archive(archive, tmp_path / "out", label="artifact")
    assert not (tmp_path / "out").exists()


def test_an_artifact_of_too_many_files_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_ARTIFACT_MAX_FILES", "10")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(11):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    with pytest.raises(MlopsError, match="11 entries, the limit is 10"):
        extract_archive(archive, tmp_path / "out", label="artifact")
