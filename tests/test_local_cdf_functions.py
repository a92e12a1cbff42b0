"""Local CDF Functions through the real cognite-sdk: build, call, logs, failures, timeouts, schedules, venvs."""
from __future__ import annotations

import io
import textwrap
import time
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
import requests
from cognite.client.exceptions import CogniteAPIError

from akerbp.mlops.local_cdf import Limits, LocalCDF
from test_local_cdf_runtime import make_index


def make_folder(tmp_path, source: str, name: str = "fn", extra: dict | None = None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "handler.py").write_text(textwrap.dedent(source))
    for rel, text in (extra or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def wait_built(client, external_id: str, timeout: float = 120):
    """Poll like a deployer does: CDF offers no push notification for Ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fn = client.functions.retrieve(external_id=external_id)
        if fn.status in ("Ready", "Failed"):
            return fn
        time.sleep(0.05)
    raise AssertionError(f"{external_id} still {fn.status} after {timeout}s")


def deploy(client, tmp_path, source, xid="fn", **kw):
    folder = make_folder(tmp_path, source, xid, kw.pop("extra", None))
    client.functions.create(name=xid, external_id=xid, folder=str(folder), **kw)
    return wait_built(client, xid)


def zipped(entries: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in entries.items():
            z.writestr(name, text)
    return buffer.getvalue()


ECHO = """
    import os
    COUNT = 0

    def handle(data, client, secrets, function_call_info):
        global COUNT
        COUNT += 1
        print("got", data)
        if data.get("write"):
            client.files.upload_bytes(b"from the function", name="w.txt", external_id=data["write"])
        return {"count": COUNT, "data": data, "secrets": secrets, "info": function_call_info,
                "runtime": os.environ.get("COGNITE_FUNCTION_RUNTIME"), "var": os.environ.get("MY_VAR")}
"""


def test_create_call_response_logs_and_warm_state(client, tmp_path):
    fn = deploy(client, tmp_path, ECHO, secrets={"api-key": "s3cret"}, env_vars={"MY_VAR": "v"})
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
    fn = deploy(client, tmp_path, ECHO)
    assert fn.call({"write": "made-by-fn"}).status == "Completed"
    assert client.files.download_bytes(external_id="made-by-fn") == b"from the function"


def test_call_without_waiting_then_wait(client, tmp_path):
    fn = deploy(client, tmp_path, ECHO)
    call = client.functions.call(external_id="fn", data={"x": 1}, wait=False)
    call.wait()
    assert call.status == "Completed" and call.get_response()["data"] == {"x": 1}
    assert client.functions.calls.retrieve(call_id=call.id, function_id=fn.id).status == "Completed"


def test_raising_handler_fails_the_call_with_traceback_and_next_call_works(client, tmp_path):
    fn = deploy(client, tmp_path, """
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
        fn = deploy(client, tmp_path, """
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
        fn = deploy(client, tmp_path, """
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
        deploy(client, tmp_path, ECHO)
        folder = make_folder(tmp_path, ECHO, "other")
        with pytest.raises(CogniteAPIError) as err:
            client.functions.create(name="other", external_id="other", folder=str(folder))
        assert "limit" in err.value.message
        assert client.functions.limits().runtimes == ["py310", "py311", "py312", "py313"]
        assert client.functions.status().status == "activated"


def test_list_all_functions_and_schedules(client, tmp_path):
    fn = deploy(client, tmp_path, ECHO)
    client.functions.schedules.create(name="s", cron_expression="0 * * * *", function_id=fn.id)
    assert [f.external_id for f in client.functions.list(limit=None)] == ["fn"]
    assert [s.name for s in client.functions.schedules.list(limit=None)] == ["s"]


def test_delete_function(client, tmp_path):
    fn = deploy(client, tmp_path, ECHO)
    client.functions.delete(external_id="fn")
    assert client.functions.retrieve(external_id="fn") is None
    assert client.functions.list() == []
    assert fn.id  # the deleted function's calls are unreachable too
    response = requests.post(f"{client.config.base_url}/api/v1/projects/test/functions/{fn.id}/calls/list",
                             json={}, headers={"Authorization": "Bearer x"})
    assert response.status_code == 400


def test_due_schedule_fires_exactly_once(local_cdf, client, tmp_path):
    fn = deploy(client, tmp_path, ECHO)
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


def test_venv_isolation_installs_requirements_once(tmp_path):
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
        fn = deploy(client, tmp_path, source, extra={"requirements.txt": "localcdf_probe==1.0\n"}, **options)
        assert fn.status == "Ready", fn.error
        assert fn.call({}).get_response() == {"probe": "localcdf_probe"}
        venvs = list((cdf.data_dir / "venvs").iterdir())
        again = deploy(client, tmp_path, source, xid="fn2", extra={"requirements.txt": "localcdf_probe==1.0\n"},
                       **options)
        assert again.status == "Ready" and list((cdf.data_dir / "venvs").iterdir()) == venvs
        bad = deploy(client, tmp_path, source, xid="bad", extra={"requirements.txt": "no-such-package-xyz==9.9\n"},
                     **options)
        assert bad.status == "Failed" and "no-such-package-xyz" in bad.error["trace"]
