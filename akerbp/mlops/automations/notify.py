"""An automation run's notifications: a Slack incoming webhook or a custom webhook, sent from inside the automation
function after the run.

A notification must never fail or repeat the run, so `send` never raises: whatever happens (a missing secret, a bad
URL, a receiver that errs or never answers) it returns the recorded result. Each attempt is bounded in wall time
(`timeout_s`, connect + answer together, DNS included: the request runs in a worker thread the attempt stops waiting
for), 5xx, 429, timeouts and connection errors are retried after a short doubling backoff, other 4xx are not (the
request itself is wrong). So `send` returns within `worst_case_seconds(timeout_s, retries)`: with the defaults
(10 s, 3 retries, 0.5 s backoff) 4 x 10 s + 0.5 + 1 + 2 s = 43.5 s when every attempt times out; a 429's Retry-After
may lengthen a wait up to MAX_BACKOFF_S (4 s), which the bound counts: 4 x 10 + 3 x 4 = 52 s.
An attempt given up on at its timeout may still reach the receiver later, so a slow receiver can see a notification
twice, as after any retry on a timeout; a fast one sees it once.

Secret values (a webhook URL that came from a secret, a header token) never reach the result, a log line or an
error message: messages are composed here from the exception's kind, never from its text (requests puts the URL's
host and path in it), and every text is masked with those values as well.

Only the standard library, requests and the framework's bundled modules: this runs inside a CDF Function.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

import requests

from akerbp.mlops import conditions
from akerbp.mlops.services import masking
from akerbp.mlops.utils import logger
from akerbp.mlops.vocabulary import secret_env_var

log = logger.get_logger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 4.0  # a wait between attempts, even one a 429's Retry-After asks for, is at most this
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
QUERY_METHODS = ("GET", "HEAD")  # the fields go in the query string (HEAD has no body either)
BODY_PREVIEW = 300  # characters of a failed answer's body kept in the error (Slack says why: "invalid_payload")
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


def worst_case_seconds(timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES) -> float:
    """The longest `send` takes with these settings: every attempt timing out and every wait at its cap (a 429's
    Retry-After may ask for the cap whatever `backoff_s` is, so it does not shorten the bound)."""
    return (max(retries, 0) + 1) * timeout_s + max(retries, 0) * MAX_BACKOFF_S


def _backoff(backoff_s: float, retry: int) -> float:
    return min(backoff_s * 2 ** retry, MAX_BACKOFF_S)


# --- what is sent -----------------------------------------------------------------------------------------------------

def webhook_fields(report: RunReport, data: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A custom webhook's fields: the user's `data`, then JFrog ML's fields (execution_date, model_id, automation,
    status, build_id = the execution id), then model, environment, version, error, deployed (each environment's model_id
    and result) and reason (why nothing was deployed); all strings, every field always present ("" when unknown). The framework's fields win over a `data` key of the same name."""
    fields = {str(k): _text(v) for k, v in (data or {}).items()}
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


def _text(value: object) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


# --- sending ----------------------------------------------------------------------------------------------------------

@dataclass
class _Request:
    """One notification ready to send, and what must be hidden from everything recorded about it."""

    kind: str
    target: str  # what the result and the logs call it: a secret's name or the URL without query and credentials
    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str] | None
    body: dict[str, Any] | None
    hidden: dict[str, str]  # secret values by a label, for masking.mask


@dataclass
class _Answer:
    status_code: int | None = None
    body: str = ""
    retry_after: float | None = None
    failure: str | None = None  # a connection problem or a timeout, already phrased
    retryable: bool = False


class _Refused(Exception):
    """A notification that cannot be sent as configured (no attempt made); the message is safe to record."""


