"""CDF Data Workflows served by the local CDF to the real cognite-sdk: workflows, versions, executions that really
run function tasks (references, retries, timeouts, onFailure, async completion, cancel and retry)."""
from __future__ import annotations

import time
from typing import Any, Iterator

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import (
    CDFTaskParameters,
    DynamicTaskParameters,
    FunctionTaskParameters,
    SubworkflowTaskParameters,
    TransformationTaskParameters,
    WorkflowDefinitionUpsert,
    WorkflowTask,
    WorkflowUpsert,
    WorkflowVersionUpsert,
)
from cognite.client.data_classes.workflows import WorkflowExecutionDetailed
from cognite.client.exceptions import CogniteAPIError

from akerbp.mlops.local_cdf import Limits, LocalCDF
from support import clear_faults, deploy_function, fault_rules, inject_faults

FN, SLOW = "wf-fn", "wf-slow"
HANDLER = """
import time

def handle(data, client, secrets, function_call_info):
    action = data.get("action")
    if action == "train":
        return {"model": "m1", "score": data.get("score")}
    if action == "gate":
        return {"deploy": data["trained"]["response"]["score"] > 0.5, "model": data["trained"]["response"]["model"]}
    if action == "deploy":
        return {"deployed": data["model"]}
    if action == "fail":
        raise RuntimeError("training data missing")
    if action == "sleep":
        time.sleep(data["seconds"])
        return {"slept": data["seconds"]}
    if action == "async":
        return {"taskId": data["cogniteOrchestrationTaskId"]}
    if action == "big":
        return {"blob": "x" * data["size"]}
    if action == "plan":
        return {"tasks": [{"externalId": f"score-{i}", "type": "function",
                           "parameters": {"function": {"externalId": "wf-fn", "data": {"action": "echo", "i": i}}}}
                          for i in range(2)]}
    return data
"""
ENDED = ("completed", "failed", "terminated", "timed_out")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CogniteClient]:
    """One server and two functions for the module: deploying is the slow part, and executions are independent."""
    root = tmp_path_factory.mktemp("workflows")
    with LocalCDF(root / "cdf", isolation="shared-no-install", limits=Limits(call_timeout_s=30)) as cdf:
        client = cdf.client(project="test")
        for xid in (FN, SLOW):
            assert deploy_function(client, root, HANDLER, xid=xid).status == "Ready"
        yield client


def task(xid: str, data: Any, *depends: str, fn: str = FN, **kw: Any) -> WorkflowTask:
    return WorkflowTask(external_id=xid, parameters=FunctionTaskParameters(external_id=fn, data=data),
                        depends_on=list(depends) or None, **kw)


def version(client: CogniteClient, workflow: str, *tasks: WorkflowTask, max_concurrent: int | None = None) -> None:
    client.workflows.upsert(WorkflowUpsert(external_id=workflow, max_concurrent_executions=max_concurrent))
    client.workflows.versions.upsert(WorkflowVersionUpsert(
        workflow_external_id=workflow, version="1", workflow_definition=WorkflowDefinitionUpsert(tasks=list(tasks))))


def wait(client: CogniteClient, execution_id: str, statuses: tuple[str, ...] = ENDED,
         timeout: float = 20) -> WorkflowExecutionDetailed:
    """Poll the execution (as a user would) until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        ex = client.workflows.executions.retrieve_detailed(execution_id)
        assert ex is not None
        if ex.status in statuses:
            return ex
        if time.monotonic() > deadline:
            raise AssertionError(f"execution still {ex.status} after {timeout}s: {ex.dump()}")
        time.sleep(0.05)


def wait_task(client: CogniteClient, execution_id: str, xid: str, ready: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        ex = client.workflows.executions.retrieve_detailed(execution_id)
        assert ex is not None
        found = [t for t in ex.executed_tasks if t.external_id == xid]
        if found and ready(found[0]):
            return found[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"task {xid} not ready after {timeout}s: {ex.dump()}")
        time.sleep(0.05)


def url(client: CogniteClient, path: str) -> str:
    """The path as the SDK's generic get/post take it (project included)."""
    return f"/api/v1/projects/{client.config.project}{path}"


