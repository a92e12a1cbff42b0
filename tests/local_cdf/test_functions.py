"""Local CDF Functions through the real cognite-sdk: build, call, logs, failures, timeouts, schedules, venvs."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests
from cognite.client.exceptions import CogniteAPIError

from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.local_cdf.store import Store
from akerbp.mlops.local_cdf.runtime.workers import INTERRUPTED
from support import ECHO, deploy_function, make_folder, make_index, wait_built, zipped


def test_create_call_response_logs_and_warm_state(client, tmp_path):
    fn = deploy_function(client, tmp_path, ECHO, secrets={"api-key": "s3cret"}, env_vars={"MY_VAR": "v"})
    assert fn.status == "Ready" and fn.secrets == {"api-key": "***"}
    first = fn.call({"x": 1})
    assert first.status == "Completed"
    response = first.get_response()
    assert response["data"] == {"x": 1} and response["secrets"] == {"api-key": "s3cret"}
    assert response["info"] == {"function_id": fn.id, "call_id": first.id}
    assert response["runtime"] == "true" and response["var"] == "v"
    assert "got {'x': 1}" in [log.message for log in first.get_logs()]
    assert fn.call({"x": 2}).get_response()["count"] == 2  # module state survived: a warm worker
    calls = client.functions.calls.list(function_id=fn.id)
    assert len(calls) == 2 and first.id in [c.id for c in calls]


def test_handler_writes_through_its_injected_client(client, tmp_path):
    fn = deploy_function(client, tmp_path, ECHO)
    assert fn.call({"write": "made-by-fn"}).status == "Completed"
    assert client.files.download_bytes(external_id="made-by-fn") == b"from the function"


def test_a_client_is_built_only_for_a_handler_that_names_it(client, tmp_path):
    source = """
import sys

def handle(data{params}):
    {body}
