"""Metric-based triggers and dynamic thresholds as a user lives them: a model repo whose automations file has a drift
trigger and BuildMetric thresholds from SQL, registered once (one automation function), runs started with `mlops
automations run --wait`, prediction-call rows in RAW (the analytics row schema), real HTTP receivers for the
notifications, and what `mlops automations executions` then shows.

The rows are inserted with the SDK in the contract's schema (what the prediction services' recorder writes), so
each scenario says exactly which calls the metric sees. The checks run in order, one module: the drift scenario's
retraining is the version the dynamic thresholds compare with.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

from support import Receiver, Repo, Run, copy_template

from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database

MODEL = "well_density"
DATA = {"n_samples": 300, "seed": 1}  # every run trains on the same data: the same r2
DRIFT_SQL = "SELECT abs(avg(features.GR.mean) - 80) FROM calls"  # how far GR moved from the training data's

AUTOMATIONS = '''\
from akerbp.mlops.automations import (Automation, BuildMetric, CustomWebhook, DeploymentSpecifications,
    MetricBasedTrigger, ScheduledTrigger, SqlMetric, ThresholdDirection, TrainDeploy, TrainingSpecifications)

DATA = {data!r}
ERRORS = CustomWebhook(url="{errors}/errors", http_method="POST")
HOOK = CustomWebhook(url="{hook}/hook", http_method="POST")
NEVER = BuildMetric(metric_name="r2", direction=ThresholdDirection.ABOVE, threshold=2)  # no deploy
BEST_BEFORE = "SELECT max(metrics.r2) FROM versions WHERE version < (SELECT max(version) FROM versions)"


def train(*conditions):
    return TrainDeploy(training=TrainingSpecifications(data=DATA), deployment_condition=list(conditions),
                       deployment=DeploymentSpecifications(environments=["test"]))


automations = [
    Automation(name="on_drift", model="well_density",
               trigger=MetricBasedTrigger(name="gr_drift", metric=SqlMetric(sql_query="{drift}"),
                                          direction=ThresholdDirection.ABOVE, threshold=20,
                                          override_cron="*/30 * * * *", cooldown="1d"),
               action=train(NEVER), on_success=HOOK, on_error=ERRORS),
    Automation(name="no_rows", model="well_density",
               trigger=MetricBasedTrigger(metric=SqlMetric(sql_query="SELECT latency_total_ms FROM calls WHERE false"),
                                          threshold=1),
               action=train(NEVER), on_success=HOOK, on_error=ERRORS),
    Automation(name="beat_best", model="well_density", trigger=ScheduledTrigger(cron="0 0 1 1 *"),
               action=train(BuildMetric(metric_name="r2", direction=ThresholdDirection.ABOVE, threshold=BEST_BEFORE)),
               on_success=HOOK, on_error=ERRORS),
    Automation(name="match_best", model="well_density", trigger=ScheduledTrigger(cron="0 0 1 1 *"),
               action=train(BuildMetric(metric_name="r2", direction=ThresholdDirection.ABOVE_OR_EQUALS,
                                        threshold=BEST_BEFORE)),
               on_success=HOOK, on_error=ERRORS),
]
'''


@dataclass
class World:
    repo: Repo
    hook: Receiver
    errors: Receiver
    register: Run
    outputs: list[Run] = field(default_factory=list)

    def mlops(self, *args: str) -> Run:
        done = self.repo.run("mlops", *args)
        self.outputs.append(done)
        return done

    def run(self, name: str) -> Run:
        return self.mlops("automations", "run", name, "--env", "test", "--wait", "--timeout", "240")

    def executions(self, name: str) -> list[dict[str, Any]]:
        done = self.mlops("automations", "executions", name, "--env", "test", "--json")
        assert done.code == 0, done.stdout + done.stderr
        return list(json.loads(done.stdout))

    def calls(self, gr: float, count: int = 3) -> None:
        """`count` prediction calls whose inputs' GR averages `gr`, as the recorder writes them."""
        from cognite.client.data_classes import RowWrite

        now = int(time.time() * 1000)
        rows = []
        for i in range(count):
            call = uuid.uuid4().hex
            stats = {"count": 10, "nulls": 0, "mean": gr, "std": 5.0, "min": gr - 10, "max": gr + 10}
            rows.append(RowWrite(key=f"{now + i:013d}-{call}", columns={
                "time": now + i, "call_id": None, "model_id": f"{MODEL}/test/1", "version": 1, "env": "test",
                "latency_predict_ms": 2.0, "latency_total_ms": 3.0, "status": "ok", "error_type": None, "rows": 10,
                "features": {"GR": stats, "NPHI": {**stats, "mean": 0.25, "min": 0.2, "max": 0.3, "std": 0.01}},
                "prediction": {"prediction": {**stats, "mean": 2.4}}}))
        self.repo.client.raw.rows.insert(analytics_database("test"), analytics_calls_table(MODEL), rows,
                                         ensure_parent=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = copy_template(tmp_path_factory.mktemp("metric") / "repo")
    hook, errors = Receiver(), Receiver()
    repo = Repo(root, isolation="shared-no-install")
    try:
        (root / "mlops_automations.py").write_text(AUTOMATIONS.format(data=DATA, errors=errors.url, hook=hook.url,
                                                                      drift=DRIFT_SQL))
        done = repo.run("mlops", "automations", "register", "--env", "test", "--json")
        assert done.code == 0, done.stdout + done.stderr
        yield World(repo, hook, errors, done)
    finally:
        hook.close()
        errors.close()
        repo.close()


def payloads(receiver: Receiver, automation: str) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.requests if r.json().get("automation") == automation]


