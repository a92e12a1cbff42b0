"""Workflow triggers served by the local CDF to the real cognite-sdk: schedule rules in a timezone fired by the one
clock (run_due_schedules(now=...), `mlops local-cdf tick --now`) at the right UTC instants across daylight-saving
changes, pause/resume without backfill, run history, exactly once across processes, other rule types refused."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import (
    CDFTaskParameters,
    WorkflowDefinitionUpsert,
    WorkflowTask,
    WorkflowUpsert,
    WorkflowVersionUpsert,
)
from cognite.client.data_classes.workflows import (
    WorkflowRecordStreamTriggerRule,
    WorkflowScheduledTriggerRule,
    WorkflowTriggerUpsert,
)
from cognite.client.exceptions import CogniteAPIError

from akerbp.mlops.local_cdf import LocalCDF

UTC = timezone.utc
OSLO = ZoneInfo("Europe/Oslo")


def workflow(client: CogniteClient, xid: str = "retrain") -> None:
    """A one-task workflow (a request to the local CDF's own API): executions end in milliseconds, no function."""
    client.workflows.upsert(WorkflowUpsert(external_id=xid))
    client.workflows.versions.upsert(WorkflowVersionUpsert(
        workflow_external_id=xid, version="1", workflow_definition=WorkflowDefinitionUpsert(
            tasks=[WorkflowTask("look", CDFTaskParameters("/workflows/triggers", "GET"))])))


def trigger(client: CogniteClient, xid: str, cron: str, tz: ZoneInfo | None = None, wf: str = "retrain",
            **kw: dict) -> None:
    client.workflows.triggers.upsert(WorkflowTriggerUpsert(
        external_id=xid, trigger_rule=WorkflowScheduledTriggerRule(cron_expression=cron, timezone=tz),
        workflow_external_id=wf, workflow_version="1", **kw))


def fire_times(client: CogniteClient, xid: str, start: datetime | None = None,
               end: datetime | None = None) -> list[datetime]:
    """The trigger's history (within [start, end] if given), oldest first, as UTC datetimes."""
    runs = client.workflows.triggers.list_runs(xid, limit=None)
    times = sorted(datetime.fromtimestamp(r.fire_time / 1000, UTC) for r in runs)
    return [t for t in times if (start is None or t >= start) and (end is None or t <= end)]


def tick_every(cdf: LocalCDF, start: datetime, end: datetime, step: timedelta) -> list[dict]:
    fired, moment = [], start
    while moment <= end:
        fired += cdf.run_due_schedules(now=moment)
        moment += step
    return fired


def last_sunday(year: int, month: int) -> date:
    end = (date(year, month + 1, 1) if month < 12 else date(year + 1, 1, 1)) - timedelta(days=1)
    return end - timedelta(days=(end.weekday() - 6) % 7)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def test_upsert_list_update_pause_resume_and_delete(client: CogniteClient) -> None:
    workflow(client)
    trigger(client, "nightly", "30 2 * * *", OSLO, input={"k": 1}, metadata={"owner": "ml"})
    [made] = client.workflows.triggers.list(limit=None)
    assert (made.external_id, made.workflow_external_id, made.workflow_version) == ("nightly", "retrain", "1")
    assert made.trigger_rule.cron_expression == "30 2 * * *" and made.trigger_rule.timezone == OSLO
    assert made.input == {"k": 1} and made.metadata == {"owner": "ml"} and made.is_paused is False
    trigger(client, "nightly", "0 3 * * *")  # upsert replaces the rule; no timezone: UTC, echoed without one
    [updated] = client.workflows.triggers.list()
    assert updated.trigger_rule.cron_expression == "0 3 * * *" and updated.trigger_rule.timezone is None
    assert updated.created_time == made.created_time and updated.input == {}
    client.workflows.triggers.pause("nightly")
    client.workflows.triggers.pause("nightly")  # idempotent
    assert client.workflows.triggers.list()[0].is_paused is True
    client.workflows.triggers.resume("nightly")
    assert client.workflows.triggers.list()[0].is_paused is False
    client.workflows.triggers.delete("nightly")
    assert client.workflows.triggers.list() == []
    with pytest.raises(CogniteAPIError) as unknown:
        client.workflows.triggers.pause("nightly")
    assert unknown.value.code == 400


@pytest.mark.parametrize("rule, expected", [
    ({"triggerType": "schedule", "cronExpression": "0 3 * * *", "timezone": "Mars/Olympus"}, "Unknown timezone"),
    ({"triggerType": "schedule", "cronExpression": "0 3 * *"}, "expected 5 fields"),
    ({"triggerType": "dataModeling", "dataModelingQuery": {"with": {}, "select": {}}, "batchSize": 10,
      "batchTimeout": 60}, "data-modeling triggers are not supported"),
])
def test_bad_rules_and_other_trigger_types_are_a_400_saying_why(client: CogniteClient, rule: dict,
                                                                expected: str) -> None:
    workflow(client)
    nonce = client.iam.sessions.create(session_type="TOKEN_EXCHANGE").nonce
    body = {"items": [{"externalId": "t", "triggerRule": rule, "workflowExternalId": "retrain",
                       "workflowVersion": "1", "authentication": {"nonce": nonce}}]}
    with pytest.raises(CogniteAPIError) as refused:
        client.post(f"/api/v1/projects/{client.config.project}/workflows/triggers", json=body)
    assert refused.value.code == 400 and expected in refused.value.message
    assert client.workflows.triggers.list() == []


def test_record_stream_rule_unknown_version_and_missing_nonce_are_refused(client: CogniteClient) -> None:
    workflow(client)
    with pytest.raises(CogniteAPIError) as stream:
        client.workflows.triggers.upsert(WorkflowTriggerUpsert(
            external_id="s", trigger_rule=WorkflowRecordStreamTriggerRule("stream", batch_size=10, batch_timeout=60),
            workflow_external_id="retrain", workflow_version="1"))
    assert stream.value.code == 400 and "record-stream triggers are not supported" in stream.value.message
    with pytest.raises(CogniteAPIError) as version:
        trigger(client, "t", "0 3 * * *", wf="no-such-workflow")
    assert version.value.code == 400 and "no version '1'" in version.value.message
    body = {"items": [{"externalId": "t", "triggerRule": {"triggerType": "schedule", "cronExpression": "0 3 * * *"},
                       "workflowExternalId": "retrain", "workflowVersion": "1"}]}
    with pytest.raises(CogniteAPIError) as nonce:
        client.post(f"/api/v1/projects/{client.config.project}/workflows/triggers", json=body)
    assert nonce.value.code == 400 and "authentication" in nonce.value.message


def test_oslo_trigger_fires_at_the_right_utc_instants_across_spring_and_autumn(local_cdf: LocalCDF,
                                                                                client: CogniteClient) -> None:
    """02:30 Europe/Oslo: on the spring-forward day 02:30 does not exist and fires once, shifted by the gap (03:30
    CEST = 01:30 UTC); on the autumn day it occurs twice and fires once, at the first (02:30 CEST = 00:30 UTC). An
    hourly trigger fires once per distinct instant: 02:00 (shifted to 03:00) and 03:00 are one fire in spring, and
    the repeated 02:00 CET is not fired again in autumn."""
    workflow(client)
    trigger(client, "nightly", "30 2 * * *", OSLO, input={"reason": "nightly"})
    trigger(client, "hourly", "0 * * * *", OSLO)
    year = datetime.now(UTC).year + 1  # after the triggers' creation, whatever today is
    spring, autumn = last_sunday(year, 3), last_sunday(year, 10)
    window = (at(spring, 0) - timedelta(days=1), at(spring, 4) + timedelta(days=1))
    tick_every(local_cdf, *window, timedelta(minutes=10))  # its first tick also fires the one due before it
    assert fire_times(client, "nightly", *window) == [at(spring - timedelta(days=1), 1, 30), at(spring, 1, 30),
                                                      at(spring + timedelta(days=1), 0, 30)]
    assert fire_times(client, "hourly", at(spring, 0), at(spring, 3)) == [at(spring, 0), at(spring, 1),
                                                                          at(spring, 2), at(spring, 3)]
    window = (at(autumn, 0) - timedelta(days=1), at(autumn, 4) + timedelta(days=1))
    tick_every(local_cdf, *window, timedelta(minutes=10))
    assert fire_times(client, "nightly", *window) == [at(autumn - timedelta(days=1), 0, 30), at(autumn, 0, 30),
                                                      at(autumn + timedelta(days=1), 1, 30)]
    assert fire_times(client, "hourly", at(autumn, 0), at(autumn, 3)) == [at(autumn, 0), at(autumn, 2),
                                                                          at(autumn, 3)]  # 01:00 UTC: 02:00 again
    executions = client.workflows.executions.list(workflow_version_ids=[("retrain", "1")], limit=None)
    assert len(executions) == len(client.workflows.triggers.list_runs("nightly", limit=None)) + len(
        client.workflows.triggers.list_runs("hourly", limit=None))
    assert {e.status for e in executions} == {"completed"}


def test_paused_trigger_does_not_fire_and_resume_does_not_backfill(local_cdf: LocalCDF,
                                                                   client: CogniteClient) -> None:
    workflow(client)
    trigger(client, "hourly", "0 * * * *")
    first = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
    client.workflows.triggers.pause("hourly")
    assert tick_every(local_cdf, first + timedelta(minutes=5), first + timedelta(hours=1, minutes=5),
                      timedelta(hours=1)) == []
    client.workflows.triggers.resume("hourly")
    assert local_cdf.run_due_schedules(now=first + timedelta(hours=1, minutes=10)) == []  # nothing replayed
    [run] = local_cdf.run_due_schedules(now=first + timedelta(hours=2, minutes=5))
    assert run["fireTime"] == int((first + timedelta(hours=2)).timestamp() * 1000) and run["status"] == "success"
    assert fire_times(client, "hourly") == [first + timedelta(hours=2)]
    assert len(client.workflows.executions.list(("retrain", "1"), limit=None)) == 1


def test_run_history_records_executions_started_and_fires_that_failed(local_cdf: LocalCDF,
                                                                      client: CogniteClient) -> None:
    workflow(client)
    trigger(client, "daily", "0 6 * * *", input={"model": "m1"}, metadata={"by": "trigger"})
    day = (datetime.now(UTC) + timedelta(days=1)).replace(hour=6, minute=0, second=0, microsecond=0)
    [ok] = local_cdf.run_due_schedules(now=day + timedelta(minutes=1))
    execution = client.workflows.executions.retrieve_detailed(ok["workflowExecutionId"])
    assert execution is not None and execution.status == "completed"
    assert execution.input == {"model": "m1"} and execution.metadata == {"by": "trigger"}
    client.workflows.versions.delete(("retrain", "1"))
    [failed] = local_cdf.run_due_schedules(now=day + timedelta(days=1, minutes=1))
    assert failed["status"] == "failed" and "does not exist" in failed["reasonForFailure"]
    runs = client.workflows.triggers.list_runs("daily", limit=None)
    assert [r.status for r in runs] == ["failed", "success"]  # newest first, as CDF sorts
    assert runs[1].workflow_execution_id == ok["workflowExecutionId"] and runs[0].workflow_execution_id is None
    assert runs[1].fire_time == int(day.timestamp() * 1000) and runs[1].workflow_version == "1"
    assert runs[0].reason_for_failure == failed["reasonForFailure"]
    assert [r.status for r in client.workflows.triggers.list_runs("daily", limit=1)] == ["failed"]
    path = f"/api/v1/projects/{client.config.project}/workflows/triggers/daily/history"
    page = client.get(path, params={"limit": 1}).json()
    rest = client.get(path, params={"limit": 1, "cursor": page["nextCursor"]}).json()
    assert [p["status"] for p in page["items"] + rest["items"]] == ["failed", "success"] and not rest["nextCursor"]
    client.workflows.triggers.delete("daily")
    with pytest.raises(CogniteAPIError):
        client.workflows.triggers.list_runs("daily")


def test_two_processes_ticking_one_due_time_start_one_execution_and_tick_names_the_trigger(tmp_path: Path) -> None:
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir) as first, LocalCDF(data_dir) as second:
        client = first.client(project="p")
        workflow(client)
        trigger(client, "hourly", "0 * * * *")
        due = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)
        barrier = threading.Barrier(2, timeout=30)
        fired: list[list[dict]] = []

        def tick(cdf: LocalCDF) -> None:
            barrier.wait()
            fired.append(cdf.run_due_schedules(now=due + timedelta(minutes=1)))

        threads = [threading.Thread(target=tick, args=(cdf,)) for cdf in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(len(f) for f in fired) == [0, 1]
        assert len(client.workflows.executions.list(("retrain", "1"), limit=None)) == 1
    later = (due + timedelta(hours=1, minutes=1)).isoformat()
    command = [sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "tick", "--data-dir", str(data_dir), "--now",
               later]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "trigger hourly" in shown.stdout and "workflow retrain version 1 execution" in shown.stdout
    assert shown.stdout.rstrip().endswith(": success")
    again = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout) == []