def tasks_of(ex: WorkflowExecutionDetailed) -> dict[str, Any]:
    return {t.external_id: t for t in ex.executed_tasks}


def failed_calls(client: CogniteClient, fn: str = FN) -> int:
    return len([c for c in client.functions.calls.list(function_external_id=fn, limit=None) if c.status == "Failed"])


# -- workflows and versions ----------------------------------------------------------------------------------------
def test_workflows_upsert_retrieve_list_with_cursor_and_delete(client: CogniteClient) -> None:
    made = client.workflows.upsert(WorkflowUpsert(external_id="crud-a", description="first",
                                                  max_concurrent_executions=2))
    assert (made.external_id, made.description, made.max_concurrent_executions) == ("crud-a", "first", 2)
    assert made.created_time and made.last_updated_time
    again = client.workflows.upsert(WorkflowUpsert(external_id="crud-a", description="second"))
    assert again.created_time == made.created_time and again.description == "second"
    assert again.max_concurrent_executions is None  # replace mode
    for xid in ("crud-b", "crud-c"):
        client.workflows.upsert(WorkflowUpsert(external_id=xid))
    assert client.workflows.retrieve("crud-b").external_id == "crud-b"
    assert client.workflows.retrieve("crud-nope") is None
    page = client.get(url(client, "/workflows"), params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["nextCursor"]
    rest = client.get(url(client, "/workflows"), params={"limit": 2, "cursor": page["nextCursor"]}).json()["items"]
    listed = {w["externalId"] for w in page["items"] + rest}
    assert {"crud-a", "crud-b", "crud-c"} <= listed
    assert {"crud-a", "crud-b", "crud-c"} <= {w.external_id for w in client.workflows.list(limit=None)}
    several = client.post(url(client, "/workflows/byids"), json={"items": [{"externalId": "crud-a"}, {"externalId": "crud-x"}],
                                                    "ignoreUnknownIds": True}).json()["items"]
    assert [w["externalId"] for w in several] == ["crud-a"]
    with pytest.raises(CogniteAPIError) as unknown:
        client.workflows.delete(["crud-c", "crud-nope"])
    assert unknown.value.code == 400
    assert client.workflows.retrieve("crud-c") is not None  # all or nothing
    client.workflows.delete(["crud-c", "crud-nope"], ignore_unknown_ids=True)
    assert client.workflows.retrieve("crud-c") is None


def test_versions_upsert_fill_cdf_defaults_list_filter_retrieve_and_delete(client: CogniteClient) -> None:
    version(client, "ver-a", task("t1", {"action": "echo"}))
    client.workflows.versions.upsert(WorkflowVersionUpsert(
        workflow_external_id="ver-a", version="2",
        workflow_definition=WorkflowDefinitionUpsert(tasks=[task("t1", {}), task("t2", {}, "t1")], description="d")))
    client.workflows.versions.upsert(WorkflowVersionUpsert(  # the workflow is created with its first version
        workflow_external_id="ver-b", version="1", workflow_definition=WorkflowDefinitionUpsert(tasks=[task("t", {})])))
    assert client.workflows.retrieve("ver-b") is not None
    got = client.workflows.versions.retrieve(("ver-a", "2"))
    assert got is not None and got.workflow_definition.description == "d" and got.workflow_definition.hash_
    t2 = got.workflow_definition.tasks[1]
    assert (t2.retries, t2.timeout, t2.on_failure, t2.depends_on) == (3, 3600, "abortWorkflow", ["t1"])
    raw = client.get(url(client, "/workflows/ver-a/versions/1")).json()["workflowDefinition"]["tasks"][0]
    assert raw["retries"] == 3 and raw["timeout"] == 3600 and raw["onFailure"] == "abortWorkflow"
    assert sorted(v.version for v in client.workflows.versions.list("ver-a")) == ["1", "2"]
    assert [v.version for v in client.workflows.versions.list([("ver-a", "2")])] == ["2"]
    assert client.workflows.versions.retrieve(("ver-a", "9")) is None
    client.workflows.versions.delete(("ver-a", "1"))
    assert [v.version for v in client.workflows.versions.list("ver-a")] == ["2"]
    with pytest.raises(CogniteAPIError):
        client.workflows.versions.delete(("ver-a", "1"))


@pytest.mark.parametrize("tasks, named", [
    ([task("a", {}, "b"), task("b", {}, "a")], "Task 'a' is in a dependency cycle"),
    ([task("a", {}, "ghost")], "Task 'a' depends on 'ghost'"),
    ([task("a", {"x": "${nobody.output}"})], "Task 'a' has a bad reference '${nobody.output}'"),
    ([task("a", {"x": "${workflow.output}"})], "Task 'a' has a bad reference"),
    ([WorkflowTask("tr", TransformationTaskParameters("t1"))], "Task 'tr': transformation tasks are not supported"),
])
def test_bad_definitions_are_refused_naming_the_task(client: CogniteClient, tasks: list[WorkflowTask],
                                                     named: str) -> None:
    with pytest.raises(CogniteAPIError) as refused:
        client.workflows.versions.upsert(WorkflowVersionUpsert(
            workflow_external_id="bad", version="1", workflow_definition=WorkflowDefinitionUpsert(tasks=tasks)))
    assert refused.value.code == 400 and named in refused.value.message


# -- executions --------------------------------------------------------------------------------------------------
def test_train_gate_deploy_runs_with_references_to_outputs(client: CogniteClient) -> None:
    version(client, "tgd",
            task("train", {"action": "train", "score": "${workflow.input.score}"}),
            task("gate", {"action": "gate", "trained": "${train.output}"}, "train"),
            task("deploy", {"action": "deploy", "model": "${gate.output.response.model}"}, "gate"))
    started = client.workflows.executions.run("tgd", "1", input={"score": 0.8}, metadata={"why": "test"})
    assert started.status == "running" and started.metadata == {"why": "test"}
    ex = wait(client, started.id)
    assert ex.status == "completed", ex.dump()
    tasks = tasks_of(ex)
    assert [tasks[x].status for x in ("train", "gate", "deploy")] == ["completed"] * 3
    assert tasks["train"].output.response == {"model": "m1", "score": 0.8}
    assert tasks["gate"].input.data["trained"]["response"] == {"model": "m1", "score": 0.8}
    assert tasks["gate"].output.response == {"deploy": True, "model": "m1"}
    assert tasks["deploy"].output.response == {"deployed": "m1"}
    assert tasks["train"].end_time <= tasks["gate"].start_time <= tasks["gate"].end_time <= tasks["deploy"].start_time
    call = client.functions.calls.retrieve(call_id=tasks["deploy"].output.call_id, function_external_id=FN)
    assert call.status == "Completed"  # a task is a call of the function, as any call
    assert ex.input == {"score": 0.8}
    listed = client.workflows.executions.list(("tgd", "1"), statuses=["completed"])
    assert [e.id for e in listed] == [started.id]
    assert client.workflows.executions.list(("tgd", "1"), statuses=["failed"]) == []
    assert client.workflows.executions.retrieve_detailed("no-such-execution") is None


def test_failing_task_is_retried_then_aborts_the_workflow(client: CogniteClient) -> None:
    version(client, "abort", task("train", {"action": "fail"}, retries=1), task("after", {}, "train"))
    before = failed_calls(client)
    ex = wait(client, client.workflows.executions.run("abort", "1").id)
    assert ex.status == "failed"
    assert failed_calls(client) - before == 2  # the attempt and one retry
    tasks = tasks_of(ex)
    assert tasks["train"].status == "failed" and "training data missing" in tasks["train"].reason_for_incompletion
    assert "after" not in tasks  # never started
    assert "train" in ex.reason_for_incompletion


def test_skip_task_lets_the_rest_run(client: CogniteClient) -> None:
    version(client, "skip", task("flaky", {"action": "fail"}, retries=0, on_failure="skipTask"),
            task("after", {"action": "echo", "got": "${flaky.output.response}"}, "flaky"))
    ex = wait(client, client.workflows.executions.run("skip", "1").id)
    assert ex.status == "completed", ex.dump()
    tasks = tasks_of(ex)
    assert tasks["flaky"].status == "completed_with_errors"
    assert tasks["after"].status == "completed" and tasks["after"].output.response["got"] is None


def test_task_past_its_timeout_times_out_and_fails_the_workflow(client: CogniteClient) -> None:
    version(client, "slow", task("nap", {"action": "sleep", "seconds": 3}, fn=SLOW, timeout=1, retries=2))
    ex = wait(client, client.workflows.executions.run("slow", "1").id)
    nap = tasks_of(ex)["nap"]
    assert (ex.status, nap.status) == ("failed", "timed_out")  # abortWorkflow: a timeout is not retried
    assert nap.end_time - nap.start_time < 2500 and "timed out after 1 s" in nap.reason_for_incompletion


def test_async_task_completes_through_the_update_call(client: CogniteClient) -> None:
    version(client, "async",
            WorkflowTask("wait", FunctionTaskParameters(FN, {"action": "async"}, is_async_complete=True)),
            task("after", {"action": "echo", "result": "${wait.output.response.result}"}, "wait"))
    started = client.workflows.executions.run("async", "1")
    waiting = wait_task(client, started.id, "wait", lambda t: t.output.response is not None)
    assert waiting.status == "in_progress" and waiting.output.response == {"taskId": waiting.id}
    updated = client.workflows.tasks.update(waiting.id, "completed", {"result": 42})
    assert updated.status == "completed"
    ex = wait(client, started.id)
    assert ex.status == "completed" and tasks_of(ex)["after"].output.response["result"] == 42
    with pytest.raises(CogniteAPIError):  # a completed task takes no further update
        client.workflows.tasks.update(waiting.id, "failed")


def test_cancel_then_retry_runs_what_did_not_complete(client: CogniteClient) -> None:
    version(client, "cancel", task("first", {"action": "echo"}),
            task("nap", {"action": "sleep", "seconds": 1}, "first", fn=SLOW), max_concurrent=1)
    started = client.workflows.executions.run("cancel", "1")
    wait_task(client, started.id, "nap", lambda t: t.status == "in_progress")
    with pytest.raises(CogniteAPIError) as busy:
        client.workflows.executions.run("cancel", "1")
    assert busy.value.code == 400 and "maxConcurrentExecutions" in busy.value.message
    cancelled = client.workflows.executions.cancel(started.id, reason="not now")
    assert cancelled.status == "terminated"
    ex = wait(client, started.id)
    assert ex.reason_for_incompletion == "not now" and tasks_of(ex)["nap"].status == "cancelled"
    first_call = tasks_of(ex)["first"].output.call_id
    assert client.workflows.executions.retry(started.id).status == "running"
    ex = wait(client, started.id)
    assert ex.status == "completed", ex.dump()
    assert tasks_of(ex)["first"].output.call_id == first_call  # completed tasks are not run again
    assert tasks_of(ex)["nap"].output.response == {"slept": 1}


def test_dynamic_subworkflow_and_cdf_tasks(client: CogniteClient) -> None:
    version(client, "kinds",
            task("plan", {"action": "plan"}),
            WorkflowTask("fan", DynamicTaskParameters("${plan.output.response.tasks}"), depends_on=["plan"]),
            WorkflowTask("sub", SubworkflowTaskParameters([task("inner", {"action": "echo", "n": 1})]),
                         depends_on=["fan"]),
            WorkflowTask("look", CDFTaskParameters("/workflows/kinds", "GET"), depends_on=["sub"]))
    ex = wait(client, client.workflows.executions.run("kinds", "1").id)
    assert ex.status == "completed", ex.dump()
    tasks = tasks_of(ex)
    assert {x: tasks[x].status for x in ("fan", "score-0", "score-1", "sub", "inner", "look")} == dict.fromkeys(
        ("fan", "score-0", "score-1", "sub", "inner", "look"), "completed")
    assert tasks["score-1"].output.response == {"action": "echo", "i": 1}
    assert tasks["look"].output.status_code == 200 and tasks["look"].output.response["externalId"] == "kinds"


def test_injected_503s_on_run_and_task_update_are_retried_by_the_sdk(client: CogniteClient) -> None:
    """CDF's workflow run and task update are POSTs the SDK counts as retryable: a 503 storm on them costs retries,
    not a failure, and the run (refused before it acted) makes one execution."""
    version(client, "faulty",
            WorkflowTask("wait", FunctionTaskParameters(FN, {"action": "async"}, is_async_complete=True)))
    base_url = client.config.base_url
    try:
        inject_faults(base_url, [{"path": "/workflows/faulty/versions/1/run", "method": "POST", "status": 503,
                                  "count": 2}])
        started = client.workflows.executions.run("faulty", "1")
        assert [r["hits"] for r in fault_rules(base_url)] == [2]
        assert [e.id for e in client.workflows.executions.list(("faulty", "1"))] == [started.id]
        waiting = wait_task(client, started.id, "wait", lambda t: t.output.response is not None)
        clear_faults(base_url)
        inject_faults(base_url, [{"path": f"/workflows/tasks/{waiting.id}/update", "method": "POST", "status": 503,
                                  "count": 2}])
        assert client.workflows.tasks.update(waiting.id, "completed", {"ok": True}).status == "completed"
        assert [r["hits"] for r in fault_rules(base_url)] == [2]
        assert wait(client, started.id).status == "completed"
    finally:
        clear_faults(base_url)


def test_task_input_and_output_over_cdfs_limit_fail_the_task_or_the_update(client: CogniteClient) -> None:
    """CDF documents 0.2 MB for a task's input or output: over it the task fails (not retried) naming the limit,
    and an async update with a bigger output is a 400."""
    limit = Limits().max_task_io_bytes
    version(client, "big-out", task("make", {"action": "big", "size": limit}, retries=2))
    before = len(client.functions.calls.list(function_external_id=FN, limit=None))
    ex = wait(client, client.workflows.executions.run("big-out", "1").id)
    make = tasks_of(ex)["make"]
    assert (ex.status, make.status) == ("failed", "failed_with_terminal_error")  # CDF: not retried
    assert f"over CDF's limit of {limit} bytes" in make.reason_for_incompletion and "output" in make.reason_for_incompletion
    assert len(client.functions.calls.list(function_external_id=FN, limit=None)) - before == 1  # no retry
    assert make.output.response is None  # the oversized output is not kept

    version(client, "big-in", task("take", "${workflow.input}", on_failure="skipTask"))
    ex = wait(client, client.workflows.executions.run("big-in", "1", input={"blob": "y" * limit}).id)
    take = tasks_of(ex)["take"]
    assert take.status == "completed_with_errors" and "task's input is" in take.reason_for_incompletion
    assert len(client.functions.calls.list(function_external_id=FN, limit=None)) - before == 1  # never called

    version(client, "big-update",
            WorkflowTask("wait", FunctionTaskParameters(FN, {"action": "async"}, is_async_complete=True)))
    started = client.workflows.executions.run("big-update", "1")
    waiting = wait_task(client, started.id, "wait", lambda t: t.output.response is not None)
    with pytest.raises(CogniteAPIError) as refused:
        client.workflows.tasks.update(waiting.id, "completed", {"blob": "z" * limit})
    assert refused.value.code == 400 and "Field 'output'" in refused.value.message
    assert client.workflows.tasks.update(waiting.id, "completed", {"ok": True}).status == "completed"
    assert wait(client, started.id).status == "completed"
