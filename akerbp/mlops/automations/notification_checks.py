"""Validating an automation's on_success / on_error notification: a SlackNotification or a CustomWebhook, each
with its URL given once, as a URL or as a secret's name (so it need not appear in CDF or logs).
"""
from __future__ import annotations

from typing import Any

from akerbp.mlops.automations.checker import Checker, Loc
from akerbp.mlops.conditions import short

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


def _slack(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "SlackNotification", ("webhook", "webhook_secret"))
    if f is None:
        return None
    webhook, secret = f.get("webhook") or None, f.get("webhook_secret")
    if (webhook is None) == (secret is None):
        c.bad(loc + ("webhook",), "give exactly one of webhook (a URL) and webhook_secret (a secret's name, so the URL "
                                  "never appears in CDF or logs)")
    return {"type": "slack", "webhook": c.url(webhook, loc + ("webhook",)),
            "webhook_secret": c.secret(secret, loc + ("webhook_secret",))}


def _webhook(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "CustomWebhook", ("url", "url_secret", "http_method", "headers", "header_secrets", "data"))
    if f is None:
        return None
    url, secret = f.get("url") or None, f.get("url_secret")
    if (url is None) == (secret is None):
        c.bad(loc + ("url",), "give exactly one of url and url_secret (a secret's name, so the URL never appears in "
                              "CDF or logs)")
    method = f.get("http_method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        c.bad(loc + ("http_method",), f"{short(method)} is not an HTTP method; use one of {', '.join(HTTP_METHODS)}")
        method = None
    headers = c.string_map(f.get("headers"), loc + ("headers",), "headers")
    header_secrets = c.string_map(f.get("header_secrets"), loc + ("header_secrets",), "header_secrets")
    for header, name in header_secrets.items():
        c.secret(name, loc + ("header_secrets", header))
        if header.lower() in {h.lower() for h in headers}:
            c.bad(loc + ("header_secrets", header), f"header {header!r} is in headers too: give it once")
    return {"type": "webhook", "url": c.url(url, loc + ("url",)), "url_secret": c.secret(secret, loc + ("url_secret",)),
            "http_method": method.upper() if method else None, "headers": headers, "header_secrets": header_secrets,
            "data": c.string_map(f.get("data"), loc + ("data",), "data")}


def notification(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    if value is None:
        return None
    return c.kind(value, loc, "notification", {"slack": lambda v, at: _slack(c, v, at),
                                                "webhook": lambda v, at: _webhook(c, v, at)})

