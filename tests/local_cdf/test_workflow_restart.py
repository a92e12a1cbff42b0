"""Workflow executions across server restarts: a stop or a SIGKILL in the middle of an execution leaves it to the next
server on the data dir, which resumes it exactly once (even with two starting at once) or fails it naming the restart;
a process that merely opens the data dir leaves a live server's execution alone. Real cognite-sdk over HTTP.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import (
    FunctionTaskParameters,
    WorkflowDefinitionUpsert,
    WorkflowTask,
    WorkflowUpsert,
    WorkflowVersionUpsert,
)
from cognite.client.data_classes.workflows import WorkflowExecutionDetailed

from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.local_cdf.runtime.workers import INTERRUPTED
from akerbp.mlops.local_cdf.store import Store
from support import deploy_function

# "hold" appends a line to data["log"] per call, then waits (up to a minute) for data["go"] to exist.
HANDLER = """
import time
from pathlib import Path

def handle(data):
    if "log" in data:
        with open(data["log"], "a") as log:
            log.write("call\\n")
    if "go" in data:
        deadline = time.monotonic() + 60
        while not Path(data["go"]).exists():
            if time.monotonic() > deadline:
                raise RuntimeError("go never came")
            time.sleep(0.01)
    return {"echo": data.get("n")}
"""
ENDED = ("completed", "failed", "terminated", "timed_out")
LIMITS = Limits(call_timeout_s=60, sync_call_wait_s=0)

# A server in its own process (so it can be SIGKILLed), announced for the test to find.
SERVER = """
import sys, threading
from akerbp.mlops.local_cdf import Limits, LocalCDF
cdf = LocalCDF(sys.argv[1], isolation="shared-no-install", limits=Limits(call_timeout_s=60, sync_call_wait_s=0))
cdf.start().announce()
threading.Event().wait()  # until killed
"""
# A server that resumes what it finds, waits (bounded) until execution argv[2] has ended, and stops.
RESUME_AND_WAIT = """
import sys, time
from akerbp.mlops.local_cdf import LocalCDF
cdf = LocalCDF(sys.argv[1], isolation="shared-no-install").start()
client = cdf.client(project="t")
deadline = time.monotonic() + 90
while client.workflows.executions.retrieve_detailed(sys.argv[2]).status == "running":
    assert time.monotonic() < deadline, "the execution did not end"
    time.sleep(0.05)
cdf.stop()
"""
OPEN_AND_STOP = """
import sys
from akerbp.mlops.local_cdf import LocalCDF
LocalCDF(sys.argv[1], isolation="shared-no-install").start().stop()
"""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.02)


def ended(client: CogniteClient, execution_id: str) -> WorkflowExecutionDetailed:
    def done() -> WorkflowExecutionDetailed | None:
        ex = client.workflows.executions.retrieve_detailed(execution_id)
        return ex if ex is not None and ex.status in ENDED else None

    return wait_until(done, "the execution did not end")


def stored_execution(data_dir: Path, execution_id: str) -> dict:
    """The stored execution, hidden fields included, read without starting a server (which would resume it)."""
    store = Store(data_dir)
    try:
        found = store.get_xid("t", "workflow_executions", execution_id)
        assert found is not None
        return found
    finally:
        store.close()


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def set_up(client: CogniteClient, tmp_path: Path, retries: int) -> tuple[Path, Path, Path]:
    """The function and a workflow first -> hold -> last, hold waiting for a file; (hold's call log, its go file,
    first's call log)."""
    assert deploy_function(client, tmp_path, HANDLER).status == "Ready"
    hold_log, go, first_log = tmp_path / "hold.log", tmp_path / "go", tmp_path / "first.log"

    def task(xid: str, data: dict, *depends: str, **kw: Any) -> WorkflowTask:
        return WorkflowTask(external_id=xid, parameters=FunctionTaskParameters("fn", data),
                            depends_on=list(depends) or None, **kw)

    client.workflows.upsert(WorkflowUpsert(external_id="wf", description="survives restarts"))
    client.workflows.versions.upsert(WorkflowVersionUpsert("wf", "1", WorkflowDefinitionUpsert(tasks=[
        task("first", {"n": 1, "log": str(first_log)}),
        task("hold", {"n": 2, "log": str(hold_log), "go": str(go)}, "first", retries=retries),
        task("last", {"n": "${hold.output.response.echo}"}, "hold"),
    ])))
    return hold_log, go, first_log


def tasks_of(ex: WorkflowExecutionDetailed) -> dict[str, Any]:
    return {t.external_id: t for t in ex.executed_tasks}


def test_an_execution_stopped_mid_task_resumes_at_the_next_start(tmp_path: Path, unsandboxed: None) -> None:
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir, isolation="shared-no-install", limits=LIMITS) as cdf:
        client = cdf.client(project="t")
        hold_log, go, first_log = set_up(client, tmp_path, retries=1)
        execution = client.workflows.executions.run("wf", "1", input={"why": "restart"})
        wait_until(lambda: calls(hold_log) == 1, "hold's call did not start")
    left = stored_execution(data_dir, execution.id)
    assert left["status"] == "RUNNING" and "_driver" not in left  # handed back by the stop, not failed by it
    go.touch()
    with LocalCDF(data_dir, isolation="shared-no-install", limits=LIMITS) as cdf:
        client = cdf.client(project="t")
        ex = ended(client, execution.id)
        assert ex.status == "completed", ex.dump()
        tasks = tasks_of(ex)
        assert tasks["last"].output.response == {"echo": 2}
        assert INTERRUPTED in tasks["hold"].reason_for_incompletion  # attempt 1 was cut short by the stop
        assert (calls(first_log), calls(hold_log)) == (1, 2)  # first is not run again; hold's retry ran once
        assert ex.input == {"why": "restart"}
        # what the execution ran on is stored too
        assert client.workflows.retrieve("wf").description == "survives restarts"
        assert [t.external_id for t in client.workflows.versions.retrieve(("wf", "1")).workflow_definition.tasks] \
            == ["first", "hold", "last"]