"""
    without = deploy_function(client, tmp_path, source.format(
        params="", body='return {"loaded": "cognite.client" in sys.modules}'), xid="no-client")
    assert without.call({}).get_response() == {"loaded": False}  # no client asked for: the SDK is never imported
    named = deploy_function(client, tmp_path, source.format(
        params=", client", body='from cognite.client import CogniteClient\n    '
        'return {"type": type(client).__name__, "is_client": isinstance(client, CogniteClient), '
        '"project": client.config.project}'), xid="with-client")
    assert named.call({}).get_response() == {"type": "CogniteClient", "is_client": True,
                                             "project": client.config.project}


def test_call_without_waiting_then_wait(client, tmp_path):
    fn = deploy_function(client, tmp_path, ECHO)
    call = client.functions.call(external_id="fn", data={"x": 1}, wait=False)
    call.wait()
    assert call.status == "Completed" and call.get_response()["data"] == {"x": 1}
    assert client.functions.calls.retrieve(call_id=call.id, function_id=fn.id).status == "Completed"


def test_raising_handler_fails_the_call_with_traceback_and_next_call_works(client, tmp_path):
    fn = deploy_function(client, tmp_path, """
        def handle(data):
            if data.get("boom"):
                raise ValueError("model exploded")
            return {"ok": True}
    """)
    failed = fn.call({"boom": True})
    assert failed.status == "Failed"
    assert "model exploded" in failed.error["message"] and "Traceback" in failed.error["trace"]
    assert fn.call({}).get_response() == {"ok": True}


def test_timeout_then_fresh_worker(tmp_path):
    with LocalCDF(tmp_path / "cdf", limits=Limits(call_timeout_s=1)) as cdf:
        client = cdf.client(project="t")
        fn = deploy_function(client, tmp_path, """
            import time
            def handle(data):
                if data.get("sleep"):
                    time.sleep(data["sleep"])
                return {"done": True}
        """)
        slow = fn.call({"sleep": 30})
        assert slow.status == "Timeout"
        assert fn.call({}).get_response() == {"done": True}


def test_non_json_and_oversized_responses_fail(tmp_path):
    with LocalCDF(tmp_path / "cdf", limits=Limits(max_response_bytes=1000)) as cdf:
        client = cdf.client(project="t")
        fn = deploy_function(client, tmp_path, """
            def handle(data):
                return {"big": "x" * 5000} if data.get("big") else {"set": {1, 2}}
        """)
        assert "JSON" in fn.call({}).error["message"]
        oversized = fn.call({"big": True})
        assert oversized.status == "Failed" and "1000" in oversized.error["message"]


@pytest.mark.parametrize(
    "source, extra, message",
    [
        ("x = 1\n", None, "handle"),
        ("import not_a_module_anywhere\ndef handle(data):\n    return 1\n", None, "not_a_module_anywhere"),
        ("def handle(data, model):\n    return 1\n", None, "model"),
    ],
)
def test_broken_code_makes_the_function_failed(client, tmp_path, source, extra, message):
    # The SDK checks some of this client-side when given a folder; a zip of our own tests the server's checks.
    code = client.files.upload_bytes(zipped({"handler.py": source}), name="code.zip", external_id="code.zip")
    client.functions.create(name="fn", external_id="fn", file_id=code.id)
    fn = wait_built(client, "fn")
    assert fn.status == "Failed" and message in fn.error["message"] + fn.error.get("trace", "")
    with pytest.raises(CogniteAPIError) as err:
        fn.call({})
    assert "Failed" in err.value.message


def test_missing_handler_file_and_escaping_zip_fail_the_build(local_cdf, client, tmp_path):
    no_handler = client.files.upload_bytes(zipped({"other.py": "x = 1"}), name="a.zip", external_id="a.zip")
    client.functions.create(name="a", external_id="a", file_id=no_handler.id)
    assert "handler.py" in wait_built(client, "a").error["message"]
    escaping = client.files.upload_bytes(zipped({"handler.py": "def handle():\n  return 1\n", "../evil.py": "x"}),
                                         name="b.zip", external_id="b.zip")
    client.functions.create(name="b", external_id="b", file_id=escaping.id)
    assert wait_built(client, "b").status == "Failed"
    assert not (local_cdf.data_dir / "functions" / "evil.py").exists()


def test_duplicate_function_external_id_and_limits(tmp_path):
    with LocalCDF(tmp_path / "cdf", limits=Limits(max_functions=1)) as cdf:
        client = cdf.client(project="t")
        deploy_function(client, tmp_path, ECHO)
        folder = make_folder(tmp_path, ECHO, "other")
        with pytest.raises(CogniteAPIError) as err:
            client.functions.create(name="other", external_id="other", folder=str(folder))
        assert "limit" in err.value.message
        assert client.functions.limits().runtimes == ["py310", "py311", "py312", "py313"]
        assert client.functions.status().status == "activated"


def test_list_all_functions_and_schedules(client, tmp_path):
    fn = deploy_function(client, tmp_path, ECHO)
    client.functions.schedules.create(name="s", cron_expression="0 * * * *", function_id=fn.id)
    assert [f.external_id for f in client.functions.list(limit=None)] == ["fn"]
    assert [s.name for s in client.functions.schedules.list(limit=None)] == ["s"]


def test_delete_function(client, tmp_path):
    fn = deploy_function(client, tmp_path, ECHO)
    client.functions.delete(external_id="fn")
    assert client.functions.retrieve(external_id="fn") is None
    assert client.functions.list() == []
    assert fn.id  # the deleted function's calls are unreachable too
    response = requests.post(f"{client.config.base_url}/api/v1/projects/test/functions/{fn.id}/calls/list",
                             json={}, headers={"Authorization": "Bearer x"})
    assert response.status_code == 400


def test_due_schedule_fires_exactly_once(local_cdf, client, tmp_path):
    fn = deploy_function(client, tmp_path, ECHO)
    schedule = client.functions.schedules.create(name="hourly", cron_expression="0 * * * *", function_id=fn.id,
                                                 data={"from": "schedule"})
    assert client.functions.schedules.get_input_data(schedule.id) == {"from": "schedule"}
    created = datetime.fromtimestamp(schedule.created_time / 1000, timezone.utc)
    next_hour = created.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert local_cdf.run_due_schedules(now=next_hour - timedelta(seconds=1)) == []
    fired = local_cdf.run_due_schedules(now=next_hour + timedelta(minutes=5))
    assert len(fired) == 1 and fired[0]["status"] == "Completed" and fired[0]["scheduleId"] == schedule.id
    assert local_cdf.run_due_schedules(now=next_hour + timedelta(minutes=6)) == []
    response = client.functions.calls.get_response(call_id=fired[0]["id"], function_id=fn.id)
    assert response["data"] == {"from": "schedule"}
    assert response["info"]["schedule_id"] == schedule.id
    assert response["info"]["scheduled_time"].startswith(next_hour.isoformat()[:16])
    client.functions.schedules.delete(id=schedule.id)
    assert client.functions.schedules.list() == []


def test_venv_isolation_installs_requirements_once(tmp_path, own_venv_cache):
    index = make_index(tmp_path)  # an on-disk package index: offline, and the package exists nowhere else
    source = """
        import localcdf_probe
        def handle(data):
            return {"probe": localcdf_probe.__name__}
    """
    # skip_folder_validation: the SDK would import the handler here, where the package is not installed.
    options = dict(index_url=index, skip_folder_validation=True)
    with LocalCDF(tmp_path / "cdf", isolation="venv") as cdf:
        client = cdf.client(project="t")
        fn = deploy_function(client, tmp_path, source, extra={"requirements.txt": "localcdf_probe==1.0\n"}, **options)
        assert fn.status == "Ready", fn.error
        assert fn.call({}).get_response() == {"probe": "localcdf_probe"}
        venvs = list((cdf.data_dir / "venvs").iterdir())
        again = deploy_function(client, tmp_path, source, xid="fn2", extra={"requirements.txt": "localcdf_probe==1.0\n"},
                       **options)
        assert again.status == "Ready" and list((cdf.data_dir / "venvs").iterdir()) == venvs
        bad = deploy_function(client, tmp_path, source, xid="bad", extra={"requirements.txt": "no-such-package-xyz==9.9\n"},
                     **options)
        assert bad.status == "Failed" and "no-such-package-xyz" in bad.error["trace"]


# -- stopping, crashing and sharing a data dir ------------------------------------------------------------
# A handler whose import blocks until the test creates `go`: the build is provably in progress while the test acts.
# Each import appends its process id to `imports`, so the test can count builds.
BLOCKING_IMPORT = """
    import os, time
    from pathlib import Path
    MARKS = Path({marks!r})
    with open(MARKS / "imports", "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    while not (MARKS / "go").exists():
        time.sleep(0.01)
    def handle(data):
        return {{"ok": True}}
"""


def wait_for_file(path, timeout: float = 60):
    """Wait for another process to create `path` (the event the test synchronises on)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


def start_blocking_build(client, tmp_path, xid="slow"):
    """Create a function whose build then hangs in the handler import; returns the marks folder."""
    marks = tmp_path / f"marks-{xid}"
    marks.mkdir()
    folder = make_folder(tmp_path, BLOCKING_IMPORT.format(marks=str(marks)), xid)
    # skip_folder_validation: the SDK would import (and block on) the handler here.
    client.functions.create(name=xid, external_id=xid, folder=str(folder), skip_folder_validation=True)
    wait_for_file(marks / "imports")
    return marks


def imports(marks) -> list[str]:
    return (marks / "imports").read_text().split()


def stored(data_dir, project, kind, xid_or_id) -> dict:
    """The stored record, hidden fields included, read without starting a server (which would resume builds)."""
    store = Store(data_dir)
    try:
        if isinstance(xid_or_id, int):
            return store.get(project, kind, xid_or_id)
        return store.get_xid(project, kind, xid_or_id)
    finally:
        store.close()


def test_stop_during_a_build_hands_it_to_the_next_start(tmp_path, unsandboxed):
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir) as cdf:
        marks = start_blocking_build(cdf.client(project="t"), tmp_path)
    fn = stored(data_dir, "t", "functions", "slow")
    assert fn["status"] == "Queued" and fn.get("_builderPid") is None and "error" not in fn  # not Failed
    (marks / "go").touch()
    with LocalCDF(data_dir) as cdf:
        client = cdf.client(project="t")
        built = wait_built(client, "slow")
        assert built.status == "Ready", built.error
        assert built.call({}).get_response() == {"ok": True}
    assert len(imports(marks)) == 2


