"""Metric-based triggers and dynamic thresholds as a user lives them: a model repo whose automations file has a drift
trigger and BuildMetric thresholds from SQL, registered once (one automation function); the template's prediction
service live in test with analytics on, so real prediction calls leave their rows in RAW (the service's recorder);
time moved with the local CDF's clock (run_due_schedules(now=...), what `mlops local-cdf tick --now` does), which
fires the drift trigger on its check cron; real HTTP receivers for the notifications; and what `mlops automations
executions` then shows.

The drift metric reads the newest CALLS calls (its query's window), so each scenario's calls decide it, not the
deploy's smoke call before them. The other automations' triggers are paused, so a tick fires on_drift alone; they
run with `mlops automations run`. The checks run in order, one module: the drift scenario's retraining is the version
the dynamic thresholds compare with.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, NamedTuple

import pytest
from cognite.client.exceptions import CogniteAPIError

from support import Receiver, Repo, Run, copy_template

from akerbp.mlops.deployment.deploy import deploy_model
from akerbp.mlops.deployment.target import Target
from akerbp.mlops.registry import upload_new_model_version
from akerbp.mlops.settings import load_settings
from akerbp.mlops.vocabulary import analytics_calls_table, analytics_database

MODEL = "well_density"
LIVE = f"{MODEL}-prediction-test"
DRIFT = "mlops-automation-test-on_drift"  # the drift automation's workflow and trigger
OTHERS = ("no_rows", "beat_best", "match_best")  # paused: run with `mlops automations run`
DATA = {"n_samples": 300, "seed": 1}  # every run trains on the same data: the same r2
CALLS = 3  # prediction calls per scenario step, and the drift metric's window
# How far the newest calls' GR moved from the training data's (a row per call: features.GR.mean is its records')
DRIFT_SQL = f"SELECT abs(avg(features.GR.mean) - 80) FROM (SELECT * FROM calls ORDER BY time DESC LIMIT {CALLS})"
SETTINGS = '''
from akerbp.mlops import ModelSettings

models = [ModelSettings(model_name="well_density", model_file="model_code/model.py",
                        req_file="model_code/requirements.model", test_file="model_code/test_model.py",
                        artifact_folder="model_artifact", analytics={"enabled": True})]
'''

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
    clock: datetime  # the local CDF's time at the last tick
    outputs: list[Run] = field(default_factory=list)

    def mlops(self, *args: str) -> Run:
        done = self.repo.run("mlops", *args)
        self.outputs.append(done)
        return done

    def shows(self, *args: str) -> Run:
        """A command that only reads and prints (executions, a dry run): the same CLI in this process."""
        done = self.repo.cli(*args)
        self.outputs.append(done)
        return done

    def run(self, name: str) -> Run:
        return self.mlops("automations", "run", name, "--env", "test", "--wait", "--timeout", "240")

    def executions(self, name: str) -> list[dict[str, Any]]:
        done = self.shows("automations", "executions", name, "--env", "test", "--json")
        assert done.code == 0, done.stdout + done.stderr
        return list(json.loads(done.stdout))

    def calls(self, gr: float) -> list[dict[str, Any]]:
        """CALLS prediction calls of the live service whose records' GR average `gr` (NPHI and DEPTH as in the
        training data); their rows, once the service's recorder has written them to RAW."""
        ids = []
        for i in range(CALLS):
            records = [{"GR": gr + d, "NPHI": 0.25, "DEPTH": 2000.0 + 100 * i} for d in (-10.0, 0.0, 10.0)]
            call = self.repo.client.functions.call(external_id=LIVE, data={"data": records})
            assert call.status == "Completed", call.error
            assert call.get_response()["status"] == "ok", call.get_response()
            ids.append(call.id)
        return rows_of(self.repo.client, ids)

    def tick(self) -> dict[str, Any]:
        """Move the local CDF's clock to on_drift's next due time (its check cron: every 30 minutes) and fire what is
        due, as `mlops local-cdf tick --now` does; the run it fired, its execution ended."""
        self.clock += timedelta(minutes=30)
        runs = self.repo.cdf.run_due_schedules(now=self.clock)
        assert [(r.get("externalId"), r.get("status")) for r in runs] == [(DRIFT, "success")], runs
        return runs[0]


