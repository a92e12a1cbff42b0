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
  The ids, the markers, the data set and that lookup are in registry_index.py.
- An upload that fails after its number is claimed leaves a tombstone with the reason: the number is never reused
  and nothing half-written lingers.
The rest is split by what a reader looks for: names, numbers and metadata rules in registry_rules.py, archives in
registry_archive.py, moving them to and from CDF with progress reports in registry_transfer.py.

Also bundled into deployed CDF Functions (the training service uploads from there): imports only the stdlib,
cognite-sdk, akerbp.mlops.errors, audit, utils and the registry_* modules. Pass `client=`; without one,
cdf.client.get_client() is used.
"""
from __future__ import annotations

import datetime
import functools
import tempfile
import time
from pathlib import Path

from cognite.client.data_classes import FileMetadataUpdate
from cognite.client.exceptions import CogniteDuplicatedError, CogniteException

from akerbp.mlops import audit
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.utils.provenance import git_commit, who
from akerbp.mlops.registry_archive import archive_folder, extract_archive
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
from akerbp.mlops.registry_rules import (  # noqa: F401 -- constants re-exported
    DIRECTORY,
    ENVS,
    MAX_KEY_BYTES,
    MAX_KEYS,
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    MODEL_NAME_MAX,
    MODEL_NAME_PATTERN,
    MODEL_NAME_RULE,
    RESERVED_KEYS,
    XID_RE,
    check_metadata_limits,
    check_model_env,
    check_version,
    how_to_get,
    user_metadata,
    version_info,
)
from akerbp.mlops.registry_transfer import Progress, Step, download_verified, send, upload_session

try:
    from akerbp.mlops import __version__ as FRAMEWORK_VERSION
except ImportError:  # a function bundle without the package __init__
    FRAMEWORK_VERSION = "unknown"

MAX_CLAIM_ATTEMPTS = 1000
# An unfinished promoted copy claimed less than this long ago is another promotion still uploading: waited for, never
# overwritten (that would break its upload). Older, it was interrupted: the next promotion takes it over.
PROMOTION_STALE_AFTER = 300.0
PROD_UPLOAD_REFUSED = "prod accepts versions only by promotion: mlops models promote MODEL --version N --to prod"


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
    check_model_env(model_name, env)
    if env == "prod" and not allow_prod:
        raise UsageError(PROD_UPLOAD_REFUSED)
    folder = Path(folder_path)
    if not folder.is_dir():
        raise UsageError(f"artifact folder {folder} of model {model_name} does not exist or is not a folder")
    user = user_metadata(metadata, model_name)
    system = {"version": "9" * 18, "model_name": model_name, "env": env, "sha256": "0" * 64, "size": "9" * 15,
              "created_by": who(), "git_commit": git_commit(folder), "framework_version": FRAMEWORK_VERSION}
    what = f"model {model_name} ({env})"
    check_metadata_limits({**system, **user}, what)  # worst-case version/size: fails before any archive or request
    client = _client(client)
    with tempfile.TemporaryDirectory(prefix="mlops-upload-") as tmp:
        archive = Path(tmp) / f"{model_name}.tar.gz"
        with Step(progress, f"archiving {folder}") as step:
            sha256, size, count = archive_folder(folder, archive, step.update)
        data_set_id = ensure_data_set(client, dataset)
        top = highest_marker(client, model_name, env)
        highest = scan_down(client, model_name, env, lambda f: True, top) if top >= 0 else None
        number = version_info(highest)["version"] + 1 if highest is not None else 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            if number // BLOCK > top:
                ensure_markers(client, model_name, env, top + 1, number // BLOCK, data_set_id)
                top = number // BLOCK
            xid, md = version_xid(model_name, env, number), {**system, "version": str(number), "sha256": sha256,
                                                             "size": str(size), **user}
            try:  # the claim: creating the file fails if the number is taken
                session = upload_session(
                    client, archive, overwrite=False, external_id=xid, name=f"{model_name}-{env}-{number}.tar.gz",
                    directory=DIRECTORY, metadata=md, data_set_id=data_set_id, mime_type="application/gzip",
                )
            except CogniteDuplicatedError:  # claimed concurrently: the next one
                number += 1
                continue
            try:
                created = send(session, archive, f"uploading {xid} ({count} files)", progress)
            except Exception as e:
                raise _retire(client, xid, md, e) from e
            info = version_info(created)
            info.update(sha256=sha256, size=size, uploaded=True, metadata=md, created_by=system["created_by"],
                        git_commit=system["git_commit"], files=count)
            return info
    raise MlopsError(f"{what}: no free version number after {MAX_CLAIM_ATTEMPTS} attempts from {number}")


def _retire(client, xid: str, md: dict, error: Exception) -> MlopsError:
    """A claimed number whose content upload failed becomes a tombstone with the reason (best effort)."""
    reason = f"upload failed: {error}"[:1000]  # well within CDF's metadata limits, whatever the characters
    tombstone = {key: md[key] for key in ("version", "model_name", "env")}
    tombstone.update(deleted="true", deleted_by=who(), deleted_at=_now(), deleted_reason=reason)
    try:
        client.files.update(FileMetadataUpdate(external_id=xid).metadata.set(tombstone))
        left = f"{xid} is now a tombstone (deleted_reason says why) and its number is never reused"
    except Exception as e:  # e.g. CDF unreachable: the file stays unfinished, hidden from list and latest
        left = f"{xid} is left unfinished (hidden from list and latest; writing its tombstone failed too: {e})"
    return MlopsError(f"uploading {xid} failed: {error}; {left}. Upload again: it takes the next number")


@_cdf_errors
def list_model_versions(model_name: str | None = None, env: str | None = None, *, client=None) -> list[dict]:
    """Every usable version (fully uploaded, not deleted), sorted by model, env (dev, test, prod) and version."""
    if model_name is not None:
        check_model_env(model_name, env)
    elif env is not None and env not in ENVS:
        raise UsageError(f"environment {env!r} is invalid: use one of {', '.join(ENVS)}")
    client = _client(client)
    if model_name is not None:
        files = client.files.list(external_id_prefix=f"{model_name}/" + (f"{env}/" if env else ""), limit=None)
    else:
        files = client.files.list(directory_prefix=DIRECTORY, limit=None)
    result = []
    for f in files:
        match = XID_RE.match(f.external_id or "")
        if match and (env is None or match.group(2) == env) and is_ready(f):
            result.append(version_info(f))
    result.sort(key=lambda i: (i["model_name"], ENVS.index(i["env"]), i["version"]))
    return result


def _get_file(client, model_name: str, env: str, version):
    if version is None:
        found = latest_file(client, model_name, env)
        if found is None:
            raise MlopsError(f"model {model_name} has no version in {env}: {how_to_get(model_name, env)}")
        return found
    number = check_version(version, model_name)
    xid = version_xid(model_name, env, number)
    found = client.files.retrieve(external_id=xid)
    if found is None:
        raise MlopsError(f"{xid} does not exist: {how_to_get(model_name, env)}")
    if is_tombstone(found):
        md = found.metadata
        raise MlopsError(f"{xid} was deleted ({md.get('deleted_at', '?')} by {md.get('deleted_by', '?')})")
    if not found.uploaded:
        raise MlopsError(f"{xid} is not fully uploaded: its upload is running or was interrupted")
    return found


@_cdf_errors
def get_model_version(model_name: str, env: str, version: int | None = None, *, client=None) -> dict:
    """One version's info; version None = the latest (highest fully uploaded, not deleted)."""
    check_model_env(model_name, env)
    return version_info(_get_file(_client(client), model_name, env, version))


