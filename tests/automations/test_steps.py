"""The automation function and its steps, run by real workflow executions on the local CDF: the template model's
automation function put live (automations.function), a workflow whose version is tasks.workflow_tasks, executions
run and waited for through the SDK; notifications reach real HTTP receivers on 127.0.0.1."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import WorkflowUpsert, WorkflowVersionUpsert, WorkflowDefinitionUpsert
from cognite.client.data_classes.workflows import WorkflowExecutionDetailed

from akerbp.mlops import audit, registry
from akerbp.mlops.automations import function, tasks
from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.settings import load_settings
from akerbp.mlops.vocabulary import automation_workflow_external_id
from support import Receiver, copy_template, make_breakable

MODEL = "well_density"
LIVE_TEST, LIVE_PROD = f"{MODEL}-prediction-test", f"{MODEL}-prediction-prod"
SLACK_SECRET = "slack-hook"
# Appended to the copied template after support.BREAKABLE (the model failing its smoke check only in CDF): train()
# crashes the call on {"crash": true}.
CRASHABLE = '''

_train = train


def train(data, folder_path, secrets):
    if data.get("crash"):  # the call itself fails, as when train() kills its process: the task answers nothing
        raise SystemExit(3)
    return _train(data, folder_path, secrets)
'''


def definition(name: str, *, conditions: list[dict] | None = None, environments: tuple[str, ...] = ("test",),
               training: dict | None = None, env_vars: dict | None = None) -> dict[str, Any]:
    """An automation's definition dict, as definition.AutomationDefinition.as_dict() writes it (the contract)."""
    return {
        "name": name, "model": MODEL, "description": "", "enabled": True, "execute_immediately": False,
        "env": environments[-1],
        "trigger": {"type": "schedule", "cron": "0 0 * * 0", "timezone": "UTC", "interval": None},
        "action": {"type": "train_deploy",
                   "training": {"data": training or {"n_samples": 300, "seed": 1}, "env_vars": {}, "cpu": None,
                                "memory": None},
                   "deployment_condition": conditions or [],
                   "deployment": {"environments": list(environments), "cpu": None, "memory": None,
                                  "env_vars": env_vars or {}, "timeout": None}},
        "on_success": {"type": "slack", "webhook": None, "webhook_secret": SLACK_SECRET},
        "on_error": {"type": "webhook", "url": "RECEIVER/error", "url_secret": None, "http_method": "POST",
                     "headers": {"X-Team": "geo"}, "header_secrets": {}, "data": {"k": "v"}},
    }


def build_metric(metric: str, direction: str, threshold: float) -> dict[str, Any]:
    return {"type": "build_metric", "metric_name": metric, "direction": direction, "threshold": threshold}


def deployed_metric(metric: str, direction: str, margin: float = 0.0) -> dict[str, Any]:
    return {"type": "deployed_model_metric", "metric_name": metric, "direction": direction, "margin": margin}