SLOW_CALL = """
    import os, time
    from pathlib import Path
    def handle(data):
        Path(data["started"]).write_text(str(os.getpid()))
        time.sleep(600)
"""


def test_stop_while_a_call_runs_records_the_call_failed(tmp_path, unsandboxed):
    data_dir, started = tmp_path / "cdf", tmp_path / "started"
    with LocalCDF(data_dir, limits=Limits(sync_call_wait_s=0)) as cdf:
        fn = deploy_function(cdf.client(project="t"), tmp_path, SLOW_CALL)
        call = fn.call({"started": str(started)}, wait=False)
        wait_for_file(started)
    worker = int(started.read_text())
    assert not os.path.exists(f"/proc/{worker}")  # the worker is gone with the server
    with LocalCDF(data_dir) as cdf:  # same process: only stop() can have recorded the outcome
        got = cdf.client(project="t").functions.calls.retrieve(call_id=call.id, function_id=fn.id)
    assert got.status == "Failed" and got.error["message"] == INTERRUPTED


CALL_AND_HANG = """
import sys, threading
from akerbp.mlops.local_cdf import Limits, LocalCDF
cdf = LocalCDF(sys.argv[1], limits=Limits(sync_call_wait_s=0)).start()
cdf.client(project="t").functions.call(external_id="fn", data={"started": sys.argv[2]}, wait=False)
threading.Event().wait()  # until killed
"""


