"""What CDF remembers of deployments: the code files' metadata (kept deployments, verified or not), and the
cleanup that keeps only what rollback needs.

Deployments are remembered by their code files' metadata (mlops_status deployed|failed|uploaded, and
mlops_deployed_at, updated whenever the file goes live): "previous deployment" = the most recent other file.
Verified: a live function counts as verified only once it passed its smoke check (or was put back from code that
had): its code file's metadata then holds `mlops_verified_function` = the function's id (a re-created function
gets a new id, so a replacement is never verified by its predecessor's check).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from akerbp.mlops.deployment import functions

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata
    from cognite.client.data_classes.functions import Function

KEEP_DEPLOYMENTS = 3  # default of settings.models_to_keep: the current one and the 2 before it
MAX_METADATA_VALUE = 512
VERIFIED_KEY = "mlops_verified_function"  # on a code file: the id of the function that passed its smoke check


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def mlops_metadata(*, model: str, service: str, env: str, version: int | str | None, model_id: str | None,
                   content_hash: str, commit: str, deployed_at: str, by: str) -> dict[str, str]:
    """The mlops_* keys of a function and of its code file (the function adds mlops_code_file)."""
    values = {
        "mlops_model": model, "mlops_service": service, "mlops_env": env,
        "mlops_version": "" if version is None else str(version), "mlops_model_id": model_id or "",
        "mlops_hash": content_hash, "mlops_git_commit": commit, "mlops_deployed_at": deployed_at,
        "mlops_deployed_by": by,
    }
    return {k: v[:MAX_METADATA_VALUE] for k, v in values.items() if v}


@dataclass
class Deployment:
    """One kept deployment: a code file and what its metadata says."""

    file_id: int
    content_hash: str
    version: str
    model_id: str
    git_commit: str
    deployed_at: str
    deployed_by: str
    status: str
    metadata: dict[str, str]
    external_id: str = ""

    @classmethod
    def from_file(cls, f: FileMetadata) -> Deployment:
        md = dict(f.metadata or {})
        return cls(int(f.id), md.get("mlops_hash", ""), md.get("mlops_version", ""), md.get("mlops_model_id", ""),
                   md.get("mlops_git_commit", ""), md.get("mlops_deployed_at", ""), md.get("mlops_deployed_by", ""),
                   md.get("mlops_status", ""), md, f.external_id or "")

    def describe(self) -> str:
        version = f"version {self.version}" if self.version else "no artifact"
        return f"{version}, hash {self.content_hash[:10]}, deployed {self.deployed_at or '?'}"

    def as_dict(self) -> dict[str, Any]:
        return {"file_id": self.file_id, "hash": self.content_hash, "version": self.version,
                "model_id": self.model_id, "git_commit": self.git_commit, "deployed_at": self.deployed_at,
                "deployed_by": self.deployed_by}


def history(client: CogniteClient, live: str) -> list[Deployment]:
    """Deployments that went live (and passed their smoke check), newest first."""
    kept = [Deployment.from_file(f) for f in functions.code_files(client, live)]
    return sorted((d for d in kept if d.status == "deployed"), key=lambda d: d.deployed_at, reverse=True)


@dataclass
class Removed:
    """What a cleanup deleted."""

    functions: list[str] = field(default_factory=list)
    code_files: list[int] = field(default_factory=list)
    code_file_xids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[Any]]:
        return {"functions": self.functions, "code_files": self.code_files}


def cleanup(client: CogniteClient, live: str, keep: int = KEEP_DEPLOYMENTS) -> Removed:
    """Delete the standbys (rollback needs only code files), and code files beyond the newest `keep` deployed ones
    (failed and abandoned uploads too), except the file the live function runs."""
    removed = Removed(functions=[f.external_id for f in functions.standbys(client, live)])
    functions.delete(client, removed.functions)
    in_use = set()
    fn = functions.retrieve(client, live)
    if fn is not None:
        in_use.add(fn.file_id)
    files = [Deployment.from_file(f) for f in functions.code_files(client, live)]
    deployed = sorted((d for d in files if d.status == "deployed"), key=lambda d: d.deployed_at, reverse=True)
    kept = {d.file_id for d in deployed[:max(1, keep)]} | in_use
    gone = [d for d in files if d.file_id not in kept]
    removed.code_files = [d.file_id for d in gone]
    removed.code_file_xids = [d.external_id for d in gone]
    functions.delete_files(client, removed.code_files)
    return removed


def mark(client: CogniteClient, file_id: int, status: str, **metadata: str) -> None:
    functions.update_code_metadata(client, file_id, {"mlops_status": status, **metadata})


def mark_verified(client: CogniteClient, file_id: int, function_id: int | None, by: str) -> None:
    """The code file went live in function `function_id` and that function passed its check."""
    mark(client, file_id, "deployed", mlops_deployed_at=now_iso(), mlops_deployed_by=by[:MAX_METADATA_VALUE],
         **({VERIFIED_KEY: str(function_id)} if function_id is not None else {}))


def is_verified(client: CogniteClient, fn: Function) -> bool:
    """Whether the live function `fn` passed its smoke check (see the module doc); False for one a deploy was
    interrupted in, and for one deployed by a framework version that did not record it."""
    code_file = code_file_of(fn)
    if code_file is None:
        return False
    f = client.files.retrieve(id=code_file)
    return f is not None and (f.metadata or {}).get(VERIFIED_KEY) == str(fn.id)


def code_file_of(fn: Function | None) -> int | None:
    """The id of the code file a deployed function runs (from its metadata), None if it names none."""
    value = ((fn.metadata or {}).get("mlops_code_file") or "") if fn is not None else ""
    return int(value) if value.isdigit() else None
