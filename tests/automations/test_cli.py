"""`mlops automations ...` as a user runs it (real SDK, a served local CDF): exit codes, --json, unknown names, a repo
without an automations file, a bad file, pause/resume around the trigger's due times, run --wait. A first register,
a bad file, run --wait and the pipeline rehearsal run as subprocesses; checks of output and exit code only run the
same CLI in this process (Repo.cli), without a new interpreter each."""
from __future__ import annotations

import shutil
import textwrap
from datetime import datetime, timedelta, timezone

import pytest

from support import Repo, copy_template

HEADER = ("from akerbp.mlops.automations import (Automation, BuildMetric, DeploymentSpecifications, ScheduledTrigger, "
          "ThresholdDirection, TrainDeploy, TrainingSpecifications)\n\n")


def automation(name: str, cron: str = "0 6 * * *", training: str = "{}", threshold: str = "2.0") -> str:
    # r2 above 2.0 never holds: the run trains, the gate says no, nothing is deployed (a quick, successful run)
    return textwrap.dedent(f"""\
        Automation(name={name!r}, model="well_density", trigger=ScheduledTrigger(cron={cron!r}),
                   action=TrainDeploy(training=TrainingSpecifications(data={training}),
                                      deployment_condition=[BuildMetric(metric_name="r2",
                                          direction=ThresholdDirection.ABOVE, threshold={threshold!r})],
                                      deployment=DeploymentSpecifications(environments=["test"]))),
    """)


def write(repo: Repo, *automations: str) -> None:
    body = "".join(textwrap.indent(a, "    ") for a in automations)
    (repo.root / "mlops_automations.py").write_text(HEADER + "automations = [\n" + body + "]\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = Repo(copy_template(tmp_path_factory.mktemp("cli") / "repo"), isolation="shared-no-install")
    yield repo
    repo.close()


def test_no_automations_file_registers_nothing_and_exits_0(tmp_path):
    root = copy_template(tmp_path / "bare")
    repo = Repo(root)
    try:
        done = repo.run("mlops", "automations", "register", "--env", "test")
        assert done.code == 0, done.stderr
        assert "nothing to register" in done.stdout and "mlops_automations.py" in done.stdout
        as_json = repo.cli("automations", "register", "--env", "test", "--json")
        assert as_json.code == 0 and as_json.json["automations"] == [] and as_json.json["file"] is None
        missing = repo.cli("automations", "register", "-p", "elsewhere.py")
        assert missing.code == 2 and "elsewhere.py" in missing.stderr
        listed = repo.cli("automations", "list", "--json")
        assert listed.code == 0 and listed.json == []
    finally:
        repo.close()


def test_a_bad_file_is_exit_2_with_the_loaders_lines_and_nothing_registered(repo):
    (repo.root / "mlops_automations.py").write_text(HEADER + textwrap.dedent("""\
        automations = [
            Automation(name="Bad-Name", model="well_density", trigger=ScheduledTrigger(cron="61 * * * *"),
                       action=TrainDeploy()),
        ]
        """))
    done = repo.run("mlops", "automations", "register", "--env", "test")
    assert done.code == 2, done.stderr
    assert "mlops_automations.py:4" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) >= 2  # every problem at once, one line each
    assert list(repo.client.workflows.triggers.list(limit=None)) == []


