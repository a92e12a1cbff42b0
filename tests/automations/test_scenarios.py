"""Issue 11's scenarios as a user lives them: a model repo with an automations file, `mlops automations register`,
time moved with `mlops local-cdf tick --now T` (the local CDF fires the automations' schedule triggers on it), real
HTTP receivers on loopback for Slack and the webhooks, and what the user then sees (the prediction service's
model_id, `mlops automations executions`, `mlops history`, what the receivers got).

One local CDF and one registered repo serve the whole module: every automation has its own due day (a cron pinned to
a date), so a tick fires exactly the automations of its scenario, and ticks move forward in time. What
test_register.py and test_cli.py prove (unchanged, cron change, prune, pause/resume, a bad file) is not repeated.
"""
from __future__ import annotations

import io
import json
import subprocess
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator
from zoneinfo import ZoneInfo

import pytest

from support import Receiver, Repo, Run, copy_template, make_breakable, mlops_command

MODEL = "well_density"
LIVE = f"{MODEL}-prediction-test"
FUNCTION = f"{MODEL}-automation-test"
RECORDS = {"data": [{"GR": 80, "NPHI": 0.25, "DEPTH": 2000}]}
OSLO = ZoneInfo("Europe/Oslo")
# Secret values with a part that cannot occur by chance: neither the whole value nor that part may show anywhere.
SLACK_TOKEN, HOOK_TOKEN, AUTH_TOKEN = "T0SLACKx7q9", "H00Kx3v8w2", "AUTHx5k1z6"
Runs = list[dict[str, Any]]  # what a tick fired: the trigger runs, as `tick --json` prints them
ISOLATION = {"MLOPS_LOCAL_CDF_ISOLATION": "shared-no-install"}  # a tick's own server builds functions the same way

AUTOMATIONS = '''\
from akerbp.mlops.automations import (Automation, BuildMetric, CustomWebhook, DeployedModelMetric,
    DeploymentSpecifications, ScheduledTrigger, SlackNotification, ThresholdDirection, TrainDeploy,
    TrainingSpecifications)

DATA = {{"n_samples": 300, "seed": 1}}  # the same data every run: a challenger's r2 equals its champion's
ERRORS = CustomWebhook(url="{errors}/errors", http_method="POST", headers={{"X-Team": "geo"}}, data={{"k": "v"}})
NEVER = [BuildMetric(metric_name="r2", direction=ThresholdDirection.ABOVE, threshold=2)]  # r2 is never above 2


def test_env(**deployment):
    return DeploymentSpecifications(environments=["test"], **deployment)


automations = [
    Automation(name="weekly_refit", model="well_density", trigger=ScheduledTrigger(cron="{weekly_refit}"),
               action=TrainDeploy(training=TrainingSpecifications(data=DATA),
                                  deployment_condition=[BuildMetric(metric_name="r2",
                                                                    direction=ThresholdDirection.ABOVE,
                                                                    threshold="0.5")],
                                  deployment=test_env()),
               on_success=SlackNotification(webhook_secret="slack-hook"), on_error=ERRORS,
               description="Weekly refit on the latest logs"),
    Automation(name="strict_gate", model="well_density", trigger=ScheduledTrigger(cron="{strict_gate}"),
               action=TrainDeploy(training=TrainingSpecifications(data=DATA), deployment_condition=NEVER,
                                  deployment=test_env()),
               on_success=SlackNotification(webhook_secret="slack-hook"), on_error=ERRORS),
    Automation(name="champion_gt", model="well_density", trigger=ScheduledTrigger(cron="{champion_gt}"),
               action=TrainDeploy(training=TrainingSpecifications(data=DATA), deployment=test_env(),
                                  deployment_condition=[DeployedModelMetric(metric_name="r2",
                                                                            direction=ThresholdDirection.ABOVE,
                                                                            margin=0.01)]),
               on_success=CustomWebhook(url_secret="hook-url", http_method="GET", headers={{"X-Team": "geo"}},
                                        header_secrets={{"Authorization": "hook-token"}}, data={{"team": "geo"}}),
               on_error=ERRORS),
    Automation(name="broken_train", model="well_density", trigger=ScheduledTrigger(cron="{broken_train}"),
               action=TrainDeploy(training=TrainingSpecifications(data={{"n_samples": 5}}), deployment=test_env()),
               on_error=ERRORS),
    Automation(name="champion_ge", model="well_density", trigger=ScheduledTrigger(cron="{champion_ge}"),
               action=TrainDeploy(training=TrainingSpecifications(data=DATA), deployment=test_env(),
                                  deployment_condition=[DeployedModelMetric(
                                      metric_name="r2", direction=ThresholdDirection.ABOVE_OR_EQUALS)]),
               on_error=ERRORS),
    Automation(name="smoky", model="well_density", trigger=ScheduledTrigger(cron="{smoky}"),
               action=TrainDeploy(training=TrainingSpecifications(data=DATA),
                                  deployment=test_env(env_vars={{"BREAK_IN_CDF": "1"}})),
               on_error=ERRORS),
    Automation(name="oslo_morning", model="well_density",
               trigger=ScheduledTrigger(cron="{oslo_morning}", timezone="Europe/Oslo"),
               action=TrainDeploy(training=TrainingSpecifications(data=DATA), deployment_condition=NEVER,
                                  deployment=test_env())),
    Automation(name="busy", model="well_density", trigger=ScheduledTrigger(cron="{busy}"),
               action=TrainDeploy(training=TrainingSpecifications(data=DATA), deployment_condition=NEVER,
                                  deployment=test_env()),
               on_success=CustomWebhook(url="{held}/busy", http_method="POST")),
]
'''