# --- registering ---------------------------------------------------------------------------------------------------

def test_a_metric_trigger_registers_its_check_cron_and_bundles_the_query_engine(world: World) -> None:
    plan = json.loads(world.register.stdout)
    crons = {a["name"]: (a["cron"], a["timezone"]) for a in plan["automations"]}
    assert crons["on_drift"] == ("*/30 * * * *", "UTC") and crons["no_rows"] == ("*/15 * * * *", "UTC")
    assert [f["action"] for f in plan["functions"]] == ["created"]  # one automation function for all four
    folder = world.repo.root / ".mlops" / "build" / f"{MODEL}-automation-test"
    assert (folder / "akerbp" / "mlops" / "analytics" / "query.py").is_file()
    assert "duckdb" in (folder / "requirements.txt").read_text()
    version = world.repo.client.workflows.versions.retrieve(("mlops-automation-test-on_drift", "1"))
    tasks = version.workflow_definition.tasks
    assert [(t.external_id, t.type) for t in tasks] == [("check", "function"), ("run", "dynamic")]


def test_a_query_of_two_columns_is_refused_at_register_time_naming_the_field(world: World, tmp_path) -> None:
    path = tmp_path / "mlops_automations.py"
    path.write_text(AUTOMATIONS.format(data=DATA, errors="http://x", hook="http://x",
                                       drift="SELECT avg(latency_total_ms), count(*) FROM calls"))
    done = world.mlops("automations", "register", "--env", "test", "--dry-run", "--path", str(path))
    assert done.code == 2, done.stdout + done.stderr
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "count(*)" in text)
    assert f"mlops_automations.py:{line}: automation 'on_drift': trigger.metric.sql_query: " in done.stderr, \
        done.stderr


# --- the drift scenario --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quiet_check(world: World) -> Run:
    """Calls like the training data: the drift metric is 0, under its threshold of 20."""
    world.calls(gr=80)
    return world.run("on_drift")


def test_a_check_that_does_not_hold_records_its_value_and_notifies_nobody(world: World, quiet_check: Run) -> None:
    assert quiet_check.code == 0, quiet_check.stdout + quiet_check.stderr
    assert "metric 0 not > 20: not triggered" in quiet_check.stdout, quiet_check.stdout
    [entry] = world.executions("on_drift")
    assert entry["status"] == "completed" and entry["outcome"] == "not_triggered" and entry["version"] is None
    assert sorted(t["name"] for t in entry["tasks"]) == ["check", "not_triggered", "run"]
    check = entry["check"]
    assert (check["value"], check["threshold"], check["direction"], check["fired"]) == (0.0, 20.0, "above", False)
    assert check["metric_sql"] == DRIFT_SQL
    assert payloads(world.hook, "on_drift") == [] and payloads(world.errors, "on_drift") == []
    text = world.mlops("automations", "executions", "on_drift", "--env", "test")
    assert "1 check not triggered since " in text.stdout and "last value 0 not > 20" in text.stdout, text.stdout


