"""The dashboard's token: when `mlops ui` listens beyond loopback, every request must carry it.

Three ways, for a browser and for scripts alike: `?token=T` once (answered with a cookie and a redirect to the same
URL without it, so the token leaves the address bar and the history), then the cookie; or `Authorization: Bearer T`.
Compared in constant time (hmac.compare_digest). redact() keeps the token out of every request log line.
"""
from __future__ import annotations

import hmac
import re
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

COOKIE = "mlops_ui_token"
PARAM = "token"
_IN_QUERY = re.compile(r"([?&]token=)[^&#\s]*")


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(request: Request) -> str | None:
    scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def check(request: Request, token: str | None) -> Response | None:
    """None when the request may go on; else the answer: a redirect that sets the cookie, or 401."""
    if token is None:
        return None
    if PARAM in request.args:
        if not _same(request.args.get(PARAM), token):
            return denied(request, "the token in the URL is not this dashboard's")
        rest = [(k, v) for k, v in request.args.items(multi=True) if k != PARAM]
        response = Response(status=302, headers={"Location": request.path + ("?" + urlencode(rest) if rest else "")})
        # HttpOnly: scripts never read it; Strict: no other site's page can make the browser send it.
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response
    if _same(_bearer(request), token) or _same(request.cookies.get(COOKIE), token):
        return None
    return denied(request, "this dashboard needs its token")


def denied(request: Request, why: str) -> Response:
    text = (f"401 Unauthorized: {why}. Open the URL `mlops ui` printed (it ends in ?token=...), or send "
            "Authorization: Bearer <token> ($MLOPS_UI_TOKEN if it was set).")
    return Response(text + "\n", status=401, mimetype="text/plain",
                    headers={"WWW-Authenticate": 'Bearer realm="mlops ui"'})


def redact(line: str) -> str:
    """A request line with any token query parameter replaced by ***."""
    return _IN_QUERY.sub(r"\1***", line)
