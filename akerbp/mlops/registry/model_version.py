"""ModelVersion: what the registry returns about one version, typed, instead of a loose dict.

`as_dict()` is exactly the dict the registry returned before (the CLI's `--json` prints it): the fields every version
has, in that order, then only the extras the operation set (files, path, unchanged, concurrent, deleted).
"""
from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from akerbp.mlops.vocabulary import VERSION_XID

if TYPE_CHECKING:
    from cognite.client.data_classes import FileMetadata

EXTRAS = ("files", "path", "unchanged", "concurrent", "deleted")


@dataclass(frozen=True)
class ModelVersion:
    """One version of a model in an environment, as its CDF file records it (plus what the operation did)."""

    model_name: str
    env: str
    version: int
    model_id: str  # the file's external id, {model}/{env}/{N}
    file_id: int
    name: str
    sha256: str
    size: int
    created_by: str
    created_time: str  # ISO 8601 UTC, seconds; "" when CDF gave none
    git_commit: str
    promoted_from: str  # the source version's id, "" unless promoted
    uploaded: bool
    metadata: dict[str, str] = field(default_factory=dict)
    # What the operation did, absent (None) from as_dict() unless set:
    files: int | None = None  # upload: files archived
    path: str | None = None  # download: where it was extracted
    unchanged: bool | None = None  # promotion: the target already held these bytes
    concurrent: bool | None = None  # promotion: another promotion made the copy
    deleted: bool | None = None  # delete: now a tombstone

    @classmethod
    def from_file(cls, f: FileMetadata) -> ModelVersion:
        """The version a registry file (external id {model}/{env}/{N}) records."""
        match = VERSION_XID.match(f.external_id or "")
        if match is None:
            raise ValueError(f"{f.external_id!r} is not a registry version id ({{model}}/{{env}}/{{N}})")
        model_name, env, version = match.groups()
        md = dict(f.metadata or {})
        created = f.created_time
        return cls(
            model_name=model_name,
            env=env,
            version=int(version),
            model_id=f.external_id or "",
            file_id=f.id,
            name=f.name or "",
            sha256=md.get("sha256", ""),
            size=int(md.get("size") or 0),
            created_by=md.get("created_by", ""),
            created_time=(
                datetime.datetime.fromtimestamp(created / 1000, datetime.timezone.utc).isoformat(timespec="seconds")
                if created else ""
            ),
            git_commit=md.get("git_commit", ""),
            promoted_from=md.get("promoted_from", ""),
            uploaded=bool(f.uploaded),
            metadata=md,
        )

    @property
    def external_id(self) -> str:
        """The CDF file's external id (the same as model_id)."""
        return self.model_id

    @property
    def framework_version(self) -> str:
        """The akerbp.mlops version that uploaded it ("" when the metadata does not say)."""
        return self.metadata.get("framework_version", "")

    def with_(self, **changes: Any) -> ModelVersion:
        """A copy with some fields changed (frozen: the registry builds results this way)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The registry's dict result of before the typed class, key for key and in the same order (`--json`)."""
        result = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in EXTRAS}
        result["metadata"] = dict(self.metadata)
        result.update({name: getattr(self, name) for name in EXTRAS if getattr(self, name) is not None})
        return result

    # -- for compatibility with the seed's dict results: info["version"], info.get("unchanged"), dict(info) ----------
    def __getitem__(self, key: str) -> Any:
        """For compatibility with the seed's dict results: info["version"] is info.version."""
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """For compatibility with the seed's dict results (a field not set is the default)."""
        return self.as_dict().get(key, default)

    def keys(self) -> list[str]:
        """For compatibility with the seed's dict results: dict(info) and {**info} give as_dict()."""
        return list(self.as_dict())

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()
