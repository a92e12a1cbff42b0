"""Sending one prepared notification request: each attempt bounded in wall time, failures phrased safely, retried.

Each attempt is bounded in wall time (`timeout_s`, connect + answer together, DNS included: the request runs in a
worker thread the attempt stops waiting for), 5xx, 429, timeouts and connection errors are retried after a short
doubling backoff, other 4xx are not (the request itself is wrong). So a send returns within
`worst_case_seconds(timeout_s, retries)`: with the defaults (10 s, 3 retries, 0.5 s backoff) 4 x 10 s + 0.5 + 1 + 2 s
= 43.5 s when every attempt times out; a 429's Retry-After may lengthen a wait up to MAX_BACKOFF_S (4 s), which the
bound counts: 4 x 10 + 3 x 4 = 52 s.
An attempt given up on at its timeout may still reach the receiver later, so a slow receiver can see a notification
twice, as after any retry on a timeout; a fast one sees it once.

Messages are composed here from the exception's kind, never from its text (requests puts the URL's host and path in
it), so a secret URL cannot leak through them; notify.py masks the recorded result with the secret values as well.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import requests

from akerbp.mlops.services import masking
from akerbp.mlops.utils import logger

log = logger.get_logger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5
MAX_BACKOFF_S = 4.0  # a wait between attempts, even one a 429's Retry-After asks for, is at most this
BODY_PREVIEW = 300  # characters of a failed answer's body kept in the error (Slack says why: "invalid_payload")


def worst_case_seconds(timeout_s: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES) -> float:
    """The longest notify.send takes with these settings: every attempt timing out and every wait at its cap (a 429's
    Retry-After may ask for the cap whatever `backoff_s` is, so it does not shorten the bound)."""
    return (max(retries, 0) + 1) * timeout_s + max(retries, 0) * MAX_BACKOFF_S


def _backoff(backoff_s: float, retry: int) -> float:
    return min(backoff_s * 2 ** retry, MAX_BACKOFF_S)


@dataclass
class Request:
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


def deliver(request: Request, result: dict[str, Any], *, timeout_s: float, retries: int, backoff_s: float) -> None:
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


def _name(request: Request) -> str:
    return f"{'Slack webhook' if request.kind == 'slack' else 'webhook'} {request.target}"


def _answered(answer: _Answer) -> str:
    body = " ".join(answer.body.split())
    return f"answered {answer.status_code}" + (f": {body[:BODY_PREVIEW]}" if body else "")


def _attempt(request: Request, timeout_s: float) -> _Answer:
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


def _call(request: Request, timeout_s: float) -> _Answer:
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