class World:
    """One local CDF, the template repo, its automation functions and the receivers, shared by the module."""

    def __init__(self, root: Path) -> None:
        self.cdf = LocalCDF(root / "cdf", isolation="shared-no-install", limits=Limits(call_timeout_s=300)).start()
        self.client: CogniteClient = self.cdf.client(project="test")
        self.repo = copy_template(root / "repo")
        make_breakable(self.repo)
        with (self.repo / "model_code" / "model.py").open("a") as model:
            model.write(CRASHABLE)
        (self.settings,) = load_settings(self.repo / "mlops_settings.py")
        self.receiver = Receiver()
        self.secrets = {SLACK_SECRET: f"{self.receiver.url}/slack"}
        self.live: dict[str, str] = {}
        self.figures: list[dict[str, Any]] = []

    def put_live(self, env: str) -> str:
        """The automation function of `env`, put live once."""
        if env not in self.live:
            desired = function.desired(self.settings, env, [self.define("x", environments=(env,))], self.secrets)
            self.live[env] = function.put_live(self.client, desired, deadline=time.monotonic() + 120,
                                               say=lambda message: None)
        return function.automation_function_external_id(MODEL, env)

    def define(self, name: str, **kw: Any) -> dict[str, Any]:
        found = definition(name, **kw)
        found["on_error"]["url"] = f"{self.receiver.url}/error/{name}"
        return found

    def run(self, d: dict[str, Any], timeout: float = 240) -> WorkflowExecutionDetailed:
        """Register d's workflow (as register.py does: one version, max one execution) and run it to its end."""
        fn = self.put_live(d["env"])
        xid = automation_workflow_external_id(d["name"], d["env"])
        self.client.workflows.upsert(WorkflowUpsert(external_id=xid, max_concurrent_executions=1))
        self.client.workflows.versions.upsert(WorkflowVersionUpsert(
            workflow_external_id=xid, version="1",
            workflow_definition=WorkflowDefinitionUpsert(tasks=tasks.workflow_tasks(d, fn))))
        started = self.client.workflows.executions.run(xid, "1")
        deadline = time.monotonic() + timeout
        while True:
            ex = self.client.workflows.executions.retrieve_detailed(started.id)
            assert ex is not None
            if ex.status not in ("running",):
                self.figures.append(figures(d["name"], ex))
                return ex
            assert time.monotonic() < deadline, f"execution still {ex.status} after {timeout} s: {ex.dump()}"
            time.sleep(0.1)

    def versions(self, env: str = "test") -> list[int]:
        return sorted(v.version for v in registry.list_model_versions(MODEL, env, client=self.client))

    def predict(self, live: str = LIVE_TEST) -> dict[str, Any]:
        call = self.client.functions.call(external_id=live, data={"data": [{"GR": 80, "NPHI": 0.25, "DEPTH": 2000}]})
        assert call.status == "Completed", call.error
        return call.get_response()

    def received(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies the receiver got at `path` (notify answers only after sending: no wait needed)."""
        return [r.json() for r in self.receiver.requests if r.path == path]

    def close(self) -> None:
        self.receiver.close()
        self.cdf.stop()


def outputs(ex: WorkflowExecutionDetailed) -> dict[str, Any]:
    return {t.external_id: (t.output.dump().get("response") if t.output is not None else None)
            for t in ex.executed_tasks}


def figures(name: str, ex: WorkflowExecutionDetailed) -> dict[str, Any]:
    """Per task: its wall time, and the phases it reported (train(), the function builds are in them)."""
    out: dict[str, Any] = {"automation": name, "status": ex.status,
                           "total_s": ((ex.end_time or 0) - (ex.start_time or 0)) / 1000}
    for t in ex.executed_tasks:
        response = (t.output.dump().get("response") if t.output is not None else None) or {}
        out[t.external_id] = {"wall_s": ((t.end_time or 0) - (t.start_time or 0)) / 1000,
                              "phases": response.get("phases")}
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("automations"))
    try:
        yield w
    finally:
        print(json.dumps(w.figures, indent=1))
        w.close()


def test_a_run_trains_gates_deploys_and_notifies(world: World) -> None:
    d = world.define("nightly", conditions=[build_metric("r2", "above", 0.5)])

    ex = world.run(d)

    assert ex.status == "completed", ex.dump()
    out = outputs(ex)
    assert out["train"]["ok"] and out["train"]["model_id"] == f"{MODEL}/test/{out['train']['version']}"
    assert out["train"]["execution_id"] == ex.id
    assert [v["met"] for v in out["gate"]["verdicts"]] == [True] and out["gate"]["passed"]
    assert [(x["env"], x["result"]) for x in out["deploy"]["deployed"]] == [("test", "deployed")]
    assert world.predict()["model_id"] == out["train"]["model_id"]
    version = registry.get_model_version(MODEL, "test", out["train"]["version"], client=world.client)
    assert version.metadata["automation"] == "nightly" and version.metadata["automation_execution_id"] == ex.id
    assert "r2" in json.loads(version.metadata["metrics"])
    (slack,) = world.received("/slack")
    assert out["train"]["model_id"] in json.dumps(slack) and ex.id in json.dumps(slack)
    assert out["notify"]["notifications"][0]["delivered"] is True
    (event,) = [e for e in audit.history(world.client, MODEL, "test") if e["action"] == "automation"]
    assert event["outcome"] == "success" and event["version"] == str(out["train"]["version"])
    assert world.secrets[SLACK_SECRET] not in json.dumps(ex.dump()) + json.dumps(event)


def test_a_gate_that_fails_deploys_nothing_and_on_success_says_why(world: World) -> None:
    before = world.predict()["model_id"]
    d = world.define("strict", conditions=[build_metric("r2", "above", 0.99999)])

    ex = world.run(d)

    assert ex.status == "completed", ex.dump()
    out = outputs(ex)
    assert out["gate"]["passed"] is False and "not met" in out["gate"]["reason"]
    assert out["deploy"]["deployed"] == [] and world.predict()["model_id"] == before
    slack = world.received("/slack")[-1]
    assert "not met" in json.dumps(slack)
    assert out["notify"]["outcome"] == "not_deployed"


def test_train_raising_uploads_nothing_fails_the_execution_and_sends_on_error(world: World) -> None:
    before = world.versions()
    d = world.define("broken", training={"n_samples": 5})  # train() raises ModelException: too few samples

    ex = world.run(d)

    assert ex.status == "failed", ex.dump()
    assert "train" in (ex.reason_for_incompletion or "") and "n_samples" in ex.reason_for_incompletion
    assert world.versions() == before
    (error,) = world.received("/error/broken")
    assert error["status"] == "failed" and error["k"] == "v"
    assert [e["outcome"] for e in audit.history(world.client, MODEL, "test") if e["action"] == "automation"][0] \
        == "failed"


def test_a_failing_smoke_check_rolls_back_and_sends_on_error(world: World) -> None:
    before = world.predict()["model_id"]
    d = world.define("smoky", env_vars={"BREAK_IN_CDF": "1"})

    ex = world.run(d)

    assert ex.status == "failed", ex.dump()
    out = outputs(ex)
    assert out["deploy"]["ok"] is False and out["deploy"]["deployed"][0]["result"] == "rolled_back"
    assert "deploy" in ex.reason_for_incompletion and "rolled back" in ex.reason_for_incompletion
    assert world.predict()["model_id"] == before  # the previous deployment answers again
    assert world.received("/error/smoky")


@pytest.mark.parametrize(("direction", "margin", "deploys"), [("above_or_equals", 0.0, True), ("above", 0.01, False)])
def test_the_champion_comparison_both_ways(world: World, direction: str, margin: float, deploys: bool) -> None:
    live = world.predict()["model_id"]  # trained on the same data: the challenger's r2 equals the champion's
    d = world.define(f"champion_{direction}", conditions=[deployed_metric("r2", direction, margin)])

    ex = world.run(d)

    assert ex.status == "completed", ex.dump()
    (verdict,) = outputs(ex)["gate"]["verdicts"]
    assert verdict["live_model_id"] == live and verdict["met"] is deploys
    assert (world.predict()["model_id"] != live) is deploys


def test_test_then_prod_promotes_the_version_and_deploys_it_to_prod(world: World) -> None:
    d = world.define("to_prod", conditions=[build_metric("r2", "above", 0.5)], environments=("test", "prod"))

    ex = world.run(d)

    assert ex.status == "completed", ex.dump()
    out = outputs(ex)
    version = out["train"]["version"]
    assert [(x["env"], x["result"]) for x in out["deploy"]["deployed"]] == [("test", "deployed"), ("prod", "deployed")]
    assert version in world.versions("prod")
    assert registry.get_model_version(MODEL, "prod", version, client=world.client).promoted_from == \
        f"{MODEL}/test/{version}"
    assert world.predict(LIVE_PROD)["model_id"] == f"{MODEL}/prod/{version}"
    assert world.predict()["model_id"] == f"{MODEL}/test/{version}"


def test_a_train_task_that_crashes_still_reaches_notify_which_fails_the_execution(world: World) -> None:
    before = world.versions()
    d = world.define("crashing", training={"crash": True})

    ex = world.run(d)

    assert ex.status == "failed", ex.dump()
    states = {t.external_id: t.status for t in ex.executed_tasks}
    assert states == {"train": "completed_with_errors", "gate": "completed", "deploy": "completed",
                      "notify": "failed"}, states
    assert "train" in ex.reason_for_incompletion and "sys.exit" in ex.reason_for_incompletion
    assert world.versions() == before
    (error,) = world.received("/error/crashing")
    assert error["status"] == "failed"


def test_the_automation_function_bundles_the_deploy_path_but_not_the_cli_and_no_secret(world: World) -> None:
    desired = function.desired(world.settings, "test", [world.define("x")], world.secrets)

    files = {p.relative_to(desired.folder).as_posix() for p in desired.folder.rglob("*") if p.is_file()}

    assert {"akerbp/mlops/deployment/deploy.py", "akerbp/mlops/automations/steps.py", "akerbp/mlops/settings.py",
            "model_code/test_model.py", "model_code/requirements.model", "handler.py"} <= files
    assert not [f for f in files if f.startswith(("akerbp/mlops/cli/", "akerbp/mlops/local_cdf/",
                                                  "akerbp/mlops/templates/"))]
    assert "pydantic" in (desired.folder / "requirements.txt").read_text()
    secret = world.secrets[SLACK_SECRET].encode()
    assert not [f for f in files if secret in (desired.folder / f).read_bytes()]
    assert desired.options.secrets == [SLACK_SECRET] and "mlops_hash" not in json.dumps(desired.as_dict())
    assert function.put_live(world.client, desired, deadline=time.monotonic() + 60, say=print) == "unchanged"
