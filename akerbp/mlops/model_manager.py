"""The versioned model registry on CDF Files.

A version is one deterministic tar.gz of an artifact folder, stored as the file with external id
`{model}/{env}/{N}` in directory /mlops. Design decisions, each beating a defect of the 2021-2024 akerbp.mlops:
- Numbers are claimed through CDF's external-id uniqueness (create with overwrite=False; taken -> try N+1), so
  concurrent uploads never share, overwrite or lose a number.
- Deleting a version leaves a tombstone under its external id (metadata deleted="true", empty content): numbers
  are never reused, and "latest" is the highest fully uploaded, non-deleted number, never the newest upload time.
- Promotion keeps N (test 7 -> prod 7), so numbers in an environment can be sparse. To find the highest number
  without listing every version, each (model, env) keeps dense *block markers*: the file
  `mlops-index/{model}/{env}/{k}` exists for every k <= max_version // 100 (created before a version in block k).
  Latest = find the highest marker by probing ids in one `files/byids` request (exponential/binary search beyond
  256 markers), then probe the 100 ids of that block: 2 requests up to 25,600 versions, whatever the total.
  The ids, the markers, the data set and that lookup are in registry_index.py; archives in registry_archive.py.

Also bundled into deployed CDF Functions (the training service uploads from there): imports only the stdlib,
cognite-sdk, akerbp.mlops.errors, registry_archive and registry_index. Pass `client=`; without one,
cdf.client.get_client() is used.
"""
from __future__ import annotations

import datetime
import functools
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from cognite.client.exceptions import CogniteDuplicatedError, CogniteException

