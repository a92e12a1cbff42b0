"""CDF Functions: create from a code zip in Files, build in the background (Queued -> Deploying -> Ready | Failed).

A build extracts the zip under the data dir, checks the handler, prepares the Python (environments.py: the runtime's
version with requirements.txt installed, or the server's as it is) and imports the handler in a warm worker, so an
import error fails the function at deploy time as in CDF. The code folder is on disk, so any process sharing the data
dir can run calls.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from ..http.app import Ctx, Router
from ..http.errors import CDFError, bad_request, duplicated
from ..http.filters import eq, metadata, prefix, time_range
from ..http.resources import Kind
from ..store import public
from ..http.validation import NUMBER, check, items, metadata_limits, text_limit

if TYPE_CHECKING:
    from ..runtime.host import FunctionRuntime

routes = Router()
KIND = "functions"
RUNTIMES = ("py310", "py311", "py312", "py313")
SECRET_KEY = re.compile(r"^[a-z0-9-]{1,15}$")
FIELDS = {
    "name": str, "externalId": str, "fileId": int, "functionPath": str, "description": str, "owner": str,
    "secrets": dict, "envVars": dict, "cpu": NUMBER, "memory": NUMBER, "runtime": str, "metadata": dict,
    "indexUrl": str, "extraIndexUrls": list, "dataSetId": int,
}
CPU, MEMORY = {"min": 0.1, "max": 0.6, "default": 0.25}, {"min": 0.1, "max": 2.5, "default": 1.0}


def _view(fn: dict) -> dict:
    """A function as CDF shows it: secrets masked, no lastUpdatedTime (CDF's functions have none)."""
    view = public(fn)
    view.pop("lastUpdatedTime", None)
    if fn.get("_secrets"):
        view["secrets"] = {k: "***" for k in fn["_secrets"]}
    return view


FUNCTIONS = Kind(
    KIND, "Functions", view=_view, max_limit=10_000,  # the SDK asks for 10,000 at once: functions have no cursor
    byids_max_items=10, snake_case_ids=True,
    filters={"name": eq("name"), "owner": eq("owner"), "fileId": eq("fileId"), "status": eq("status"),
             "externalIdPrefix": prefix("externalId"), "createdTime": time_range("createdTime"),
             "metadata": metadata},
)
BUILDING = ("Queued", "Deploying")


def _validate(item: dict, where: str, limits) -> dict:
    check(item, FIELDS, where, required=("name", "fileId"))
    for key, maximum in (("name", 140), ("externalId", 255), ("description", 500), ("owner", 128),
                         ("functionPath", 500), ("indexUrl", 500)):
        text_limit(item.get(key), f"{where}.{key}", maximum)
    metadata_limits(item.get("metadata"), f"{where}.metadata", 16, 32, 512)
    secrets = item.get("secrets") or {}
    if len(secrets) > 30:
        raise bad_request(f"Field '{where}.secrets' has {len(secrets)} keys; the limit is 30")
    for key, value in secrets.items():
        if not SECRET_KEY.match(key):
            raise bad_request(f"Secret key '{key}' in '{where}.secrets' must be 1-15 lowercase letters, digits or '-'")
        if not isinstance(value, str):
            raise bad_request(f"Secret '{where}.secrets.{key}' must be a string")
    env_vars = item.get("envVars") or {}
    if len(env_vars) > 100 or not all(isinstance(v, str) for v in env_vars.values()):
        raise bad_request(f"Field '{where}.envVars' must be at most 100 string values")
    runtime = item.get("runtime") or "py311"
    if runtime not in RUNTIMES:
        raise bad_request(f"Field '{where}.runtime' must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    for key, bounds in (("cpu", CPU), ("memory", MEMORY)):
        value = item.get(key)
        if value is not None and not bounds["min"] <= value <= bounds["max"]:
            raise bad_request(f"Field '{where}.{key}' must be between {bounds['min']} and {bounds['max']}")
    path = item.get("functionPath") or "handler.py"
    if not path.endswith(".py") or path.startswith("/") or ".." in Path(path).parts:
        raise bad_request(f"Field '{where}.functionPath' must be a relative path to a .py file, got {path!r}")
    return item


@routes.post("/functions")
def create(ctx: Ctx) -> dict:
    raw = items(ctx.body, max_items=1)
    item = _validate(raw[0], "items[0]", ctx.limits)
    file = ctx.store.get(ctx.project, "files", item["fileId"])
    if file is None or not file.get("uploaded"):
        raise bad_request(f"Field 'items[0].fileId': file {item['fileId']} does not exist or has no content yet")
    body = {
        "name": item["name"], "externalId": item.get("externalId"), "fileId": item["fileId"],
        "functionPath": item.get("functionPath") or "handler.py", "description": item.get("description"),
        "owner": item.get("owner"), "envVars": item.get("envVars"), "cpu": item.get("cpu") or CPU["default"],
        "memory": item.get("memory") or MEMORY["default"], "runtime": item.get("runtime") or "py311",
        "metadata": item.get("metadata"), "status": "Queued", "_secrets": item.get("secrets") or {},
        "_indexUrl": item.get("indexUrl"), "_extraIndexUrls": item.get("extraIndexUrls") or [],
        # Claimed by this process from the start, so another process resuming builds never takes it over.
        "_builderPid": os.getpid(), "_buildClaim": uuid.uuid4().hex,
    }
    # CDF drops the none-like values (None, "", {}, []) it is sent: a function created without envVars, secrets or
    # metadata comes back without them, so a tool comparing it with its config (cognite-toolkit) sees no change.
    body = {k: v for k, v in body.items() if k.startswith("_") or v not in (None, "", {}, [])}
    with ctx.store.write() as db:
        if body.get("externalId") and ctx.store.get_xid(ctx.project, KIND, body["externalId"], db):
            raise duplicated([{"externalId": body["externalId"]}], "Functions")
        if ctx.store.count(ctx.project, KIND) >= ctx.limits.max_functions:
            raise bad_request(f"This project already has {ctx.limits.max_functions} functions, the limit: "
                              "delete one first")
        fn = ctx.store.insert(db, ctx.project, KIND, body)
    start_build(ctx.runtime, ctx.project, fn["id"], fn["_buildClaim"])
    return {"items": [_view(fn)]}


def _remove_function(ctx: Ctx, fn: dict) -> None:
    """A deleted function's warm workers, code folder and schedules go with it."""
    if ctx.runtime.started_workers is not None:
        ctx.runtime.started_workers.evict(worker_key(ctx.project, fn["id"]))
    shutil.rmtree(code_dir(ctx.runtime.data_dir, ctx.project, fn["id"]), ignore_errors=True)
    with ctx.store.write() as db:
        ctx.store.delete(db, ctx.project, "schedules", ctx.store.ids_where(db, ctx.project, "schedules", "functionId",
                                                                           fn["id"]))


FUNCTIONS.serve(routes, "/functions", "function_id", ("byids", "list", "one", "delete"), on_delete=_remove_function)


@routes.get("/functions/status")
def status(ctx: Ctx) -> dict:
    return {"status": "activated"}


@routes.post("/functions/status")
def activate(ctx: Ctx) -> dict:
    return {"status": "activated"}


@routes.get("/functions/limits")
def limits(ctx: Ctx) -> dict:
    return {"timeoutMinutes": int(ctx.limits.call_timeout_s // 60) or 1, "cpuCores": CPU, "memoryGb": MEMORY,
            "runtimes": list(RUNTIMES), "responseSizeMb": max(1, ctx.limits.max_response_bytes // 1_000_000)}


# -- building ---------------------------------------------------------------------------------------------
def worker_key(project: str, function_id: int) -> str:
    return f"{project}/{function_id}"


def code_dir(data_dir: Path, project: str, function_id: int) -> Path:
    return data_dir / "functions" / "".join(c if c.isalnum() or c in "-_" else "_" for c in project) / str(function_id)


def start_build(rt: "FunctionRuntime", project: str, function_id: int, claim: str) -> None:
    rt.builds.start(f"local-cdf-build-{project}-{function_id}", _build, rt, project, function_id, claim,
                     rt.stopping_event)


def resume_builds(rt: "FunctionRuntime") -> None:
    """Builds left Queued/Deploying by a process that has exited (or that stopped mid-build) are taken over, so
    no function hangs forever; the claim makes sure only one process takes each over."""
    for project in rt.store.projects():
        rows, _ = rt.store.query(project, KIND, ["json_extract(body, '$.status') IN ('Queued', 'Deploying')"])
        for fn in rows:
            claim = _claim(rt, project, fn["id"])
            if claim:
                start_build(rt, project, fn["id"], claim)


def _claim(rt: "FunctionRuntime", project: str, function_id: int) -> str | None:
    """Compare-and-set in one write transaction: take the build only if nobody alive holds it."""
    with rt.store.write() as db:
        fn = rt.store.get(project, KIND, function_id, db)
        if fn is None or fn.get("status") not in BUILDING or alive(fn.get("_builderPid")):
            return None
        fn.update(status="Queued", _builderPid=os.getpid(), _buildClaim=uuid.uuid4().hex)
        rt.store.save(db, project, KIND, fn)
        return fn["_buildClaim"]


def alive(pid) -> bool:
    """Whether a process with this pid exists (on this machine: the data dir is local)."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
        return True
    except PermissionError:  # exists, owned by someone else
        return True
    except (OSError, ValueError):
        return False


def _set(rt: "FunctionRuntime", project: str, function_id: int, claim: str, **changes) -> dict | None:
    """Apply a build's outcome only while the build still holds its claim (not deleted, not taken over)."""
    with rt.store.write() as db:
        fn = rt.store.get(project, KIND, function_id, db)
        if fn is None or fn.get("_buildClaim") != claim:
            return None
        fn.update(changes)
        return rt.store.save(db, project, KIND, fn)


def _build(rt: "FunctionRuntime", project: str, function_id: int, claim: str, cancel: threading.Event) -> None:
    import logging

    from ..runtime import environments
    from ..runtime.builder import BuildCancelled, BuildError, extract_code, validate_handler
    from .files import content_paths

    started = time.monotonic()
    try:
        if cancel.is_set():
            raise BuildCancelled()
        fn = _set(rt, project, function_id, claim, status="Deploying")
        if fn is None:
            return
        target = code_dir(rt.data_dir, project, function_id)
        with tempfile.TemporaryDirectory(dir=rt.data_dir) as tmp:
            zip_path = Path(tmp) / "code.zip"
            file = rt.store.get(project, "files", fn["fileId"])
            if file is None or not file.get("uploaded"):
                raise BuildError(f"The code file {fn['fileId']} was deleted before the function was built")
            with open(zip_path, "wb") as out:
                for part in content_paths(rt.store, project, file):
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            shutil.rmtree(target, ignore_errors=True)
            extract_code(zip_path, target)
        validate_handler(target, fn["functionPath"])
        env = environments.prepare(target, environments.cache_root(rt.data_dir), rt.isolation,
                                   fn.get("runtime") or "py311", fn.get("_indexUrl"), fn.get("_extraIndexUrls"), cancel)
        if env.note:  # CDF has no build log: runtimeVersion tells clients (mlops deploy warns), this the server's log
            logging.getLogger("akerbp.mlops.local_cdf").info(
                "Function %s (project %s): %s", fn.get("externalId") or function_id, project, env.note)
        error = rt.workers.check_import(worker_key(project, function_id), target, fn["functionPath"], env.python,
                                         fn.get("envVars") or {}, timeout=rt.limits.call_timeout_s, cancel=cancel,
                                         memory_gb=fn.get("memory"))
        if cancel.is_set():  # the import was cut short: no verdict on the code
            raise BuildCancelled()
        if error:
            raise BuildError(error["message"], error.get("trace", ""))
        # A simulated CDF build latency (LocalCDF(build_delay_s=...)): Deploying until then; stop() cuts it short.
        if cancel.wait(max(0.0, rt.build_delay_s - (time.monotonic() - started))):
            raise BuildCancelled()
        _set(rt, project, function_id, claim, status="Ready", _python=env.python, _folder=str(target),
             runtimeVersion=f"Python {env.version}")
    except Exception as e:
        if cancel.is_set():
            # Stopped mid-build: hand the build back (Queued, unclaimed) for the next start's resume_builds.
            _set(rt, project, function_id, claim, status="Queued", _builderPid=None, _buildClaim=None)
        elif isinstance(e, BuildError):
            _set(rt, project, function_id, claim, status="Failed", error={"message": e.message, "trace": e.trace})
        else:  # the build must end Failed, never stuck in Deploying
            _set(rt, project, function_id, claim, status="Failed",
                 error={"message": f"Local CDF build error: {e!r}", "trace": traceback.format_exc()})


def ready_function(ctx: Ctx, function_id: int) -> dict:
    fn = ctx.store.get(ctx.project, KIND, function_id)
    if fn is None:
        raise CDFError(400, "Function not found", missing=[{"id": function_id}])
    if fn["status"] != "Ready":
        detail = f": {fn['error']['message']}" if fn.get("error") else ""
        raise bad_request(f"Function {function_id} is {fn['status']}, not Ready, and cannot be called{detail}")
    return fn
