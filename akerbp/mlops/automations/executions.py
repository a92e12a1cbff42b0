"""An automation's run history, read from CDF: its workflow's executions joined with the audit event each run's
notify step writes, plus the trigger fires CDF refused (one run at a time: a fire during a run is "skipped").

What `mlops automations list` and `executions` print, without click. The execution gives status and times (and the
tasks' statuses when asked for); the audit event what the run did (version, the conditions' verdicts, what was
deployed, the notifications' results, the outcome). The next run comes from the trigger's cron in its timezone
(croniter + zoneinfo), as CDF fires it.

A metric-based automation's execution is mostly a check that did not fire: no audit event (metric_check.py), its
value and verdict in its `check` task's output, read from the detailed execution; such an entry's outcome is
"not_triggered", and not_triggered_summary() folds them into one line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Sequence

from akerbp.mlops.vocabulary import AUTOMATION_WORKFLOW_VERSION, automation_workflow_external_id

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes.workflows import WorkflowExecution, WorkflowExecutionDetailed, WorkflowTrigger

SKIPPED = "skipped"
NOT_TRIGGERED = "not_triggered"
ENDED = ("completed", "failed", "terminated", "timed_out")


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json(value: object) -> Any:
    """An audit value: JSON text back to its value, anything else as it is."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class TaskState:
    name: str
    status: str
    started: str | None = None
    ended: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "started": self.started, "ended": self.ended,
                "reason": self.reason}


@dataclass(frozen=True)
class ExecutionEntry:
    """One run (or a refused fire: status "skipped", no id) of an automation, newest first in a history."""

    automation: str
    env: str
    status: str  # completed | failed | running | terminated | timed_out | skipped
    id: str | None = None
    trigger: str = ""  # schedule | manual | execute_immediately
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    reason: str | None = None  # why it did not complete, or why the fire was skipped
    tasks: tuple[TaskState, ...] = ()
    outcome: str | None = None  # the audit event's: success | failed | not_deployed
    version: str | None = None
    model_id: str | None = None
    verdicts: list = field(default_factory=list)
    deployed: list = field(default_factory=list)
    notifications: Any = None
    check: dict | None = None  # a metric-based trigger's verdict: value, threshold, direction, fired, detail
    batch: dict | None = None  # a BatchExecution's result summary
    sort_ms: int = 0

    def as_dict(self) -> dict:
        return {"automation": self.automation, "env": self.env, "id": self.id, "status": self.status,
                "trigger": self.trigger, "started": self.started, "ended": self.ended,
                "duration_s": self.duration_s, "reason": self.reason, "tasks": [t.as_dict() for t in self.tasks],
                "outcome": self.outcome, "version": self.version, "model_id": self.model_id,
                "verdicts": self.verdicts, "deployed": self.deployed, "notifications": self.notifications,
                "check": self.check, "batch": self.batch}


def _audit_by_execution(client: CogniteClient, model: str, env: str, name: str) -> dict[str, dict]:
    """execution id -> the audit record its notify step wrote."""
    from akerbp.mlops import audit

    out: dict[str, dict] = {}
    for row in audit.history(client, model, env, limit=None):
        extra = row.get("extra") or {}
        if row.get("action") == "automation" and extra.get("automation") == name and extra.get("execution_id"):
            out.setdefault(extra["execution_id"], row)  # newest first: the first is the latest
    return out


def _entry(name: str, env: str, execution: WorkflowExecution, audit_row: dict | None,
           tasks: Sequence[TaskState] = (), check_output: dict | None = None) -> ExecutionEntry:
    start, end = execution.start_time or execution.created_time, execution.end_time
    row = audit_row or {}
    extra = row.get("extra") or {}
    check = _json(extra.get("check")) or (check_output or {}).get("verdict")
    check = check if isinstance(check, dict) else None
    outcome = row.get("outcome") or None
    if outcome is None and check is not None and not check.get("fired") and str(execution.status) == "completed":
        outcome = NOT_TRIGGERED
    return ExecutionEntry(
        automation=name, env=env, status=str(execution.status), id=execution.id,
        trigger=(execution.metadata or {}).get("mlops_trigger") or ("schedule" if (execution.metadata or {}).get(
            "mlops_hash") else "manual"),
        started=_iso(start), ended=_iso(end),
        duration_s=round((end - start) / 1000, 1) if start and end else None,
        reason=execution.reason_for_incompletion, tasks=tuple(tasks), outcome=outcome,
        version=row.get("version") or None, model_id=row.get("model_id") or None,
        verdicts=_json(extra.get("verdicts")) or [], deployed=_json(extra.get("deployed")) or [],
        notifications=_json(extra.get("notifications")), check=check,
        batch=_json(extra.get("batch")) if isinstance(_json(extra.get("batch")), dict) else None, sort_ms=start or 0)