def test_register_list_executions_json_and_unknown_names(repo):
    write(repo, automation("weekly_fit", cron="0 0 * * 0"))
    dry = repo.cli("automations", "register", "--env", "test", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    assert dry.json["applied"] is False and [a["action"] for a in dry.json["automations"]] == ["created"]
    assert list(repo.client.workflows.triggers.list(limit=None)) == []

    done = repo.cli("automations", "register", "--env", "test", "--json")
    assert done.code == 0, done.stderr
    assert done.json["applied"] is True and done.json["automations"][0]["action"] == "created"
    again = repo.cli("automations", "register", "--env", "test")
    assert again.code == 0 and "1 unchanged" in again.stdout and "Nothing to change" in again.stdout

    listed = repo.cli("automations", "list", "--json")
    assert listed.code == 0, listed.stderr
    [one] = listed.json
    assert one["name"] == "weekly_fit" and one["model"] == "well_density" and one["env"] == "test"
    assert one["trigger"]["cron"] == "0 0 * * 0" and one["trigger"]["timezone"] == "UTC"
    assert datetime.fromisoformat(one["trigger"]["next_run"]).weekday() == 6  # a Sunday
    assert one["enabled"] is True and one["last_run"] is None
    table = repo.cli("automations", "list")
    assert table.code == 0 and "weekly_fit" in table.stdout and "enabled" in table.stdout

    history = repo.cli("automations", "executions", "weekly_fit", "--json")
    assert history.code == 0 and history.json == []

    for command in ("run", "executions", "pause"):
        unknown = repo.cli("automations", command, "weekly_fti")
        assert unknown.code == 2, (command, unknown.stderr)
        assert "weekly_fti" in unknown.stderr and "weekly_fit (test)" in unknown.stderr

    deleted = repo.cli("automations", "delete", "weekly_fit")
    assert deleted.code == 0, deleted.stderr
    assert list(repo.client.workflows.triggers.list(limit=None)) == []
    assert "well_density-automation-test" not in repo.functions()  # its model's last automation in test


def test_paused_does_not_run_at_its_due_time_and_resume_does_not_backfill(repo):
    write(repo, automation("nightly", cron="0 2 * * *"))
    assert repo.cli("automations", "register", "--env", "test").code == 0
    xid = "mlops-automation-test-nightly"
    created = repo.client.workflows.triggers.list(limit=None).get(external_id=xid).created_time
    first_due = (datetime.fromtimestamp(created / 1000, timezone.utc) + timedelta(days=1)).replace(
        hour=2, minute=0, second=0, microsecond=0)

    paused = repo.cli("automations", "pause", "nightly")
    assert paused.code == 0 and "paused" in paused.stdout
    listed = repo.cli("automations", "list", "--json").json
    assert listed[0]["paused"] is True and listed[0]["trigger"]["next_run"] is None
    fired = repo.cdf.run_due_schedules(now=first_due + timedelta(minutes=1), wait=False)
    assert [r for r in fired if r.get("externalId") == xid] == []
    assert repo.client.workflows.executions.list(workflow_version_ids=[(xid, "1")], limit=None) == []

    resumed = repo.cli("automations", "resume", "nightly")
    assert resumed.code == 0 and "resumed" in resumed.stdout
    # Resuming claims every due time up to now: the missed fires are not replayed at the next tick.
    fired = repo.cdf.run_due_schedules(now=datetime.now(timezone.utc), wait=False)
    assert [r for r in fired if r.get("externalId") == xid] == []
    assert repo.client.workflows.executions.list(workflow_version_ids=[(xid, "1")], limit=None) == []
    assert repo.cli("automations", "delete", "nightly").code == 0


def test_run_wait_exits_0_when_the_run_completes_and_1_when_it_fails(repo):
    write(repo, automation("gate_says_no"), automation("train_fails", training='{"n_samples": 5}'))
    assert repo.cli("automations", "register", "--env", "test").code == 0

    ok = repo.run("mlops", "automations", "run", "gate_says_no", "--wait", "--timeout", "240")
    assert ok.code == 0, ok.stdout + ok.stderr
    assert "[gate_says_no] train: completed" in ok.stderr and "[gate_says_no] notify: completed" in ok.stderr
    assert "  condition: r2 = " in ok.stdout and "not deployed: the deployment condition did not hold" in ok.stdout
    history = repo.cli("automations", "executions", "gate_says_no", "--env", "test", "--json")
    assert history.code == 0, history.stderr
    [run] = history.json
    assert run["status"] == "completed" and run["trigger"] == "manual" and run["outcome"] == "not_deployed"
    assert [t["name"] for t in run["tasks"]] == ["train", "gate", "deploy", "notify"]

    failed = repo.run("mlops", "automations", "run", "train_fails", "--wait", "--timeout", "240")
    assert failed.code == 1, failed.stdout + failed.stderr
    assert "failed" in failed.stderr and "reason: " in failed.stdout and "n_samples" in failed.stdout
    [run] = repo.cli("automations", "executions", "train_fails", "--json").json
    assert run["status"] == "failed" and run["outcome"] == "failed"
    listed = {a["name"]: a for a in repo.cli("automations", "list", "--json").json}
    assert listed["train_fails"]["last_run"]["status"] == "failed"
    assert listed["gate_says_no"]["last_run"]["status"] == "completed"


def test_the_pipeline_rehearsal_registers_the_test_automations_after_the_test_deploy(tmp_path):
    from akerbp.mlops import model_manager
    from support import REPO

    repo = Repo(copy_template(tmp_path / "piped"), isolation="shared-no-install")
    try:
        shutil.copy(REPO / "bitbucket-pipelines.yml", repo.root / "bitbucket-pipelines.yml")
        write(repo, automation("from_the_pipeline"))
        model_manager.upload_new_model_version("well_density", "test", REPO / "model_artifact", client=repo.client)
        done = repo.run("mlops", "pipeline", "run", "--branch", "master")
        assert done.code == 0, done.stderr
        assert "+ ENV=test mlops automations register --prune" in done.stderr
        triggers = {t.external_id for t in repo.client.workflows.triggers.list(limit=None)}
        assert triggers == {"mlops-automation-test-from_the_pipeline"}
    finally:
        repo.close()
