"""Function runtime of the local CDF: code extraction, handler checks, warm workers, venvs, cron.

Real processes throughout: each test writes a function folder and runs it in runner.py workers.
"""

from __future__ import annotations

import socket
import stat
import sys
import textwrap
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from akerbp.mlops.local_cdf.runtime import cron
from akerbp.mlops.local_cdf.runtime.builder import BuildCancelled, BuildError, extract_code, validate_handler
from akerbp.mlops.local_cdf.runtime.environments import prepare
from akerbp.mlops.local_cdf.runtime.workers import INTERRUPTED, CallResult, WorkerPool
from support import make_index

PY = sys.executable


@pytest.fixture
def pool(unsandboxed):
    p = WorkerPool()
    yield p
    p.close()


def make_function(root: Path, source: str, name: str = "fn", files: dict | None = None, path="handler.py") -> Path:
    folder = root / name
    (folder / path).parent.mkdir(parents=True, exist_ok=True)
    (folder / path).write_text(textwrap.dedent(source))
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(textwrap.dedent(text))
    return folder


def run(pool, folder, data=None, *, key=None, timeout=20.0, max_bytes=1_000_000, env=None, client=None,
        secrets=None, info=None, path="handler.py", python=PY) -> CallResult:
    return pool.call(key or str(folder), folder, path, python, env or {}, data, secrets or {},
                     info or {"function_id": 1, "call_id": 2}, client, timeout, max_bytes)


def messages(result: CallResult) -> list[str]:
    return [entry["message"] for entry in result.logs]


# ---------------------------------------------------------------- extraction