def task_states(client: CogniteClient, execution_id: str) -> tuple[str, tuple[TaskState, ...]]:
    """(the execution's status, its tasks' states in the order they ran)."""
    status, tasks, _ = _detailed(client, execution_id)
    return status, tasks


def _detailed(client: CogniteClient, execution_id: str) -> tuple[str, tuple[TaskState, ...], dict | None]:
    """(the execution's status, its tasks' states in the order they ran, the check task's answer or None)."""
    return parse_detailed(client.workflows.executions.retrieve_detailed(execution_id))


def parse_detailed(detailed: WorkflowExecutionDetailed | None) -> tuple[str, tuple[TaskState, ...], dict | None]:
    """_detailed's answer from an execution already retrieved (the dashboard keeps them)."""
    if detailed is None:
        return "unknown", (), None
    tasks = sorted(detailed.executed_tasks, key=lambda t: (t.start_time or 0, t.external_id))
    check = next((t for t in tasks if t.external_id == "check"), None)
    response = getattr(getattr(check, "output", None), "response", None) if check is not None else None
    return str(detailed.status), tuple(TaskState(t.external_id, str(t.status), _iso(t.start_time), _iso(t.end_time),
                                                 t.reason_for_incompletion) for t in tasks), \
        response if isinstance(response, dict) else None


def _workflow_executions(client: CogniteClient, xid: str) -> list[WorkflowExecution]:
    found = client.workflows.executions.list(workflow_version_ids=[(xid, AUTOMATION_WORKFLOW_VERSION)], limit=None)
    return sorted(found, key=lambda e: (e.start_time or e.created_time or 0, e.id), reverse=True)


def history(client: CogniteClient, name: str, model: str, env: str, limit: int = 20, *,
            with_tasks: bool = True) -> list[ExecutionEntry]:
    """The automation's runs and skipped fires, newest first, at most `limit`."""
    xid = automation_workflow_external_id(name, env)
    audit_rows = _audit_by_execution(client, model, env, name)
    entries: list[ExecutionEntry] = []
    for execution in _workflow_executions(client, xid)[:limit]:
        tasks: tuple[TaskState, ...] = ()
        check: dict | None = None
        if with_tasks:
            _, tasks, check = _detailed(client, execution.id)
        entries.append(_entry(name, env, execution, audit_rows.get(execution.id), tasks, check))
    entries += skipped(client, name, env, limit)
    entries.sort(key=lambda e: e.sort_ms, reverse=True)
    return entries[:limit]


def one(client: CogniteClient, name: str, model: str, env: str, execution_id: str) -> ExecutionEntry | None:
    """One run of the automation, with what its audit event says (what `run --wait` reports at the end)."""
    execution = client.workflows.executions.retrieve_detailed(execution_id)
    if execution is None:
        return None
    _, tasks, check = _detailed(client, execution_id)
    return _entry(name, env, execution, _audit_by_execution(client, model, env, name).get(execution_id), tasks,
                  check)


def summary(entry: ExecutionEntry) -> list[str]:
    """What a run did, in a few lines: the version trained, each condition's verdict, what was deployed or why not,
    the notifications."""
    lines = [f"metric {entry.check.get('detail')}"] if entry.check else []
    lines += [f"trained {entry.model_id or entry.version}"] if entry.model_id or entry.version else []
    lines += [f"condition: {v.get('detail')}" for v in entry.verdicts if isinstance(v, dict) and v.get("detail")]
    deployed = [d for d in entry.deployed if isinstance(d, dict)]
    lines += [f"deployed to {d.get('env')}: {d.get('model_id') or '?'} ({d.get('result')})" for d in deployed]
    if entry.outcome == "not_deployed":
        lines.append("not deployed: the deployment condition did not hold")
    if entry.batch:
        b = entry.batch
        lines.append(f"scored {b.get('files')} file(s): {b.get('rows_in')} rows in, {b.get('rows_out')} out, "
                     f"{b.get('bad_rows')} bad" + (f"; output {', '.join(map(str, b.get('outputs') or []))}"
                                                  if b.get("outputs") else ""))
    for n in entry.notifications if isinstance(entry.notifications, list) else []:
        if isinstance(n, dict):
            lines.append(f"notified {n.get('kind')} ({n.get('target')}): " + (
                "delivered" if n.get("delivered") else f"not delivered: {n.get('error')}"))
    if entry.status != "completed" and entry.reason:
        lines.append(f"reason: {entry.reason}")
    return lines


