"""automations/prepare.py and register.py against a local CDF: the plan (created / updated / unchanged / removed),
an unchanged register that writes nothing, a cron change that rewrites the trigger alone, disabled = paused, secrets
resolved before any write, the plan's JSON."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from akerbp.mlops.automations import prepare, register
from akerbp.mlops.automations.plan import RegisterPlan, describe
from akerbp.mlops.automations.definition import AutomationDefinition
from akerbp.mlops.errors import UsageError
from akerbp.mlops.settings import load_settings
from support import Repo, copy_template, fault_rules, inject_faults

WORKFLOW = "mlops-automation-test-{}"
FUNCTION = "well_density-automation-test"


def definition(name: str = "retrain", cron: str = "0 6 * * *", zone: str = "UTC", enabled: bool = True,
               on_success: dict | None = None, env: str = "test", **action: object) -> AutomationDefinition:
    return AutomationDefinition.from_dict({
        "name": name, "model": "well_density", "description": "", "enabled": enabled, "execute_immediately": False,
        "env": env, "trigger": {"type": "schedule", "cron": cron, "timezone": zone, "interval": None},
        "action": {"type": "train_deploy", "training": {"data": {}, "env_vars": {}, "cpu": None, "memory": None},
                   "deployment_condition": action.get("conditions", []),
                   "deployment": {"environments": [env], "cpu": None, "memory": None, "env_vars": {},
                                  "timeout": None}},
        "on_success": on_success, "on_error": None})


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = Repo(copy_template(tmp_path_factory.mktemp("register") / "repo"), isolation="shared-no-install")
    yield repo
    repo.close()


@pytest.fixture(scope="module")
def settings(repo):
    return {m.model_name: m for m in load_settings(repo.root / "mlops_settings.py")}


def plan(repo: Repo, settings, definitions, env: str = "test", prune: bool = False) -> prepare.Prepared:
    return prepare.prepare(repo.client, definitions, settings, env, file="mlops_automations.py", prune=prune,
                           commit="abc123")


def apply(repo: Repo, settings, definitions, env: str = "test", prune: bool = False) -> RegisterPlan:
    lines: list[str] = []
    return register.apply(repo.client, plan(repo, settings, definitions, env, prune), say=lines.append)


def state(repo: Repo) -> tuple:
    """Everything a register writes, with its last update time."""
    c = repo.client
    return (sorted((t.external_id, t.last_updated_time, t.is_paused) for t in c.workflows.triggers.list(limit=None)),
            sorted((w.external_id, w.last_updated_time) for w in c.workflows.list(limit=None)),
            sorted((v.workflow_external_id, v.last_updated_time) for v in c.workflows.versions.list(limit=None)),
            sorted((f.external_id, f.id, f.status) for f in c.functions.list(limit=None)),
            len(c.files.list(limit=None)), len(c.events.list(limit=None)))


def calls_of_function(repo: Repo) -> int:
    return len(repo.client.functions.calls.list(function_external_id=FUNCTION, limit=None))


def wait_for_calls(repo: Repo, more_than: int, timeout_s: float = 120.0) -> None:
    """Until the automation function has more than `more_than` calls and none runs, so what a call writes (a
    version, its audit event) is not counted by a later test's state(): a task's call may start after its
    execution was cancelled."""
    deadline = time.monotonic() + timeout_s
    while (calls_of_function(repo) <= more_than
           or repo.client.functions.calls.list(function_external_id=FUNCTION, status="Running", limit=None)):
        assert time.monotonic() < deadline, f"a call of {FUNCTION} still runs after {timeout_s} s"
        time.sleep(0.1)


def actions(result: RegisterPlan) -> dict[str, str]:
    return {a.name: a.action for a in result.automations}


def test_created_then_unchanged_with_no_write_request_at_all(repo, settings):
    defs = [definition("weekly_a"), definition("weekly_b", cron="0 0 * * 0")]
    first = apply(repo, settings, defs)
    assert actions(first) == {"weekly_a": "created", "weekly_b": "created"}
    assert [f.action for f in first.functions] in (["created"], ["unchanged"])
    trigger = repo.client.workflows.triggers.list(limit=None).get(external_id=WORKFLOW.format("weekly_a"))
    assert trigger.metadata["mlops_automation"] == "weekly_a" and trigger.metadata["mlops_commit"] == "abc123"
    assert trigger.trigger_rule.cron_expression == "0 6 * * *" and not trigger.is_paused
    workflow = repo.client.workflows.retrieve(WORKFLOW.format("weekly_a"))
    assert workflow.max_concurrent_executions == 1

    before = state(repo)
    inject_faults(repo.cdf.base_url, [{"path": "re:.", "method": "POST", "delay": 0.0001, "count": 10_000},
                                      {"path": "re:.", "method": "GET", "delay": 0.0001, "count": 10_000}])
    again = plan(repo, settings, defs)
    rules = fault_rules(repo.cdf.base_url)
    assert actions(again.plan) == {"weekly_a": "unchanged", "weekly_b": "unchanged"}
    assert not again.plan.changes and [f.action for f in again.plan.functions] == ["unchanged"]
    register.apply(repo.client, again, say=lambda _: None)
    posts, gets = [r["hits"] for r in fault_rules(repo.cdf.base_url)[:2]]
    # two lists (triggers, workflows) and the functions' byids: a few reads, whatever the number of automations
    assert gets <= 2 and posts <= 1, rules
    assert state(repo) == before


def test_a_cron_change_rewrites_the_trigger_alone_and_keeps_its_history(repo, settings):
    name = "cron_change"
    apply(repo, settings, [definition(name)])
    xid = WORKFLOW.format(name)
    c = repo.client
    calls_before = calls_of_function(repo)
    running = c.workflows.executions.run(xid, "1")
    created = c.workflows.triggers.list(limit=None).get(external_id=xid)
    due = datetime.fromtimestamp(created.created_time / 1000, timezone.utc) + timedelta(days=1)
    fired = repo.cdf.run_due_schedules(now=due.replace(hour=6, minute=1), wait=False)
    assert [r["status"] for r in fired if r.get("externalId") == xid] == ["failed"]  # one run at a time: skipped
    c.workflows.executions.cancel(running.id, reason="test")
    wait_for_calls(repo, calls_before)  # cancelling ends the execution, not its train call (as in CDF)
    version_before = c.workflows.versions.retrieve((xid, "1")).last_updated_time
    workflow_before = c.workflows.retrieve(xid).last_updated_time

    changed = plan(repo, settings, [definition(name, cron="30 7 * * 1-5", zone="Europe/Oslo")])
    [item] = [a for a in changed.plan.automations if a.name == name]
    assert item.action == "updated"
    assert 'trigger.cron: "0 6 * * *" -> "30 7 * * 1-5"' in item.changes
    assert 'trigger.timezone: "UTC" -> "Europe/Oslo"' in item.changes
    register.apply(c, changed, say=lambda _: None)
    trigger = c.workflows.triggers.list(limit=None).get(external_id=xid)
    assert trigger.trigger_rule.cron_expression == "30 7 * * 1-5" and trigger.trigger_rule.timezone.key == \
        "Europe/Oslo"
    assert trigger.created_time == created.created_time
    assert len(c.workflows.triggers.list_runs(xid, limit=None)) == 1  # the run history stays
    assert [e.id for e in c.workflows.executions.list(workflow_version_ids=[(xid, "1")], limit=None)] == [running.id]
    assert c.workflows.versions.retrieve((xid, "1")).last_updated_time == version_before  # the trigger alone
    assert c.workflows.retrieve(xid).last_updated_time == workflow_before


def test_a_changed_definition_updates_the_version_and_lists_what_changed(repo, settings):
    name = "gated"
    apply(repo, settings, [definition(name)])
    condition = {"type": "build_metric", "metric_name": "r2", "direction": "above", "threshold": 0.8}
    changed = plan(repo, settings, [definition(name, conditions=[condition])])
    [item] = changed.plan.automations
    assert item.action == "updated" and any(c.startswith("action.deployment_condition") for c in item.changes)
    register.apply(repo.client, changed, say=lambda _: None)
    version = repo.client.workflows.versions.retrieve((WORKFLOW.format(name), "1"))
    train = next(t for t in version.workflow_definition.tasks if t.external_id == "train")
    assert train.parameters.data["automation"]["action"]["deployment_condition"] == [condition]
    assert plan(repo, settings, [definition(name, conditions=[condition])]).plan.automations[0].action == "unchanged"


def test_disabled_registers_paused_and_enabling_resumes(repo, settings):
    name = "paused_one"
    apply(repo, settings, [definition(name, enabled=False)])
    xid = WORKFLOW.format(name)
    assert repo.client.workflows.triggers.list(limit=None).get(external_id=xid).is_paused
    result = apply(repo, settings, [definition(name, enabled=True)])
    assert result.automations[0].action == "updated" and "trigger.enabled: false -> true" in \
        result.automations[0].changes
    assert not repo.client.workflows.triggers.list(limit=None).get(external_id=xid).is_paused


def test_a_missing_secret_fails_naming_the_variable_before_anything_is_written(repo, settings):
    before = state(repo)
    slack = {"type": "slack", "webhook": None, "webhook_secret": "slack-hook"}
    with pytest.raises(UsageError) as failed:
        plan(repo, settings, [definition("secretive", on_success=slack)])
    assert failed.value.exit_code == 2 and "MLOPS_SECRET_SLACK_HOOK" in str(failed.value)
    assert "secretive" in str(failed.value)
    assert state(repo) == before


def test_dry_run_plan_writes_nothing_and_its_json_shape(repo, settings):
    before = state(repo)
    prepared = plan(repo, settings, [definition("dry_one", cron="15 3 * * *")])
    assert state(repo) == before  # planning alone writes nothing
    doc = prepared.plan.as_dict()
    assert doc["env"] == "test" and doc["file"] == "mlops_automations.py" and doc["commit"] == "abc123"
    assert doc["counts"]["created"] == 1
    [item] = doc["automations"]
    assert item == {"name": "dry_one", "model": "well_density", "env": "test", "action": "created",
                    "workflow": WORKFLOW.format("dry_one"), "trigger": WORKFLOW.format("dry_one"),
                    "function": FUNCTION, "cron": "15 3 * * *", "timezone": "UTC", "enabled": True, "changes": []}
    assert {f["external_id"] for f in doc["functions"]} == {FUNCTION}
    assert any("dry_one" in line for line in describe(prepared.plan))


def test_prune_removes_what_the_file_no_longer_has_and_the_function_with_the_last_one(repo, settings):
    keep, drop = definition("keep_me", env="dev"), definition("drop_me", env="dev")
    apply(repo, settings, [keep, drop], env="dev")
    without = plan(repo, settings, [keep], env="dev")
    assert without.plan.not_in_file == ("drop_me",) and not without.plan.changes  # kept without --prune
    pruned = apply(repo, settings, [keep], env="dev", prune=True)
    assert actions(pruned) == {"keep_me": "unchanged", "drop_me": "removed"}
    names = {t.external_id for t in repo.client.workflows.triggers.list(limit=None)}
    assert "mlops-automation-dev-drop_me" not in names and "mlops-automation-dev-keep_me" in names
    assert repo.client.workflows.retrieve("mlops-automation-dev-drop_me", ignore_unknown_ids=True) is None
    assert "well_density-automation-dev" in repo.functions()
    emptied = apply(repo, settings, [], env="dev", prune=True)
    assert actions(emptied) == {"keep_me": "removed"}
    assert [(f.external_id, f.action) for f in emptied.functions] == [("well_density-automation-dev", "removed")]
    assert "well_density-automation-dev" not in repo.functions()
    assert "well_density-automation-test" in repo.functions()  # another env's function is not touched
