"""The batch function of a model and environment (`{model}-batch-{env}`): the live prediction function's code and
artifact, with the batch engine as its entry point.

Its code is the live function's code file (the zip a deploy uploaded) with handler.py replaced by batch/handler.py
(which names `client`), this framework's batch package added under akerbp/mlops/batch/ (the live zip's bundled
framework may predate it), and DuckDB added to requirements.txt for parquet (the project's analytics engine:
already a core dependency, it streams parquet in and out without pyarrow's extra 40 MB). Its content hash is made
of the live function's hash and the batch package's sources, and is the function's mlops_hash: the batch function
is re-made when the live prediction changes (a deploy, a rollback) or the engine does, and reused otherwise.
It is made with the deploy's primitives (deployment/functions.py: upload_code, create, wait_ready) under the deploy
lock of its external id, so two runs starting together make it once. CDF cannot hand back secret values: the
live function's secrets (by name, from its mlops_function.json) are read from `secrets` or MLOPS_SECRET_<NAME>.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from akerbp.mlops.errors import UsageError
from akerbp.mlops.function_folder import HANDLER_FILE, OPTIONS_FILE, REQUIREMENTS_FILE
from akerbp.mlops.vocabulary import BATCH, batch_function_external_id, function_external_id

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes.functions import Function

    from akerbp.mlops.deployment.functions import Progress

PACKAGE = Path(__file__).resolve().parent
BUNDLED = ("__init__.py", "columnar.py", "engine.py", "formats.py", "handler.py")  # what the batch function needs of this package
BUNDLE_DIR = "akerbp/mlops/batch"
DUCKDB_REQUIREMENT = "duckdb>=1.1"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
LIVE_FUNCTION_KEY, LIVE_HASH_KEY = "mlops_live_function_id", "mlops_live_hash"


class NoLivePrediction(UsageError):
    """No Ready live prediction function: there is no code to run a batch with."""


@dataclass(frozen=True)
class BatchFunction:
    function: Function
    live: Function
    outcome: str  # created | updated | unchanged
    seconds: float


def live_prediction(client: CogniteClient, model: str, env: str) -> Function:
    from akerbp.mlops.deployment import functions

    xid = function_external_id(model, "prediction", env)
    live = functions.retrieve(client, xid)
    deploy = f"`ENV={env} bash deploy_prediction_service.sh`"
    if live is None:
        raise NoLivePrediction(f"no live prediction service of model '{model}' in {env} ({xid}): deploy it first "
                               f"with {deploy}")
    if live.status != "Ready" or not (live.metadata or {}).get("mlops_hash") or live.file_id is None:
        raise NoLivePrediction(f"{xid} is {live.status}, not a Ready mlops prediction service: wait for its deploy, "
                               f"or redeploy with {deploy}")
    return live


def engine_digest() -> str:
    sha = hashlib.sha256(DUCKDB_REQUIREMENT.encode())
    for name in BUNDLED:
        sha.update(name.encode() + b"\0" + (PACKAGE / name).read_bytes())
    return sha.hexdigest()


def content_hash(live: Function) -> str:
    return hashlib.sha256(f"{(live.metadata or {})['mlops_hash']}\n{engine_digest()}".encode()).hexdigest()


def is_current(fn: Function | None, wanted: str) -> bool:
    return fn is not None and fn.status == "Ready" and (fn.metadata or {}).get("mlops_hash") == wanted


def ensure(client: CogniteClient, model: str, env: str, *, deadline: float, say: Progress,
           secrets: Mapping[str, str] | None = None) -> BatchFunction:
    """The batch function of `model` in `env`, Ready, made from the live prediction function now (re-made when
    that changed). Raises NoLivePrediction, UsageError (a secret not given), BuildFailed, DeployTimeout."""
    from akerbp.mlops.deployment import functions

    started = time.monotonic()
    xid = batch_function_external_id(model, env)
    live = live_prediction(client, model, env)
    wanted = content_hash(live)
    current = functions.retrieve(client, xid)
    if is_current(current, wanted):
        return BatchFunction(current, live, "unchanged", time.monotonic() - started)
    from akerbp.mlops.deployment.lock import DeployLock

    with DeployLock(client, xid, deadline, say):
        before = functions.retrieve(client, xid)
        if is_current(before, wanted):  # another run made it while this one waited for the lock
            return BatchFunction(before, live, "unchanged", time.monotonic() - started)
        fn = _make(client, model, env, live, wanted, before, deadline, say, secrets)
    outcome = "created" if before is None else "updated"
    say(f"{xid} {outcome} from {live.external_id} (hash {wanted[:10]})")
    return BatchFunction(fn, live, outcome, time.monotonic() - started)


def _make(client: CogniteClient, model: str, env: str, live: Function, wanted: str, before: Function | None,
          deadline: float, say: Progress, secrets: Mapping[str, str] | None) -> Function:
    from akerbp.mlops.deployment import functions, records
    from akerbp.mlops.deployment import secrets as secret_values
    from akerbp.mlops.deployment.options import FunctionOptions
    from akerbp.mlops.utils import provenance

    xid = batch_function_external_id(model, env)
    assert live.file_id is not None
    code = functions.download_code(client, live.file_id)
    zipped, options_dict = batch_zip(code)
    live_options = FunctionOptions.from_dict(options_dict)
    values = secret_values.resolve(live_options.secrets, lambda missing: (
        f"the batch function of model '{model}' in {env} runs the live prediction code, which needs the secret(s): "
        f"set {', '.join(missing)}"), given=secrets)
    options = FunctionOptions(
        external_id=xid, name=xid, description=f"batch predictions of {live.external_id} over CDF files",
        owner=live_options.owner, metadata=dict(live_options.metadata), env_vars=dict(live_options.env_vars),
        cpu=live_options.cpu, memory=live_options.memory, runtime=live_options.runtime, function_path=HANDLER_FILE,
        secrets=list(live_options.secrets))
    meta = live.metadata or {}
    mlops_md = records.mlops_metadata(
        model=model, service=BATCH, env=env, version=meta.get("mlops_version"), model_id=meta.get("mlops_model_id"),
        content_hash=wanted, commit=meta.get("mlops_git_commit", ""), deployed_at=records.now_iso(),
        by=provenance.who())
    live_file = client.files.retrieve(id=live.file_id)
    data_set = live_file.data_set_id if live_file is not None else None
    file, _ = functions.upload_code(client, xid, wanted, zipped, {**mlops_md, "mlops_status": "deployed"}, data_set)
    metadata = {**options.metadata, **mlops_md, "mlops_code_file": str(file.id), LIVE_FUNCTION_KEY: str(live.id),
                LIVE_HASH_KEY: meta.get("mlops_hash", "")[:64]}
    if before is not None:
        say(f"{xid} runs older code than {live.external_id}: re-making it")
        functions.delete(client, [xid])
    functions.create(client, xid, xid, file.id, options, values, metadata, deadline=deadline)
    fn = functions.wait_ready(client, xid, deadline, say)
    functions.delete_files(client, [f.id for f in functions.code_files(client, xid) if f.id != file.id])
    return fn


def _requirements(text: str) -> str:
    """The live requirements, with DuckDB added unless they name it already."""
    lines = text.splitlines()
    if any(re.match(r"^\s*duckdb\b", line, re.IGNORECASE) for line in lines):
        return text if text.endswith("\n") or not text else text + "\n"
    return "\n".join([*lines, f"{DUCKDB_REQUIREMENT}  # the batch engine's parquet reader and writer"]) + "\n"


def batch_zip(live_code: bytes) -> tuple[bytes, dict]:
    """The batch function's zip from the live function's (and the live function options, mlops_function.json):
    handler.py is the batch entry point, the batch package is this framework's, requirements.txt gets DuckDB."""
    entries: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(live_code)) as archive:
        for info in archive.infolist():
            if not info.is_dir() and not info.filename.startswith(BUNDLE_DIR + "/"):
                entries[info.filename] = archive.read(info)
    options = json.loads(entries.get(OPTIONS_FILE, b"{}") or b"{}")
    entries[HANDLER_FILE] = (PACKAGE / "handler.py").read_bytes()
    entries[REQUIREMENTS_FILE] = _requirements(entries.get(REQUIREMENTS_FILE, b"").decode()).encode()
    for name in BUNDLED:
        entries[f"{BUNDLE_DIR}/{name}"] = (PACKAGE / name).read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as out:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            out.writestr(info, entries[name])
    return buffer.getvalue(), options
