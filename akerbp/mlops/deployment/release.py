"""Putting code live without downtime-before-proof, rolling back, and keeping what rollback needs.

Replacing a live function `{xid}` with new code (CDF cannot update a function in place):
  a) upload the code zip (a file, kept for rollback);
  b) if a live function answers: create the standby `{xid}-{hash[:10]}` from it and wait until Ready: proof the
     code builds, while the live function is untouched (Failed -> stop here, report the build error);
  c) delete the live function and create it again from the same file, wait Ready. The time between the delete
     and Ready is the *gap*, measured and reported; `mlops call` falls back to the standby meanwhile. The live
     function's schedules (which CDF deletes with it) are created again on its replacement. If the replacement
     cannot be created or does not get Ready, the function is created again from the code it ran before (its
     code file, name, metadata and schedules) and the deploy fails saying so: a deploy never leaves a function
     that answered missing;
  d) smoke call (by the caller); a failure rolls back to the previous deployment's code file and fails;
  e) clean up: standbys go (one function per service and environment between deploys: CDF allows 100 per
     project); the code files of the newest `keep` deployments (settings.models_to_keep, default 3: the current
     one and the 2 before it) stay, older ones go.

Verified: a live function counts as verified only once it passed its smoke check (or was put back from code that
had): its code file's metadata then holds `mlops_verified_function` = the function's id (a re-created function
gets a new id, so a replacement is never verified by its predecessor's check). A deploy that was killed or stopped
between (c) and (d) leaves an unverified function; the next deploy of the same content verifies it (smoke call,
rollback on failure, `verify_live`), and "unchanged" is reported only for verified functions. From the deletion of
the live function to the end of (e), a Ctrl-C/SIGTERM is held back (interrupts.shielded) so that step finishes.

A first deploy (no live function) skips (b): there is nothing to protect and no gap, so one build instead of two.
An automatic rollback skips (b) too: the previous code built before, and the standby of the failing code is
deleted first so no caller is sent to it.

Deployments are remembered by their code files' metadata (mlops_status deployed|failed|uploaded, and
mlops_deployed_at, updated whenever the file goes live): "previous deployment" = the most recent other file.
A deploy that reuses a file which went live before (same content again, after a rollback or with --force) leaves
its status alone and never deletes it or marks it failed: it is somebody's rollback target.
"""
from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from cognite.client.exceptions import CogniteException

from akerbp.mlops.deployment import functions, interrupts
from akerbp.mlops.deployment.build import read_options
from akerbp.mlops.deployment.functions import BuildFailed, Progress
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.settings import secret_env_var
from akerbp.mlops.utils.logger import register_secret
from akerbp.mlops.utils.provenance import who

KEEP_DEPLOYMENTS = 3  # default of settings.models_to_keep: the current one and the 2 before it
MAX_METADATA_VALUE = 512
VERIFIED_KEY = "mlops_verified_function"  # on a code file: the id of the function that passed its smoke check
RECOVERY_SECONDS = 600.0  # to put a deleted live function back, even past the deploy's deadline


class SmokeFailed(MlopsError):
    """The live function did not pass its smoke check; `rolled_back_to` says what answers now."""

    def __init__(self, message: str, rolled_back_to: "Deployment | None", gap: float | None):
        super().__init__(message)
        self.rolled_back_to = rolled_back_to
        self.gap = gap


class ReplaceFailed(MlopsError):
    """The live function was deleted and its replacement failed; `restored` says whether the code it ran before
    answers again."""

    def __init__(self, message: str, restored: bool):
        super().__init__(message)
        self.restored = restored


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def mlops_metadata(*, model: str, service: str, env: str, version, model_id: str | None, content_hash: str,
                   commit: str, deployed_at: str, by: str) -> dict[str, str]:
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
    metadata: dict

    @classmethod
    def from_file(cls, f) -> "Deployment":
        md = dict(f.metadata or {})
        return cls(f.id, md.get("mlops_hash", ""), md.get("mlops_version", ""), md.get("mlops_model_id", ""),
                   md.get("mlops_git_commit", ""), md.get("mlops_deployed_at", ""), md.get("mlops_deployed_by", ""),
                   md.get("mlops_status", ""), md)

    def describe(self) -> str:
        version = f"version {self.version}" if self.version else "no artifact"
        return f"{version}, hash {self.content_hash[:10]}, deployed {self.deployed_at or '?'}"

    def as_dict(self) -> dict:
        return {"file_id": self.file_id, "hash": self.content_hash, "version": self.version,
                "model_id": self.model_id, "git_commit": self.git_commit, "deployed_at": self.deployed_at,
                "deployed_by": self.deployed_by}


