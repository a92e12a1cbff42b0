"""`mlops rollback MODEL`: put one of the kept previous deployments back live, from its code file.

No tests rerun and no folder rebuilt: the code file holds exactly what was deployed then (options included),
so the only CDF work is building the function again. As in a deploy, a standby of the target is built first, so
the live function is removed only once the old code is proven to build again. Secrets come from MLOPS_SECRET_*
as in a deploy (CDF never hands them back). Afterwards a prediction service is pinged ({} initialises the model
and answers its model id); a training service is not called (a call would train and upload a version).
The CDF is the deploy's (cdf.client.client_for_env). Messages are masked: a failed ping carries the function's logs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from akerbp.mlops.vocabulary import ENVIRONMENTS, SERVICES, function_external_id, is_model_name
from akerbp.mlops.deployment import functions, records
from akerbp.mlops.deployment.deploy import DEFAULT_TIMEOUT
from akerbp.mlops.deployment.functions import Progress
from akerbp.mlops.deployment.switch import restore
from akerbp.mlops.deployment.target import Target
from akerbp.mlops.deployment.lock import DeployLock
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.utils.logger import mask
from akerbp.mlops.utils.provenance import who

if TYPE_CHECKING:
    from cognite.client.data_classes.functions import Function


@dataclass
class RollbackResult:
    model: str
    service: str
    env: str
    function: str
    result: str = "failed"  # rolled back | failed
    from_deployment: dict | None = None
    to_deployment: dict | None = None
    gap_seconds: float | None = None
    seconds: float = 0.0
    message: str = ""
    available: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _check_model(model: str) -> None:
    """The model must be in the settings when they load; a rollback must still work when they do not."""
    from akerbp.mlops.settings import load_settings, unknown_model_error

    if not is_model_name(model):
        raise UsageError(f"{model!r} is not a model name (lowercase letters, digits and '_')")
    try:
        names = [m.model_name for m in load_settings()]
    except UsageError:
        return
    if model not in names:
        raise unknown_model_error(model, names, "the settings")


def deployments(model: str, *, env: str, service: str = "prediction") -> tuple[Function | None, list[records.Deployment]]:
    """(the live function or None, kept deployments newest first)."""
    client = Target(env).client()
    live = function_external_id(model, service, env)
    return functions.retrieve(client, live), records.history(client, live)


def rollback(model: str, *, env: str | None = None, service: str = "prediction", to_version: int | None = None,
             timeout: float = DEFAULT_TIMEOUT, progress: Progress | None = None) -> RollbackResult:
    from akerbp.mlops.cdf.client import get_environment

    env = env or get_environment()
    if env not in ENVIRONMENTS:
        raise UsageError(f"environment {env!r} is unknown: use one of {', '.join(ENVIRONMENTS)}")
    if service not in SERVICES:
        raise UsageError(f"service {service!r} is unknown: use prediction or training")
    _check_model(model)
    live = function_external_id(model, service, env)
    say = (lambda m: progress(f"[{live}] {m}")) if progress else None
    result = RollbackResult(model, service, env, live)
    started_wall, started = time.time(), time.monotonic()
    client = Target(env).client()
    with DeployLock(client, live, started + timeout, say):  # never at the same time as a deploy of it
        _roll_back(client, model, service, env, live, to_version, result, started, started_wall, timeout, say)
    return result


def _roll_back(client, model, service, env, live, to_version, result, started, started_wall, timeout, say) -> None:
    from akerbp.mlops import audit

    current = functions.retrieve(client, live)
    kept = records.history(client, live)
    result.available = [d.as_dict() for d in kept]
    current_file = (current.metadata or {}).get("mlops_code_file") if current is not None else None
    current_dep = next((d for d in kept if str(d.file_id) == current_file), None)
    result.from_deployment = current_dep.as_dict() if current_dep else None
    candidates = [d for d in kept if str(d.file_id) != current_file]
    if to_version is not None:
        candidates = [d for d in candidates if d.version == str(to_version)]
    if not candidates:
        which = f"with artifact version {to_version} " if to_version is not None else ""
        have = "; ".join(d.describe() for d in kept) or "none"
        raise MlopsError(f"no previous deployment {which}of {live} is kept (kept: {have}): deploy the version you "
                         "want instead (pin it with artifact_version)")
    target = candidates[0]
    result.to_deployment = target.as_dict()
    outcome, version = "failed", target.version or None
    try:
        if say:
            say(f"rolling back to {target.describe()}")
        switched = restore(client, live, target, started + timeout, say, use_standby=True,
                                   verified=service != "prediction")
        result.gap_seconds = switched.gap
        if service == "prediction":
            call = functions.call(client, live, {}, started + timeout, say)
            response = call.response if isinstance(call.response, dict) else {}
            if call.status != "Completed" or response.get("status") != "ok":
                raise MlopsError(f"{live} runs the old code again, but its ping failed ({call.status}): "
                                 f"{response.get('message') or call.error or call.logs}")
            if target.model_id and response.get("model_id") != target.model_id:
                raise MlopsError(f"{live} answers model {response.get('model_id')!r}, not {target.model_id!r}")
            records.mark_verified(client, target.file_id, switched.function_id, who())
        records.cleanup(client, live)
        result.result, outcome = "rolled back", "success"
    except MlopsError as e:
        result.message = mask(str(e))  # for the audit event; the CLI masks what it prints
        raise
    except Exception as e:  # noqa: BLE001 - CDF unreachable, an SDK error: one masked line (the CLI adds nothing)
        from akerbp.mlops.cdf.client import describe_failure

        result.message = describe_failure(e)
        raise MlopsError(result.message) from e
    finally:
        result.seconds = time.monotonic() - started
        audit.write(client, audit.AuditEntry(
            "rollback", model=model, env=env, outcome=outcome, started=started_wall, service=service, version=version,
            model_id=target.model_id or None, code_hash=target.content_hash, message=result.message,
            extra={"function": live, "from_hash": (current_dep.content_hash if current_dep else ""),
                   "gap_s": "" if result.gap_seconds is None else f"{result.gap_seconds:.3f}",
                   "seconds": f"{result.seconds:.1f}"}))