def not_triggered_summary(entries: Sequence[ExecutionEntry]) -> str | None:
    """'12 checks not triggered since <time>, last value 0.12 < 0.5 (at <time>)' over the entries given (newest
    first); None when none of them is a check that did not fire."""
    quiet = [e for e in entries if e.outcome == NOT_TRIGGERED]
    if not quiet:
        return None
    last, oldest = quiet[0], quiet[-1]
    check = last.check or {}
    value, bound = check.get("value"), check.get("threshold")
    try:
        from akerbp.mlops.conditions import direction

        relation = direction(check.get("direction")).symbol
    except ValueError:
        relation = "?"
    held = " (holds, in cooldown)" if check.get("in_cooldown") else ""
    words = f"{value:g} {'' if check.get('holds') else 'not '}{relation} {bound:g}" if isinstance(value, (int, float)) and isinstance(
        bound, (int, float)) else str(check.get("detail") or "?")
    return (f"{len(quiet)} check{'s' if len(quiet) != 1 else ''} not triggered since {oldest.started}, last value "
            f"{words}{held} (at {last.started})")


def skipped(client: CogniteClient, name: str, env: str, limit: int = 20) -> list[ExecutionEntry]:
    """The trigger's refused fires (CDF's run history, status failed): a fire while a run was going on."""
    from cognite.client.exceptions import CogniteAPIError

    xid = automation_workflow_external_id(name, env)
    try:
        runs = client.workflows.triggers.list_runs(xid, limit=limit)
    except CogniteAPIError as e:
        if e.code == 404:  # no trigger (deleted): no fires to show
            return []
        raise
    return [ExecutionEntry(automation=name, env=env, status=SKIPPED, trigger="schedule", started=_iso(run.fire_time),
                           reason=run.reason_for_failure, sort_ms=run.fire_time or 0)
            for run in runs if run.status == "failed"]


def last_run(client: CogniteClient, name: str, model: str, env: str) -> ExecutionEntry | None:
    """The newest execution (or skipped fire), without its tasks; None when it never ran."""
    found = history(client, name, model, env, limit=1, with_tasks=False)
    return found[0] if found else None


def next_run(cron: str, zone: str | None, after: datetime | None = None) -> datetime | None:
    """When the cron fires next after `after` (default now), in its timezone; None when it cannot be read."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    try:
        tz = ZoneInfo(zone or "UTC")
        start = (after or datetime.now(timezone.utc)).astimezone(tz)
        nxt = croniter(cron, start).get_next(datetime)
    except (ValueError, KeyError):
        return None
    return nxt if isinstance(nxt, datetime) else None


@dataclass(frozen=True)
class RegisteredAutomation:
    """A registered automation as `mlops automations list` shows it."""

    name: str
    model: str
    env: str
    workflow: str
    cron: str
    timezone: str
    paused: bool
    next_run: str | None
    last_run: ExecutionEntry | None
    commit: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "model": self.model, "env": self.env, "workflow": self.workflow,
                "trigger": {"cron": self.cron, "timezone": self.timezone, "next_run": self.next_run},
                "enabled": not self.paused, "paused": self.paused, "commit": self.commit,
                "last_run": self.last_run.as_dict() if self.last_run else None}


def registered(client: CogniteClient, env: str, *, with_last_run: bool = True) -> list[RegisteredAutomation]:
    """Every automation registered in env (its trigger), by name."""
    from akerbp.mlops.vocabulary import automation_workflow_prefix

    prefix = automation_workflow_prefix(env)
    out = []
    for trigger in client.workflows.triggers.list(limit=None):
        if not trigger.external_id.startswith(prefix):
            continue
        out.append(_registered(client, trigger, env, prefix, with_last_run))
    return sorted(out, key=lambda a: a.name)


def _registered(client: CogniteClient, trigger: WorkflowTrigger, env: str, prefix: str,
                with_last_run: bool) -> RegisteredAutomation:
    meta = trigger.metadata or {}
    name = meta.get("mlops_automation") or trigger.external_id[len(prefix):]
    model = meta.get("mlops_model", "")
    rule = trigger.trigger_rule
    cron = str(getattr(rule, "cron_expression", ""))
    zone_info = getattr(rule, "timezone", None)
    zone = getattr(zone_info, "key", None) or "UTC"
    nxt = None if trigger.is_paused else next_run(cron, zone)
    return RegisteredAutomation(
        name=name, model=model, env=env, workflow=trigger.external_id, cron=cron, timezone=zone,
        paused=bool(trigger.is_paused), next_run=nxt.isoformat() if nxt else None,
        last_run=last_run(client, name, model, env) if with_last_run and model else None,
        commit=meta.get("mlops_commit", ""))
