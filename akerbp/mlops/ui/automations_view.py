"""The automations page of one CDF: each registered automation's trigger (cron and timezone, or its metric), next
run, and newest executions with their tasks and verdicts (automations/executions.py's entries).

Read with few requests whatever the history: one triggers list, one workflow-versions list when a registration
changed (the metric's SQL lives in the workflow's task data: upserts.task_definition), one executions list of what
started since the last read, a detailed read of each newest execution once it ended (kept) or while it runs, and
each trigger's refused fires. The audit records of the runs come from the audit index (no request).
"""
from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING, Any, Callable

from akerbp.mlops.automations import executions as ex
from akerbp.mlops.ui.incremental import OVERLAP_MS
from akerbp.mlops.vocabulary import AUTOMATION_WORKFLOW_VERSION, automation_workflow_prefix

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes.workflows import WorkflowExecution, WorkflowTrigger

SHOWN = 10  # executions per automation
HASH_KEY = "mlops_hash"


def _utc_iso(when) -> str | None:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if when is not None else None


class AutomationsView:
    """The automations of `envs` in one CDF, kept between refreshes."""

    def __init__(self, client: CogniteClient, envs: list[str]):
        self.client, self.envs = client, envs
        self.definitions: dict[str, tuple[str, dict]] = {}  # workflow -> (registration hash, task definition)
        self.executions: dict[str, WorkflowExecution] = {}  # id -> as last listed or retrieved
        self.details: dict[str, tuple[Any, tuple, dict | None]] = {}  # id -> (detailed execution, tasks, check)
        self.newest_created = 0
        self.rows: list[dict] = []

    def refresh(self, audit_newest: Callable[[], list[dict]]) -> list[dict]:
        client = self.client
        prefixes = {automation_workflow_prefix(env): env for env in self.envs}
        triggers = [(t, prefixes[p]) for t in client.workflows.triggers.list(limit=None)
                    for p in prefixes if t.external_id.startswith(p)]
        self._definitions([t for t, _ in triggers])
        self._list_executions([t.external_id for t, _ in triggers])
        by_workflow: dict[str, list[WorkflowExecution]] = {}
        for execution in self.executions.values():
            by_workflow.setdefault(execution.workflow_external_id, []).append(execution)
        runs = _automation_runs(audit_newest())
        rows = []
        for trigger, env in triggers:
            newest = sorted(by_workflow.get(trigger.external_id, []),
                            key=lambda e: (e.start_time or e.created_time or 0, e.id), reverse=True)[:SHOWN]
            rows.append(self._row(trigger, env, newest, runs))
        self.rows = sorted(rows, key=lambda r: (r["name"], r["env"]))
        return self.rows

    def _definitions(self, triggers: list[WorkflowTrigger]) -> None:
        stale = [t.external_id for t in triggers
                 if self.definitions.get(t.external_id, ("",))[0] != (t.metadata or {}).get(HASH_KEY, "")
                 or t.external_id not in self.definitions]
        if not stale:
            return
        from cognite.client.data_classes.workflows import WorkflowVersionId

        hashes = {t.external_id: (t.metadata or {}).get(HASH_KEY, "") for t in triggers}
        ids: list = [WorkflowVersionId(xid, AUTOMATION_WORKFLOW_VERSION) for xid in stale]
        for version in self.client.workflows.versions.list(ids, limit=None):
            for task in version.workflow_definition.tasks:
                data = getattr(task.parameters, "data", None)
                if isinstance(data, dict) and isinstance(data.get("automation"), dict):
                    self.definitions[version.workflow_external_id] = (hashes.get(version.workflow_external_id, ""),
                                                                      data["automation"])
                    break
        for xid in stale:  # a workflow version without the definition: remember, do not ask again
            self.definitions.setdefault(xid, (hashes.get(xid, ""), {}))

    def _list_executions(self, workflows: list[str]) -> None:
        if not workflows:
            return
        start = self.newest_created - OVERLAP_MS if self.newest_created else None
        found = self.client.workflows.executions.list(
            workflow_version_ids=[(xid, AUTOMATION_WORKFLOW_VERSION) for xid in workflows],
            created_time_start=start, limit=None)
        for execution in found:
            if execution.id not in self.details or str(self.details[execution.id][0].status) not in ex.ENDED:
                self.executions[execution.id] = execution
            self.newest_created = max(self.newest_created, execution.created_time or 0)

    def _detail(self, execution: WorkflowExecution) -> tuple[Any, tuple, dict | None]:
        kept = self.details.get(execution.id)
        if kept is not None and str(kept[0].status) in ex.ENDED:
            return kept
        detailed = self.client.workflows.executions.retrieve_detailed(execution.id)
        _, tasks, check = ex.parse_detailed(detailed)
        kept = (detailed if detailed is not None else execution, tasks, check)
        self.details[execution.id] = kept
        self.executions[execution.id] = kept[0]
        return kept

    def _row(self, trigger: WorkflowTrigger, env: str, newest: list[WorkflowExecution],
             runs: dict[tuple[str, str, str], dict]) -> dict:
        meta = trigger.metadata or {}
        name = meta.get("mlops_automation") or trigger.external_id[len(automation_workflow_prefix(env)):]
        model = meta.get("mlops_model", "")
        entries = []
        for execution in newest:
            detailed, tasks, check = self._detail(execution)
            entries.append(ex._entry(name, env, detailed, runs.get((name, env, execution.id)), tasks, check))
        entries += ex.skipped(self.client, name, env, SHOWN)
        entries.sort(key=lambda e: e.sort_ms, reverse=True)
        entries = entries[:SHOWN]
        rule = trigger.trigger_rule
        cron = str(getattr(rule, "cron_expression", "") or "")
        zone = getattr(getattr(rule, "timezone", None), "key", None) or "UTC"
        paused = bool(trigger.is_paused)
        definition = self.definitions.get(trigger.external_id, ("", {}))[1]
        spec = definition.get("trigger") or {}
        kind = "metric" if spec.get("type") == "metric" else "schedule"
        return {"name": name, "model": model, "env": env, "workflow": trigger.external_id, "kind": kind,
                "cron": cron, "timezone": zone, "paused": paused,
                "next_run": None if paused else _utc_iso(ex.next_run(cron, zone)),
                "enabled": meta.get("mlops_enabled", "true") == "true", "commit": meta.get("mlops_commit", ""),
                "action": (definition.get("action") or {}).get("type"),
                "metric": _metric(spec, entries) if kind == "metric" else None,
                "executions": [e.as_dict() for e in entries]}


def _automation_runs(newest: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(automation, env, execution id) -> the audit record its notify step wrote (the newest one)."""
    out: dict[tuple[str, str, str], dict] = {}
    for row in newest:
        extra = row.get("extra") or {}
        if row.get("action") == "automation" and extra.get("automation") and extra.get("execution_id"):
            out.setdefault((extra["automation"], row.get("env", ""), extra["execution_id"]), row)
    return out


def _metric(spec: dict, entries: list[ex.ExecutionEntry]) -> dict:
    """The trigger's metric, threshold and direction, and the last value its check read (from the newest check)."""
    last = next((e for e in entries if e.check and e.check.get("value") is not None), None)
    return {"sql": (spec.get("metric") or {}).get("sql_query"), "direction": spec.get("direction"),
            "threshold": spec.get("threshold"), "cooldown_s": spec.get("cooldown_s"),
            "last_value": last.check.get("value") if last and last.check else None,
            "last_checked": last.started if last else None}