def on(day: date, hour: int, minute: int = 0, zone: ZoneInfo | timezone = timezone.utc) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone).astimezone(timezone.utc)


def pinned(day: date, hours: str, minute: int = 0) -> str:
    """A cron firing only on `day` (once a year): ticks before that day do not fire it, ticks after its due time
    have claimed it."""
    return f"{minute} {hours} {day.day} {day.month} *"


@dataclass
class World:
    """The repo, its local CDF, the receivers and everything the CLI printed (for the secrets check)."""

    repo: Repo
    slack: Receiver
    hook: Receiver
    errors: Receiver
    held: Receiver
    days: dict[str, date]
    outputs: list[Run] = field(default_factory=list)
    ticks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)  # what was live (or in the registry) before a tick

    @property
    def secrets(self) -> dict[str, str]:
        return {"MLOPS_SECRET_SLACK_HOOK": f"{self.slack.url}/services/{SLACK_TOKEN}",
                "MLOPS_SECRET_HOOK_URL": f"{self.hook.url}/hooks/{HOOK_TOKEN}",
                "MLOPS_SECRET_HOOK_TOKEN": f"Bearer {AUTH_TOKEN}"}

    def mlops(self, *args: str, **env: str) -> Run:
        """`mlops ARGS` in the repo, with the secrets in the environment as in a user's shell."""
        done = self.repo.run("mlops", *args, **self.secrets, **env)
        self.outputs.append(done)
        return done

    def shows(self, *args: str) -> Run:
        """A command that only reads and prints (executions, history, list): the same CLI in this process."""
        done = self.repo.cli(*args, **self.secrets)
        self.outputs.append(done)
        return done

    def tick(self, key: str, now: datetime) -> list[dict[str, Any]]:
        """`mlops local-cdf tick --now NOW --json` once per key: the trigger runs it fired (their runs ended)."""
        if key not in self.ticks:
            done = self.mlops("local-cdf", "tick", "--now", now.isoformat(), "--json", **ISOLATION)
            assert done.code == 0, done.stdout + done.stderr
            self.ticks[key] = json.loads(done.stdout)
        return self.ticks[key]

    def executions(self, name: str) -> list[dict[str, Any]]:
        done = self.shows("automations", "executions", name, "--json")
        assert done.code == 0, done.stdout + done.stderr
        return list(json.loads(done.stdout))

    def predict(self) -> str:
        return self.repo.call(LIVE, RECORDS)["model_id"]

    def versions(self) -> dict[int, dict[str, str]]:
        """The test versions of the model in the registry: number -> metadata."""
        from akerbp.mlops import registry

        return {v.version: dict(v.metadata) for v in registry.list_model_versions(MODEL, "test",
                                                                                   client=self.repo.client)}


