"""The prediction service: initialise the model once per worker, then answer calls with its predictions.

Answers: {"status": "ok", "prediction": ..., "model_id": ...}; a ping ({} or no data) answers
{"status": "ok", "model_id": ..., "warm": <was the model already initialised>} after initialising, so a keep-warm
schedule or a post-deploy smoke call leaves the worker ready; any failure answers {"status": "error", "message": ...,
"model_id": ...}.
A call that is not a ping is recorded for model analytics (services/call_analytics.py) when the folder's settings
enable it: the call pays its summary and an append, a background thread writes the rows to RAW.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from akerbp.mlops.services import call_analytics, input_schema, responses
from akerbp.mlops.services.model_import import ModelImportError, import_model

_loaded: dict[str, "LoadedModel"] = {}  # function folder -> initialised model; survives calls in a warm worker
_lock = threading.Lock()


@dataclass
class LoadedModel:
    module: Any
    state: Any
    seconds: float


def is_ping(data) -> bool:
    return data is None or data == {}


def serve(data, settings: dict, root: Path, secrets: dict, client=None, call_info=None) -> dict:
    """One call's answer; a call that is not a ping is also recorded for analytics (call_analytics, when the
    settings enable it and the handler gave a client)."""
    if is_ping(data) or client is None or not call_analytics.enabled(settings):
        return _answer(data, settings, root, secrets)[0]
    time_ms, started = int(time.time() * 1000), time.perf_counter()
    response, error_type, predict_s = _answer(data, settings, root, secrets)
    outcome = call_analytics.Outcome(time_ms, time.perf_counter() - started, predict_s, error_type,
                                     response.get("prediction"))
    call_analytics.record(root, settings, client, call_info, data, outcome)
    return response


def _answer(data, settings: dict, root: Path, secrets: dict) -> tuple[dict, str | None, float | None]:
    """(answer, the error type for analytics or None when ok, seconds predict() took or None when it did not run)."""
    model_id = settings.get("model_id")
    log = responses.get_log()
    key = str(Path(root).resolve())
    warm = key in _loaded
    if not is_ping(data):
        try:
            problems = input_schema.violations(data, root, settings.get("input_schema"))
        except input_schema.InputSchemaError as e:
            return responses.failure(e, model_id, secrets), type(e).__name__, None
        if problems:
            listed = "; ".join(problems)
            message = f"input does not match {settings['input_schema']}: {listed}"
            return responses.error(message, model_id, secrets), "InputSchema", None
    try:
        loaded = load(root, settings, secrets)
    except ModelImportError as e:
        return responses.failure(e, model_id, secrets), type(e).__name__, None
    except Exception as e:
        return responses.failure(e, model_id, secrets, during="initialization failed"), type(e).__name__, None
    if is_ping(data):
        return {"status": "ok", "model_id": model_id, "warm": warm}, None, None
    started = time.perf_counter()
    try:
        prediction = loaded.module.predict(data, loaded.state, secrets)
    except Exception as e:
        expected = type(e).__name__ == "ModelException"
        answer = responses.failure(e, model_id, secrets, during=None if expected else "predict() failed")
        return answer, type(e).__name__, time.perf_counter() - started
    predict_s = time.perf_counter() - started
    problem = responses.json_problem(prediction, "the prediction")
    if problem:
        log.error("%s", problem)
        return responses.error(problem, model_id, secrets), "ResponseInvalid", predict_s
    return {"status": "ok", "prediction": prediction, "model_id": model_id}, None, predict_s


def load(root: Path, settings: dict, secrets: dict) -> LoadedModel:
    """Import and initialise the model of `root` once; a failure is not cached, so the next call retries."""
    key = str(Path(root).resolve())
    loaded = _loaded.get(key)
    if loaded is not None:
        return loaded
    with _lock:
        if key in _loaded:
            return _loaded[key]
        module = import_model(Path(key), settings["model_module"], "prediction")
        artifact = settings.get("artifact_folder")
        artifact_folder = str(Path(key) / artifact) if artifact else None
        started = time.monotonic()
        state = module.initialization(artifact_folder, secrets)
        loaded = LoadedModel(module, state, time.monotonic() - started)
        _loaded[key] = loaded
        responses.get_log().info(
            "initialised %s (%s) in %.2f s", settings["model_name"], settings.get("model_id"), loaded.seconds
        )
        return loaded
