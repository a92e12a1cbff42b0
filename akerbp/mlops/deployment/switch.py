"""Making a live function run a given code file (CDF cannot update a function in place: delete + create), with a
standby built first, the live function's schedules kept, and the function put back when its replacement fails.

  b) if a live function answers: create the standby `{xid}-{hash[:10]}` from the file and wait until Ready: proof
     the code builds, while the live function is untouched (Failed -> stop here, report the build error);
  c) delete the live function and create it again from the same file, wait Ready. The time between the delete
     and Ready is the *gap*, measured and reported; `mlops call` falls back to the standby meanwhile. The live
     function's schedules (which CDF deletes with it) are created again on its replacement. If the replacement
     cannot be created or does not get Ready, the function is created again from the code it ran before (its
     code file, name, metadata and schedules) and the switch fails saying so: a deploy never leaves a function
     that answered missing.
From the deletion of the live function until its replacement is Ready, a Ctrl-C/SIGTERM is held back
(interrupts.shielded). `restore` is a switch to a kept deployment (rollback: no tests, no rebuild).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from akerbp.mlops.deployment import functions, interrupts, records, secrets
from akerbp.mlops.deployment.build import read_options
from akerbp.mlops.deployment.functions import BuildFailed, Progress
from akerbp.mlops.deployment.options import FunctionOptions
from akerbp.mlops.errors import MlopsError
from akerbp.mlops.utils.provenance import who

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes.functions import Function

RECOVERY_SECONDS = 600.0  # to put a deleted live function back, even past the deploy's deadline


class ReplaceFailed(MlopsError):
    """The live function was deleted and its replacement failed; `restored` says whether the code it ran before
    answers again."""

    def __init__(self, message: str, restored: bool):
        super().__init__(message)
        self.restored = restored


@dataclass
class Switch:
    gap: float | None = None  # seconds the live external id could not be called; None if nothing was live
    standby_seconds: float = 0.0
    replace_seconds: float = 0.0
    standby: str | None = None
    function_id: int | None = None  # the live function now running the code
    created: list[str] = field(default_factory=list)  # functions created, in order (the standby, then live)
    replaced: bool = False  # a live function was deleted to be re-created
    schedules_kept: list[str] = field(default_factory=list)


def ensure_standby(client: CogniteClient, xid: str, file_id: int, name: str, options: FunctionOptions,
                   values: dict[str, str], metadata: dict[str, str], deadline: float,
                   progress: Progress | None) -> None:
    """A Ready standby function built from file_id; a failed build removes it and raises BuildFailed."""
    existing = functions.retrieve(client, xid)
    if existing is not None and (existing.file_id != file_id or existing.status == "Failed"):
        functions.delete(client, [xid])
        existing = None
    if existing is None:
        functions.create(client, xid, name, file_id, options, values, metadata)
    try:
        functions.wait_ready(client, xid, deadline, progress)
    except (BuildFailed, interrupts.Interrupted):
        functions.delete(client, [xid])
        raise


def switch(client: CogniteClient, live: str, file_id: int, content_hash: str, options: FunctionOptions,
           values: dict[str, str], metadata: dict[str, str], deadline: float, progress: Progress | None, *,
           use_standby: bool, recover: bool = True) -> Switch:
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
        standby_name = f"{options.name} standby {content_hash[:10]}"
        ensure_standby(client, result.standby, file_id, standby_name, options, values, metadata, deadline, progress)
        result.created.append(result.standby)
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
            result.replaced = True
        try:
            created = functions.create(client, live, options.name, file_id, options, values, metadata, deadline)
            if progress:
                progress(f"replacing {live}" if current is not None else f"creating {live}")
            functions.wait_ready(client, live, deadline, progress)
        except Exception as e:
            if not recover or current is None or current.status != "Ready":
                raise
            raise _put_back(client, live, current, schedules, values, e, progress) from e
        result.created.append(live)
        result.replace_seconds = time.monotonic() - started
        result.function_id = created.id
        if schedules:
            functions.recreate_schedules(client, created.id, schedules)
            result.schedules_kept = [s["name"] for s in schedules]
            if progress:
                progress(f"kept {len(schedules)} schedule(s) of {live}: {', '.join(result.schedules_kept)}")
    result.gap = result.replace_seconds if current is not None and current.status == "Ready" else None
    return result


def _put_back(client: CogniteClient, live: str, before: Function, schedules: list[dict[str, Any]],
              values: dict[str, str], error: Exception, progress: Progress | None) -> ReplaceFailed:
    """Create `live` again as it was before it was deleted (code file, name, metadata, schedules): the error to
    raise says whether that worked."""
    if progress:
        progress(f"replacing {live} failed: creating it again from the code it ran before (file {before.file_id})")
    deadline = time.monotonic() + RECOVERY_SECONDS
    try:
        functions.delete(client, [live])  # a replacement that was created but did not get Ready
        options = FunctionOptions.from_dict(read_options(functions.download_code(client, before.file_id)))
        restored_values = secrets.resolve(options.secrets, lambda missing: f"it needs its secrets: set "
                                          f"{', '.join(missing)}", given=values)
        restored = functions.create(client, live, before.name or options.name, before.file_id, options,
                                    restored_values, dict(before.metadata or {}), deadline)
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


def restore(client: CogniteClient, live: str, target: records.Deployment, deadline: float,
            progress: Progress | None, *, use_standby: bool, recover: bool = True, verified: bool = True) -> Switch:
    """Make a kept deployment live again from its code file: no tests, no build of the folder. verified=False:
    the caller checks the function first and then calls records.mark_verified."""
    options = FunctionOptions.from_dict(read_options(functions.download_code(client, target.file_id)))
    values = secrets.resolve(options.secrets, lambda missing: f"rolling back {live} needs its secrets: set "
                             f"{', '.join(missing)}")
    md = {k: v for k, v in target.metadata.items() if k.startswith("mlops_") and k != "mlops_status"}
    md.update(mlops_deployed_at=records.now_iso(), mlops_deployed_by=who()[:records.MAX_METADATA_VALUE],
              mlops_code_file=str(target.file_id))
    metadata = {**options.metadata, **md}
    switched = switch(client, live, target.file_id, target.content_hash, options, values, metadata, deadline,
                      progress, use_standby=use_standby, recover=recover)
    # Code that passed its check before, put back from its file: verified (a stop before this line is not, and the
    # next deploy checks it).
    if verified:
        records.mark_verified(client, target.file_id, switched.function_id, md["mlops_deployed_by"])
    else:
        records.mark(client, target.file_id, "deployed", mlops_deployed_at=md["mlops_deployed_at"],
                     mlops_deployed_by=md["mlops_deployed_by"])
    return switched