def fired(runs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in runs if r.get("externalId") == f"mlops-automation-test-{name}"]


def one_run(world: World, name: str) -> dict[str, Any]:
    """The automation's only execution, as `mlops automations executions --json` shows it."""
    entries = world.executions(name)
    assert len(entries) == 1, entries
    return entries[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = copy_template(tmp_path_factory.mktemp("scenarios") / "repo")
    make_breakable(root)  # with BREAK_IN_CDF the smoke check fails in CDF only
    first = (datetime.now(timezone.utc) + timedelta(days=2)).date()
    days = {"weekly_refit": first, "strict_gate": first, "champion_gt": first + timedelta(days=1),
            "broken_train": first + timedelta(days=1), "champion_ge": first + timedelta(days=2),
            "smoky": first + timedelta(days=3), "oslo_morning": first + timedelta(days=3),
            "busy": first + timedelta(days=4)}
    crons = {name: pinned(day, "6") for name, day in days.items()}
    crons["oslo_morning"] = pinned(days["oslo_morning"], "7", 30)  # 07:30 in Oslo
    crons["busy"] = pinned(days["busy"], "6,7")  # two due times: the second comes while the first run is held
    slack, hook, errors, held = Receiver(), Receiver((500, 500)), Receiver(), Receiver(hang=True)
    receivers = [slack, hook, errors, held]
    repo = Repo(root, isolation="shared-no-install")
    w = World(repo, slack, hook, errors, held, days=days)
    try:
        (root / "mlops_automations.py").write_text(AUTOMATIONS.format(errors=w.errors.url, held=w.held.url, **crons))
        done = w.mlops("automations", "register", "--env", "test")
        assert done.code == 0, done.stdout + done.stderr
        assert "8 created" in done.stdout, done.stdout
        yield w
    finally:
        for receiver in receivers:
            receiver.close()
        repo.close()


@pytest.fixture(scope="module")
def first_day(world: World) -> list[dict[str, Any]]:
    """weekly_refit (deploys) and strict_gate (its gate says no) fire at the same due time."""
    return world.tick("first", on(world.days["weekly_refit"], 6, 1))


@pytest.fixture(scope="module")
def second_day(world: World, first_day: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """champion_gt (must beat weekly_refit's live version by 0.01: it cannot) and broken_train (train raises)."""
    live, versions = world.predict(), world.versions()
    runs = world.tick("second", on(world.days["champion_gt"], 6, 1))
    world.before.update(second_live=live, second_uploads=[md for n, md in world.versions().items() if n not in versions])
    return runs


@pytest.fixture(scope="module")
def third_day(world: World, second_day: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """champion_ge: as good as the live version is enough, so it deploys."""
    return world.tick("third", on(world.days["champion_ge"], 6, 1))


@pytest.fixture(scope="module")
def fourth_day(world: World, third_day: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """smoky (its smoke check fails) and oslo_morning (07:30 in Oslo), one tick a minute after both are due."""
    world.before["fourth_live"] = world.predict()
    day = world.days["smoky"]
    return world.tick("fourth", max(on(day, 6), on(day, 7, 30, OSLO)) + timedelta(minutes=1))


# --- the scenarios -------------------------------------------------------------------------------------------------

def test_a_due_run_trains_passes_its_gate_deploys_and_posts_to_slack(world: World, first_day: Runs) -> None:
    [fire] = fired(first_day, "weekly_refit")
    assert fire["status"] == "success" and fire["fireTime"] == on(world.days["weekly_refit"], 6).timestamp() * 1000

    run = one_run(world, "weekly_refit")
    assert run["status"] == "completed" and run["trigger"] == "schedule" and run["outcome"] == "success", run
    assert run["id"] == fire["workflowExecutionId"]
    assert [(t["name"], t["status"]) for t in run["tasks"]] == [
        ("train", "completed"), ("gate", "completed"), ("deploy", "completed"), ("notify", "completed")]
    model_id = run["model_id"]
    assert model_id == f"{MODEL}/test/{run['version']}"
    assert [(v["metric"], v["met"]) for v in run["verdicts"]] == [("r2", True)]
    assert [(d["env"], d["model_id"], d["result"]) for d in run["deployed"]] == [("test", model_id, "deployed")]
    assert world.predict() == model_id  # the prediction service answers with the new version
    assert world.versions()[int(run["version"])]["automation_execution_id"] == run["id"]

    slack = posted(world, "weekly_refit")
    assert "weekly_refit" in slack["text"] and "deployed to test" in slack["text"] and run["id"] in slack["text"]
    blocks = json.dumps(slack["blocks"], ensure_ascii=False)
    [verdict] = run["verdicts"]
    for fact in ("Execution time", "*Model*\\nwell_density", "*Automation*\\nweekly_refit", "*Environment*\\ntest",
                 "*Status*\\nsuccess", f"*Trained version*\\n{run['version']} ({model_id})",
                 f"*r2* (build metric, test): {verdict['value']:g}, needs &gt; 0.5: met",
                 f"*Deployed*\\n• test: {model_id} (deployed)", f"Execution {run['id']}"):
        assert fact in blocks, (fact, blocks)
    [notification] = run["notifications"]
    assert notification["kind"] == "slack" and notification["delivered"] is True and notification["attempts"] == 1
    assert notification["target"] == "from secret 'slack-hook'"
    assert [r for r in world.errors.requests if r.json().get("automation") == "weekly_refit"] == []

    history = world.shows("history", MODEL, "--env", "test", "--json")
    assert history.code == 0, history.stderr
    [audit] = [r for r in history.json if r["action"] == "automation" and r["model_id"] == model_id]
    assert audit["outcome"] == "success" and audit["extra"]["execution_id"] == run["id"]


def posted(world: World, automation: str) -> dict[str, Any]:
    """The one Slack message about `automation`, posted to the webhook URL of the secret."""
    found = [r for r in world.slack.requests if f"Automation {automation} " in r.json().get("text", "")]
    assert len(found) == 1, [r.body for r in world.slack.requests]
    assert found[0].method == "POST" and found[0].path == f"/services/{SLACK_TOKEN}"
    assert set(found[0].json()) == {"text", "blocks"}
    return found[0].json()


def test_a_gate_that_fails_deploys_nothing_and_on_success_says_why(world: World, first_day: Runs) -> None:
    run = one_run(world, "strict_gate")
    assert run["status"] == "completed" and run["outcome"] == "not_deployed" and run["deployed"] == [], run
    [verdict] = run["verdicts"]
    assert (verdict["metric"], verdict["met"]) == ("r2", False)
    assert world.predict() != run["model_id"]  # trained and uploaded, never served
    slack = posted(world, "strict_gate")
    assert "not deployed: deployment condition not met" in slack["text"]
    blocks = json.dumps(slack["blocks"], ensure_ascii=False)
    assert "*Status*\\nsuccess" in blocks and "needs &gt; 2: not met" in blocks
    reason = f"deployment condition not met: {verdict['detail']}".replace(">", "&gt;")  # Slack's escaping
    assert f"*Not deployed*\\n{reason}" in blocks


def test_a_get_webhook_answering_500_twice_then_200_gets_the_fields_once(world: World, second_day: Runs) -> None:
    [fire] = fired(second_day, "champion_gt")
    run = one_run(world, "champion_gt")  # one execution: a retried notification never repeats the run
    assert [r.method for r in world.hook.requests] == ["GET", "GET", "GET"]  # 500, 500, then 200: delivered
    assert len({json.dumps(r.query, sort_keys=True) for r in world.hook.requests}) == 1  # the same notification
    sent = world.hook.requests[-1]  # GET: the seed's fields and the user's data as query parameters
    assert sent.path == f"/hooks/{HOOK_TOKEN}" and sent.body == b""
    assert sent.headers["authorization"] == f"Bearer {AUTH_TOKEN}" and sent.headers["x-team"] == "geo"
    assert datetime.fromisoformat(sent.query.pop("execution_date").replace("Z", "+00:00")).tzinfo is not None
    assert sent.query == {"team": "geo", "automation": "champion_gt", "status": "success",
                          "build_id": fire["workflowExecutionId"], "model_id": run["model_id"], "model": MODEL,
                          "environment": "test", "version": run["version"], "error": "", "deployed": "",
                          "reason": sent.query["reason"], "thresholds": sent.query["thresholds"], "trigger": "",
                          "metric_value": "", "metric_threshold": "", "batch": ""}  # no metric trigger, no batch
    assert sent.query["thresholds"].startswith("r2: ")  # the champion's r2 is the bar
    assert sent.query["reason"].startswith("deployment condition not met: ")  # the champion was not beaten
    [notification] = run["notifications"]
    assert notification["kind"] == "webhook" and notification["delivered"] is True
    assert notification["attempts"] == 3 and notification["status_code"] == 200
    assert notification["target"] == "from secret 'hook-url'"


def test_the_champion_comparison_refuses_a_challenger_not_better_by_the_margin(world: World, second_day: Runs) -> None:
    champion = world.before["second_live"]
    run = one_run(world, "champion_gt")
    assert run["status"] == "completed" and run["outcome"] == "not_deployed", run
    [verdict] = run["verdicts"]
    assert verdict["kind"] == "deployed_model_metric" and verdict["live_model_id"] == champion
    assert verdict["met"] is False and verdict["value"] == verdict["live_value"]  # equal, so not above by 0.01
    assert world.predict() == champion


def test_train_raising_sends_on_error_and_uploads_nothing(world: World, second_day: Runs) -> None:
    run = one_run(world, "broken_train")
    assert run["status"] == "failed" and run["outcome"] == "failed", run
    assert "train" in run["reason"] and "n_samples" in run["reason"]
    assert [(t["name"], t["status"]) for t in run["tasks"]][-1] == ("notify", "failed")
    uploads = world.before["second_uploads"]
    assert [md.get("automation") for md in uploads] == ["champion_gt"]  # the day's only upload
    [sent] = [r.json() for r in world.errors.requests if r.json().get("automation") == "broken_train"]
    assert sent["status"] == "failed" and "n_samples" in sent["error"] and sent["k"] == "v"
    assert sent["build_id"] == run["id"] and sent["version"] == ""
    assert world.errors.requests[0].headers["x-team"] == "geo"


def test_the_champion_comparison_deploys_a_challenger_as_good_as_the_champion(world: World, third_day: Runs) -> None:
    champion = world.before["second_live"]
    run = one_run(world, "champion_ge")
    assert run["status"] == "completed" and run["outcome"] == "success", run
    [verdict] = run["verdicts"]
    assert verdict["live_model_id"] == champion and verdict["met"] is True
    assert world.predict() == run["model_id"] != champion


def test_a_failing_smoke_check_rolls_back_and_sends_on_error(world: World, fourth_day: Runs) -> None:
    before = world.before["fourth_live"]
    run = one_run(world, "smoky")
    assert run["status"] == "failed" and run["outcome"] == "failed", run
    assert [(d["env"], d["result"]) for d in run["deployed"]] == [("test", "rolled_back")]
    assert "rolled back" in run["reason"]
    assert world.predict() == before  # the previous deployment answers again
    [sent] = [r.json() for r in world.errors.requests if r.json().get("automation") == "smoky"]
    assert sent["status"] == "failed" and "rolled back" in sent["error"] and sent["model_id"] == run["model_id"]


def test_a_europe_oslo_cron_fires_at_the_oslo_time(world: World, fourth_day: Runs) -> None:
    day = world.days["oslo_morning"]
    [fire] = fired(fourth_day, "oslo_morning")
    due = on(day, 7, 30, OSLO)
    assert fire["fireTime"] == due.timestamp() * 1000  # 07:30 in Oslo, 06:30 or 05:30 UTC
    assert fire["fireTime"] < on(day, 7, 30).timestamp() * 1000  # not 07:30 UTC
    listed = {a["name"]: a for a in world.shows("automations", "list", "--json").json}
    oslo = listed["oslo_morning"]
    assert oslo["trigger"]["timezone"] == "Europe/Oslo" and oslo["last_run"]["id"] == fire["workflowExecutionId"]
    assert datetime.fromisoformat(oslo["trigger"]["next_run"]).astimezone(OSLO).strftime("%H:%M") == "07:30"


def test_two_triggers_during_one_run_make_one_run_and_one_skip(world: World, fourth_day: Runs) -> None:
    day = world.days["busy"]
    command = mlops_command(["mlops", "local-cdf", "tick", "--now", on(day, 6, 1).isoformat(), "--json"])
    first = subprocess.Popen(command, cwd=world.repo.root, env=world.repo.env(**world.secrets, **ISOLATION),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        world.held.wait_for(1, timeout=180)  # the run is in its notify step, held by the receiver
        second = world.tick("busy-second", on(day, 7, 1))
        [refused] = fired(second, "busy")
        assert refused["status"] == "failed" and refused.get("workflowExecutionId") is None
        assert refused["reasonForFailure"]
    finally:
        world.held.close()  # the notification fails (never answered): the run still completes
        out, err = first.communicate(timeout=180)
    assert first.returncode == 0, out + err
    [started] = fired(json.loads(out), "busy")
    entries = world.executions("busy")
    assert [e["status"] for e in entries] == ["skipped", "completed"], entries
    assert entries[1]["id"] == started["workflowExecutionId"] and entries[0]["reason"] == refused["reasonForFailure"]
    assert entries[0]["started"].startswith(on(day, 7).strftime("%Y-%m-%dT%H:%M"))
    [notification] = entries[1]["notifications"]
    assert notification["delivered"] is False  # recorded, and the run completed anyway


def test_secret_values_appear_nowhere_a_user_or_cdf_can_read(world: World, fourth_day: Runs) -> None:
    client = world.repo.client
    values = [*world.secrets.values(), SLACK_TOKEN, HOOK_TOKEN, AUTH_TOKEN]
    fn = client.functions.retrieve(external_id=FUNCTION)
    code = zipfile.ZipFile(io.BytesIO(client.files.download_bytes(id=fn.file_id)))
    places: dict[str, str] = {
        "events": json.dumps([e.dump() for e in client.events.list(limit=None)]),
        "the CLI's output": "\n".join(r.stdout + r.stderr for r in world.outputs),
        "the workflow versions": json.dumps(client.workflows.versions.list(limit=None).dump()),
        "the triggers": json.dumps(client.workflows.triggers.list(limit=None).dump()),
        "the functions": json.dumps(client.functions.list(limit=None).dump()),
    }
    for member in code.namelist():
        places[f"the function zip's {member}"] = code.read(member).decode("utf-8", "replace")
    executions = client.workflows.executions.list([(w.external_id, "1") for w in client.workflows.list(limit=None)],
                                                  limit=None)
    assert len(executions) >= 8
    for execution in executions:
        detailed = client.workflows.executions.retrieve_detailed(execution.id)
        places[f"execution {execution.id}"] = json.dumps(detailed.dump() if detailed else None)
    for call in client.functions.calls.list(function_external_id=FUNCTION, limit=None):
        places[f"the logs of call {call.id}"] = json.dumps(call.get_logs().dump())
    leaks = [(value, where) for where, text in places.items() for value in values if value in text]
    assert leaks == []
    # the places looked at hold what they should: the definitions (with the secrets' names), the bundle, the logs
    assert world.errors.url in places["the workflow versions"] and "slack-hook" in places["the workflow versions"]
    assert "handler.py" in code.namelist() and any(where.startswith("the logs") for where in places)
    assert "weekly_refit" in places["events"] and "Registered in test" in places["the CLI's output"]