@_cdf_errors
def download_model_version(
    model_name: str, env: str, target_folder, version: int | None = None, *, client=None,
    progress: Progress | None = None,
) -> dict:
    """Download, verify and extract a version (default: latest) into target_folder (absent or empty)."""
    check_model_env(model_name, env)
    target = Path(target_folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UsageError(f"target folder {target} exists and is not empty; choose a new or empty folder")
    client = _client(client)
    f = _get_file(client, model_name, env, version)
    with tempfile.TemporaryDirectory(prefix="mlops-download-") as tmp:
        archive = Path(tmp) / "artifact.tar.gz"
        download_verified(client, f, archive, progress)
        with Step(progress, f"extracting into {target}"):
            extract_archive(archive, target, label=f.external_id)
    return {**version_info(f), "path": str(target)}


def _previous_env(env: str) -> str:
    index = ENVS.index(env)
    if index == 0:
        raise UsageError(f"{env} is the first environment: nothing is promoted into it; upload instead")
    return ENVS[index - 1]


def _claimed_at(f) -> float | None:
    """When the promotion that created this copy claimed it (its promoted_at), as a time.time() value."""
    try:
        return datetime.datetime.fromisoformat((f.metadata or {}).get("promoted_at", "")).timestamp()
    except (TypeError, ValueError):
        return None


def _settle_or_await(client, existing, source, target_xid: str, progress: Progress | None,
                     stale_after: float) -> dict | None:
    """An existing target: same bytes -> no-op info; a copy another promotion is uploading -> its no-op info once it
    is complete; an interrupted copy (unfinished for stale_after) -> None: take it over; else refuse."""
    settled = _settle_existing(existing, source, target_xid)
    if settled is not None or existing.uploaded:
        return settled
    claimed = _claimed_at(existing)
    if claimed is None or time.time() - claimed >= stale_after:
        return None
    md = existing.metadata or {}
    what = f"waiting for {target_xid}: {md.get('promoted_by') or 'another process'} started promoting it at " \
           f"{md.get('promoted_at')}"
    pause = 0.05
    with Step(progress, what):
        while time.time() - claimed < stale_after:
            time.sleep(min(pause, max(0.0, claimed + stale_after - time.time())))  # CDF has no completion push
            pause = min(pause * 2, 1.0)
            existing = client.files.retrieve(external_id=target_xid)
            if existing is None:  # deleted meanwhile: promote afresh
                return None
            settled = _settle_existing(existing, source, target_xid)
            if settled is not None:
                return {**settled, "concurrent": True}
            if _claimed_at(existing) != claimed:  # someone else took it over: wait for theirs
                claimed = _claimed_at(existing) or claimed
    return None


def _settle_existing(existing, source, target_xid: str) -> dict | None:
    """An existing target: same bytes -> no-op info; an unfinished copy of it -> None; else refuse."""
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
        return {**version_info(existing), "unchanged": True}
    return None


@_cdf_errors
def promote_model(
    model_name: str, version: int, to_env: str = "prod", *, client=None, from_env: str | None = None,
    progress: Progress | None = None, stale_after: float = PROMOTION_STALE_AFTER,
) -> dict:
    """Copy version N of from_env (default: the environment before to_env) to version N of to_env.

    Streamed through a temporary file and verified against the source's sha256. Promoting the same bytes again is
    a no-op (info["unchanged"] is True); different bytes already under the target number are refused. Concurrent
    promotions of one version: one copies, the others wait for it and return its no-op info (info["concurrent"]);
    a copy left unfinished for stale_after seconds counts as interrupted and is redone.
    """
    check_model_env(model_name, to_env)
    from_env = from_env or _previous_env(to_env)
    check_model_env(model_name, from_env)
    if ENVS.index(from_env) >= ENVS.index(to_env):
        raise UsageError(f"promotion goes forward (dev -> test -> prod), not from {from_env} to {to_env}")
    number = check_version(version, model_name)
    client = _client(client)
    started, model_id = time.time(), f"{model_name}/{to_env}/{number}"
    try:
        info = _promote(client, model_name, number, from_env, to_env, progress, stale_after)
    except (MlopsError, CogniteException) as e:
        audit.record(client, "promotion", model=model_name, env=to_env, outcome="failed", started=started,
                     version=number, model_id=model_id, message=str(e))
        raise
    audit.record(client, "promotion", model=model_name, env=to_env, started=started, version=number,
                 model_id=model_id, outcome="unchanged" if info.get("unchanged") else "success",
                 message=f"from {info.get('promoted_from') or f'{model_name}/{from_env}/{number}'}")
    return info


def _promote(client, model_name: str, number: int, from_env: str, to_env: str, progress: Progress | None,
             stale_after: float) -> dict:
    source = _get_file(client, model_name, from_env, number)
    target_xid = version_xid(model_name, to_env, number)
    md = {**(source.metadata or {}), "env": to_env, "promoted_from": source.external_id,
          "promoted_by": who(), "promoted_at": _now()}
    check_metadata_limits(md, f"promotion of {source.external_id} to {to_env}")
    existing = client.files.retrieve(external_id=target_xid)
    if existing is not None:
        settled = _settle_or_await(client, existing, source, target_xid, progress, stale_after)
        if settled is not None:
            return settled
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as tmp:
        archive = Path(tmp) / "artifact.tar.gz"
        download_verified(client, source, archive, progress)
        top = highest_marker(client, model_name, to_env)
        if number // BLOCK > top:
            ensure_markers(client, model_name, to_env, top + 1, number // BLOCK, source.data_set_id)
        claim = functools.partial(
            upload_session, client, archive, external_id=target_xid, name=f"{model_name}-{to_env}-{number}.tar.gz",
            directory=DIRECTORY, metadata={**md, "promoted_at": _now()}, data_set_id=source.data_set_id,
            mime_type="application/gzip",
        )
        try:
            session = claim(overwrite=existing is not None)  # existing here = an interrupted copy, taken over
        except CogniteDuplicatedError:  # another promotion claimed it meanwhile: wait for its copy
            existing = client.files.retrieve(external_id=target_xid)
            settled = _settle_or_await(client, existing, source, target_xid, progress, stale_after) \
                if existing is not None else None
            if settled is not None:
                return settled
            session = claim(overwrite=True)
        # A failure from here leaves an unfinished copy (same sha256): promoting again resumes it.
        try:
            created = send(session, archive, f"uploading {target_xid}", progress)
        except CogniteException:
            # Taken over by a promotion that thought this copy interrupted: theirs may have completed it.
            done = client.files.retrieve(external_id=target_xid)
            if done is not None and done.uploaded and _settle_existing(done, source, target_xid) is not None:
                return {**version_info(done), "unchanged": True, "concurrent": True}
            raise
    info = version_info(created)
    info.update(uploaded=True, metadata=md, promoted_from=source.external_id, unchanged=False)
    return info


@_cdf_errors
def delete_model_version(
    model_name: str, env: str, version: int, *, client=None, confirm: bool = False, force: bool = False
) -> dict:
    """Replace a version by a tombstone: its content is dropped, its number stays taken forever."""
    check_model_env(model_name, env)
    number = check_version(version, model_name)
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
    info = version_info(found)
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
