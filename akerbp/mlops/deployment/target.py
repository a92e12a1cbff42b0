"""Where the services of an environment live (cdf.client.client_for_env), connected on first use: a dry run in dev
may never need it. One Target is shared by the models a deploy runs concurrently, so connecting is locked.
Code that already holds a client (a deploy from inside a CDF Function: the function's own) gives it: that Target
connects nowhere else and refuses nothing."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cognite.client import CogniteClient


class Target:
    def __init__(self, env: str, dry_run: bool = False, *, client: CogniteClient | None = None):
        self.env, self.dry_run = env, dry_run
        self.given = client is not None
        if client is None:
            from akerbp.mlops.cdf.client import env_uses_local_cdf

            self.local = env_uses_local_cdf(env)
        else:
            self.local = False
        self._client: CogniteClient | None = client
        self._lock = threading.Lock()

    def client(self) -> CogniteClient:
        with self._lock:
            if self._client is None:
                from akerbp.mlops.cdf.client import client_for_env

                self._client = client_for_env(self.env, dry_run=self.dry_run)
            return self._client

    def check(self) -> None:
        """Refusals (CI guard, settings of the project) now, without connecting: that overlaps the model tests."""
        if self.given:
            return
        from akerbp.mlops.cdf.client import check_env_target

        check_env_target(self.env, dry_run=self.dry_run)

    def describe(self) -> str:
        if self.given:
            return f"CDF project {self._client.config.project if self._client else '?'} (the given client)"
        from akerbp.mlops.cdf.client import describe_env_target

        return describe_env_target(self.env)

    def readable(self) -> bool:
        """False when reading would mean creating an empty local CDF (a dry run on a fresh checkout)."""
        if self._client is not None or not self.local:
            return True
        from akerbp.mlops.cdf.client import local_cdf_dir

        return local_cdf_dir().is_dir()
