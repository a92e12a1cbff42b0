"""GET /_local/health: lets other processes find a live server and `mlops local-cdf status` describe it."""
from __future__ import annotations

from .app import Ctx, Router

routes = Router()


@routes.get("/_local/health", root=True, auth=False)
def health(ctx: Ctx) -> dict:
    return {"status": "ok", **ctx.services.about,
            "resources": ctx.store.kinds_count()}
