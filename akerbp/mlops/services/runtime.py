"""What handler.py calls: read the service settings of the function folder and dispatch to the service.

The folder's layout (function_folder.py, shared with the deploy step that builds it): handler.py, the service
settings {"model_name", "service": "prediction"|"training", "env", "model_id", "model_module", "artifact_folder",
"input_schema", "deployment_condition", "dataset", "secrets", "analytics"}, the bundled akerbp/mlops/, the model
code's top folder and artifact/.

Paths in the settings are relative to the folder. Never raises: every problem is a {"status": "error"} answer.
An automation function's folder (service "automation") is dispatched to automations.steps.handle, whose notify step
raises on purpose when the run failed (so the workflow execution fails).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from akerbp.mlops.function_folder import SERVICE_SETTINGS_FILE, SERVICE_SETTINGS_REQUIRED
from akerbp.mlops.services import masking, responses
from akerbp.mlops.services.responses import ServiceError
from akerbp.mlops.vocabulary import AUTOMATION, SERVICES

_settings: dict[str, dict] = {}
_lock = threading.Lock()


class ServiceSettingsError(ServiceError):
    """The function folder's service settings are missing or wrong: a deployment problem."""


def load_settings(root: Path) -> dict:
    """The folder's service settings, read once per worker."""
    key = str(Path(root).resolve())
    with _lock:
        if key in _settings:
            return _settings[key]
        path = Path(key) / SERVICE_SETTINGS_FILE
        try:
            settings = json.loads(path.read_text())
        except FileNotFoundError:
            raise ServiceSettingsError(f"{path} is missing: this folder was not built by the akerbp.mlops deploy step") from None
        except json.JSONDecodeError as e:
            raise ServiceSettingsError(f"{path} is not valid JSON: {e}") from None
        if not isinstance(settings, dict):
            raise ServiceSettingsError(f"{path} must hold a JSON object")
        missing = [name for name in SERVICE_SETTINGS_REQUIRED if not settings.get(name)]
        if missing:
            raise ServiceSettingsError(f"{path} lacks {', '.join(missing)}")
        if settings["service"] not in SERVICES + (AUTOMATION,):
            raise ServiceSettingsError(
                f"{path}: service must be 'prediction', 'training' or '{AUTOMATION}', got {settings['service']!r}"
            )
        _settings[key] = settings
        return settings


def handle(data, client, secrets, function_call_info, root) -> dict:
    """Serve one call of the function whose folder is `root`."""
    started = time.monotonic()
    secrets = dict(secrets or {})
    responses.register_secrets(secrets)
    try:
        with masking.masked_output(secrets):  # what the model prints or logs during the call
            response = _serve(data, client, secrets, function_call_info, root, started)
    except SystemExit as e:  # the model called sys.exit(): the call fails, as in CDF, but its message is masked
        raise SystemExit(masking.mask_value(e.code, secrets)) from None
    return masking.mask_value(response, secrets)  # what it returns


def _serve(data, client, secrets: dict, function_call_info, root, started: float) -> dict:
    log = responses.get_log()
    try:
        settings = load_settings(root)
    except ServiceSettingsError as e:
        return responses.failure(e, None, secrets)
    root = Path(root).resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    absent = [name for name in settings.get("secrets") or [] if name not in secrets]
    if absent:
        log.warning("secret(s) %s named in the settings were not passed to this call", ", ".join(absent))
    if settings["service"] == AUTOMATION:  # a workflow task: its failures are answers, or raised on purpose
        from akerbp.mlops.automations import steps

        return steps.handle(data, client, secrets, root=root)
    try:
        if settings["service"] == "prediction":
            from akerbp.mlops.services import prediction

            response = prediction.serve(data, settings, root, secrets, client, function_call_info)
        else:
            from akerbp.mlops.services import training

            response = training.serve(data, client, settings, root, secrets)
    except Exception as e:  # the services answer their own failures; this is the last line of defence
        response = responses.failure(e, settings.get("model_id"), secrets, during=f"{settings['service']} service")
    call_id = (function_call_info or {}).get("call_id")
    log.info(
        "%s %s call%s: %s in %.3f s",
        settings["model_name"],
        settings["service"],
        f" {call_id}" if call_id is not None else "",
        response.get("status"),
        time.monotonic() - started,
    )
    return response
