"""Upload, list, get, download and delete versions: the registry's operations on one version at a time.

Numbers are claimed through CDF's external-id uniqueness (create with overwrite=False; taken -> try N+1), so
concurrent uploads never share, overwrite or lose a number. Deleting leaves a tombstone (metadata deleted="true",
empty content): numbers are never reused. An upload failing after its claim leaves a tombstone with the reason.
Promotion (copying N to the next environment) is in promotion.py, numbering and "latest" in index.py.

Pass `client=`; without one, cdf.client.get_client() is used (imported only then: deployed functions pass theirs).
Besides itself, the stdlib and cognite-sdk it imports only modules every function bundle holds: errors, vocabulary,
audit (promotion.py) and utils.provenance.
"""
from __future__ import annotations

import datetime
import functools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ParamSpec, TypeVar

from cognite.client.data_classes import FileMetadataUpdate
from cognite.client.exceptions import CogniteDuplicatedError, CogniteException

from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.registry.archive import archive_folder, extract_archive
from akerbp.mlops.registry.errors import (
    ProdUploadRefused,
    RegistryRequestFailed,
    UploadFailed,
    VersionDeleted,
    VersionIncomplete,
    VersionNotFound,
)
from akerbp.mlops.registry.index import (
    BLOCK,
    ensure_data_set,
    ensure_markers,
    highest_marker,
    is_ready,
    is_tombstone,
    latest_file,
    scan_down,
    version_xid,
)
from akerbp.mlops.registry.model_version import ModelVersion
from akerbp.mlops.registry.rules import (
    DIRECTORY,
    ENVS,
    XID_RE,
    check_metadata_limits,
    check_model_env,
    check_version,
    how_to_get,
    user_metadata,
)
from akerbp.mlops.registry.transfer import Progress, Step, download_verified, send, upload_session
from akerbp.mlops.utils.provenance import git_commit, who

if TYPE_CHECKING:
    from os import PathLike

    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata

try:
    from akerbp.mlops import __version__ as FRAMEWORK_VERSION
except ImportError:  # a function bundle without the package __init__
    FRAMEWORK_VERSION = "unknown"

MAX_CLAIM_ATTEMPTS = 1000
PROD_UPLOAD_REFUSED = "prod accepts versions only by promotion: mlops models promote MODEL --version N --to prod"

P = ParamSpec("P")
R = TypeVar("R")


