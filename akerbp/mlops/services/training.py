"""The training service: train into a temporary folder, then register the result as a new model version.

Answers {"status": "ok", "training": {"version", "model_id", "metadata", "uploaded", "file_id", "sha256",
"deployment_condition"?}}, metadata being what train() returned.
In prod a version is uploaded only if the model's deployment_condition holds for the metrics train() returned;
elsewhere the condition, if any, is reported but does not block. With no CDF client (a local service test) the
model is trained and checked but not uploaded ("uploaded": false). A call with {} trains with the model's defaults:
unlike prediction, training has no ping.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from akerbp.mlops import conditions
from akerbp.mlops.services import masking, responses
from akerbp.mlops.services.model_import import ModelImportError, import_model

NO_PROD_CONDITION = (
    "training in prod needs a deployment_condition in the model's settings, or train in test and promote"
)


def condition_met(metadata: dict, condition: dict) -> tuple[bool, str]:
    """Whether metadata's metric meets condition {metric, direction, threshold}, and why (conditions.build_metric:
    the one meaning of each direction, shared with the automations' gate)."""
    problem = _condition_problem(condition)
    if problem:
        return False, problem
    verdict = conditions.build_metric(condition["metric"], condition["direction"], condition["threshold"], metadata)
    return verdict.met, verdict.detail


def _condition_problem(condition: object) -> str | None:
    if not isinstance(condition, dict):
        return f"deployment_condition must be an object {{metric, direction, threshold}}, got {condition!r}"
    if not isinstance(condition.get("metric"), str) or not condition["metric"]:
        return "deployment_condition.metric must be the name of a metric, e.g. 'r2'"
    try:
        conditions.direction(condition.get("direction"))
    except ValueError as e:
        return f"deployment_condition.direction: {e}"
    try:
        conditions.threshold(condition.get("threshold"))
    except ValueError as e:
        return f"deployment_condition.threshold: {e}"
    return None


def serve(data, client, settings: dict, root: Path, secrets: dict) -> dict:
    """Train, check the deployment condition, upload; with a client, the run is recorded in the audit trail."""
    started = time.time()
    answer = _train_and_upload(data, client, settings, root, secrets)
    if client is not None:
        _record(client, settings, started, answer)
    return answer


def _record(client, settings: dict, started: float, answer: dict) -> None:
    try:
        from akerbp.mlops import audit
    except Exception:  # an old bundle without the audit module: training itself went fine
        return
    training = answer.get("training") or {}
    ok = answer.get("status") == "ok" and training.get("uploaded")
    audit.record(client, "training", model=settings["model_name"], env=settings["env"], service="training",
                 outcome="success" if ok else "failed", started=started, version=training.get("version"),
                 model_id=training.get("model_id"), dataset=settings.get("dataset") or "mlops",
                 message="" if ok else str(answer.get("message", "")))


def _train_and_upload(data, client, settings: dict, root: Path, secrets: dict) -> dict:
    model_name, env = settings["model_name"], settings["env"]
    condition = settings.get("deployment_condition")
    log = responses.get_log()
    if env == "prod" and not condition:
        return responses.error(NO_PROD_CONDITION, None, secrets)
    problem = _condition_problem(condition) if condition else None
    if problem:
        return responses.error(problem, None, secrets)
    try:
        module = import_model(Path(root), settings["model_module"], "training")
    except ModelImportError as e:
        return responses.failure(e, None, secrets)
    try:  # before training, so a function folder without the registry fails fast, even in a local test
        from akerbp.mlops import registry
    except Exception as e:
        return responses.failure(e, None, secrets, during="the bundled model registry cannot be imported")
    folder = Path(tempfile.mkdtemp(prefix=f"mlops-train-{model_name}-"))
    try:
        try:
            metadata = module.train(data, str(folder), secrets)
        except Exception as e:
            expected = type(e).__name__ == "ModelException"
            return responses.failure(e, None, secrets, during=None if expected else "train() failed")
        problem = _metadata_problem(metadata, folder, getattr(registry, "RESERVED_KEYS", ()))
        if problem:
            return responses.error(problem, None, secrets)
        metadata = masking.mask_value(metadata, secrets)  # the registry keeps it: never a secret value in it
        result = {"version": None, "model_id": None, "metadata": metadata, "uploaded": False, "file_id": None,
                  "sha256": None}
        if condition:
            met, why = condition_met(metadata, condition)
            result["deployment_condition"] = {"met": met, "detail": why}
            if env == "prod" and not met:
                return responses.error(
                    f"deployment condition not met: {why.removesuffix(': not met')}; the new version was not uploaded", None, secrets
                )
            log.info("deployment condition %s: %s", "met" if met else "not met", why)
        if client is None:
            log.warning("no CDF client (a local call): %s trained and checked but not uploaded", model_name)
            return {"status": "ok", "training": result}
        try:
            uploaded = registry.upload_new_model_version(
                model_name,
                env,
                folder,
                metadata,
                client=client,
                dataset=settings.get("dataset") or "mlops",
                allow_prod=env == "prod",
            )
        except Exception as e:
            return responses.failure(e, None, secrets, during="uploading the new model version failed")
        # The model's own metadata, structured; the registry's copy has every value as a CDF string.
        result.update(
            version=uploaded["version"],
            model_id=uploaded["model_id"],
            file_id=uploaded.get("file_id"),
            sha256=uploaded.get("sha256"),
            uploaded=True,
        )
        log.info("uploaded %s as %s", model_name, uploaded["model_id"])
        return {"status": "ok", "training": result}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _metadata_problem(metadata, folder: Path, reserved_keys) -> str | None:
    """What would stop the registry from storing this training's result (checked in a local test too)."""
    if not isinstance(metadata, dict):
        return (
            f"train() returned {type(metadata).__name__}; it must return a dict of metadata, "
            "e.g. {'metrics': {'rmse': ...}}"
        )
    reserved = sorted(set(metadata) & set(reserved_keys))
    if reserved:
        return f"train() returned metadata key(s) {reserved} that the model registry reserves: rename them"
    problem = responses.json_problem(metadata, "the metadata train() returned")
    if problem:
        return problem
    if not any(folder.iterdir()):
        return "train() wrote nothing into folder_path: the artifact must be written there to be uploaded"
    return None
