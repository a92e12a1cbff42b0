"""Fault injection, so tests can prove that retries work: the next N requests matching a rule fail or wait.

Rules come from `POST /_local/faults {"rules": [...]}` or the MLOPS_LOCAL_CDF_FAULTS environment variable (a JSON
list) at start. A rule: {"path": "/files/byids" (substring of the request path, or "re:<regex>"), "method": "POST"
(optional), "status": 503 (optional), "count": 3 (default 1), "delay": 0.5 (seconds, optional), "after": true
(optional)}. A rule with a delay and no status delays the request and then serves it. "after": the request is served
and then answered with the status anyway: the client's answer is lost although CDF acted (what makes retrying a create
unsafe).
The /_local/faults endpoints need the same bearer token as the API (in restricted mode one this server issued):
whoever can inject faults can make every client fail.
"""
from __future__ import annotations

import json
import re
import threading
import time

from werkzeug.wrappers import Response

from .app import Ctx, Router
from .errors import bad_request
from .validation import NUMBER, check

routes = Router()
RULE_FIELDS = {"path": str, "method": str, "status": int, "count": int, "delay": NUMBER, "after": bool}


class FaultResponse(Response):
    """An injected failure; serve_first: the app serves the request, then answers this instead."""

    serve_first: bool = False


class Faults:
    def __init__(self) -> None:
        self._rules: list[dict] = []
        self._lock = threading.Lock()

    def add(self, rules: object) -> None:
        if not isinstance(rules, list):
            raise bad_request("Field 'rules' must be an array")
        for i, rule in enumerate(rules):
            check(rule, RULE_FIELDS, f"rules[{i}]", required=("path",))
            if rule.get("status") is None and rule.get("delay") is None:
                raise bad_request(f"rules[{i}] needs a 'status', a 'delay' or both")
        with self._lock:
            self._rules += [{"count": 1, **rule, "hits": 0} for rule in rules]

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self._rules]

    def take(self, method: str, path: str) -> FaultResponse | None:
        if path.startswith("/_local/faults"):
            return None
        with self._lock:
            rule = next((r for r in self._rules if r["count"] > 0 and _matches(r, method, path)), None)
            if rule is None:
                return None
            rule["count"] -= 1
            rule["hits"] += 1
        if rule.get("delay"):
            time.sleep(rule["delay"])  # injected latency is the point of the rule, not synchronisation
        if rule.get("status") is None:
            return None
        body = {"error": {"code": rule["status"], "message": f"Injected fault ({rule['status']}) by the local CDF"}}
        response = FaultResponse(json.dumps(body), status=rule["status"], mimetype="application/json")
        response.serve_first = bool(rule.get("after"))  # the app serves the request, then answers this
        return response


def _matches(rule: dict, method: str, path: str) -> bool:
    if rule.get("method") and rule["method"].upper() != method:
        return False
    pattern = rule["path"]
    if pattern.startswith("re:"):
        return re.search(pattern[3:], path) is not None
    return pattern in path


@routes.post("/_local/faults", root=True)
def add_faults(ctx: Ctx) -> dict:
    ctx.services.faults.add(ctx.body.get("rules"))
    return {"rules": ctx.services.faults.list()}


@routes.get("/_local/faults", root=True)
def list_faults(ctx: Ctx) -> dict:
    return {"rules": ctx.services.faults.list()}


@routes.delete("/_local/faults", root=True)
def clear_faults(ctx: Ctx) -> dict:
    ctx.services.faults.clear()
    return {"rules": []}