def history(client, live: str) -> list[Deployment]:
    """Deployments that went live (and passed their smoke check), newest first."""
    kept = [Deployment.from_file(f) for f in functions.code_files(client, live)]
    return sorted((d for d in kept if d.status == "deployed"), key=lambda d: d.deployed_at, reverse=True)


@dataclass
class Switch:
    gap: float | None = None  # seconds the live external id could not be called; None if nothing was live
    standby_seconds: float = 0.0
    replace_seconds: float = 0.0
    standby: str | None = None
    function_id: int | None = None  # the live function now running the code


def ensure_standby(client, xid: str, file_id: int, name: str, options: dict, secrets: dict, metadata: dict,
                   deadline: float, progress: Progress | None) -> None:
    """A Ready standby function built from file_id; a failed build removes it and raises BuildFailed."""
    existing = functions.retrieve(client, xid)
    if existing is not None and (existing.file_id != file_id or existing.status == "Failed"):
        functions.delete(client, [xid])
        existing = None
    if existing is None:
        functions.create(client, xid, name, file_id, options, secrets, metadata)
    try:
        functions.wait_ready(client, xid, deadline, progress)
    except (BuildFailed, interrupts.Interrupted):
        functions.delete(client, [xid])
        raise


def switch(client, live: str, file_id: int, content_hash: str, options: dict, secrets: dict, metadata: dict,
           deadline: float, progress: Progress | None, *, use_standby: bool, recover: bool = True) -> Switch:
    """Make `live` run file_id: steps (b) and (c) above. The live function is deleted only after the standby is
    Ready; BuildFailed from the standby leaves the live function untouched. Once it is deleted, any failure to
    replace it puts a function that was Ready back (recover=False: not when it ran code being rolled away from)
    and raises ReplaceFailed."""
    result = Switch()
    current = functions.retrieve(client, live)
    if use_standby and current is not None and current.status == "Ready":
        started = time.monotonic()
        result.standby = functions.standby_xid(live, content_hash)
        if progress:
            progress(f"building standby {result.standby} (the live function keeps answering)")
        standby_name = f"{options['name']} standby {content_hash[:10]}"
        ensure_standby(client, result.standby, file_id, standby_name, options, secrets, metadata, deadline, progress)
        result.standby_seconds = time.monotonic() - started
    try:
        interrupts.check(f"before {live} was replaced")
    except interrupts.Interrupted:
        if result.standby:
            functions.delete(client, [result.standby])
        raise
    schedules = functions.schedules_of(client, current.id) if current is not None else []
    with interrupts.shielded():  # from here on, a stop waits until the replacement is in place
        started = time.monotonic()
        if current is not None:
            functions.delete(client, [live])
        try:
            created = functions.create(client, live, options["name"], file_id, options, secrets, metadata, deadline)
            if progress:
                progress(f"replacing {live}" if current is not None else f"creating {live}")
            functions.wait_ready(client, live, deadline, progress)
        except Exception as e:
            if not recover or current is None or current.status != "Ready":
                raise
            raise _put_back(client, live, current, schedules, secrets, e, progress) from e
        result.replace_seconds = time.monotonic() - started
        result.function_id = created.id
        if schedules:
            functions.recreate_schedules(client, created.id, schedules)
            if progress:
                progress(f"kept {len(schedules)} schedule(s) of {live}: {', '.join(s['name'] for s in schedules)}")
    result.gap = result.replace_seconds if current is not None and current.status == "Ready" else None
    return result