def now() -> str:
    """The registry's timestamps (deleted_at, promoted_at): UTC, ISO 8601, seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def resolve_client(client: CogniteClient | None) -> CogniteClient:
    """The client passed, else the configured one (a real project or the local CDF)."""
    if client is not None:
        return client
    from akerbp.mlops.cdf.client import get_client

    return get_client()


def cdf_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """SDK errors become RegistryRequestFailed (exit 1, one line, the SDK's error as its cause), not tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CogniteException as e:
            raise RegistryRequestFailed(f"CDF request failed in {fn.__name__}: {e}") from e

    return wrapper


def usable_file(client: CogniteClient, model_name: str, env: str, version: object) -> FileMetadata:
    """The file of a usable version (None: the latest), or the VersionUnavailable saying why there is none."""
    if version is None:
        found = latest_file(client, model_name, env)
        if found is None:
            raise VersionNotFound(f"model {model_name} has no version in {env}: {how_to_get(model_name, env)}")
        return found
    number = check_version(version, model_name)
    xid = version_xid(model_name, env, number)
    found = client.files.retrieve(external_id=xid)
    if found is None:
        raise VersionNotFound(f"{xid} does not exist: {how_to_get(model_name, env)}")
    if is_tombstone(found):
        md = found.metadata or {}
        raise VersionDeleted(f"{xid} was deleted ({md.get('deleted_at', '?')} by {md.get('deleted_by', '?')})")
    if not found.uploaded:
        raise VersionIncomplete(f"{xid} is not fully uploaded: its upload is running or was interrupted")
    return found


@cdf_errors
def upload_new_model_version(
    model_name: str,
    env: str,
    folder_path: str | PathLike[str],
    metadata: dict | None = None,
    *,
    client: CogniteClient | None = None,
    dataset: str = "mlops",
    allow_prod: bool = False,
    progress: Progress | None = None,
) -> ModelVersion:
    """Archive folder_path and store it as the next version of model_name in env.

    prod takes versions only by promotion, except with allow_prod=True (a training service whose deployment
    condition is met).
    """
    check_model_env(model_name, env)
    if env == "prod" and not allow_prod:
        raise ProdUploadRefused(PROD_UPLOAD_REFUSED)
    folder = Path(folder_path)
    if not folder.is_dir():
        raise UsageError(f"artifact folder {folder} of model {model_name} does not exist or is not a folder")
    user = user_metadata(metadata, model_name)
    system = {"version": "9" * 18, "model_name": model_name, "env": env, "sha256": "0" * 64, "size": "9" * 15,
              "created_by": who(), "git_commit": git_commit(folder), "framework_version": FRAMEWORK_VERSION}
    what = f"model {model_name} ({env})"
    check_metadata_limits({**system, **user}, what)  # worst-case version/size: fails before any archive or request
    cdf = resolve_client(client)
    with tempfile.TemporaryDirectory(prefix="mlops-upload-") as tmp:
        archive = Path(tmp) / f"{model_name}.tar.gz"
        with Step(progress, f"archiving {folder}") as step:
            sha256, size, count = archive_folder(folder, archive, step.update)
        data_set_id = ensure_data_set(cdf, dataset)
        top = highest_marker(cdf, model_name, env)
        highest = scan_down(cdf, model_name, env, lambda f: True, top) if top >= 0 else None
        number = ModelVersion.from_file(highest).version + 1 if highest is not None else 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            if number // BLOCK > top:
                ensure_markers(cdf, model_name, env, top + 1, number // BLOCK, data_set_id)
                top = number // BLOCK
            xid, md = version_xid(model_name, env, number), {**system, "version": str(number), "sha256": sha256,
                                                             "size": str(size), **user}
            try:  # the claim: creating the file fails if the number is taken
                session = upload_session(
                    cdf, archive, overwrite=False, external_id=xid, name=f"{model_name}-{env}-{number}.tar.gz",
                    directory=DIRECTORY, metadata=md, data_set_id=data_set_id, mime_type="application/gzip",
                )
            except CogniteDuplicatedError:  # claimed concurrently: the next one
                number += 1
                continue
            try:
                created = send(session, archive, f"uploading {xid} ({count} files)", progress)
            except Exception as e:
                raise _retire(cdf, xid, md, e) from e
            return ModelVersion.from_file(created).with_(
                sha256=sha256, size=size, uploaded=True, metadata=md, created_by=system["created_by"],
                git_commit=system["git_commit"], files=count)
    raise MlopsError(f"{what}: no free version number after {MAX_CLAIM_ATTEMPTS} attempts from {number}")


def _retire(client: CogniteClient, xid: str, md: dict[str, str], error: Exception) -> UploadFailed:
    """A claimed number whose content upload failed becomes a tombstone with the reason (best effort)."""
    reason = f"upload failed: {error}"[:1000]  # well within CDF's metadata limits, whatever the characters
    tombstone = {key: md[key] for key in ("version", "model_name", "env")}
    tombstone.update(deleted="true", deleted_by=who(), deleted_at=now(), deleted_reason=reason)
    try:
        client.files.update(FileMetadataUpdate(external_id=xid).metadata.set(tombstone))
        left = f"{xid} is now a tombstone (deleted_reason says why) and its number is never reused"
    except Exception as e:  # e.g. CDF unreachable: the file stays unfinished, hidden from list and latest
        left = f"{xid} is left unfinished (hidden from list and latest; writing its tombstone failed too: {e})"
    return UploadFailed(f"uploading {xid} failed: {error}; {left}. Upload again: it takes the next number")


@cdf_errors
def list_model_versions(model_name: str | None = None, env: str | None = None, *,
                        client: CogniteClient | None = None) -> list[ModelVersion]:
    """Every usable version (fully uploaded, not deleted), sorted by model, env (dev, test, prod) and version."""
    if model_name is not None:
        check_model_env(model_name, env)
    elif env is not None and env not in ENVS:
        raise UsageError(f"environment {env!r} is invalid: use one of {', '.join(ENVS)}")
    cdf = resolve_client(client)
    if model_name is not None:
        files = cdf.files.list(external_id_prefix=f"{model_name}/" + (f"{env}/" if env else ""), limit=None)
    else:
        files = cdf.files.list(directory_prefix=DIRECTORY, limit=None)
    result = []
    for f in files:
        match = XID_RE.match(f.external_id or "")
        if match and (env is None or match.group(2) == env) and is_ready(f):
            result.append(ModelVersion.from_file(f))
    result.sort(key=lambda v: (v.model_name, ENVS.index(v.env), v.version))
    return result


@cdf_errors
def get_model_version(model_name: str, env: str, version: int | None = None, *,
                      client: CogniteClient | None = None) -> ModelVersion:
    """One version; version None = the latest (highest fully uploaded, not deleted)."""
    check_model_env(model_name, env)
    return ModelVersion.from_file(usable_file(resolve_client(client), model_name, env, version))


@cdf_errors
def download_model_version(
    model_name: str, env: str, target_folder: str | PathLike[str], version: int | None = None, *,
    client: CogniteClient | None = None, progress: Progress | None = None,
) -> ModelVersion:
    """Download, verify and extract a version (default: latest) into target_folder (absent or empty)."""
    check_model_env(model_name, env)
    target = Path(target_folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"target folder {target} exists and is not empty; choose a new or empty folder")
    cdf = resolve_client(client)
    f = usable_file(cdf, model_name, env, version)
    with tempfile.TemporaryDirectory(prefix="mlops-download-") as tmp:
        archive = Path(tmp) / "artifact.tar.gz"
        download_verified(cdf, f, archive, progress)
        with Step(progress, f"extracting into {target}"):
            extract_archive(archive, target, label=f.external_id or "archive")
    return ModelVersion.from_file(f).with_(path=str(target))


@cdf_errors
def delete_model_version(
    model_name: str, env: str, version: int, *, client: CogniteClient | None = None, confirm: bool = False,
    force: bool = False,
) -> ModelVersion:
    """Replace a version by a tombstone: its content is dropped, its number stays taken forever."""
    check_model_env(model_name, env)
    number = check_version(version, model_name)
    xid = version_xid(model_name, env, number)
    if not confirm:
        raise UsageError(f"deleting {xid} cannot be undone: pass confirm=True (CLI: add --yes)")
    if env == "prod" and not force:
        raise UsageError(f"{xid} is a prod version: deleting it needs force=True (CLI: add --force)")
    cdf = resolve_client(client)
    found = cdf.files.retrieve(external_id=xid)
    if found is None:
        raise VersionNotFound(f"{xid} does not exist")
    if is_tombstone(found):
        raise VersionDeleted(f"{xid} is already deleted")
    info = ModelVersion.from_file(found)
    tombstone = {"version": str(number), "model_name": model_name, "env": env, "deleted": "true",
                 "deleted_by": who(), "deleted_at": now(), "deleted_sha256": info.sha256}
    cdf.files.upload_bytes(
        b"", name=found.name or f"{model_name}-{env}-{number}.tar.gz", external_id=xid, directory=DIRECTORY,
        metadata=tombstone, data_set_id=found.data_set_id, overwrite=True,
    )
    return info.with_(deleted=True)
