"""Promotion: version N of one environment copied to version N of the next (test 7 -> prod 7), verified by sha256.

Streamed through a temporary file. Promoting the same bytes again is a no-op; different bytes (or a tombstone) under
the target number are refused. Concurrent promotions of one version: one copies, the others wait for its copy and
report it; a copy left unfinished for PROMOTION_STALE_AFTER (an interrupted promotion) is redone by the next one.
Every promotion, done or failed, is an audit record.
"""
from __future__ import annotations

import datetime
import functools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cognite.client.exceptions import CogniteDuplicatedError, CogniteException

from akerbp.mlops import audit
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.registry.errors import PromotionConflict
from akerbp.mlops.registry.index import BLOCK, ensure_markers, highest_marker, is_tombstone, version_xid
from akerbp.mlops.registry.model_version import ModelVersion
from akerbp.mlops.registry.rules import DIRECTORY, ENVS, check_metadata_limits, check_model_env, check_version
from akerbp.mlops.registry.transfer import Progress, Step, download_verified, send, upload_session
from akerbp.mlops.registry.versions import cdf_errors, now, resolve_client, usable_file
from akerbp.mlops.utils.provenance import who

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata

# An unfinished promoted copy claimed less than this long ago is another promotion still uploading: waited for, never
# overwritten (that would break its upload). Older, it was interrupted: the next promotion takes it over.
PROMOTION_STALE_AFTER = 300.0


def _previous_env(env: str) -> str:
    index = ENVS.index(env)
    if index == 0:
        raise UsageError(f"{env} is the first environment: nothing is promoted into it; upload instead")
    return ENVS[index - 1]


def _claimed_at(f: FileMetadata) -> float | None:
    """When the promotion that created this copy claimed it (its promoted_at), as a time.time() value."""
    try:
        return datetime.datetime.fromisoformat((f.metadata or {}).get("promoted_at", "")).timestamp()
    except (TypeError, ValueError):
        return None


def _settle_or_await(client: CogniteClient, existing: FileMetadata, source: FileMetadata, target_xid: str,
                     progress: Progress | None, stale_after: float) -> ModelVersion | None:
    """An existing target: same bytes -> no-op result; a copy another promotion is uploading -> its no-op result once
    it is complete; an interrupted copy (unfinished for stale_after) -> None: take it over; else refuse."""
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
            current = client.files.retrieve(external_id=target_xid)
            if current is None:  # deleted meanwhile: promote afresh
                return None
            settled = _settle_existing(current, source, target_xid)
            if settled is not None:
                return settled.with_(concurrent=True)
            if _claimed_at(current) != claimed:  # someone else took it over: wait for theirs
                claimed = _claimed_at(current) or claimed
    return None


def _settle_existing(existing: FileMetadata, source: FileMetadata, target_xid: str) -> ModelVersion | None:
    """An existing target: same bytes -> no-op result; an unfinished copy of it -> None; else refuse."""
    md = existing.metadata or {}
    source_md = source.metadata or {}
    if is_tombstone(existing):
        raise PromotionConflict(
            f"{target_xid} was deleted and version numbers are never reused: upload a new version and promote it"
        )
    if md.get("sha256") != source_md.get("sha256"):
        raise PromotionConflict(
            f"{target_xid} already holds different bytes (sha256 {md.get('sha256', '')[:16]}...) than "
            f"{source.external_id} ({source_md.get('sha256', '')[:16]}...): refusing to overwrite it"
        )
    if existing.uploaded:
        return ModelVersion.from_file(existing).with_(unchanged=True)
    return None


@cdf_errors
def promote_model(
    model_name: str, version: int, to_env: str = "prod", *, client: CogniteClient | None = None,
    from_env: str | None = None, progress: Progress | None = None, stale_after: float = PROMOTION_STALE_AFTER,
) -> ModelVersion:
    """Copy version N of from_env (default: the environment before to_env) to version N of to_env.

    Promoting the same bytes again is a no-op (result.unchanged is True); another promotion's copy of the same
    version, waited for, says so too (result.concurrent); different bytes already under the target number are
    refused (PromotionConflict).
    """
    check_model_env(model_name, to_env)
    from_env = from_env or _previous_env(to_env)
    check_model_env(model_name, from_env)
    if ENVS.index(from_env) >= ENVS.index(to_env):
        raise UsageError(f"promotion goes forward (dev -> test -> prod), not from {from_env} to {to_env}")
    number = check_version(version, model_name)
    cdf = resolve_client(client)
    started, model_id = time.time(), f"{model_name}/{to_env}/{number}"
    try:
        info = _promote(cdf, model_name, number, from_env, to_env, progress, stale_after)
    except (MlopsError, CogniteException) as e:
        audit.record(cdf, "promotion", model=model_name, env=to_env, outcome="failed", started=started,
                     version=number, model_id=model_id, message=str(e))
        raise
    audit.record(cdf, "promotion", model=model_name, env=to_env, started=started, version=number,
                 model_id=model_id, outcome="unchanged" if info.unchanged else "success",
                 message=f"from {info.promoted_from or f'{model_name}/{from_env}/{number}'}")
    return info


def _promote(client: CogniteClient, model_name: str, number: int, from_env: str, to_env: str,
             progress: Progress | None, stale_after: float) -> ModelVersion:
    source = usable_file(client, model_name, from_env, number)
    source_xid = source.external_id or version_xid(model_name, from_env, number)
    target_xid = version_xid(model_name, to_env, number)
    md = {**(source.metadata or {}), "env": to_env, "promoted_from": source_xid,
          "promoted_by": who(), "promoted_at": now()}
    check_metadata_limits(md, f"promotion of {source_xid} to {to_env}")
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
            directory=DIRECTORY, metadata={**md, "promoted_at": now()}, data_set_id=source.data_set_id,
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
                return ModelVersion.from_file(done).with_(unchanged=True, concurrent=True)
            raise
    return ModelVersion.from_file(created).with_(uploaded=True, metadata=md, promoted_from=source_xid,
                                                 unchanged=False)