def send(target: Mapping[str, Any] | None, report: RunReport, secrets: Mapping[str, str], *,
         timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
         backoff_s: float = DEFAULT_BACKOFF_S) -> dict[str, Any] | None:
    """Send one notification (`target` is a definition's on_success / on_error dict); None when there is none.

    Returns {"kind", "target", "delivered", "attempts", "status_code", "error", "seconds"}, masked. Never raises.
    """
    if target is None:
        return None
    started = time.monotonic()
    kind = str(target.get("type") or "?") if isinstance(target, Mapping) else "?"
    result: dict[str, Any] = {"kind": kind, "target": "?", "delivered": False, "attempts": 0, "status_code": None,
                              "error": None, "seconds": 0.0}
    hidden: dict[str, str] = {}
    try:
        request = _prepare(target, report, secrets)
        hidden = request.hidden
        result["target"] = request.target
        _deliver(request, result, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
    except _Refused as e:
        result["error"] = str(e)
    except Exception as e:  # never fail the run: record what went wrong, by its kind (the text may hold the URL)
        result["error"] = f"the notification could not be sent: unexpected {type(e).__name__}"
    result["seconds"] = round(time.monotonic() - started, 3)
    masked = masking.mask_value(result, hidden)
    if not masked["delivered"]:
        log.warning(masking.mask(f"notification ({kind}, {masked['target']}) not delivered: {masked['error']}",
                                 hidden))
    return masked


def _prepare(target: Mapping[str, Any], report: RunReport, secrets: Mapping[str, str]) -> _Request:
    """The request a target describes, its secrets resolved; _Refused for a configuration that cannot be sent."""
    if not isinstance(target, Mapping):
        raise _Refused(f"a notification must be a slack or webhook definition, not {type(target).__name__}")
    kind = target.get("type")
    hidden: dict[str, str] = {}
    if kind == "slack":
        url, where = _url(target.get("webhook"), target.get("webhook_secret"), "webhook", secrets, hidden)
        return _Request("slack", where, "POST", url, {}, None, slack_message(report), hidden)
    if kind != "webhook":
        raise _Refused(f"notification type {kind!r} is not known; use 'slack' or 'webhook'")
    url, where = _url(target.get("url"), target.get("url_secret"), "url", secrets, hidden)
    method = str(target.get("http_method") or "GET").upper()
    if method not in METHODS:
        raise _Refused(f"http_method {method!r} of the webhook {where} is not one of {', '.join(METHODS)}")
    headers = {str(k): _text(v) for k, v in (target.get("headers") or {}).items()}
    for header, name in (target.get("header_secrets") or {}).items():
        headers[str(header)] = _secret(name, f"header {header}", secrets, hidden)
    fields = webhook_fields(report, target.get("data"))
    in_query = method in QUERY_METHODS
    return _Request("webhook", where, method, url, headers, fields if in_query else None,
                    None if in_query else fields, hidden)


def _url(url: object, secret_name: object, field_name: str, secrets: Mapping[str, str],
         hidden: dict[str, str]) -> tuple[str, str]:
    """(the URL to call, what to call it in messages): from the secret when one is named, else as written."""
    if secret_name:
        value = _secret(secret_name, field_name, secrets, hidden)
        where = f"from secret {secret_name!r}"
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Refused(f"the {field_name} {where} is not an http(s) URL: give the full URL, "
                           "e.g. https://hooks.slack.com/services/...")
        for piece in (parts.path, parts.query, parts.netloc):  # requests' own messages name host and path apart
            if len(piece) >= masking.MIN_SECRET_LENGTH and piece != "/":
                hidden[f"{field_name} part {len(hidden)}"] = piece
        return value.strip(), where
    if not isinstance(url, str) or not url.strip():
        raise _Refused(f"the notification has no {field_name}: give {field_name}= or {field_name}_secret=")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Refused(f"the {field_name} {url!r} is not an http(s) URL: give the full URL, e.g. https://host/path")
    shown = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
    return url.strip(), shown


def _secret(name: object, use: str, secrets: Mapping[str, str], hidden: dict[str, str]) -> str:
    value = secrets.get(str(name)) if isinstance(name, str) else None
    if not isinstance(value, str) or not value:
        raise _Refused(f"secret {name!r} (the notification's {use}) is not among the automation function's "
                       f"secrets: set {secret_env_var(str(name))} and register the automation again")
    hidden[f"secret {name}"] = value
    logger.register_secret(value)  # and so masked in every framework log line from now on
    return value


def _deliver(request: _Request, result: dict[str, Any], *, timeout_s: float, retries: int, backoff_s: float) -> None:
    """Attempts until one is answered 2xx or is not worth repeating; fills `result`."""
    attempts = max(int(retries), 0) + 1
    for attempt in range(1, attempts + 1):
        answer = _attempt(request, timeout_s)
        result["attempts"], result["status_code"] = attempt, answer.status_code
        if answer.status_code is not None and 200 <= answer.status_code < 300:
            result["delivered"], result["error"] = True, None
            log.info(f"notification ({request.kind}, {request.target}) delivered: {answer.status_code} "
                     f"on attempt {attempt}")
            return
        what = answer.failure or _answered(answer)
        if not answer.retryable:
            refused = answer.status_code is not None and 400 <= answer.status_code < 500
            result["error"] = f"the {_name(request)} {what}" + (
                "; not retried: a 4xx answer means the receiver refuses the request itself (check the URL, the "
                "headers and their secrets)" if refused else "")
            return
        if attempt == attempts:
            result["error"] = f"the {_name(request)} {what} on attempt {attempt} of {attempts}; giving up " \
                              f"(the run is not affected)"
            return
        wait = _backoff(backoff_s, attempt - 1)
        if answer.retry_after is not None:
            wait = min(max(wait, answer.retry_after), MAX_BACKOFF_S)
        log.info(masking.mask(f"notification ({request.kind}, {request.target}) attempt {attempt} of {attempts}: "
                              f"{what}; retrying in {wait:g} s", request.hidden))
        time.sleep(wait)  # a backoff between attempts, not a synchronisation


def _name(request: _Request) -> str:
    return f"{'Slack webhook' if request.kind == 'slack' else 'webhook'} {request.target}"


def _answered(answer: _Answer) -> str:
    body = " ".join(answer.body.split())
    return f"answered {answer.status_code}" + (f": {body[:BODY_PREVIEW]}" if body else "")


def _attempt(request: _Request, timeout_s: float) -> _Answer:
    """One request, in a worker thread waited for at most `timeout_s`: requests' own timeouts bound each socket
    wait, not the whole exchange (nor DNS), and a receiver dribbling bytes would outlast them."""
    box: list[_Answer] = []
    worker = threading.Thread(target=lambda: box.append(_call(request, timeout_s)), daemon=True,
                              name=f"mlops-notify-{request.kind}")
    worker.start()
    worker.join(timeout_s)
    if box:
        return box[0]
    return _Answer(failure=f"did not answer within {timeout_s:g} s", retryable=True)  # the thread ends on its own


def _call(request: _Request, timeout_s: float) -> _Answer:
    try:
        with requests.request(request.method, request.url, headers=request.headers, params=request.params,
                              json=request.body, timeout=(timeout_s, timeout_s), allow_redirects=False,
                              stream=True) as response:
            body = _read_some(response) if not 200 <= response.status_code < 300 else ""
            code = response.status_code
            if 300 <= code < 400:
                return _Answer(code, failure=f"answered {code} (a redirect, not followed): give the final URL")
            return _Answer(code, body, _retry_after(response.headers.get("Retry-After")),
                           retryable=code >= 500 or code == 429)
    except requests.exceptions.Timeout:
        return _Answer(failure=f"did not answer within {timeout_s:g} s", retryable=True)
    except requests.exceptions.ConnectionError as e:
        return _Answer(failure=f"could not be reached ({_reason(e)})", retryable=True)
    except requests.exceptions.RequestException as e:
        return _Answer(failure=f"could not be called ({type(e).__name__})")
    except Exception as e:  # anything else, by its kind only: its text may hold the URL
        return _Answer(failure=f"could not be called (unexpected {type(e).__name__})")


def _read_some(response: requests.Response) -> str:
    try:
        raw = response.raw.read(BODY_PREVIEW * 4, decode_content=True)
        return raw.decode(response.encoding or "utf-8", errors="replace")
    except Exception:
        return ""


def _retry_after(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the capped backoff applies
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _reason(error: BaseException) -> str:
    """The operating system's words for a connection failure ("Connection refused"), found down the exception's
    causes; never its text, which names the host and the path."""
    seen: list[BaseException] = []
    stack: list[Any] = [error]
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        if isinstance(item, OSError) and item.strerror:
            return str(item.strerror)
        stack.extend([item.__cause__, item.__context__, *_nested(item)])
    return type(error).__name__


def _nested(error: BaseException) -> Sequence[BaseException]:
    found = [a for a in error.args if isinstance(a, BaseException)]
    reason = getattr(error, "reason", None)  # urllib3's MaxRetryError keeps the real error here
    return found + ([reason] if isinstance(reason, BaseException) else [])