def test_without_retries_a_task_cut_short_fails_the_execution_naming_the_restart(tmp_path: Path,
                                                                                unsandboxed: None) -> None:
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir, isolation="shared-no-install", limits=LIMITS) as cdf:
        client = cdf.client(project="t")
        hold_log, go, _ = set_up(client, tmp_path, retries=0)
        execution = client.workflows.executions.run("wf", "1")
        wait_until(lambda: calls(hold_log) == 1, "hold's call did not start")
    go.touch()
    with LocalCDF(data_dir, isolation="shared-no-install", limits=LIMITS) as cdf:
        ex = ended(cdf.client(project="t"), execution.id)
    assert ex.status == "failed" and INTERRUPTED in ex.reason_for_incompletion
    assert tasks_of(ex)["hold"].status == "failed" and "last" not in tasks_of(ex)
    assert calls(hold_log) == 1


@pytest.fixture
def killable_server(tmp_path: Path, unsandboxed: None) -> Any:
    procs: list[subprocess.Popen] = []

    def start(data_dir: Path) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(data_dir)])
        procs.append(proc)
        info = wait_until(lambda: proc.poll() is not None or LocalCDF.server_info(data_dir), "the server did not answer")
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        return proc, info["base_url"]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=30)


def test_an_execution_of_a_killed_server_is_resumed_once_by_two_servers_starting_at_once(
        tmp_path: Path, killable_server: Any) -> None:
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir, isolation="shared-no-install", limits=LIMITS) as cdf:
        hold_log, go, first_log = set_up(cdf.client(project="t"), tmp_path, retries=2)
    proc, base_url = killable_server(data_dir)
    from cognite.client import ClientConfig
    from cognite.client.credentials import Token

    client = CogniteClient(ClientConfig(client_name="t", project="t", base_url=base_url, credentials=Token("t")))
    execution = client.workflows.executions.run("wf", "1")
    wait_until(lambda: calls(hold_log) == 1, "hold's call did not start")
    proc.kill()
    proc.wait(timeout=30)
    assert stored_execution(data_dir, execution.id)["status"] == "RUNNING"
    go.touch()
    resumers = [subprocess.Popen([sys.executable, "-c", RESUME_AND_WAIT, str(data_dir), execution.id])
                for _ in range(2)]
    assert [p.wait(timeout=120) for p in resumers] == [0, 0]
    ex = stored_execution(data_dir, execution.id)
    assert ex["status"] == "COMPLETED", ex
    assert ex["_driver"]["pid"] in [p.pid for p in resumers]
    assert (calls(first_log), calls(hold_log)) == (1, 2)  # the killed call, then one retry: resumed once
    hold = next(t for t in ex["_tasks"] if t["externalId"] == "hold")
    assert INTERRUPTED in hold["reasonForIncompletion"] and hold["_attempt"] == 2


def test_a_process_opening_the_data_dir_leaves_a_live_servers_execution_alone(tmp_path: Path,
                                                                              unsandboxed: None) -> None:
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir, isolation="shared-no-install", limits=LIMITS) as cdf:
        client = cdf.client(project="t")
        hold_log, go, _ = set_up(client, tmp_path, retries=1)
        execution = client.workflows.executions.run("wf", "1")
        wait_until(lambda: calls(hold_log) == 1, "hold's call did not start")
        before = stored_execution(data_dir, execution.id)["_driver"]
        subprocess.run([sys.executable, "-c", OPEN_AND_STOP, str(data_dir)], check=True, timeout=120)
        assert stored_execution(data_dir, execution.id)["_driver"] == before
        go.touch()
        ex = ended(client, execution.id)
        assert ex.status == "completed", ex.dump()
        assert calls(hold_log) == 1 and tasks_of(ex)["hold"].reason_for_incompletion is None