def _put_back(client, live: str, before, schedules: list[dict], secrets: dict, error: Exception,
              progress: Progress | None) -> ReplaceFailed:
    """Create `live` again as it was before it was deleted (code file, name, metadata, schedules): the error to
    raise says whether that worked."""
    if progress:
        progress(f"replacing {live} failed: creating it again from the code it ran before (file {before.file_id})")
    deadline = time.monotonic() + RECOVERY_SECONDS
    try:
        functions.delete(client, [live])  # a replacement that was created but did not get Ready
        options = read_options(functions.download_code(client, before.file_id))
        values = {n: secrets.get(n) or os.environ.get(secret_env_var(n), "") for n in options.get("secrets") or []}
        missing = [secret_env_var(n) for n, v in values.items() if not v]
        if missing:
            raise UsageError(f"it needs its secrets: set {', '.join(missing)}")
        for value in values.values():
            register_secret(value)
        restored = functions.create(client, live, before.name or options["name"], before.file_id, options, values,
                                    dict(before.metadata or {}), deadline)
        functions.wait_ready(client, live, deadline, progress)
        if schedules:
            functions.recreate_schedules(client, restored.id, schedules)
    except Exception as again:  # noqa: BLE001 - reported with the first error
        return ReplaceFailed(
            f"{error}\n{live} had been deleted to be replaced, and creating it again from the code it ran before "
            f"(code file {before.file_id}) failed too: {again}\n{live} does not exist now: deploy again, or run "
            "`mlops rollback`", restored=False)
    return ReplaceFailed(f"{error}\n{live} had been deleted to be replaced: it was created again from the code it "
                         f"ran before (code file {before.file_id}) and answers as before", restored=True)


def cleanup(client, live: str, keep: int = KEEP_DEPLOYMENTS) -> dict:
    """Delete the standbys (rollback needs only code files), and code files beyond the newest `keep` deployed ones
    (failed and abandoned uploads too), except the file the live function runs."""
    removed_functions = [f.external_id for f in functions.standbys(client, live)]
    functions.delete(client, removed_functions)
    in_use = set()
    fn = functions.retrieve(client, live)
    if fn is not None:
        in_use.add(fn.file_id)
    files = [Deployment.from_file(f) for f in functions.code_files(client, live)]
    deployed = sorted((d for d in files if d.status == "deployed"), key=lambda d: d.deployed_at, reverse=True)
    kept = {d.file_id for d in deployed[:max(1, keep)]} | in_use
    removed_files = [d.file_id for d in files if d.file_id not in kept]
    functions.delete_files(client, removed_files)
    return {"functions": removed_functions, "code_files": removed_files}


def mark(client, file_id: int, status: str, **metadata: str) -> None:
    functions.update_code_metadata(client, file_id, {"mlops_status": status, **metadata})


def mark_verified(client, file_id: int, function_id: int | None, by: str) -> None:
    """The code file went live in function `function_id` and that function passed its check."""
    mark(client, file_id, "deployed", mlops_deployed_at=now_iso(), mlops_deployed_by=by[:MAX_METADATA_VALUE],
         **({VERIFIED_KEY: str(function_id)} if function_id is not None else {}))


def is_verified(client, fn) -> bool:
    """Whether the live function `fn` passed its smoke check (see the module doc); False for one a deploy was
    interrupted in, and for one deployed by a framework version that did not record it."""
    code_file = code_file_of(fn)
    if code_file is None:
        return False
    f = client.files.retrieve(id=code_file)
    return f is not None and (f.metadata or {}).get(VERIFIED_KEY) == str(fn.id)


def code_file_of(fn) -> int | None:
    """The id of the code file a deployed function runs (from its metadata), None if it names none."""
    value = ((fn.metadata or {}).get("mlops_code_file") or "") if fn is not None else ""
    return int(value) if value.isdigit() else None


@dataclass
class Release:
    code_file: int = 0
    switch: Switch = field(default_factory=Switch)
    removed: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)


