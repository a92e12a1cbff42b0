"""What an automation run's notification says: the RunReport the notify step builds, the Slack incoming-webhook
payload and a custom webhook's fields made from it.

Pure functions of the report (no I/O, no secrets): notify.py sends what they build. Slack's mrkdwn is escaped and
every text is cut to Slack's limits here, so a long error never makes Slack refuse the message.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from akerbp.mlops import conditions

# Slack's limits: a section's text 3000 characters, a field 2000, a header 150, at most 10 fields and 50 blocks.
SLACK_TEXT_LIMIT, SLACK_FIELD_LIMIT, SLACK_HEADER_LIMIT = 3000, 2000, 150


@dataclass
class RunReport:
    """What a notification tells about one execution of an automation (built by the notify step)."""

    execution_id: str
    execution_time: str  # ISO 8601, UTC
    automation: str
    model: str
    env: str
    status: str  # "success" | "failed"
    version: int | None = None
    model_id: str | None = None  # the trained version's, {model}/{env}/{N}
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # conditions.Verdict.as_dict() each
    deployed: list[dict[str, Any]] = field(default_factory=list)  # {"env", "model_id", "result"} each
    not_deployed_reason: str | None = None
    error: str | None = None
    commit: str | None = None
    check: dict[str, Any] | None = None  # a metric-based trigger's verdict (conditions.TriggerVerdict.as_dict())
    batch: dict[str, Any] | None = None  # a BatchExecution's result summary (files, rows_in, rows_out, bad_rows, ...)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def webhook_fields(report: RunReport, data: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A custom webhook's fields: the user's `data`, then JFrog ML's fields (execution_date, model_id, automation,
    status, build_id = the execution id), then model, environment, version, error, deployed (each environment's model_id
    and result) and reason (why nothing was deployed); all strings, every field always present ("" when unknown).
    The framework's fields win over a `data` key of the same name."""
    fields = {str(k): as_text(v) for k, v in (data or {}).items()}
    fields.update({
        "execution_date": report.execution_time,
        "model_id": report.model_id or "",
        "automation": report.automation,
        "status": report.status,
        "build_id": report.execution_id,
        "model": report.model,
        "environment": report.env,
        "version": "" if report.version is None else str(report.version),
        "error": report.error or "",
        "deployed": ", ".join(f"{d.get('env')}: {d.get('model_id') or '?'} ({d.get('result')})"
                              for d in report.deployed or []),
        "reason": report.not_deployed_reason or "",
        "trigger": _trigger_text(report.check),
        "metric_value": _field_number((report.check or {}).get("value")),
        "metric_threshold": _field_number((report.check or {}).get("threshold")),
        "thresholds": "; ".join(f"{v.get('metric')}: {_field_number(v.get('threshold'))}" for v in report.verdicts
                                if isinstance(v, Mapping) and v.get("threshold") is not None),
        "batch": _batch_text(report.batch),
    })
    return fields


def _field_number(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _trigger_text(check: Mapping[str, Any] | None) -> str:
    """'metric 0.71 > 0.5: triggered', or "" for a scheduled run."""
    return f"metric {check.get('detail')}" if check else ""


def _batch_text(batch: Mapping[str, Any] | None) -> str:
    if not batch:
        return ""
    text = f"{batch.get('files')} file(s), {batch.get('rows_in')} rows in, {batch.get('rows_out')} rows out, " \
           f"{batch.get('bad_rows')} bad rows"
    outputs = batch.get("outputs") or []
    return text + (f"; output: {', '.join(map(str, outputs))}" if outputs else "")


def slack_message(report: RunReport) -> dict[str, Any]:
    """The Slack incoming-webhook payload: a one-line `text` (notifications and clients without blocks show it) and
    blocks with the execution time, model, automation, environment, status, trained version, every condition's value
    against its threshold, what was deployed where (or why not), the error of a failed run and the execution id."""
    trained = "none" if report.version is None else f"{report.version} ({report.model_id or '?'})"
    facts = [("Execution time", report.execution_time), ("Model", report.model), ("Automation", report.automation),
             ("Environment", report.env), ("Status", report.status), ("Trained version", trained)]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(_title(report), SLACK_HEADER_LIMIT)}},
        {"type": "section", "fields": [_mrkdwn(f"*{name}*\n{_escape(value)}", SLACK_FIELD_LIMIT)
                                       for name, value in facts]},
    ]
    if report.check:
        blocks.append(_section(f"*Trigger*\n{_escape(_trigger_text(report.check))}\n"
                               f"```{_cut(_escape(report.check.get('metric_sql') or ''), SLACK_TEXT_LIMIT - 200)}```"))
    if report.batch is not None:
        blocks.append(_section(f"*Batch*\n{_escape(_batch_text(report.batch))}"))
    else:
        blocks += [_section("*Conditions*\n" + "\n".join(_verdict_line(v) for v in report.verdicts)
                            if report.verdicts else "*Conditions*\nnone: every successful training deploys"),
                   _section(_deployment_text(report))]
    if report.error:
        blocks.append(_section(f"*Error*\n```{_cut(_escape(report.error), SLACK_TEXT_LIMIT - 20)}```"))
    context = f"Execution {_escape(report.execution_id)}"
    if report.commit:
        context += f" · commit {_escape(report.commit[:12])}"
    blocks.append({"type": "context", "elements": [_mrkdwn(context, SLACK_FIELD_LIMIT)]})
    return {"text": _cut(_escape(_summary(report)), SLACK_TEXT_LIMIT), "blocks": blocks}


