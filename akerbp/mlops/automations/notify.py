"""An automation run's notifications: a Slack incoming webhook or a custom webhook, sent from inside the automation
function after the run.

A notification must never fail or repeat the run, so `send` never raises: whatever happens (a missing secret, a bad
URL, a receiver that errs or never answers) it returns the recorded result. Here a definition's on_success /
on_error target becomes one request, its secrets resolved; messages.py says what it carries, webhook_delivery.py
sends it (each attempt bounded, retried: `send` returns within webhook_delivery.worst_case_seconds, 52 s with the
defaults).

Secret values (a webhook URL that came from a secret, a header token) never reach the result, a log line or an
error message: messages are composed from the exception's kind, never from its text (requests puts the URL's
host and path in it), and every text is masked with those values as well.

Only the standard library, requests and the framework's bundled modules: this runs inside a CDF Function.
"""
from __future__ import annotations

import time
from typing import Any, Mapping
from urllib.parse import urlsplit

from akerbp.mlops.automations.messages import RunReport, as_text, slack_message, webhook_fields
from akerbp.mlops.automations.webhook_delivery import (
    DEFAULT_BACKOFF_S,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_S,
    Request,
    deliver,
)
from akerbp.mlops.services import masking
from akerbp.mlops.utils import logger
from akerbp.mlops.vocabulary import secret_env_var

log = logger.get_logger(__name__)

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
QUERY_METHODS = ("GET", "HEAD")  # the fields go in the query string (HEAD has no body either)


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
        deliver(request, result, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s)
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


def _prepare(target: Mapping[str, Any], report: RunReport, secrets: Mapping[str, str]) -> Request:
    """The request a target describes, its secrets resolved; _Refused for a configuration that cannot be sent."""
    if not isinstance(target, Mapping):
        raise _Refused(f"a notification must be a slack or webhook definition, not {type(target).__name__}")
    kind = target.get("type")
    hidden: dict[str, str] = {}
    if kind == "slack":
        url, where = _url(target.get("webhook"), target.get("webhook_secret"), "webhook", secrets, hidden)
        return Request("slack", where, "POST", url, {}, None, slack_message(report), hidden)
    if kind != "webhook":
        raise _Refused(f"notification type {kind!r} is not known; use 'slack' or 'webhook'")
    url, where = _url(target.get("url"), target.get("url_secret"), "url", secrets, hidden)
    method = str(target.get("http_method") or "GET").upper()
    if method not in METHODS:
        raise _Refused(f"http_method {method!r} of the webhook {where} is not one of {', '.join(METHODS)}")
    headers = {str(k): as_text(v) for k, v in (target.get("headers") or {}).items()}
    for header, name in (target.get("header_secrets") or {}).items():
        headers[str(header)] = _secret(name, f"header {header}", secrets, hidden)
    fields = webhook_fields(report, target.get("data"))
    in_query = method in QUERY_METHODS
    return Request("webhook", where, method, url, headers, fields if in_query else None,
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