def release(client, *, live: str, content_hash: str, zip_bytes: bytes, options: dict, secrets: dict,
            mlops_md: dict, data_set: int | None, deadline: float, progress: Progress | None,
            smoke: Callable[[], tuple[bool, str]], keep: int = KEEP_DEPLOYMENTS) -> Release:
    """Steps (a)-(e) for new code. Raises BuildFailed (live untouched), ReplaceFailed (live put back, or not),
    SmokeFailed (rolled back), DeployTimeout, Interrupted (before the live function was touched: nothing of this
    deploy is left). `keep`: deployments whose code files stay (settings.models_to_keep)."""
    out = Release()
    started = time.monotonic()
    code, owned = functions.upload_code(client, live, content_hash, zip_bytes,
                                        {**mlops_md, "mlops_status": "uploaded"}, data_set)
    out.code_file = code.id
    out.phases["upload"] = time.monotonic() - started
    metadata = {**options["metadata"], **mlops_md, "mlops_code_file": str(code.id)}
    try:
        out.switch = switch(client, live, code.id, content_hash, options, secrets, metadata, deadline, progress,
                            use_standby=True)
    except interrupts.Interrupted as e:  # the standby (if any) is gone already; the live function was not touched
        if owned:
            functions.delete_files(client, [code.id])
        e.args = (f"{e}: {live} was not touched, and nothing of this deploy was left in CDF",)
        raise
    except BuildFailed as e:
        if owned:
            mark(client, code.id, "failed")
        current = functions.retrieve(client, live)
        if current is None or current.status == "Failed":  # the live one was replaced: put the previous back
            with interrupts.shielded():
                previous, _ = _restore_previous(client, live, code.id, deadline, progress)
                cleanup(client, live, keep)
            e.args = (f"{e}; " + (f"rolled back to {previous.describe()}" if previous else "nothing was live before"),)
        else:  # the standby failed to build: the live function was never touched
            if owned:
                functions.delete_files(client, [code.id])
            e.args = (f"{e}\n{live} was not touched: it still runs what it ran before",)
        raise
    except ReplaceFailed as e:
        if owned:
            mark(client, code.id, "failed")
        if e.restored:  # the new code answers nowhere: its standby and (if this deploy's) its file go
            back = functions.retrieve(client, live)
            back_hash = (back.metadata or {}).get("mlops_hash", "") if back is not None else ""
            standby = functions.standby_xid(live, content_hash)
            if back_hash != content_hash:
                functions.delete(client, [standby])
            if owned and (back is None or back.file_id != code.id):
                functions.delete_files(client, [code.id])
        raise  # not restored: the standby (if any) stays, the fallback of `mlops call`
    out.phases["standby build"] = out.switch.standby_seconds
    out.phases["replace"] = out.switch.replace_seconds
    with interrupts.shielded():  # the new code is live: prove it or roll it back before stopping
        started = time.monotonic()
        passed, detail = _smoke(smoke, live)
        out.phases["smoke"] = time.monotonic() - started
        if not passed:
            _roll_back(client, live, code.id, owned, out.switch.standby, detail, deadline, progress, keep)
        mark_verified(client, code.id, out.switch.function_id, mlops_md.get("mlops_deployed_by", ""))
        started = time.monotonic()
        out.removed = cleanup(client, live, keep)
        out.phases["cleanup"] = time.monotonic() - started
    return out


def verify_live(client, live: str, fn, smoke: Callable[[], tuple[bool, str]], by: str, deadline: float,
                progress: Progress | None, keep: int = KEEP_DEPLOYMENTS) -> Release:
    """The live function `fn` runs the content being deployed but never passed its smoke check (a deploy was
    stopped or killed after replacing it): check it now; a failure rolls back to the last verified deployment
    (SmokeFailed), as the interrupted deploy would have."""
    out = Release()
    code_file = code_file_of(fn)
    if code_file is None:
        raise MlopsError(f"{live} names no code file (mlops_code_file): deploy with --force to replace it")
    out.code_file = code_file
    f = client.files.retrieve(id=code_file)
    owned = f is not None and (f.metadata or {}).get("mlops_status") != "deployed"
    with interrupts.shielded():
        started = time.monotonic()
        passed, detail = _smoke(smoke, live)
        out.phases["smoke"] = time.monotonic() - started
        if not passed:
            _roll_back(client, live, code_file, owned, None, detail, deadline, progress, keep)
        mark_verified(client, code_file, fn.id, by)
        out.removed = cleanup(client, live, keep)
    out.switch = Switch(function_id=fn.id)
    return out