def write_zip(path: Path, entries: list[tuple[str, str]], symlinks: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in entries:
            zf.writestr(zipfile.ZipInfo(name), text)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_extract_code_unpacks_a_zip(tmp_path):
    z = write_zip(tmp_path / "code.zip", [("handler.py", "def handle(data): return data\n"), ("pkg/m.py", "X = 1\n")],
                  symlinks={"pkg/alias.py": "m.py"})
    dest = tmp_path / "out" / "fn"
    extract_code(z, dest)
    assert (dest / "handler.py").read_text().startswith("def handle")
    assert (dest / "pkg" / "alias.py").read_text() == "X = 1\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["fn"]


@pytest.mark.parametrize(
    "entries,symlinks",
    [
        ([("../evil.py", "x")], None),
        ([("a/../../evil.py", "x")], None),
        ([("/tmp/evil.py", "x")], None),
        ([("ok.py", "x")], {"link": "../../outside"}),
        ([("ok.py", "x")], {"link": "/etc/passwd"}),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-dotdot", "symlink-absolute"],
)
def test_extract_code_refuses_escaping_entries(tmp_path, entries, symlinks):
    z = write_zip(tmp_path / "code.zip", entries, symlinks)
    dest = tmp_path / "out" / "fn"
    with pytest.raises(BuildError) as err:
        extract_code(z, dest)
    assert "zip" in err.value.message
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []  # nothing half-written
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "out" / "evil.py").exists()


def test_extract_code_refuses_a_non_zip(tmp_path):
    bad = tmp_path / "code.zip"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(BuildError, match="not a zip"):
        extract_code(bad, tmp_path / "fn")


# ---------------------------------------------------------------- handler validation


def test_validate_handler_accepts_allowed_arguments(tmp_path):
    folder = make_function(tmp_path, "def handle(function_call_info, secrets, client, data):\n    return 1\n")
    validate_handler(folder)
    folder = make_function(tmp_path, "def _h(data):\n    return 1\nhandle = _h\n", name="assigned")
    validate_handler(folder)


def test_validate_handler_missing_file(tmp_path):
    (tmp_path / "fn").mkdir()
    with pytest.raises(BuildError) as err:
        validate_handler(tmp_path / "fn", "src/main.py")
    assert err.value.message == "No file main.py found in the function's code (functionPath=src/main.py)"


def test_validate_handler_without_handle(tmp_path):
    folder = make_function(tmp_path, "def handler(data):\n    return 1\n\nclass X:\n    def handle(self, data): ...\n")
    with pytest.raises(BuildError, match="top-level function named 'handle'"):
        validate_handler(folder)


def test_validate_handler_bad_argument(tmp_path):
    folder = make_function(tmp_path, "def handle(data, context):\n    return 1\n")
    with pytest.raises(BuildError) as err:
        validate_handler(folder)
    assert "context" in err.value.message and "function_call_info" in err.value.message


def test_validate_handler_syntax_error_and_bad_path(tmp_path):
    folder = make_function(tmp_path, "def handle(data):\n    return (\n")
    with pytest.raises(BuildError, match="Syntax error in handler.py"):
        validate_handler(folder)
    with pytest.raises(BuildError, match="relative path"):
        validate_handler(folder, "../handler.py")


# ---------------------------------------------------------------- import check and warm workers


def test_check_import_reports_missing_module_with_traceback(pool, tmp_path):
    folder = make_function(tmp_path, "import module_that_does_not_exist_xyz\ndef handle(data):\n    return 1\n")
    error = pool.check_import("f", folder, "handler.py", PY, {}, 20)
    assert error["message"] == "ModuleNotFoundError: No module named 'module_that_does_not_exist_xyz'"
    assert "Traceback" in error["trace"] and "handler.py" in error["trace"]
    result = run(pool, folder, key="f")  # a call re-tries the import and fails the same way
    assert result.status == "Failed" and "module_that_does_not_exist_xyz" in result.error["message"]


def test_check_import_keeps_the_worker_warm(pool, tmp_path):
    folder = make_function(tmp_path, f"""
        with open({str(tmp_path / "imports.txt")!r}, "a") as f:
            f.write("imported\\n")
        def handle(data):
            return data
    """)
    assert pool.check_import("f", folder, "handler.py", PY, {}, 20) is None
    assert run(pool, folder, 1, key="f").response == 1
    assert run(pool, folder, 2, key="f").response == 2
    assert (tmp_path / "imports.txt").read_text() == "imported\n"


def test_handle_with_data_only(pool, tmp_path):
    folder = make_function(tmp_path, "def handle(data):\n    return {'got': data}\n")
    result = run(pool, folder, {"x": [1, 2]})
    assert result == CallResult("Completed", response={"got": {"x": [1, 2]}}, error=None, logs=[])


def test_arguments_are_injected_by_name_in_any_order(pool, tmp_path):
    folder = make_function(tmp_path, """
        def handle(function_call_info, secrets, data):
            return {"info": function_call_info, "secrets": secrets, "data": data}
    """)
    result = run(pool, folder, [1], secrets={"key": "s3cret"}, info={"function_id": 7, "call_id": 8})
    assert result.response == {"info": {"function_id": 7, "call_id": 8}, "secrets": {"key": "s3cret"}, "data": [1]}


def test_client_is_a_cognite_client_for_the_given_session(pool, tmp_path):
    folder = make_function(tmp_path, """
        def handle(client, data):
            return {"type": type(client).__name__, "base_url": client.config.base_url,
                    "project": client.config.project, "data": data}
    """)
    client = {"base_url": "http://127.0.0.1:9", "project": "local-project", "token": "tok"}
    result = run(pool, folder, "d", client=client)
    assert result.status == "Completed", result.error
    assert result.response == {"type": "CogniteClient", "base_url": "http://127.0.0.1:9",
                               "project": "local-project", "data": "d"}


def test_subdirectory_function_path_is_imported_as_a_package_module(pool, tmp_path):
    folder = make_function(tmp_path, "from src.util import VALUE\ndef handle():\n    return VALUE\n",
                           path="src/main.py", files={"src/util.py": "VALUE = 'sub'\n"})
    assert run(pool, folder, path="src/main.py").response == "sub"


def test_output_of_every_kind_becomes_the_call_logs(pool, tmp_path):
    folder = make_function(tmp_path, """
        import os, subprocess, sys
        print("at import time")
        def handle(data):
            print("python print", data)
            print("to stderr", file=sys.stderr)
            os.write(1, b"c-level write\\n")
            subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
            sys.stdout.write("no newline at the end")
            return None
    """)
    first = run(pool, folder, 1)
    assert first.status == "Completed"
    assert messages(first) == ["python print 1", "to stderr", "c-level write", "from a subprocess",
                               "no newline at the end"]
    assert all(isinstance(e["timestamp"], int) and e["timestamp"] > 1_600_000_000_000 for e in first.logs)
    assert messages(run(pool, folder, 2))[0] == "python print 2"  # each call has its own logs


def test_raising_handler_fails_with_traceback_and_worker_survives(pool, tmp_path):
    folder = make_function(tmp_path, """
        N = 0
        def handle(data):
            global N
            N += 1
            if data == "boom":
                print("about to fail")
                raise ValueError("boom happened")
            return N
    """)
    failed = run(pool, folder, "boom")
    assert failed.status == "Failed"
    assert failed.error["message"] == "ValueError: boom happened"
    assert "Traceback" in failed.error["trace"] and 'raise ValueError("boom happened")' in failed.error["trace"]
    assert messages(failed) == ["about to fail"]
    assert run(pool, folder, "ok") == CallResult("Completed", response=2, error=None, logs=[])


def test_module_state_survives_between_calls(pool, tmp_path):
    folder = make_function(tmp_path, """
        import os
        COUNT = 0
        def handle():
            global COUNT
            COUNT += 1
            return [COUNT, os.getpid()]
    """)
    results = [run(pool, folder).response for _ in range(3)]
    assert [r[0] for r in results] == [1, 2, 3]
    assert len({r[1] for r in results}) == 1


def test_timeout_kills_the_worker_and_next_call_gets_a_fresh_one(pool, tmp_path):
    folder = make_function(tmp_path, """
        import os, time
        COUNT = 0
        def handle(data):
            global COUNT
            COUNT += 1
            if data == "hang":
                print("going to sleep")
                time.sleep(120)
            return [COUNT, os.getpid()]
    """)
    before = run(pool, folder, "ok", timeout=20).response
    result = run(pool, folder, "hang", timeout=1)
    assert result.status == "Timeout"
    assert result.error["message"] == "Function call timed out after 1 seconds"
    assert messages(result) == ["going to sleep"]
    assert not Path(f"/proc/{before[1]}").exists()  # killed and reaped
    after = run(pool, folder, "ok", timeout=20)
    assert after.status == "Completed" and after.response[0] == 1 and after.response[1] != before[1]


def test_response_that_is_not_json_fails(pool, tmp_path):
    folder = make_function(tmp_path, "def handle():\n    return {'when': object()}\n")
    result = run(pool, folder)
    assert result.status == "Failed"
    assert result.error["message"].startswith("Function response is not JSON serializable: ")
    assert "object" in result.error["message"]


def test_oversize_response_fails_with_size_and_limit(pool, tmp_path):
    folder = make_function(tmp_path, "def handle(data):\n    return 'x' * data\n")
    result = run(pool, folder, 2000, max_bytes=1000)
    assert result.status == "Failed"
    assert "2002 bytes" in result.error["message"] and "1000 bytes" in result.error["message"]
    assert run(pool, folder, 998, max_bytes=1000).status == "Completed"


@pytest.mark.parametrize(
    "crash,expected",
    [
        ("os._exit(3)", "exited with code 3 during the call"),
        ("ctypes.string_at(0)", "killed by signal SIGSEGV during the call"),
        ("sys.exit(4)", "Function called sys.exit(4)"),
    ],
    ids=["os-exit", "segfault", "sys-exit"],
)
def test_crashing_handler_fails_and_worker_is_replaced(pool, tmp_path, crash, expected):
    folder = make_function(tmp_path, f"""
        import ctypes, os, sys
        COUNT = 0
        def handle(data):
            global COUNT
            COUNT += 1
            if data == "crash":
                {crash}
            return [COUNT, os.getpid()]
    """)
    first = run(pool, folder, "ok").response
    crashed = run(pool, folder, "crash")
    assert crashed.status == "Failed" and expected in crashed.error["message"], crashed.error
    if "SIGSEGV" in expected:
        assert any("Fatal Python error" in m for m in messages(crashed))  # faulthandler output is in the logs
    after = run(pool, folder, "ok")
    assert after.status == "Completed" and after.response[0] == 1 and after.response[1] != first[1]


def test_environment_of_the_function(pool, tmp_path, monkeypatch):
    # Like a CDF container: the basics a process needs and the function's env vars, nothing of the server's shell.
    monkeypatch.setenv("COGNITE_CLIENT_SECRET", "deployer-secret")
    monkeypatch.setenv("MLOPS_SECRET_OTHER_MODEL", "not-yours")
    monkeypatch.setenv("SOME_SECRET", "shell-only")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    own = WorkerPool()
    try:
        folder = make_function(tmp_path, """
            import os
            AT_IMPORT = os.environ.get("MY_SETTING")
            def handle():
                return {k: os.environ.get(k) for k in (
                    "COGNITE_FUNCTION_RUNTIME", "MY_SETTING", "COGNITE_CLIENT_SECRET", "MLOPS_SECRET_OTHER_MODEL",
                    "SOME_SECRET", "PYTHONPATH", "LANG", "LC_ALL")} | {"import": AT_IMPORT, "path": "PATH" in os.environ}
        """)
        result = run(own, folder, env={"MY_SETTING": "42"})
    finally:
        own.close()
    assert result.response == {"COGNITE_FUNCTION_RUNTIME": "true", "MY_SETTING": "42", "COGNITE_CLIENT_SECRET": None,
                               "MLOPS_SECRET_OTHER_MODEL": None, "SOME_SECRET": None, "PYTHONPATH": None,
                               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "import": "42", "path": True}


def test_close_interrupts_a_running_call_and_says_so(tmp_path, unsandboxed):
    started = tmp_path / "started"
    folder = make_function(tmp_path, f"""
        import time
        from pathlib import Path
        def handle():
            print("working")
            Path({str(started)!r}).touch()
            time.sleep(600)
    """)
    own = WorkerPool()
    outcome = {}
    caller = threading.Thread(target=lambda: outcome.update(result=run(own, folder, timeout=600)))
    caller.start()
    try:
        while not started.exists():  # the call is running (the handler said so)
            caller.join(0.01)
            assert caller.is_alive(), outcome
    finally:
        own.close()
        caller.join(timeout=120)
    assert not caller.is_alive(), "the call did not end after its worker pool closed"
    result = outcome["result"]
    assert result.status == "Failed" and result.error["message"] == INTERRUPTED
    assert messages(result) == ["working"]


def test_concurrent_calls_run_in_parallel_workers(pool, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    folder = make_function(tmp_path, f"""
        import os, time
        from pathlib import Path
        def handle(data):
            d = Path({str(barrier)!r})
            (d / data).write_text(str(os.getpid()))
            while len(list(d.iterdir())) < 2:  # returns only once the other call has started too
                time.sleep(0.01)
            return os.getpid()
    """)
    results = {}

    def call(name):
        results[name] = run(pool, folder, name, timeout=30)

    threads = [threading.Thread(target=call, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a call did not end within 120 s"
    assert [results[n].status for n in ("a", "b")] == ["Completed", "Completed"]
    assert results["a"].response != results["b"].response


def test_redeploy_under_same_key_uses_the_new_code_and_evict_and_close_reap(tmp_path, unsandboxed):
    pool = WorkerPool()
    old = make_function(tmp_path, "import os\ndef handle():\n    return ['old', os.getpid()]\n", name="v1")
    new = make_function(tmp_path, "import os\ndef handle():\n    return ['new', os.getpid()]\n", name="v2")
    try:
        first = run(pool, old, key="k").response
        second = run(pool, new, key="k").response
        assert first[0] == "old" and second[0] == "new"
        assert not Path(f"/proc/{first[1]}").exists()
        pool.evict("k")
        assert not Path(f"/proc/{second[1]}").exists()
        third = run(pool, new, key="k").response
    finally:
        pool.close()
    assert not Path(f"/proc/{third[1]}").exists()
    assert run(pool, new, key="k").status == "Failed"  # closed pool: reported, not raised


# ---------------------------------------------------------------- venv mode


def envs(cache: Path) -> list[Path]:
    """The function venvs built in a cache (lock files and the bases of other Pythons aside)."""
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("base-")) if cache.exists() else []


def test_isolation_modes_and_a_function_without_requirements(tmp_path):
    folder = make_function(tmp_path, "def handle():\n    return 1\n")
    cache = tmp_path / "cache"
    env = prepare(folder, cache, "venv")  # nothing to install: a venv all the same, seeing what CDF preinstalls
    assert Path(env.python).is_relative_to(cache) and env.version == ".".join(map(str, sys.version_info[:3]))
    assert not list(envs(cache)[0].glob("local-cdf-pip.log"))  # no pip run for no requirements
    (folder / "requirements.txt").write_text("localcdf-probe==1.0\n")
    assert prepare(folder, cache, "shared-no-install").python == sys.executable
    with pytest.raises(ValueError, match="'shared' is now 'shared-no-install'"):
        prepare(folder, cache, "shared")
    with pytest.raises(ValueError, match="venv, shared-no-install"):
        prepare(folder, cache, "docker")


def test_venv_installs_requirements_once_and_runs_the_function(pool, tmp_path):
    index = make_index(tmp_path)
    folder = make_function(tmp_path, """
        import localcdf_probe
        from cognite.client import CogniteClient  # preinstalled, like in CDF: the server's, not the base Python's
        def handle():
            return localcdf_probe.VALUE
    """, files={"requirements.txt": "localcdf-probe==1.0\n"})
    cache = tmp_path / "venvs"
    python = prepare(folder, cache, "venv", index_url=index).python
    assert python != sys.executable and Path(python).is_relative_to(cache)
    env_dir = Path(python).parent.parent
    (env_dir / "not-rebuilt").write_text("a rebuild would wipe this file")
    assert prepare(folder, cache, "venv", index_url=index).python == python
    assert (env_dir / "not-rebuilt").exists() and envs(cache) == [env_dir]
    assert pool.check_import("venv", folder, "handler.py", python, {}, 30) is None
    assert run(pool, folder, key="venv", python=python).response == "1.0"
    assert pool.check_import("shared", folder, "handler.py", PY, {}, 30)["message"] == (
        "ModuleNotFoundError: No module named 'localcdf_probe'")


def test_venv_with_a_bad_requirement_fails_with_pip_output(tmp_path):
    index = make_index(tmp_path)
    folder = make_function(tmp_path, "def handle():\n    return 1\n",
                           files={"requirements.txt": "localcdf-probe==9.9\n"})
    with pytest.raises(BuildError) as err:
        prepare(folder, tmp_path / "venvs", "venv", index_url=index, extra_index_urls=[])
    assert err.value.message == "Failed to install requirements"
    assert "localcdf-probe==9.9" in err.value.trace and "No matching distribution" in err.value.trace
    assert [p.suffix for p in (tmp_path / "venvs").iterdir()] == [".lock"]  # no half-built venv left


def hanging_index() -> socket.socket:
    """A package index that accepts connections and never answers: pip waits on it until killed."""
    index = socket.create_server(("127.0.0.1", 0))
    index.settimeout(120)
    return index


def test_cancel_stops_waiting_for_a_venv_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    index = hanging_index()
    url = f"http://127.0.0.1:{index.getsockname()[1]}/"
    folder = make_function(tmp_path, "def handle():\n    return 1\n", files={"requirements.txt": "localcdf-probe\n"})
    cache = tmp_path / "venvs"
    first_cancel, second_cancel = threading.Event(), threading.Event()
    outcome = {}

    def build(name, cancel):
        try:
            prepare(folder, cache, "venv", index_url=url, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome[name] = exc

    first = threading.Thread(target=build, args=("first", first_cancel))
    first.start()
    try:
        connection, _ = index.accept()  # the first build holds the lock: its pip is waiting for the index
        second = threading.Thread(target=build, args=("second", second_cancel))
        second.start()  # the same requirements: it waits for the lock
        second_cancel.set()
        second.join(timeout=30)
        assert not second.is_alive() and isinstance(outcome["second"], BuildCancelled)
        assert first.is_alive()  # still building: the second gave up waiting, and did not touch it
    finally:
        first_cancel.set()
        first.join(timeout=30)
    connection.close()
    index.close()
    assert isinstance(outcome["first"], BuildCancelled)
    assert [p.suffix for p in cache.iterdir()] == [".lock"]


def test_cancel_kills_a_running_pip_install(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    index = hanging_index()
    folder = make_function(tmp_path, "def handle():\n    return 1\n", files={"requirements.txt": "localcdf-probe\n"})
    cancel = threading.Event()
    outcome = {}

    def build():
        try:
            prepare(folder, tmp_path / "venvs", "venv", index_url=f"http://127.0.0.1:{index.getsockname()[1]}/",
                    cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    builder = threading.Thread(target=build)
    builder.start()
    try:
        connection, _ = index.accept()  # pip is waiting for the index
    finally:
        cancel.set()
        builder.join(timeout=30)
    assert not builder.is_alive()
    with connection:  # pip's end is closed already: it was killed (and reaped) before the build gave up
        connection.setblocking(False)
        while connection.recv(1 << 16):  # its request, then end of stream; BlockingIOError if pip still waited
            pass
    index.close()
    assert isinstance(outcome["error"], BuildCancelled)
    assert [p.suffix for p in (tmp_path / "venvs").iterdir()] == [".lock"]  # no half-built venv left


# ---------------------------------------------------------------- cron


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize("expr", ["* * *", "61 * * * *", "a b c d e", "* * * * * *", ""])
def test_cron_validate_rejects(expr):
    with pytest.raises(ValueError, match="Invalid cron expression"):
        cron.validate(expr)


def test_cron_due_times_and_next_time():
    cron.validate("*/5 * * * *")
    created = utc(2024, 1, 1, 9, 58)
    assert cron.due_times("*/5 * * * *", None, created, utc(2024, 1, 1, 9, 59)) == []
    assert cron.due_times("*/5 * * * *", None, created, utc(2024, 1, 1, 10, 0)) == [utc(2024, 1, 1, 10, 0)]
    assert cron.due_times("*/5 * * * *", utc(2024, 1, 1, 10, 0), created, utc(2024, 1, 1, 10, 4, 59)) == []
    # a day of missed runs: only the latest one is due (no back-fill)
    assert cron.due_times("*/5 * * * *", utc(2024, 1, 1, 10, 0), created, utc(2024, 1, 2, 10, 3)) == [
        utc(2024, 1, 2, 10, 0)]
    assert cron.next_time("0 * * * *", utc(2024, 1, 1, 10, 0)) == utc(2024, 1, 1, 11, 0)
    assert cron.next_time("0 * * * *", datetime(2024, 1, 1, 10, 30)) == utc(2024, 1, 1, 11, 0)  # naive = UTC