def rows_of(client, call_ids: list[int], timeout: float = 30.0) -> list[dict[str, Any]]:
    """The RAW rows of these calls, in their order, once all are written; AssertionError after `timeout` seconds."""
    deadline, found = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        try:
            rows = client.raw.rows.list(analytics_database("test"), analytics_calls_table(MODEL), limit=None)
        except CogniteAPIError:  # no table before the first write
            rows = []
        found = {r.columns["call_id"]: r.columns for r in rows if r.columns.get("call_id") in call_ids}
        if len(found) == len(call_ids):
            return [found[i] for i in call_ids]
        time.sleep(0.1)  # polling RAW, as a reader must: the recorder writes every 0.5 s
    raise AssertionError(f"{len(found)} of the {len(call_ids)} calls' rows in RAW after {timeout} s")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The repo with its prediction service live in test (the template's artifact as version 1, analytics on) and
    its automations registered, the triggers but on_drift's paused."""
    root = copy_template(tmp_path_factory.mktemp("metric") / "repo")
    (root / "mlops_settings.py").write_text(SETTINGS)
    hook, errors = Receiver(), Receiver()
    repo = Repo(root, isolation="shared-no-install")
    try:
        (settings,) = load_settings(root / "mlops_settings.py")
        upload_new_model_version(MODEL, "test", settings.artifact_path, client=repo.client)
        deployed = deploy_model(settings, "prediction", "test", Target("test", client=repo.client), dry_run=False,
                                force=False, timeout=300, progress=lambda message: None)
        assert deployed.ok, deployed.message
        (root / "mlops_automations.py").write_text(AUTOMATIONS.format(data=DATA, errors=errors.url, hook=hook.url,
                                                                      drift=DRIFT_SQL))
        done = repo.run("mlops", "automations", "register", "--env", "test", "--json")
        assert done.code == 0, done.stdout + done.stderr
        for name in OTHERS:
            repo.client.workflows.triggers.pause(f"mlops-automation-test-{name}")
        now = datetime.now(timezone.utc)  # after the triggers were made: the first tick fires on_drift
        clock = now.replace(minute=now.minute // 30 * 30, second=0, microsecond=0) + timedelta(minutes=1)
        yield World(repo, hook, errors, done, clock)
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
    done = world.shows("automations", "register", "--env", "test", "--dry-run", "--path", str(path))
    assert done.code == 2, done.stdout + done.stderr
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "count(*)" in text)
    assert f"mlops_automations.py:{line}: automation 'on_drift': trigger.metric.sql_query: " in done.stderr, \
        done.stderr


# --- the drift scenario --------------------------------------------------------------------------------------------

class Step(NamedTuple):
    """One step of the scenario: the calls' rows in RAW, then the trigger run the next due time fired."""

    rows: list[dict[str, Any]]
    run: dict[str, Any]


@pytest.fixture(scope="module")
def quiet_check(world: World) -> Step:
    """Calls like the training data (GR 80 on average), then the check's due time: the drift metric is 0, under its
    threshold of 20."""
    return Step(world.calls(gr=80), world.tick())


def test_a_check_that_does_not_hold_records_its_value_and_notifies_nobody(world: World, quiet_check: Step) -> None:
    rows, run = quiet_check
    assert [(r["status"], r["model_id"], r["version"], r["env"], r["rows"]) for r in rows] == \
        [("ok", f"{MODEL}/test/1", 1, "test", 3)] * CALLS  # what the live service's recorder wrote
    gr = rows[0]["features"]["GR"]
    assert (gr["count"], gr["nulls"], gr["mean"], gr["min"], gr["max"]) == (3, 0, 80.0, 70.0, 90.0)
    assert rows[0]["prediction"]["prediction"]["count"] == 3 and sorted(rows[0]["features"]) == ["DEPTH", "GR", "NPHI"]
    [entry] = world.executions("on_drift")
    assert entry["id"] == run["workflowExecutionId"] and entry["trigger"] == "schedule", (entry, run)
    assert entry["status"] == "completed" and entry["outcome"] == "not_triggered" and entry["version"] is None
    assert sorted(t["name"] for t in entry["tasks"]) == ["check", "not_triggered", "run"]
    check = entry["check"]
    assert (check["value"], check["threshold"], check["direction"], check["fired"]) == (0.0, 20.0, "above", False)
    assert check["metric_sql"] == DRIFT_SQL and check["detail"] == "0 not > 20: not triggered"
    assert payloads(world.hook, "on_drift") == [] and payloads(world.errors, "on_drift") == []
    text = world.shows("automations", "executions", "on_drift", "--env", "test")
    assert "1 check not triggered since " in text.stdout and "last value 0 not > 20" in text.stdout, text.stdout


@pytest.fixture(scope="module")
def drifted(world: World, quiet_check: Step) -> Step:
    """Calls whose GR (200 on average) is beyond any training record's (at most about 165), then the next due time:
    the newest calls' GR moved 120 from the training data's."""
    return Step(world.calls(gr=200), world.tick())


def test_drift_over_the_threshold_retrains_once_and_the_notification_carries_the_value(world: World,
                                                                                       drifted: Step) -> None:
    assert [r["features"]["GR"]["mean"] for r in drifted.rows] == [200.0] * CALLS
    newest = world.executions("on_drift")[0]
    assert newest["id"] == drifted.run["workflowExecutionId"] and newest["trigger"] == "schedule", newest
    assert newest["outcome"] == "not_deployed" and newest["version"], newest
    assert sorted(t["name"] for t in newest["tasks"]) == ["check", "deploy", "gate", "notify", "run", "train"]
    assert newest["check"]["value"] == 120.0 and newest["check"]["fired"] is True
    [payload] = world.hook.wait_for(1) and payloads(world.hook, "on_drift")
    assert payload["metric_value"] == "120" and payload["metric_threshold"] == "20"
    assert payload["trigger"] == "metric 120 > 20: triggered" and payload["version"] == newest["version"]
    assert payloads(world.errors, "on_drift") == []


@pytest.fixture(scope="module")
def in_cooldown(world: World, drifted: Step) -> Step:
    """Still drifting at the next due time: the metric holds, but the trigger fired less than a day ago."""
    return Step(world.calls(gr=200), world.tick())


def test_within_the_cooldown_the_trigger_does_not_fire_again(world: World, in_cooldown: Step) -> None:
    entries = world.executions("on_drift")
    assert entries[0]["id"] == in_cooldown.run["workflowExecutionId"]
    assert [e["outcome"] for e in entries] == ["not_triggered", "not_deployed", "not_triggered"]
    check = entries[0]["check"]
    assert check["value"] == 120.0 and check["holds"] is True and check["in_cooldown"] is True
    assert check["fired"] is False and check["cooldown_until"] and "in cooldown until" in check["detail"]
    assert len(payloads(world.hook, "on_drift")) == 1  # no second notification
    text = world.shows("automations", "executions", "on_drift", "--env", "test")
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