def _smoke(smoke: Callable[[], tuple[bool, str]], live: str) -> tuple[bool, str]:
    try:
        return smoke()
    except (MlopsError, CogniteException) as e:  # the new code is live but unproven: treat it as failing
        return False, f"the smoke call of {live} could not be completed: {e}"


def _roll_back(client, live: str, code_file: int, owned: bool, standby: str | None, detail: str, deadline: float,
               progress: Progress | None, keep: int) -> None:
    """Step (d) failed: put the last verified deployment back (or remove the function) and raise SmokeFailed."""
    if owned:  # a file that went live before stays a rollback target: the failure may be of the moment
        mark(client, code_file, "failed")
    if standby:  # never send a caller to the failing code
        functions.delete(client, [standby])
    try:
        previous, gap = _restore_previous(client, live, code_file, deadline, progress)
    except MlopsError as e:
        raise SmokeFailed(f"{detail}; rolling back to the previous deployment failed too: {e}", None, None) from e
    cleanup(client, live, keep)
    what = (f"rolled back to the previous deployment ({previous.describe()})" if previous
            else "there was no previous deployment to roll back to: the new function was removed")
    raise SmokeFailed(f"{detail}; {what}", previous, gap)


def _restore_previous(client, live: str, failed_file: int, deadline: float, progress: Progress | None):
    """Put the most recent other deployment back live (no standby: it built before); none -> remove live."""
    candidates = [d for d in history(client, live) if d.file_id != failed_file]
    if not candidates:
        functions.delete(client, [live])
        return None, None
    previous = candidates[0]
    if progress:
        progress(f"rolling {live} back to {previous.describe()}")
    # recover=False: if this fails, the code being rolled away from must not be put back
    switched = restore(client, live, previous, deadline, progress, use_standby=False, recover=False)
    return previous, switched.gap


def restore(client, live: str, target: Deployment, deadline: float, progress: Progress | None, *,
            use_standby: bool, recover: bool = True, verified: bool = True) -> Switch:
    """Make a kept deployment live again from its code file: no tests, no build of the folder. verified=False:
    the caller checks the function first and then calls mark_verified."""
    options = read_options(functions.download_code(client, target.file_id))
    missing = [secret_env_var(n) for n in options.get("secrets") or [] if not os.environ.get(secret_env_var(n))]
    if missing:
        raise UsageError(f"rolling back {live} needs its secrets: set {', '.join(missing)}")
    secrets = {n: os.environ[secret_env_var(n)] for n in options.get("secrets") or []}
    for value in secrets.values():
        register_secret(value)
    md = {k: v for k, v in target.metadata.items() if k.startswith("mlops_") and k != "mlops_status"}
    md.update(mlops_deployed_at=now_iso(), mlops_deployed_by=who()[:MAX_METADATA_VALUE],
              mlops_code_file=str(target.file_id))
    metadata = {**options.get("metadata", {}), **md}
    switched = switch(client, live, target.file_id, target.content_hash, options, secrets, metadata, deadline,
                      progress, use_standby=use_standby, recover=recover)
    # Code that passed its check before, put back from its file: verified (a stop before this line is not, and the
    # next deploy checks it).
    if verified:
        mark_verified(client, target.file_id, switched.function_id, md["mlops_deployed_by"])
    else:
        mark(client, target.file_id, "deployed", mlops_deployed_at=md["mlops_deployed_at"],
             mlops_deployed_by=md["mlops_deployed_by"])
    return switched
