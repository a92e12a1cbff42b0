"""Which projects the local CDF knows, for token/inspect and GET /api/v1/projects[/{project}].

Any project name works in the local CDF, but clients such as cognite-toolkit first ask token/inspect whether their
project is among the token's before they make any other request, and that request names no project. So a project
is known once it holds data, once any authenticated request used it, or when declared up front (LocalCDF(projects=)
or MLOPS_LOCAL_CDF_PROJECTS=a,b for a server that a fresh client meets first).
"""
from __future__ import annotations

import os
import threading

from ..http.app import Ctx, Router
from ..store import Store, now_ms

routes = Router()
ENV_VAR = "MLOPS_LOCAL_CDF_PROJECTS"


def declared_from_env() -> list[str]:
    return [p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip()]


class Projects:
    def __init__(self, store: Store, declared: list[str] | None = None) -> None:
        self.store = store
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        for project in declared or []:
            self.touch(project)

    def touch(self, project: str) -> None:
        """Remember a project (once per process: a request must not pay for a write each time)."""
        with self._lock:
            if project in self._seen:
                return
            self._seen.add(project)
        self.store.remember_project(project, now_ms())

    def names(self) -> list[str]:
        return sorted(set(self.store.remembered_projects()) | set(self.store.projects()))


def _project(name: str) -> dict:
    """What CDF answers for a project, with what cognite-toolkit reads of it (organization, user profiles)."""
    return {"name": name, "urlName": name, "organization": "local-cdf", "userProfilesConfiguration": {"enabled": False}}


@routes.get("/api/v1/projects", root=True)
def list_projects(ctx: Ctx) -> dict:
    return {"items": [{"urlName": p, "dataModelingStatus": "HYBRID"} for p in ctx.services.projects.names()]}


@routes.get("")
def get_project(ctx: Ctx) -> dict:
    return _project(ctx.project)