from akerbp.mlops import audit
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.utils.provenance import git_commit, who
from akerbp.mlops.registry_archive import archive_folder, extract_archive, sha256_file
from akerbp.mlops.registry_index import (
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
from akerbp.mlops.registry_index import DENSE_MARKERS, INDEX_DIRECTORY, MAX_PROBE, marker_xid  # noqa: F401 -- re-exported

try:
    from akerbp.mlops import __version__ as FRAMEWORK_VERSION
except ImportError:  # a function bundle without the package __init__
    FRAMEWORK_VERSION = "unknown"

ENVS = ("dev", "test", "prod")
DIRECTORY = "/mlops"
MAX_CLAIM_ATTEMPTS = 1000
# CDF Files metadata limits (API spec, FilesMetadataField): checked before anything is created.
MAX_KEYS, MAX_KEY_BYTES, MAX_VALUE_BYTES, MAX_TOTAL_BYTES = 256, 128, 10240, 10240
RESERVED_KEYS = ("version", "model_name", "env", "sha256", "size", "framework_version", "deleted", "promoted_from")
PROD_UPLOAD_REFUSED = "prod accepts versions only by promotion: mlops models promote MODEL --version N --to prod"
_MODEL_RE = re.compile(r"^[A-Za-z0-9_]+$")
_XID_RE = re.compile(r"^([A-Za-z0-9_]+)/(dev|test|prod)/([1-9][0-9]*)$")

Progress = Callable[[str, int], None]  # (message, bytes concerned): the CLI decides whether to show it


# -- names and checks ---------------------------------------------------------------------------------------
def _check_model_env(model_name: str, env: str | None) -> None:
    if not isinstance(model_name, str) or not _MODEL_RE.match(model_name):
        raise UsageError(f"model name {model_name!r} is invalid: use letters, digits and underscores only")
    if env is not None and env not in ENVS:
        raise UsageError(f"environment {env!r} of model {model_name} is invalid: use one of {', '.join(ENVS)}")


def _check_version(version: Any, model_name: str) -> int:
    try:
        number = int(version)
    except (TypeError, ValueError):
        number = 0
    if isinstance(version, bool) or number < 1 or str(number) != str(version).strip():
        raise UsageError(f"version {version!r} of model {model_name} is invalid: versions are integers from 1")
    return number


def _stringify_metadata(metadata: dict | None, model_name: str) -> dict[str, str]:
    """User metadata as CDF strings: strings stay, anything else becomes JSON."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UsageError(f"metadata of model {model_name} must be a dict, got {type(metadata).__name__}")
    result = {}
    for key, value in metadata.items():
        key = str(key)
        if key in RESERVED_KEYS:
            raise UsageError(f"metadata key {key!r} of model {model_name} is reserved by the registry: rename it")
        result[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return result


def check_metadata_limits(metadata: dict[str, str], what: str) -> None:
    """CDF's Files metadata limits, with the offending key named, before any request is made."""
    if len(metadata) > MAX_KEYS:
        raise UsageError(f"{what}: {len(metadata)} metadata keys, CDF Files allows at most {MAX_KEYS}")
    total = 0
    for key, value in metadata.items():
        key_bytes, value_bytes = len(key.encode()), len(value.encode())
        if key_bytes == 0:
            raise UsageError(f"{what}: a metadata key is empty")
        if key_bytes > MAX_KEY_BYTES:
            raise UsageError(f"{what}: metadata key {key[:40]!r}... is {key_bytes} bytes, CDF allows {MAX_KEY_BYTES}")
        if value_bytes > MAX_VALUE_BYTES:
            raise UsageError(
                f"{what}: the value of metadata key {key!r} is {value_bytes} bytes, CDF allows {MAX_VALUE_BYTES}"
            )
        total += key_bytes + value_bytes
    if total > MAX_TOTAL_BYTES:
        largest = max(metadata, key=lambda k: len(k.encode()) + len(metadata[k].encode()))
        raise UsageError(
            f"{what}: metadata keys and values total {total} bytes, CDF allows {MAX_TOTAL_BYTES} "
            f"(largest: {largest!r}); shorten it or store it in the artifact folder"
        )


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _client(client):
    if client is not None:
        return client
    from akerbp.mlops.cdf.client import get_client

    return get_client()


def _cdf_errors(fn):
    """SDK errors become MlopsError (exit 1, one line) instead of tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CogniteException as e:
            raise MlopsError(f"CDF request failed in {fn.__name__}: {e}") from e

    return wrapper


def _say(progress: Progress | None, message: str, nbytes: int = 0) -> None:
    if progress is not None:
        progress(message, nbytes)


# -- file objects -> version info ---------------------------------------------------------------------------
def _info(f) -> dict:
    model_name, env, version = _XID_RE.match(f.external_id).groups()
    md = dict(f.metadata or {})
    created = f.created_time
    return {
        "model_name": model_name,
        "env": env,
        "version": int(version),
        "model_id": f.external_id,
        "file_id": f.id,
        "name": f.name,
        "sha256": md.get("sha256", ""),
        "size": int(md.get("size") or 0),
        "created_by": md.get("created_by", ""),
        "created_time": (
            datetime.datetime.fromtimestamp(created / 1000, datetime.timezone.utc).isoformat(timespec="seconds")
            if created else ""
        ),
        "git_commit": md.get("git_commit", ""),
        "promoted_from": md.get("promoted_from", ""),
        "uploaded": bool(f.uploaded),
        "metadata": md,
    }


def _how_to_get(model_name: str, env: str) -> str:
    upload = f"upload one: mlops models upload {model_name} --env {env} --folder PATH"
    if env == "dev":
        return upload
    previous = ENVS[ENVS.index(env) - 1]
    promote = f"promote one: mlops models promote {model_name} --version N --to {env} (from {previous})"
    return promote if env == "prod" else f"{upload}, or {promote}"


# -- the public API -----------------------------------------------------------------------------------------
@_cdf_errors
def upload_new_model_version(
    model_name: str,
    env: str,
    folder_path,
    metadata: dict | None = None,
    *,
    client=None,
    dataset: str = "mlops",
    allow_prod: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Archive folder_path and store it as the next version of model_name in env; returns the version info.

    prod takes versions only by promotion, except with allow_prod=True (a training service whose deployment
    condition is met).
    """
    _check_model_env(model_name, env)
    if env == "prod" and not allow_prod:
        raise UsageError(PROD_UPLOAD_REFUSED)
    folder = Path(folder_path)
    if not folder.is_dir():
        raise UsageError(f"artifact folder {folder} of model {model_name} does not exist or is not a folder")
    user = _stringify_metadata(metadata, model_name)
    system = {"version": "9" * 18, "model_name": model_name, "env": env, "sha256": "0" * 64, "size": "9" * 15,
              "created_by": who(), "git_commit": git_commit(folder), "framework_version": FRAMEWORK_VERSION}
    what = f"model {model_name} ({env})"
    check_metadata_limits({**system, **user}, what)  # worst-case version/size: fails before any archive or request
    client = _client(client)
    with tempfile.TemporaryDirectory(prefix="mlops-upload-") as tmp:
        archive = Path(tmp) / f"{model_name}.tar.gz"
        _say(progress, f"archiving {folder}")
        sha256, size, count = archive_folder(folder, archive)
        data_set_id = ensure_data_set(client, dataset)

        def store(number: int):
            md = {**system, "version": str(number), "sha256": sha256, "size": str(size), **user}
            _say(progress, f"uploading {count} files ({size} bytes) as {version_xid(model_name, env, number)}", size)
            return client.files.upload(
                archive, external_id=version_xid(model_name, env, number), name=f"{model_name}-{env}-{number}.tar.gz",
                directory=DIRECTORY, metadata=md, data_set_id=data_set_id, mime_type="application/gzip",
                overwrite=False,
            )

        top = highest_marker(client, model_name, env)
        highest = scan_down(client, model_name, env, lambda f: True, top) if top >= 0 else None
        number = _info(highest)["version"] + 1 if highest is not None else 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            if number // BLOCK > top:
                ensure_markers(client, model_name, env, top + 1, number // BLOCK, data_set_id)
                top = number // BLOCK
            try:
                created = store(number)
            except CogniteDuplicatedError:  # claimed concurrently: the next one
                number += 1
                continue
            md = {**system, "version": str(number), "sha256": sha256, "size": str(size), **user}
            info = _info(created)
            info.update(sha256=sha256, size=size, uploaded=True, metadata=md, created_by=system["created_by"],
                        git_commit=system["git_commit"], files=count)
            return info
    raise MlopsError(f"{what}: no free version number after {MAX_CLAIM_ATTEMPTS} attempts from {number}")


@_cdf_errors
def list_model_versions(model_name: str | None = None, env: str | None = None, *, client=None) -> list[dict]:
    """Every usable version (fully uploaded, not deleted), sorted by model, env (dev, test, prod) and version."""
    if model_name is not None:
        _check_model_env(model_name, env)
    elif env is not None and env not in ENVS:
        raise UsageError(f"environment {env!r} is invalid: use one of {', '.join(ENVS)}")
    client = _client(client)
    if model_name is not None:
        files = client.files.list(external_id_prefix=f"{model_name}/" + (f"{env}/" if env else ""), limit=None)
    else:
        files = client.files.list(directory_prefix=DIRECTORY, limit=None)
    result = []
    for f in files:
        match = _XID_RE.match(f.external_id or "")
        if match and (env is None or match.group(2) == env) and is_ready(f):
            result.append(_info(f))
    result.sort(key=lambda i: (i["model_name"], ENVS.index(i["env"]), i["version"]))
    return result


def _get_file(client, model_name: str, env: str, version):
    if version is None:
        found = latest_file(client, model_name, env)
        if found is None:
            raise MlopsError(f"model {model_name} has no version in {env}: {_how_to_get(model_name, env)}")
        return found
    number = _check_version(version, model_name)
    xid = version_xid(model_name, env, number)
    found = client.files.retrieve(external_id=xid)
    if found is None:
        raise MlopsError(f"{xid} does not exist: {_how_to_get(model_name, env)}")
    if is_tombstone(found):
        md = found.metadata
        raise MlopsError(f"{xid} was deleted ({md.get('deleted_at', '?')} by {md.get('deleted_by', '?')})")
    if not found.uploaded:
        raise MlopsError(f"{xid} is not fully uploaded: its upload is running or was interrupted")
    return found


@_cdf_errors
def get_model_version(model_name: str, env: str, version: int | None = None, *, client=None) -> dict:
    """One version's info; version None = the latest (highest fully uploaded, not deleted)."""
    _check_model_env(model_name, env)
    return _info(_get_file(_client(client), model_name, env, version))


def _fetch_verified(client, f, path: Path, progress: Progress | None) -> None:
    """Stream a version's archive to path and check it against the sha256 recorded at upload."""
    md = f.metadata or {}
    _say(progress, f"downloading {f.external_id} ({md.get('size', '?')} bytes)", int(md.get("size") or 0))
    client.files.download_to_path(path, id=f.id)
    actual = sha256_file(path)
    if actual != md.get("sha256"):
        raise MlopsError(
            f"checksum mismatch for {f.external_id}: its content has sha256 {actual[:16]}..., its metadata records "
            f"{(md.get('sha256') or 'none')[:16]}...: the archive was modified after upload. Nothing was extracted; "
            "upload or promote a new version"
        )


@_cdf_errors
def download_model_version(
    model_name: str, env: str, target_folder, version: int | None = None, *, client=None,
    progress: Progress | None = None,
) -> dict:
    """Download, verify and extract a version (default: latest) into target_folder (absent or empty)."""
    _check_model_env(model_name, env)
    target = Path(target_folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"target folder {target} exists and is not empty; choose a new or empty folder")
    client = _client(client)
    f = _get_file(client, model_name, env, version)
    with tempfile.TemporaryDirectory(prefix="mlops-download-") as tmp:
        archive = Path(tmp) / "artifact.tar.gz"
        _fetch_verified(client, f, archive, progress)
        _say(progress, f"extracting into {target}")
        extract_archive(archive, target, label=f.external_id)
    return {**_info(f), "path": str(target)}


def _previous_env(env: str) -> str:
    index = ENVS.index(env)
    if index == 0:
        raise UsageError(f"{env} is the first environment: nothing is promoted into it; upload instead")
    return ENVS[index - 1]


def _settle_existing(existing, source, target_xid: str) -> dict | None:
    """An existing target: same bytes -> no-op info; an interrupted copy of it -> None (redo); else refuse."""
    md = existing.metadata or {}
    if is_tombstone(existing):
        raise MlopsError(
            f"{target_xid} was deleted and version numbers are never reused: upload a new version and promote it"
        )
    if md.get("sha256") != source.metadata.get("sha256"):
        raise MlopsError(
            f"{target_xid} already holds different bytes (sha256 {md.get('sha256', '')[:16]}...) than "
            f"{source.external_id} ({source.metadata.get('sha256', '')[:16]}...): refusing to overwrite it"
        )
    if existing.uploaded:
        return {**_info(existing), "unchanged": True}
    return None


@_cdf_errors
def promote_model(
    model_name: str, version: int, to_env: str = "prod", *, client=None, from_env: str | None = None,
    progress: Progress | None = None,
) -> dict:
    """Copy version N of from_env (default: the environment before to_env) to version N of to_env.

    Streamed through a temporary file and verified against the source's sha256. Promoting the same bytes again is
    a no-op (info["unchanged"] is True); different bytes already under the target number are refused.
    """
    _check_model_env(model_name, to_env)
    from_env = from_env or _previous_env(to_env)
    _check_model_env(model_name, from_env)
    if ENVS.index(from_env) >= ENVS.index(to_env):
        raise UsageError(f"promotion goes forward (dev -> test -> prod), not from {from_env} to {to_env}")
    number = _check_version(version, model_name)
    client = _client(client)
    started, model_id = time.time(), f"{model_name}/{to_env}/{number}"
    try:
        info = _promote(client, model_name, number, from_env, to_env, progress)
    except MlopsError as e:
        audit.record(client, "promotion", model=model_name, env=to_env, outcome="failed", started=started,
                     version=number, model_id=model_id, message=str(e))
        raise
    audit.record(client, "promotion", model=model_name, env=to_env, started=started, version=number,
                 model_id=model_id, outcome="unchanged" if info.get("unchanged") else "success",
                 message=f"from {info.get('promoted_from') or f'{model_name}/{from_env}/{number}'}")
    return info


def _promote(client, model_name: str, number: int, from_env: str, to_env: str, progress: Progress | None) -> dict:
    source = _get_file(client, model_name, from_env, number)
    target_xid = version_xid(model_name, to_env, number)
    md = {**(source.metadata or {}), "env": to_env, "promoted_from": source.external_id,
          "promoted_by": who(), "promoted_at": _now()}
    check_metadata_limits(md, f"promotion of {source.external_id} to {to_env}")
    existing = client.files.retrieve(external_id=target_xid)
    if existing is not None:
        settled = _settle_existing(existing, source, target_xid)
        if settled is not None:
            return settled
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as tmp:
        archive = Path(tmp) / "artifact.tar.gz"
        _fetch_verified(client, source, archive, progress)
        top = highest_marker(client, model_name, to_env)
        if number // BLOCK > top:
            ensure_markers(client, model_name, to_env, top + 1, number // BLOCK, source.data_set_id)
        _say(progress, f"uploading {target_xid}", int(md.get("size") or 0))
        upload = functools.partial(
            client.files.upload, archive, external_id=target_xid, name=f"{model_name}-{to_env}-{number}.tar.gz",
            directory=DIRECTORY, metadata=md, data_set_id=source.data_set_id, mime_type="application/gzip",
        )
        try:
            created = upload(overwrite=existing is not None)  # existing here = our own interrupted copy
        except CogniteDuplicatedError:  # promoted concurrently
            existing = client.files.retrieve(external_id=target_xid)
            settled = _settle_existing(existing, source, target_xid) if existing is not None else None
            if settled is not None:
                return settled
            created = upload(overwrite=True)
    info = _info(created)
    info.update(uploaded=True, metadata=md, promoted_from=source.external_id, unchanged=False)
    return info


@_cdf_errors
def delete_model_version(
    model_name: str, env: str, version: int, *, client=None, confirm: bool = False, force: bool = False
) -> dict:
    """Replace a version by a tombstone: its content is dropped, its number stays taken forever."""
    _check_model_env(model_name, env)
    number = _check_version(version, model_name)
    xid = version_xid(model_name, env, number)
    if not confirm:
        raise UsageError(f"deleting {xid} cannot be undone: pass confirm=True (CLI: add --yes)")
    if env == "prod" and not force:
        raise UsageError(f"{xid} is a prod version: deleting it needs force=True (CLI: add --force)")
    client = _client(client)
    found = client.files.retrieve(external_id=xid)
    if found is None:
        raise MlopsError(f"{xid} does not exist")
    if is_tombstone(found):
        raise MlopsError(f"{xid} is already deleted")
    info = _info(found)
    tombstone = {"version": str(number), "model_name": model_name, "env": env, "deleted": "true",
                 "deleted_by": who(), "deleted_at": _now(), "deleted_sha256": info["sha256"]}
    client.files.upload_bytes(
        b"", name=found.name or f"{model_name}-{env}-{number}.tar.gz", external_id=xid, directory=DIRECTORY,
        metadata=tombstone, data_set_id=found.data_set_id, overwrite=True,
    )
    return {**info, "deleted": True}


__all__ = [
    "upload_new_model_version", "list_model_versions", "get_model_version", "download_model_version",
    "promote_model", "delete_model_version", "check_metadata_limits",
]