@pytest.fixture(scope="module")
def drifted(world: World, quiet_check: Run) -> Run:
    """Calls with GR far from the training data's (160): the average moves to 120, 40 above the training's."""
    world.calls(gr=160)
    return world.run("on_drift")


def test_drift_over_the_threshold_retrains_once_and_the_notification_carries_the_value(world: World,
                                                                                       drifted: Run) -> None:
    assert drifted.code == 0, drifted.stdout + drifted.stderr
    newest = world.executions("on_drift")[0]
    assert newest["outcome"] == "not_deployed" and newest["version"], newest
    assert sorted(t["name"] for t in newest["tasks"]) == ["check", "deploy", "gate", "notify", "run", "train"]
    assert newest["check"]["value"] == 40.0 and newest["check"]["fired"] is True
    [payload] = world.hook.wait_for(1) and payloads(world.hook, "on_drift")
    assert payload["metric_value"] == "40" and payload["metric_threshold"] == "20"
    assert payload["trigger"] == "metric 40 > 20: triggered" and payload["version"] == newest["version"]
    assert payloads(world.errors, "on_drift") == []


@pytest.fixture(scope="module")
def in_cooldown(world: World, drifted: Run) -> Run:
    world.calls(gr=160)  # still drifting: the metric holds, but the trigger fired less than a day ago
    return world.run("on_drift")


def test_within_the_cooldown_the_trigger_does_not_fire_again(world: World, in_cooldown: Run) -> None:
    assert in_cooldown.code == 0, in_cooldown.stdout + in_cooldown.stderr
    entries = world.executions("on_drift")
    assert [e["outcome"] for e in entries] == ["not_triggered", "not_deployed", "not_triggered"]
    check = entries[0]["check"]
    assert check["holds"] is True and check["in_cooldown"] is True and check["fired"] is False
    assert check["cooldown_until"] and "in cooldown until" in check["detail"]
    assert len(payloads(world.hook, "on_drift")) == 1  # no second notification
    text = world.mlops("automations", "executions", "on_drift", "--env", "test")
    assert "2 checks not triggered since" in text.stdout and "(holds, in cooldown)" in text.stdout, text.stdout


# --- a query that fails at run time --------------------------------------------------------------------------------

def test_a_query_returning_no_rows_fails_the_run_with_a_clear_error_on_error(world: World) -> None:
    done = world.run("no_rows")
    assert done.code == 1, done.stdout + done.stderr
    [entry] = world.executions("no_rows")
    assert entry["status"] == "failed" and entry["outcome"] == "failed"
    assert sorted(t["name"] for t in entry["tasks"]) == ["check", "notify", "run"]
    world.errors.wait_for(1)
    [payload] = payloads(world.errors, "no_rows")
    assert payload["status"] == "failed" and "check: the trigger's metric could not be evaluated" in payload["error"]
    assert "must return one row, it returns 0" in payload["error"], payload["error"]
    assert payloads(world.hook, "no_rows") == []


# --- dynamic thresholds --------------------------------------------------------------------------------------------

def test_a_threshold_from_the_versions_table_gates_a_deploy_both_ways(world: World, drifted: Run) -> None:
    beat = world.run("beat_best")  # the same data: the same r2 is not above the best so far
    assert beat.code == 0, beat.stdout + beat.stderr
    [entry] = world.executions("beat_best")
    [verdict] = entry["verdicts"]
    assert entry["outcome"] == "not_deployed" and verdict["met"] is False
    assert verdict["threshold_sql"].startswith("SELECT max(metrics.r2) FROM versions")
    assert verdict["threshold"] == verdict["value"]  # the best r2 so far is this data's r2
    [payload] = payloads(world.hook, "beat_best")
    assert payload["thresholds"] == f"r2: {verdict['threshold']:g}" and payload["reason"]

    match = world.run("match_best")  # as good as the best so far is enough
    assert match.code == 0, match.stdout + match.stderr
    [entry] = world.executions("match_best")
    [verdict] = entry["verdicts"]
    assert verdict["met"] is True and entry["outcome"] == "success", entry
    assert [(d["env"], d["result"]) for d in entry["deployed"]] == [("test", "deployed")]
    assert world.repo.call(f"{MODEL}-prediction-test", {"data": [{"GR": 80, "NPHI": 0.25, "DEPTH": 2000}]})[
        "model_id"] == entry["model_id"]
