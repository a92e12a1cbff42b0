"""Putting new code live without downtime-before-proof, in steps the caller runs one after another (apply.py):

  put_live   a) upload the code zip (a file, kept for rollback); b)-c) switch.py: a standby built first when a live
             function answers, then the live function replaced (its gap measured, its schedules kept, put back
             if the replacement fails);
  (the caller smoke-calls the live function with ServiceTest's input)
  confirm    e) the check passed: the code file is marked verified for this function, standbys go, and code files
             beyond the newest `keep` deployments (settings.models_to_keep, default 3) go;
  roll_back  d) the check failed: the previous deployment is put back (no standby: it built before; the failing
             code's standby is deleted first so no caller is sent to it), and SmokeFailed is raised.
The caller holds interrupts.shielded() from the replacement until confirm or roll_back has finished, so what is live
is verified when a Ctrl-C/SIGTERM takes effect. A first deploy (no live function) builds no standby: there is
nothing to protect and no gap, so one build instead of two.

A deploy that was killed or stopped between the replacement and its check leaves an unverified function
(records.is_verified); the next deploy of the same content checks it (smoke call, then confirm_live or roll_back).
A deploy that reuses a code file which went live before (same content again, after a rollback or with --force)
leaves its status alone and never deletes it or marks it failed: it is somebody's rollback target.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from akerbp.mlops.deployment import functions, interrupts, records
from akerbp.mlops.deployment.functions import BuildFailed, Progress
from akerbp.mlops.deployment.options import FunctionOptions
from akerbp.mlops.deployment.records import (  # noqa: F401 -- re-exported: the release's vocabulary
    KEEP_DEPLOYMENTS, MAX_METADATA_VALUE, VERIFIED_KEY, Deployment, cleanup, code_file_of, history, is_verified, mark,
    mark_verified, mlops_metadata, now_iso)
from akerbp.mlops.deployment.switch import ReplaceFailed, Switch, restore, switch
from akerbp.mlops.errors import MlopsError

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes.functions import Function

__all__ = ["ReleaseContext", "NewCode", "Release", "SmokeFailed", "ReplaceFailed", "put_live", "confirm",
           "of_live", "roll_back", "restore", "history", "cleanup", "is_verified", "code_file_of"]


class SmokeFailed(MlopsError):
    """The live function did not pass its smoke check; `rolled_back_to` says what answers now."""

    def __init__(self, message: str, rolled_back_to: Deployment | None, gap: float | None):
        super().__init__(message)
        self.rolled_back_to = rolled_back_to
        self.gap = gap


@dataclass(frozen=True)
class ReleaseContext:
    """Where and how long: the CDF, the live function's external id, the deadline, who deploys, progress, and how
    many deployments keep their code."""

    client: CogniteClient
    live: str
    deadline: float
    by: str = ""
    progress: Progress | None = None
    keep: int = KEEP_DEPLOYMENTS


@dataclass(frozen=True)
class NewCode:
    """What is released: the zip, its content hash, the function options, secret values, mlops_* metadata and the
    data set its code file goes in."""

    content_hash: str
    zip_bytes: bytes
    options: FunctionOptions
    secrets: dict[str, str]
    mlops_md: dict[str, str]
    data_set: int | None = None


@dataclass
class Release:
    code_file: int = 0
    code_file_xid: str | None = None
    owned: bool = False  # the code file is this deploy's (not one that went live before)
    switch: Switch = field(default_factory=Switch)
    removed: records.Removed = field(default_factory=records.Removed)
    phases: dict[str, float] = field(default_factory=dict)


def put_live(ctx: ReleaseContext, new: NewCode) -> Release:
    """Steps a)-c): the new code is live (unproven) when this returns. Raises BuildFailed (live untouched),
    ReplaceFailed (live put back, or not), DeployTimeout, Interrupted (before the live function was touched: nothing
    of this deploy is left)."""
    client, live = ctx.client, ctx.live
    out = Release()
    started = time.monotonic()
    code, owned = functions.upload_code(client, live, new.content_hash, new.zip_bytes,
                                        {**new.mlops_md, "mlops_status": "uploaded"}, new.data_set)
    out.code_file, out.code_file_xid, out.owned = code.id, code.external_id, owned
    out.phases["upload"] = time.monotonic() - started
    metadata = {**new.options.metadata, **new.mlops_md, "mlops_code_file": str(code.id)}
    try:
        out.switch = switch(client, live, code.id, new.content_hash, new.options, new.secrets, metadata,
                            ctx.deadline, ctx.progress, use_standby=True)
    except interrupts.Interrupted as e:  # the standby (if any) is gone already; the live function was not touched
        if owned:
            functions.delete_files(client, [code.id])
        e.args = (f"{e}: {live} was not touched, and nothing of this deploy was left in CDF",)
        raise
    except BuildFailed as e:
        if owned:
            records.mark(client, code.id, "failed")
        current = functions.retrieve(client, live)
        if current is None or current.status == "Failed":  # the live one was replaced: put the previous back
            with interrupts.shielded():
                previous, _ = _restore_previous(ctx, code.id)
                records.cleanup(client, live, ctx.keep)
            e.args = (f"{e}; " + (f"rolled back to {previous.describe()}" if previous else "nothing was live before"),)
        else:  # the standby failed to build: the live function was never touched
            if owned:
                functions.delete_files(client, [code.id])
            e.args = (f"{e}\n{live} was not touched: it still runs what it ran before",)
        raise
    except ReplaceFailed as e:
        if owned:
            records.mark(client, code.id, "failed")
        if e.restored:  # the new code answers nowhere: its standby and (if this deploy's) its file go
            back = functions.retrieve(client, live)
            back_hash = (back.metadata or {}).get("mlops_hash", "") if back is not None else ""
            if back_hash != new.content_hash:
                functions.delete(client, [functions.standby_xid(live, new.content_hash)])
            if owned and (back is None or back.file_id != code.id):
                functions.delete_files(client, [code.id])
        raise  # not restored: the standby (if any) stays, the fallback of `mlops call`
    out.phases["standby build"] = out.switch.standby_seconds
    out.phases["replace"] = out.switch.replace_seconds
    return out


def confirm(ctx: ReleaseContext, out: Release) -> None:
    """Step e): the live function passed its check: its code file is verified, standbys and old code files go."""
    records.mark_verified(ctx.client, out.code_file, out.switch.function_id, ctx.by)
    started = time.monotonic()
    out.removed = records.cleanup(ctx.client, ctx.live, ctx.keep)
    out.phases["cleanup"] = time.monotonic() - started


def of_live(ctx: ReleaseContext, fn: Function) -> Release:
    """The Release of a live function that was never verified (a deploy of it was stopped or killed before its
    check), to confirm or roll back like a new one: its code file, and whether that file never went live (then a
    failed check marks it failed)."""
    code_file = records.code_file_of(fn)
    if code_file is None:
        raise MlopsError(f"{ctx.live} names no code file (mlops_code_file): deploy with --force to replace it")
    f = ctx.client.files.retrieve(id=code_file)
    owned = f is not None and (f.metadata or {}).get("mlops_status") != "deployed"
    return Release(code_file=code_file, owned=owned, switch=Switch(function_id=fn.id))


def roll_back(ctx: ReleaseContext, out: Release, detail: str) -> NoReturn:
    """Step d) failed: put the last verified deployment back (or remove the function), and raise SmokeFailed."""
    client = ctx.client
    if out.owned:  # a file that went live before stays a rollback target: the failure may be of the moment
        records.mark(client, out.code_file, "failed")
    if out.switch.standby:  # never send a caller to the failing code
        functions.delete(client, [out.switch.standby])
    try:
        previous, gap = _restore_previous(ctx, out.code_file)
    except MlopsError as e:
        raise SmokeFailed(f"{detail}; rolling back to the previous deployment failed too: {e}", None, None) from e
    records.cleanup(client, ctx.live, ctx.keep)
    what = (f"rolled back to the previous deployment ({previous.describe()})" if previous
            else "there was no previous deployment to roll back to: the new function was removed")
    raise SmokeFailed(f"{detail}; {what}", previous, gap)


def _restore_previous(ctx: ReleaseContext, failed_file: int) -> tuple[Deployment | None, float | None]:
    """Put the most recent other deployment back live (no standby: it built before); none -> remove live."""
    candidates = [d for d in records.history(ctx.client, ctx.live) if d.file_id != failed_file]
    if not candidates:
        functions.delete(ctx.client, [ctx.live])
        return None, None
    previous = candidates[0]
    if ctx.progress:
        ctx.progress(f"rolling {ctx.live} back to {previous.describe()}")
    # recover=False: if this fails, the code being rolled away from must not be put back
    switched = restore(ctx.client, ctx.live, previous, ctx.deadline, ctx.progress, use_standby=False, recover=False)
    return previous, switched.gap
