"""The notify step, last of every run: on_success (the run succeeded, deployed or not) or on_error (it failed), the
audit event, and then, when the run failed, an exception naming the failed step, so the task and the execution end
FAILED.

It reads every step's output (null for one that crashed or timed out: the execution's record says why), builds the
RunReport that notify.py sends, and writes the one audit event per run that mlops automations executions, the
dashboard and a metric trigger's cooldown read back.
"""
from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.automations.upstream import STEPS, first_failure, output, running_execution
from akerbp.mlops.services import masking
from akerbp.mlops.vocabulary import AUTOMATION

if TYPE_CHECKING:
    from cognite.client import CogniteClient


class AutomationFailed(Exception):
    """The run failed: raised by the notify step (after notifying and auditing), so the execution ends FAILED."""


def notify(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
           started: float) -> dict[str, Any]:
    """Notify, audit, and raise AutomationFailed when the run failed."""
    from akerbp.mlops import audit
    from akerbp.mlops.automations import notify as notifications
    from akerbp.mlops.automations.messages import RunReport

    trained, gated, deployed = (output(upstream, name) for name in ("train", "gate", "deploy"))
    checked, batched = output(upstream, "check"), output(upstream, "batch")
    first = checked or trained or batched  # the first step that ran knows the execution and when it began
    failed_step, error = first_failure(upstream, run_steps(definition))  # a failed check: the first in order
    execution_id = first.get("execution_id")
    trigger = first.get("trigger") or "unknown"
    if execution_id is None:
        execution_id, trigger = running_execution(client, definition)
    if failed_step and not isinstance(upstream.get(failed_step), dict) and execution_id:
        error = _task_reason(client, execution_id, failed_step) or error
    went = [d for d in deployed.get("deployed") or [] if d.get("result") in ("deployed", "verified", "unchanged")]
    reason = deployed.get("not_deployed_reason") or (gated.get("reason") if gated.get("ok") else None)
    status = "failed" if failed_step else "success"
    is_batch = (definition.get("action") or {}).get("type") == "batch"
    outcome = "failed" if failed_step else ("success" if went or is_batch else "not_deployed")
    check_verdict = checked.get("verdict") if isinstance(checked.get("verdict"), dict) else None
    batch_result = batched.get("result") if isinstance(batched.get("result"), dict) else None
    report = RunReport(
        execution_id=str(execution_id or ""), execution_time=_iso(time.time()), automation=definition["name"],
        model=definition["model"], env=definition["env"], status=status, version=trained.get("version"),
        model_id=trained.get("model_id"), verdicts=list(gated.get("verdicts") or []),
        deployed=[{"env": d["env"], "model_id": d.get("model_id"), "result": d.get("result")}
                  for d in deployed.get("deployed") or []],
        not_deployed_reason=reason if not failed_step and not is_batch else None,
        error=f"{failed_step}: {error}" if failed_step else None, commit=trained.get("commit") or None,
        check=check_verdict, batch=_batch_summary(batch_result) if batch_result else None)
    t = time.monotonic()
    target = definition.get("on_error") if failed_step else definition.get("on_success")
    sent = notifications.send(target, report, secrets)
    phases: dict[str, float] = {"send": round(time.monotonic() - t, 3)}
    notified = [sent] if sent is not None else []
    t = time.monotonic()
    all_phases = {name: (upstream.get(name) or {}).get("phases") for name in STEPS[:-1]
                  if isinstance(upstream.get(name), dict)}
    extra: dict[str, Any] = {}
    if check_verdict is not None:
        extra["check"] = check_verdict  # metric_check.last_triggered_ms reads `fired` back: the cooldown
    if report.batch is not None:
        extra["batch"] = report.batch
    audit.write(client, audit.AuditEntry(
        AUTOMATION, definition["model"], definition["env"], outcome,
        float(first.get("started_at") or time.time() - (time.monotonic() - started)),
        service=None, version=trained.get("version"), model_id=trained.get("model_id"),
        message=report.error or reason or "", dataset=None,
        extra={"automation": definition["name"], "execution_id": execution_id or "", "trigger": trigger,
               "metrics": (trained.get("metrics") or {}).get("metrics") or {}, "verdicts": report.verdicts,
               "deployed": report.deployed, "notifications": notified, "phases": all_phases,
               "commit": trained.get("commit") or "", **extra}))
    phases["audit"] = round(time.monotonic() - t, 3)
    phases["notify"] = round(time.monotonic() - started, 3)
    out = masking.mask_value({"ok": not failed_step, "step": "notify", "status": status, "outcome": outcome,
                              "execution_id": execution_id, "notifications": notified, "phases": phases}, secrets)
    if failed_step:
        raise AutomationFailed(masking.mask_value(f"automation '{definition['name']}' failed in its {failed_step} "
                                                  f"step: {error}", secrets))
    return out


def run_steps(definition: Mapping[str, Any]) -> tuple[str, ...]:
    """The steps before notify of a run, in order (a metric-based automation's check first)."""
    from akerbp.mlops.automations.tasks import action_steps, is_metric_triggered

    return (("check",) if is_metric_triggered(definition) else ()) + action_steps(definition)[:-1]


def _batch_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a notification and the audit event keep of a BatchResult: counts, output files (at most 20), the first
    bad rows (at most 5)."""
    outputs = list(result.get("outputs") or [])
    return {"files": len(result.get("files") or []), "rows_in": result.get("rows_in"),
            "rows_out": result.get("rows_out"), "bad_rows": result.get("bad_row_count", len(result.get("bad_rows") or [])),
            "first_bad_rows": list(result.get("bad_rows") or [])[:5], "outputs": outputs[:20],
            "seconds": result.get("seconds")}


def _task_reason(client: CogniteClient, execution_id: str, task: str) -> str | None:
    """Why a task that answered nothing ended (the execution's record of it)."""
    try:
        detailed = client.workflows.executions.retrieve_detailed(execution_id)
    except Exception:  # noqa: BLE001 - the reason is a nicety; the failure is reported anyway
        return None
    for executed in (detailed.executed_tasks if detailed is not None else []):
        if executed.external_id == task and executed.reason_for_incompletion:
            return f"the {task} task ended {executed.status}: {executed.reason_for_incompletion}"
    return None


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")
