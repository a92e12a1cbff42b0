"""The registry's files of one CDF in memory: every version by model and environment, and the deployments' code
files (for "verified"), from one incrementally refreshed listing of the registry's directory.

Version N of a model is the file {model}/{env}/N (registry/versions.py); a usable one is fully uploaded and not a
tombstone (registry.index.is_ready). A deleted version is overwritten by its tombstone, so the refresh sees it and
drops it. Parsing a version's metadata (metrics, JSON values) is done once, on first use, not for 300,000 files at
load.
"""
from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from akerbp.mlops.deployment.functions import CODE_DIRECTORY
from akerbp.mlops.registry.index import is_ready
from akerbp.mlops.registry.rules import DIRECTORY, RESERVED_KEYS
from akerbp.mlops.ui.incremental import Listing
from akerbp.mlops.vocabulary import VERSION_XID

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata

PARTITIONS = 4  # parallel cursors of the first listing (2 cores locally; the SDK's default for files is none)
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
            from akerbp.mlops.analytics.rows import version_metrics

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
        self.versions: dict[tuple[str, str], dict[int, VersionRecord]] = {}
        self.code_files: dict[int, dict[str, str]] = {}
        self._sorted: dict[tuple[str, str], list[VersionRecord]] = {}
        self.listing = Listing(lambda window, parts: client.files.list(
            directory_prefix=DIRECTORY, last_updated_time=window, partitions=parts, limit=None), partitions)

    def refresh(self) -> int:
        """Apply what changed since the last refresh (everything the first time); the number of files read."""
        changed = self.listing.changes()
        for f in changed:
            self._apply(f)
        return len(changed)

    def _apply(self, f: FileMetadata) -> None:
        if (f.directory or "").startswith(CODE_DIRECTORY):
            self.code_files[f.id] = dict(f.metadata or {})
            return
        match = VERSION_XID.match(f.external_id or "")
        if match is None:  # block markers and anything else under /mlops
            return
        model, env, number = match.group(1), match.group(2), int(match.group(3))
        key = (model, env)
        by_number = self.versions.setdefault(key, {})
        if is_ready(f):
            by_number[number] = VersionRecord(model, env, number, f.external_id or "", f.created_time or 0,
                                              dict(f.metadata or {}))
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
