"""The registry's files of one CDF in memory: every version by model and environment, and the deployments' code
files (for "verified"), from one incrementally refreshed listing of the registry's directory.

Version N of a model is the file {model}/{env}/N (registry/versions.py); a usable one is fully uploaded and not a
tombstone (registry.index.usable, is_ready's rule over the JSON). A deleted version is overwritten by its tombstone, so
the refresh sees it and drops it. The files are listed with the SDK's generic client.post of files/list (pages of
JSON, the same requests files.list makes): the items stay dicts, about twice as fast as building 300,000 FileMetadata
objects, and the answer's Date header gives the server's clock for the next window. Parsing a version's metadata
(metrics, JSON values) is done once, on first use.
"""
from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from akerbp.mlops.deployment.functions import CODE_DIRECTORY
from akerbp.mlops.registry.index import usable
from akerbp.mlops.registry.rules import DIRECTORY, RESERVED_KEYS
from akerbp.mlops.ui.incremental import Listing
from akerbp.mlops.vocabulary import VERSION_XID

if TYPE_CHECKING:
    from cognite.client import CogniteClient

PARTITIONS = 4  # parallel cursors of the first listing (2 cores locally; the SDK's default for files is none)
PAGE = 1000  # files/list's page limit
METRICS_KEY = "metrics"


def iso_ms(ms: int | None) -> str | None:
    """A CDF time stamp as ISO 8601 UTC with a trailing Z (seconds), None when there is none."""
    if not ms:
        return None
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class VersionRecord:
    """One usable version as the listing gave it; metrics and user metadata decoded when first asked for."""

    __slots__ = ("model", "env", "number", "model_id", "created_ms", "raw", "_metrics", "_metadata")

    def __init__(self, model: str, env: str, number: int, model_id: str, created_ms: int, raw: dict[str, str]):
        self.model, self.env, self.number, self.model_id = model, env, number, model_id
        self.created_ms, self.raw = created_ms, raw
        self._metrics: dict[str, float] | None = None
        self._metadata: dict[str, str] | None = None

    @property
    def metrics(self) -> dict[str, float]:
        if self._metrics is None:
            from akerbp.mlops.analytics.versions import version_metrics

            self._metrics = version_metrics(self.raw)
        return self._metrics

    @property
    def metadata(self) -> dict[str, str]:
        """The user's metadata: without the registry's own keys and without metrics (shown apart)."""
        if self._metadata is None:
            self._metadata = {k: v for k, v in self.raw.items() if k not in RESERVED_KEYS and k != METRICS_KEY}
        return self._metadata

    def brief(self) -> dict[str, Any]:
        return {"version": self.number, "model_id": self.model_id, "created_time": iso_ms(self.created_ms)}

    def as_dict(self, live_in: list[str]) -> dict[str, Any]:
        raw = self.raw
        try:
            size = int(raw.get("size") or 0)
        except ValueError:
            size = 0
        return {**self.brief(), "created_by": raw.get("created_by", ""), "git_commit": raw.get("git_commit", ""),
                "promoted_from": raw.get("promoted_from", ""), "promoted_at": raw.get("promoted_at") or None,
                "sha256": raw.get("sha256", ""), "size": size, "metrics": dict(self.metrics),
                "metadata": dict(self.metadata), "live_in": live_in}


class RegistryIndex:
    """Versions {(model, env): {N: VersionRecord}} and code files {file id: metadata} of one CDF."""

    def __init__(self, client: CogniteClient, partitions: int | None = PARTITIONS):
        self.client = client
        self.versions: dict[tuple[str, str], dict[int, VersionRecord]] = {}
        self.code_files: dict[int, dict[str, str]] = {}
        self._sorted: dict[tuple[str, str], list[VersionRecord]] = {}
        self.listing = Listing(self._fetch, partitions)

    def _fetch(self, window: dict[str, int] | None, partitions: int | None) -> tuple[list[dict], int | None]:
        """Every file under the registry's directory updated in `window`, and the server's clock at the first answer."""
        from akerbp.mlops.analytics.pages import response_date_ms

        url = f"/api/v1/projects/{quote(self.client.config.project, safe='')}/files/list"
        flt: dict[str, Any] = {"directoryPrefix": DIRECTORY}
        if window is not None:
            flt["lastUpdatedTime"] = window
        clocks: list[int | None] = []

        def read(partition: str | None) -> list[dict]:
            out: list[dict] = []
            cursor = None
            while True:
                body: dict[str, Any] = {"filter": flt, "limit": PAGE}
                if cursor:
                    body["cursor"] = cursor
                if partition:
                    body["partition"] = partition
                response = self.client.post(url, json=body)
                if not clocks:
                    clocks.append(response_date_ms(response))
                page = response.json()
                out += page.get("items") or []
                cursor = page.get("nextCursor")
                if not cursor:
                    return out

        if not partitions or partitions < 2:
            found = read(None)
        else:
            with ThreadPoolExecutor(partitions) as pool:
                found = [f for part in pool.map(read, [f"{i + 1}/{partitions}" for i in range(partitions)])
                         for f in part]
        return found, clocks[0] if clocks else None

    def refresh(self) -> int:
        """Apply what changed since the last refresh (everything the first time); the number of files read."""
        changed = self.listing.changes()
        for f in changed:
            self._apply(f)
        return len(changed)

    def _apply(self, f: dict[str, Any]) -> None:
        metadata = f.get("metadata") or {}
        if (f.get("directory") or "").startswith(CODE_DIRECTORY):
            self.code_files[int(f["id"])] = dict(metadata)
            return
        match = VERSION_XID.match(f.get("externalId") or "")
        if match is None:  # block markers and anything else under /mlops
            return
        model, env, number = match.group(1), match.group(2), int(match.group(3))
        key = (model, env)
        by_number = self.versions.setdefault(key, {})
        if usable(f.get("uploaded"), metadata):
            by_number[number] = VersionRecord(model, env, number, f["externalId"], int(f.get("createdTime") or 0),
                                              metadata)
        elif by_number.pop(number, None) is None:
            return
        self._sorted.pop(key, None)

    def of(self, model: str, env: str) -> list[VersionRecord]:
        """The usable versions of model in env, oldest first."""
        key = (model, env)
        found = self._sorted.get(key)
        if found is None:
            found = self._sorted[key] = [v for _, v in sorted(self.versions.get(key, {}).items())]
        return found

    def by_model_id(self, model_id: str) -> VersionRecord | None:
        match = VERSION_XID.match(model_id or "")
        if match is None:
            return None
        return self.versions.get((match.group(1), match.group(2)), {}).get(int(match.group(3)))

    def models(self) -> set[str]:
        return {model for (model, _), found in self.versions.items() if found}