def test_calls_of_a_killed_process_are_failed_at_the_next_start(tmp_path, unsandboxed):
    data_dir, started = tmp_path / "cdf", tmp_path / "started"
    with LocalCDF(data_dir) as cdf:
        fn = deploy_function(cdf.client(project="t"), tmp_path, SLOW_CALL)
    proc = subprocess.Popen([sys.executable, "-c", CALL_AND_HANG, str(data_dir), str(started)])
    try:
        wait_for_file(started)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    # The worker ends itself with its server (tests/local_cdf/test_restart.py): only the call's record is left.
    with LocalCDF(data_dir) as cdf:
        [call] = cdf.client(project="t").functions.calls.list(function_id=fn.id)
    assert call.status == "Failed" and call.error["message"] == INTERRUPTED


OPEN_AND_STOP = """
import sys
from akerbp.mlops.local_cdf import LocalCDF
LocalCDF(sys.argv[1]).start().stop()
"""


def test_another_process_opening_the_data_dir_leaves_a_running_build_alone(tmp_path, unsandboxed):
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir) as cdf:
        client = cdf.client(project="t")
        marks = start_blocking_build(client, tmp_path)
        before = stored(data_dir, "t", "functions", "slow")
        assert before["_builderPid"] == os.getpid()
        subprocess.run([sys.executable, "-c", OPEN_AND_STOP, str(data_dir)], check=True)
        after = stored(data_dir, "t", "functions", "slow")
        assert (after["status"], after["_buildClaim"]) == ("Deploying", before["_buildClaim"])
        (marks / "go").touch()
        assert wait_built(client, "slow").status == "Ready"
    assert len(imports(marks)) == 1  # built once, by this process


RESUME_AND_WAIT = """
import sys, time
from akerbp.mlops.local_cdf import LocalCDF
cdf = LocalCDF(sys.argv[1]).start()
client = cdf.client(project="t")
while client.functions.retrieve(external_id="slow").status not in ("Ready", "Failed"):
    time.sleep(0.05)
cdf.stop()
"""


