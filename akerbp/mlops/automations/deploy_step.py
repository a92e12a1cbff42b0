"""The deploy step: only if the gate passed, the deploy path of `mlops deploy` (deployment.deploy.deploy_in_function:
build, service test, standby, replace, smoke, automatic rollback, audit) to each environment in order.

A later environment (prod) first gets the version by promotion from the one before; a failure stops the rest. The
model's settings come from the function folder's JSON, pinned to the trained version, with the automation's
DeploymentSpecifications as the prediction function's options.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from akerbp.mlops.automations.upstream import environments, upstream_failure
from akerbp.mlops.services import responses

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.settings_schema import ModelSettings

SKIP_TESTS = "the automation runs the code registered; the pipeline tested it"
DEFAULT_DEPLOY_TIMEOUT_S = 540.0  # a CDF Function call ends after 10 minutes: the deploy must end before


def deploy(definition: dict[str, Any], upstream: Mapping[str, Any], client: CogniteClient, secrets: dict[str, str],
           root: Path) -> dict[str, Any]:
    failed = upstream_failure(upstream, ("train", "gate"))
    if failed:
        return {"ok": False, "error": failed, "passed_on": True}
    if not upstream["gate"].get("passed"):
        return {"ok": True, "deployed": [], "not_deployed_reason": upstream["gate"].get("reason")}
    from akerbp.mlops.deployment.deploy import InFunction, deploy_in_function
    from akerbp.mlops.registry import promotion

    spec = definition["action"].get("deployment") or {}
    trained = upstream["train"]
    version = trained["version"]
    settings = pinned_settings(root, version, spec)
    log = responses.get_log()
    envs = environments(definition)
    deployed: list[dict[str, Any]] = []
    phases: dict[str, float] = {}
    error = None
    work = Path(tempfile.mkdtemp(prefix="mlops-automation-"))
    try:
        inside = InFunction(SKIP_TESTS, secrets, work, trained.get("commit") or "")
        for i, env in enumerate(envs):
            if i > 0:
                t = time.monotonic()
                try:
                    promotion.promote_model(settings.model_name, version, to_env=env, from_env=envs[i - 1],
                                            client=client)
                except Exception as e:  # noqa: BLE001 - the registry's refusal or CDF's failure stops the rest
                    error = f"promoting version {version} from {envs[i - 1]} to {env} failed: {e}"
                    break
                finally:
                    phases[f"promote {env}"] = round(time.monotonic() - t, 3)
            t = time.monotonic()
            result = deploy_in_function(client, settings, env, inside,
                                        timeout=float(spec.get("timeout") or DEFAULT_DEPLOY_TIMEOUT_S),
                                        progress=lambda message: log.info("%s", message))
            phases[f"deploy {env}"] = round(time.monotonic() - t, 3)
            phases.update({f"deploy {env}: {k}": round(v, 3) for k, v in result.phases.items()})
            deployed.append({"env": env, "model_id": result.model_id, "result": result.result,
                             "function": result.function, "seconds": round(result.seconds, 3),
                             "message": result.message[:1000]})
            if not result.ok:
                error = f"deploying to {env} {'rolled back' if result.result == 'rolled_back' else 'failed'}: " \
                        f"{result.message}"
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"ok": error is None, "deployed": deployed, "phases": phases}
    if error:
        out["error"] = error[:4000]
    return out


def pinned_settings(root: Path, version: int, spec: Mapping[str, Any]) -> ModelSettings:
    """The model's settings (the folder's JSON, rooted at the folder) pinned to `version`, with the automation's
    DeploymentSpecifications (cpu, memory, env_vars on top of the model's) as the prediction function's options."""
    from akerbp.mlops.function_folder import AUTOMATION_SETTINGS_KEY
    from akerbp.mlops.services import runtime
    from akerbp.mlops.settings_schema import ModelSettings

    settings = ModelSettings.model_validate(runtime.load_settings(root)[AUTOMATION_SETTINGS_KEY])
    settings._root = Path(root)
    update: dict[str, Any] = {"artifact_version": version,
                              "env_vars": {**settings.env_vars, **(spec.get("env_vars") or {})}}
    for field in ("cpu", "memory"):
        if spec.get(field) is not None:
            update[field] = float(spec[field])
    pinned = settings.model_copy(update=update)
    pinned._root = Path(root)
    return pinned
