"""Bearer tokens, the OAuth client-credentials token endpoint and token/inspect.

Open mode (default) accepts any non-empty bearer token and any client id/secret, like a laptop sandbox should.
Restricted mode (`clients={"id": "secret"}`) accepts only those credentials and only tokens this server issued.
Session tokens (given to function calls) are checked in both modes, so a revoked session stops working.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as pysecrets
import time
from urllib.parse import unquote_plus

from werkzeug.wrappers import Response

from .app import Ctx, Router, json_response
from .errors import CDFError
from ..store import Store

routes = Router()
TOKEN_TTL_S = 3600
SESSION_PREFIX = "lcdfsession."
ISSUED_PREFIX = "lcdf."


class Auth:
    def __init__(self, store: Store, clients: dict[str, str] | None = None) -> None:
        self.store = store
        self.clients = clients

    @property
    def restricted(self) -> bool:
        return bool(self.clients)

    def valid_client(self, client_id: str, client_secret: str) -> bool:
        if not client_id or not client_secret:
            return False
        if not self.clients:  # not restricted
            return True
        expected = self.clients.get(client_id)
        return expected is not None and hmac.compare_digest(expected, client_secret)

    def _sign(self, text: str) -> str:
        return hmac.new(self.store.secret.encode(), text.encode(), hashlib.sha256).hexdigest()[:32]

    def issue_token(self, subject: str) -> str:
        expires = int(time.time()) + TOKEN_TTL_S
        payload = f"{subject}.{expires}"
        return f"{ISSUED_PREFIX}{payload}.{self._sign(payload)}"

    def session_token(self, project: str, session_id: int) -> str:
        payload = f"{project}.{session_id}"
        return f"{SESSION_PREFIX}{payload}.{self._sign(payload)}"

    def check(self, header: str, project: str) -> str:
        """Returns the token, or raises 401 in CDF's envelope."""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise CDFError(401, "Unauthorized: a bearer token is required (Authorization: Bearer <token>)")
        if token.startswith(SESSION_PREFIX):
            self._check_session_token(token, project)
        elif self.restricted and not self._valid_issued(token):
            raise CDFError(401, "Unauthorized: invalid or expired token")
        return token

    def _valid_issued(self, token: str) -> bool:
        if not token.startswith(ISSUED_PREFIX):
            return False
        payload, _, signature = token[len(ISSUED_PREFIX) :].rpartition(".")
        if not hmac.compare_digest(self._sign(payload), signature):
            return False
        try:
            return int(payload.rpartition(".")[2]) > time.time()
        except ValueError:
            return False

    def _check_session_token(self, token: str, project: str) -> None:
        payload, _, signature = token[len(SESSION_PREFIX) :].rpartition(".")
        token_project, _, session_id = payload.rpartition(".")
        if not hmac.compare_digest(self._sign(payload), signature) or token_project != project:
            raise CDFError(401, "Unauthorized: invalid session token")
        session = self.store.get(project, "sessions", int(session_id))
        if session is None or session["status"] not in ("READY", "ACTIVE"):
            raise CDFError(401, "Unauthorized: the session behind this token was revoked or has expired")


@routes.post("/oauth2/token", root=True, auth=False)
def token(ctx: Ctx) -> Response:
    form = ctx.request.form
    if form.get("grant_type") != "client_credentials":
        return _oauth_error("unsupported_grant_type", "Only grant_type=client_credentials is supported", 400)
    try:
        client_id, client_secret, basic = _client_credentials(ctx.request)
    except ValueError as e:
        return _oauth_error("invalid_request", str(e), 400)
    if not ctx.services.auth.valid_client(client_id, client_secret):
        # RFC 6749 5.2: a client that authenticated with HTTP Basic is told which scheme to use again.
        headers = {"WWW-Authenticate": 'Basic realm="local-cdf"'} if basic else None
        return _oauth_error("invalid_client", "Unknown client or wrong secret", 401, headers)
    return json_response(
        {"access_token": ctx.services.auth.issue_token(client_id), "token_type": "Bearer", "expires_in": TOKEN_TTL_S}
    )


def _client_credentials(request) -> tuple[str, str, bool]:
    """(client_id, client_secret, sent_with_basic): from the form body or from HTTP Basic (RFC 6749 2.3.1, where
    both parts are form-urlencoded before base64), as cognite-sdk 7.x and most OAuth libraries send them."""
    form = request.form
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return form.get("client_id", ""), form.get("client_secret", ""), False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("The Authorization header's Basic credentials are not valid base64 of 'id:secret'") from None
    raw_id, sep, raw_secret = decoded.partition(":")
    if not sep:
        raise ValueError("The Authorization header's Basic credentials must be 'client_id:client_secret'")
    client_id, client_secret = unquote_plus(raw_id), unquote_plus(raw_secret)
    if form.get("client_secret"):
        raise ValueError("Send the client secret either with HTTP Basic or in the form body, not both")
    if form.get("client_id") and form["client_id"] != client_id:
        raise ValueError("The form's client_id differs from the one in the Authorization header")
    return client_id, client_secret, True


def _oauth_error(error: str, description: str, status: int, headers: dict | None = None) -> Response:
    return json_response({"error": error, "error_description": description}, status, headers)


@routes.get("/api/v1/token/inspect", root=True)
def inspect(ctx: Ctx) -> dict:
    projects = ctx.services.projects.names()
    return {
        "subject": "local-cdf-user",
        "projects": [{"projectUrlName": p, "groups": []} for p in projects],
        "capabilities": [
            {acl: {"actions": actions, "scope": {"all": {}}}, "projectScope": {"allProjects": {}}}
            for acl, actions in (("filesAcl", ["READ", "WRITE"]), ("functionsAcl", ["READ", "WRITE"]),
                                 ("sessionsAcl", ["LIST", "CREATE", "DELETE"]), ("eventsAcl", ["READ", "WRITE"]),
                                 ("timeSeriesAcl", ["READ", "WRITE"]), ("datasetsAcl", ["READ", "WRITE"]))
        ],
    }


def new_nonce() -> str:
    return pysecrets.token_urlsafe(24)