def test_two_processes_resuming_a_build_at_once_build_it_once(tmp_path, unsandboxed):
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir) as cdf:
        marks = start_blocking_build(cdf.client(project="t"), tmp_path)
    (marks / "go").touch()
    procs = [subprocess.Popen([sys.executable, "-c", RESUME_AND_WAIT, str(data_dir)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    fn = stored(data_dir, "t", "functions", "slow")
    assert fn["status"] == "Ready" and fn["_builderPid"] in [p.pid for p in procs]
    assert len(imports(marks)) == 2  # the interrupted build here, then one of the two processes


def test_instances_in_one_process_stop_independently_despite_colliding_ids(tmp_path, unsandboxed):
    other = LocalCDF(tmp_path / "other").start()
    # The import timeout bounds how long the blocked build can wait: shorter than an old-style 30 s wait for it.
    cdf = LocalCDF(tmp_path / "cdf", limits=Limits(call_timeout_s=20)).start()
    try:
        ready = deploy_function(other.client(project="t"), tmp_path, ECHO)
        marks = start_blocking_build(cdf.client(project="t"), tmp_path)
        assert cdf.client(project="t").functions.retrieve(external_id="slow").id == ready.id  # same id, two dirs
        other.stop()  # must neither wait for nor cut short the other instance's build
        assert stored(cdf.data_dir, "t", "functions", "slow")["status"] == "Deploying"
        assert len(imports(marks)) == 1
    finally:
        cdf.stop()
        other.stop()
    assert stored(cdf.data_dir, "t", "functions", "slow")["status"] == "Queued"  # its own stop found its build


ENVIRONMENT = """
    import os
    NAMES = ("SOME_SECRET", "MLOPS_SECRET_MODEL1", "COGNITE_CLIENT_SECRET", "MY_VAR", "COGNITE_FUNCTION_RUNTIME")
    def handle(data):
        return {"seen": {n: os.environ.get(n) for n in NAMES}, "has_path": bool(os.environ.get("PATH"))}
"""


def test_a_function_sees_its_env_vars_but_not_the_servers_environment(tmp_path, monkeypatch):
    for name in ("SOME_SECRET", "MLOPS_SECRET_MODEL1", "COGNITE_CLIENT_SECRET"):
        monkeypatch.setenv(name, "server-side-value")
    with LocalCDF(tmp_path / "cdf") as cdf:
        fn = deploy_function(cdf.client(project="t"), tmp_path, ENVIRONMENT, env_vars={"MY_VAR": "given"})
        response = fn.call({}).get_response()
    assert response == {"seen": {"SOME_SECRET": None, "MLOPS_SECRET_MODEL1": None, "COGNITE_CLIENT_SECRET": None,
                                 "MY_VAR": "given", "COGNITE_FUNCTION_RUNTIME": "true"}, "has_path": True}


def test_build_delay_keeps_a_function_from_ready_until_it_passed(tmp_path):
    """LocalCDF(build_delay_s=...) simulates CDF's build latency: polled like a deployer polls, the function is not
    Ready before the delay and is Ready soon after it."""
    delay = 2.0
    with LocalCDF(tmp_path / "cdf", isolation="shared-no-install", build_delay_s=delay) as cdf:
        client = cdf.client(project="test")
        folder = make_folder(tmp_path, ECHO)
        started = time.monotonic()
        client.functions.create(name="fn", external_id="fn", folder=str(folder))
        seen_before: set[str] = set()
        deadline = started + delay + 60
        while True:
            status = client.functions.retrieve(external_id="fn").status
            elapsed = time.monotonic() - started
            if status == "Ready":
                break
            assert status in ("Queued", "Deploying"), status
            seen_before.add(status)
            assert time.monotonic() < deadline, f"still {status} after {elapsed:.1f} s"
            time.sleep(0.05)  # polling interval, not synchronisation: the loop ends on the status
        assert elapsed >= delay and "Deploying" in seen_before
        assert elapsed < delay + 30
        assert client.functions.call(external_id="fn", data={"x": 1}).get_response()["data"] == {"x": 1}


def test_build_delay_is_checked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="0 or more"):
        LocalCDF(tmp_path / "cdf", build_delay_s=-1)
    monkeypatch.setenv("MLOPS_LOCAL_CDF_BUILD_DELAY_S", "soon")
    with pytest.raises(ValueError, match="MLOPS_LOCAL_CDF_BUILD_DELAY_S"):
        LocalCDF(tmp_path / "cdf")
    monkeypatch.setenv("MLOPS_LOCAL_CDF_BUILD_DELAY_S", "1.5")
    assert LocalCDF(tmp_path / "cdf").build_delay_s == 1.5
