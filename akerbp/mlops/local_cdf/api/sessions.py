"""Sessions: what a function call or schedule acts as. A nonce is spent once, by the call or schedule that uses it."""
from __future__ import annotations

from ..http.app import Ctx, Router
from ..http.auth import new_nonce
from ..http.errors import CDFError, bad_request
from ..store import now_ms, public
from ..http.validation import check, identifiers, items, limit

routes = Router()
KIND = "sessions"
SESSION_TTL_MS = 24 * 3600 * 1000
TYPES = {"clientId": "CLIENT_CREDENTIALS", "tokenExchange": "TOKEN_EXCHANGE", "oneshotTokenExchange": "ONESHOT_TOKEN_EXCHANGE"}
STATUSES = ("READY", "ACTIVE", "CANCELLED", "EXPIRED", "REVOKED")


def _view(session: dict) -> dict:
    return {k: v for k, v in public(session).items() if k not in ("nonce", "createdTime", "lastUpdatedTime")}


@routes.post("/sessions")
def create(ctx: Ctx) -> dict:
    created = []
    for i, item in enumerate(items(ctx.body, max_items=1)):
        check(item, {"clientId": str, "clientSecret": str, "tokenExchange": bool, "oneshotTokenExchange": bool},
              f"items[{i}]")
        kinds = [k for k in TYPES if item.get(k)]
        if len(kinds) != 1:
            raise bad_request(f"items[{i}] must have exactly one of clientId+clientSecret, tokenExchange or "
                              "oneshotTokenExchange")
        if kinds[0] == "clientId" and not ctx.services.auth.valid_client(item["clientId"], item.get("clientSecret", "")):
            raise CDFError(401, f"Could not create a session for client '{item['clientId']}': invalid credentials")
        t = now_ms()
        body = {"type": TYPES[kinds[0]], "status": "READY", "nonce": new_nonce(), "creationTime": t,
                "expirationTime": t + SESSION_TTL_MS}
        if kinds[0] == "clientId":
            body["clientId"] = item["clientId"]
        with ctx.store.write() as db:
            created.append(ctx.store.insert(db, ctx.project, KIND, body))
    # As CDF: clientId only for a client-credentials session.
    return {"items": [{k: s[k] for k in ("id", "type", "status", "nonce", "clientId") if k in s} for s in created]}


@routes.get("/sessions")
def list_sessions(ctx: Ctx) -> dict:
    status = ctx.args.get("status")
    if status is not None and status.upper() not in STATUSES:
        raise bad_request(f"Query parameter 'status' must be one of {', '.join(STATUSES)}")
    where, params = [], []
    if status:
        where.append("json_extract(body, '$.status') = ?")
        params.append(status.upper())
    rows, cursor = ctx.store.query(ctx.project, KIND, where, params, limit({"limit": int(ctx.args.get("limit", 25))}),
                                   ctx.args.get("cursor"))
    return {"items": [_view(s) for s in rows], "nextCursor": cursor}


@routes.post("/sessions/byids")
def byids(ctx: Ctx) -> dict:
    found = ctx.store.resolve(ctx.project, KIND, identifiers(ctx.body), what="Sessions")
    return {"items": [_view(s) for s in found]}


@routes.post("/sessions/revoke")
def revoke(ctx: Ctx) -> dict:
    with ctx.store.write() as db:
        found = ctx.store.resolve(ctx.project, KIND, identifiers(ctx.body), db=db, what="Sessions")
        for session in found:
            session["status"] = "REVOKED"
            ctx.store.save(db, ctx.project, KIND, session)
    return {"items": [_view(s) for s in found]}


def consume_nonce(ctx: Ctx, nonce: str | None) -> dict:
    """The session behind a nonce, marked ACTIVE; a nonce works once (CDF answers 4xx to a reused one)."""
    if not nonce or not isinstance(nonce, str):
        raise bad_request("Field 'nonce' is required: create a session (POST /sessions) and pass its nonce")
    with ctx.store.write() as db:
        ids = ctx.store.ids_where(db, ctx.project, KIND, "nonce", nonce)
        session = ctx.store.get(ctx.project, KIND, ids[0], db) if ids else None
        if session is None:
            raise bad_request("Invalid nonce: no session has it")
        if session["status"] != "READY":
            raise bad_request(f"Invalid nonce: the session is {session['status']} (a nonce can be used once)")
        session["status"] = "ACTIVE"
        ctx.store.save(db, ctx.project, KIND, session)
    return session

