"""CDF primitives of a deploy: code files, functions, waiting for Ready, calls. No policy here (see release.py).

Naming:
    live function      {model}-{service}-{env}
    standby function   {model}-{service}-{env}-{hash[:10]}   (same code; proof it builds, and what `mlops call`
                                                            falls back to while the live one is being replaced)
    code file          mlops-code/{live xid}/{hash[:16]} in /mlops/code, in the model's data set

Functions cannot be updated in CDF: a change is delete + create. Waiting is polling functions.retrieve, as CDF
offers no notification: every 0.2 s against the local CDF, backing off to 2 s against a real project.
Creates, deletes and calls, which cognite-sdk does not retry, are retried here after a transient failure, looking
first at what CDF did (transient.py). Waits notice a Ctrl-C/SIGTERM (interrupts.py).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlparse

from cognite.client.exceptions import CogniteAPIError, CogniteDuplicatedError, CogniteNotFoundError

from akerbp.mlops.vocabulary import code_file_external_id as code_xid, code_file_prefix, is_standby, standby_external_id as standby_xid  # noqa: F401
from akerbp.mlops.deployment import interrupts
from akerbp.mlops.utils import transient
from akerbp.mlops.deployment.options import FunctionOptions
from akerbp.mlops.function_folder import HANDLER_FILE
from akerbp.mlops.errors import MlopsError

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata
    from cognite.client.data_classes.functions import Function

CODE_DIRECTORY = "/mlops/code"
FUNCTIONS_LIMIT = 1000  # functions/list has no cursor; CDF allows 100 functions per project
PROGRESS_EVERY = 5.0
TRACE_LINES = 15

Progress = Callable[[str], None]


class BuildFailed(MlopsError):
    """CDF could not build a function from the code (e.g. pip could not install a requirement)."""


class DeployTimeout(MlopsError):
    """A function was not Ready (or a call did not end) before the deadline."""


def is_local(client) -> bool:
    host = urlparse(client.config.base_url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _poll_intervals(client):
    interval = 0.2
    while True:
        yield interval
        if not is_local(client):
            interval = min(interval * 1.5, 2.0)


def data_set_id(client, external_id: str) -> int:
    """The model's data set (created on first use): the registry's, so code files and artifacts share it."""
    from akerbp.mlops.registry.index import ensure_data_set

    return ensure_data_set(client, external_id)


# -- code files -------------------------------------------------------------------------------------------------
def upload_code(client: CogniteClient, live: str, content_hash: str, content: bytes, metadata: dict[str, str],
                data_set: int | None) -> tuple[FileMetadata, bool]:
    """Upload the code zip: (the file, whether this deploy owns it). A file with the same hash already there (a
    redeploy, e.g. after a rollback, or --force) is reused. One that went live before stays as it is (its status
    and deployment time are a rollback target's) and is not this deploy's to delete or mark failed; an unproven one
    (uploaded or failed) gets the new metadata and is owned."""
    xid = code_xid(live, content_hash)
    existing = client.files.retrieve(external_id=xid)
    if existing is not None and existing.uploaded and (existing.metadata or {}).get("mlops_hash") == content_hash:
        if (existing.metadata or {}).get("mlops_status") == "deployed":
            return existing, False
        update_code_metadata(client, existing.id, metadata)
        return _file(client.files.retrieve(id=existing.id), xid), True
    transient.retry(lambda: client.files.upload_bytes(  # overwrite=True: a repeated create is harmless
        content, name=f"{live}-{content_hash[:16]}.zip", external_id=xid, directory=CODE_DIRECTORY,
        metadata=metadata, data_set_id=data_set, mime_type="application/zip", overwrite=True))
    return _file(client.files.retrieve(external_id=xid), xid), True


def _file(found: FileMetadata | None, xid: str) -> FileMetadata:
    if found is None:
        raise MlopsError(f"the code file {xid} vanished right after its upload: deleted by someone else? Deploy again")
    return found


def update_code_metadata(client, file_id: int, changes: dict) -> None:
    from cognite.client.data_classes import FileMetadataUpdate

    client.files.update(FileMetadataUpdate(id=file_id).metadata.add(changes))


def code_files(client, live: str) -> list:
    return list(client.files.list(external_id_prefix=code_file_prefix(live), limit=None))


def download_code(client, file_id: int) -> bytes:
    return client.files.download_bytes(id=file_id)


def delete_files(client, ids: list[int]) -> None:
    """Delete code files by id; ones already gone are fine."""
    if ids:
        try:
            transient.retry(lambda: client.files.delete(id=ids))
        except CogniteNotFoundError:
            for one in ids:
                try:
                    transient.retry(lambda: client.files.delete(id=one))  # noqa: B023 - called at once
                except CogniteNotFoundError:
                    pass


# -- functions --------------------------------------------------------------------------------------------------
def retrieve(client, xid: str):
    return client.functions.retrieve(external_id=xid)


def standbys(client, live: str) -> list:
    """The standby functions of a live function (external id `{live}-<hash>`)."""
    return [f for f in client.functions.list(external_id_prefix=f"{live}-", limit=FUNCTIONS_LIMIT)
            if is_standby(live, f.external_id)]


def create(client: CogniteClient, xid: str, name: str, file_id: int, options: FunctionOptions,
           secrets: dict[str, str], metadata: dict[str, str], deadline: float | None = None) -> Function:
    """Create a function; with a deadline, an external id still held by a just-deleted function is retried."""
    kwargs: dict[str, Any] = dict(
        name=name[:140], file_id=file_id, external_id=xid, function_path=options.function_path or HANDLER_FILE,
        description=options.description, owner=options.owner, secrets=secrets or None,
        env_vars=options.env_vars or None, runtime=options.runtime, metadata=metadata,
    )
    if options.cpu is not None:
        kwargs["cpu"] = float(options.cpu)
    if options.memory is not None:
        kwargs["memory"] = float(options.memory)

    def ours():  # a create whose answer was lost (a 503 after CDF acted): the function with our code file
        fn = retrieve(client, xid)
        return fn if fn is not None and fn.file_id == file_id else transient.NOT_YET

    intervals = _poll_intervals(client)
    while True:
        try:
            return transient.retry(lambda: client.functions.create(**kwargs), check=ours, deadline=deadline)
        except CogniteDuplicatedError:
            found = ours()
            if found is not transient.NOT_YET:
                return found
            if deadline is None or time.monotonic() >= deadline:
                raise MlopsError(f"function {xid} already exists: delete it, or deploy again") from None
            time.sleep(next(intervals))
        except CogniteAPIError as e:
            if transient.is_transient(e):
                raise MlopsError(f"CDF did not create function {xid}: it kept answering {e.code} ({e.message}); "
                                 "deploy again when CDF answers") from None
            raise MlopsError(f"CDF refused to create function {xid}: {e.message}") from None


def delete(client, xids: list[str]) -> None:
    """Delete functions by external id; ones already gone are fine."""
    for xid in xids:
        try:
            transient.retry(lambda: client.functions.delete(external_id=xid),  # noqa: B023 - called at once
                            check=lambda: None if retrieve(client, xid) is None else transient.NOT_YET)  # noqa: B023
        except CogniteNotFoundError:
            pass


def schedules_of(client, function_id: int) -> list[dict]:
    """A function's schedules, with their input data: deleting the function deletes them in CDF."""
    kept = []
    for schedule in client.functions.schedules.list(function_id=function_id, limit=FUNCTIONS_LIMIT):
        data = client.functions.schedules.get_input_data(id=schedule.id) if schedule.id is not None else None
        kept.append({"name": schedule.name, "cron_expression": schedule.cron_expression,
                     "description": schedule.description, "data": data or None})
    return kept


def recreate_schedules(client, function_id: int, schedules: list[dict]) -> None:
    """The schedules again, on the function that replaced theirs (new sessions, from this deploy's credentials)."""
    for schedule in schedules:
        client.functions.schedules.create(name=schedule["name"], cron_expression=schedule["cron_expression"],
                                          function_id=function_id, description=schedule["description"],
                                          data=schedule["data"])


def _build_error(fn) -> str:
    error = fn.error or {}
    message = error.get("message") or "no error message"
    trace = "\n".join((error.get("trace") or "").rstrip().splitlines()[-TRACE_LINES:])
    return message + (f"\nthe end of the build log:\n{trace}" if trace else "")


_warned: set[tuple] = set()


def runtime_mismatch(fn) -> str | None:
    """Says so when CDF runs the function on another Python than its runtime asks (the local CDF does, on a machine
    without that version): code that works there may fail on the version asked for."""
    asked = re.fullmatch(r"py(\d)(\d+)", fn.runtime or "")
    runs = re.search(r"(\d+)\.(\d+)", fn.runtime_version or "")
    if not asked or not runs or asked.groups() == runs.groups():
        return None
    return (f"the function asks for runtime {fn.runtime} but runs on {fn.runtime_version}: to run it on "
            f"{asked[1]}.{asked[2]}, install that Python here (or name it in MLOPS_LOCAL_CDF_PYTHONS)")


def wait_ready(client, xid: str, deadline: float, progress: Progress | None = None):
    """Poll until the function is Ready; BuildFailed if it failed, DeployTimeout past the deadline."""
    started = last_report = time.monotonic()
    for interval in _poll_intervals(client):
        fn = client.functions.retrieve(external_id=xid)
        if fn is None:
            raise MlopsError(f"function {xid} disappeared while waiting for it to be Ready: deleted by someone else?")
        if fn.status == "Ready":
            warning = runtime_mismatch(fn)
            if progress is not None and warning and (fn.file_id, warning) not in _warned:  # standby and live: once
                _warned.add((fn.file_id, warning))
                progress(f"warning: {warning}")
            return fn
        if fn.status == "Failed":
            raise BuildFailed(f"CDF could not build function {xid}: {_build_error(fn)}")
        now = time.monotonic()
        if now >= deadline:
            raise DeployTimeout(
                f"function {xid} was still {fn.status} after {now - started:.0f} s, past the deploy timeout "
                "(--timeout): check it in CDF and deploy again"
            )
        if progress is not None and now - last_report >= PROGRESS_EVERY:
            last_report = now
            progress(f"waiting for {xid} to be Ready: {fn.status}, {now - started:.0f} s")
        interrupts.check(f"while {xid} was being built")
        time.sleep(min(interval, max(0.0, deadline - now)))
    raise AssertionError("unreachable")


def wait_call(client, handle, deadline: float):
    """Poll a call until it ends or the deadline passes: the call as last seen (still Running past the deadline)."""
    for interval in _poll_intervals(client):
        now = time.monotonic()
        if handle.status != "Running" or now >= deadline:
            return handle
        time.sleep(min(interval, max(0.0, deadline - now)))
        handle = client.functions.calls.retrieve(call_id=handle.id, function_id=handle.function_id) or handle
    raise AssertionError("unreachable")


@dataclass
class CallOutcome:
    status: str  # Completed | Failed | Timeout
    response: object
    error: str
    logs: str
    seconds: float


def call(client, xid: str, data, deadline: float, progress: Progress | None = None) -> CallOutcome:
    """Call a function with data and wait for the call to end (polling, bounded by the deadline)."""
    started = last_report = time.monotonic()
    fn = client.functions.retrieve(external_id=xid)
    if fn is None:
        raise MlopsError(f"function {xid} does not exist")
    since = int(time.time() * 1000) - 1000

    def started_call():  # a call whose answer was lost: CDF started it (the only call of this caller since then)
        calls = client.functions.calls.list(function_id=fn.id, start_time={"min": since}, limit=10)
        return calls[0] if len(calls) == 1 else transient.NOT_YET

    handle = transient.retry(lambda: client.functions.call(id=fn.id, data=data, wait=False), check=started_call,
                             deadline=deadline)
    for interval in _poll_intervals(client):
        if handle.status != "Running":
            break
        now = time.monotonic()
        if now >= deadline:
            raise DeployTimeout(f"the call {handle.id} of {xid} was still running after {now - started:.0f} s")
        if progress is not None and now - last_report >= PROGRESS_EVERY:
            last_report = now
            progress(f"waiting for the call of {xid}: {now - started:.0f} s")
        interrupts.check(f"while the call of {xid} ran")
        time.sleep(min(interval, max(0.0, deadline - now)))
        handle = client.functions.calls.retrieve(call_id=handle.id, function_id=fn.id)
    response = None
    if handle.status == "Completed":
        response = client.functions.calls.get_response(call_id=handle.id, function_id=fn.id)
    logs = ""
    if handle.status != "Completed":
        try:
            entries = client.functions.calls.get_logs(call_id=handle.id, function_id=fn.id)
            logs = "\n".join(e.message for e in entries if e.message)[-3000:]
        except CogniteAPIError:
            logs = ""
    error = (handle.error or {}).get("message", "") if isinstance(handle.error, dict) else str(handle.error or "")
    return CallOutcome(handle.status, response, error, logs, time.monotonic() - started)