def _title(report: RunReport) -> str:
    return f"{'✅' if report.status == 'success' else '❌'} {report.automation}: {report.status}"


def _summary(report: RunReport) -> str:
    where = f"{report.model} in {report.env}"
    if report.status != "success":
        return f"Automation {report.automation} ({where}) failed: {report.error or 'no error given'} " \
               f"(execution {report.execution_id})"
    if report.batch is not None:
        return f"Automation {report.automation} ({where}) succeeded{_because(report)}: scored " \
               f"{_batch_text(report.batch)} (execution {report.execution_id})"
    trained = f"version {report.version}" if report.version is not None else "a new version"
    if report.deployed:
        went = ", ".join(f"{d.get('env')} ({d.get('result')})" for d in report.deployed)
        return f"Automation {report.automation} ({where}) succeeded{_because(report)}: {trained} trained, deployed " \
               f"to {went} (execution {report.execution_id})"
    return f"Automation {report.automation} ({where}) succeeded{_because(report)}: {trained} trained, not " \
           f"deployed: {report.not_deployed_reason or 'no reason given'} (execution {report.execution_id})"


def _because(report: RunReport) -> str:
    return f" (triggered by its metric: {_field_number(report.check.get('value'))})" if report.check else ""


def _deployment_text(report: RunReport) -> str:
    if report.deployed:
        lines = [f"• {_escape(d.get('env'))}: {_escape(d.get('model_id') or '?')} ({_escape(d.get('result'))})"
                 for d in report.deployed]
        return "*Deployed*\n" + "\n".join(lines)
    if report.status == "success":
        return f"*Not deployed*\n{_escape(report.not_deployed_reason or 'no reason given')}"
    return "*Not deployed*\nthe run failed before deploying" if not report.not_deployed_reason \
        else f"*Not deployed*\n{_escape(report.not_deployed_reason)}"


def _verdict_line(verdict: Mapping[str, Any]) -> str:
    """'✅ r2 (build metric): 0.91, needs > 0.8: met', with the champion's value and the detail for a comparison."""
    met = bool(verdict.get("met"))
    symbol = _escape(_symbol(verdict.get("direction")))
    kind = str(verdict.get("kind") or "condition").replace("_", " ")
    value, bound = _number(verdict.get("value")), _number(verdict.get("threshold"))
    line = f"{'✅' if met else '❌'} *{_escape(verdict.get('metric'))}* ({kind}"
    line += f", {_escape(verdict.get('env'))})" if verdict.get("env") else ")"
    line += f": {value}, needs {symbol} {bound}"
    if verdict.get("threshold_sql"):
        line += f" (from `{_escape(conditions.sql_text(str(verdict['threshold_sql'])))}`)"
    line += f": {'met' if met else 'not met'}"
    if verdict.get("kind") == "deployed_model_metric" or verdict.get("value") is None:
        line += f" ({_escape(verdict.get('detail') or '')})" if verdict.get("detail") else ""
    return "• " + line


def _symbol(direction: object) -> str:
    try:
        return conditions.direction(direction).symbol
    except ValueError:
        return str(direction)


def _number(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:g}"
    return "none" if value is None else _escape(value)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text, SLACK_TEXT_LIMIT)}


def _mrkdwn(text: str, limit: int) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _escape(value: object) -> str:
    """Slack's mrkdwn escaping: &, < and > are control characters there."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def as_text(value: object) -> str:
    """A field's or a header's value as sent: "" for None, a string as it is, anything else by str()."""
    return "" if value is None else value if isinstance(value, str) else str(value)
