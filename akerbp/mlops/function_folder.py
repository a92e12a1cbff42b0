"""The layout of a function folder, defined once: the deploy step writes it (deployment/build.py), the code running
inside the deployed function reads it (services/runtime.py), the local handler call and rollback look into it.

Standard library only: it is bundled into every function.

    handler.py                    copy of akerbp/mlops/services/function_handler.py (prediction_handler.py for a
                                  prediction service without analytics): CDF's entry point
    mlops_service_settings.json   what the service needs: model name, service, env, model id, module, artifact
                                  folder, input schema, deployment condition, data set, secret names, analytics
    mlops_function.json           the function options (name, description, owner, metadata, env vars, cpu,
                                  memory, runtime, secret NAMES): rollback recreates the function from it
    requirements.txt              requirements.model minus akerbp.mlops (the runtime is bundled)
    akerbp/mlops/...              the bundled runtime
    <code folder>/...             the model code's top folder, common code included
    artifact/...                  the model artifact (prediction only)
An automation function's folder (vocabulary.AUTOMATION) also holds the model's test and requirements files at their
paths in the repo, and its service settings hold the model's settings as JSON (AUTOMATION_SETTINGS_KEY).

Paths inside the settings files are relative to the folder.
"""
from __future__ import annotations

HANDLER_FILE = "handler.py"
SERVICE_SETTINGS_FILE = "mlops_service_settings.json"
OPTIONS_FILE = "mlops_function.json"
REQUIREMENTS_FILE = "requirements.txt"
ARTIFACT_DIR = "artifact"
BUNDLE_DIR = "akerbp/mlops"  # the bundled runtime, the package as it is laid out in the source
# Where handler.py comes from, relative to the akerbp.mlops package: a prediction's names no `client` (CDF then builds
# none per call) unless it records analytics (the rows go to RAW with the call's client); the others' do.
HANDLER_SOURCE = ("services", "function_handler.py")
PREDICTION_HANDLER_SOURCE = ("services", "prediction_handler.py")


def handler_source(service: str, analytics: bool = False) -> tuple[str, str]:
    return PREDICTION_HANDLER_SOURCE if service == "prediction" and not analytics else HANDLER_SOURCE

AUTOMATION_SETTINGS_KEY = "model_settings"  # an automation folder's ModelSettings, as JSON
# Keys of mlops_service_settings.json that every folder must have (the others may be null).
SERVICE_SETTINGS_REQUIRED = ("model_name", "service", "env", "model_module")

# Top-level names the layout itself uses: a model's code folder may not take one.
RESERVED_NAMES = (HANDLER_FILE, ARTIFACT_DIR, BUNDLE_DIR.split("/")[0], REQUIREMENTS_FILE)
RESERVED_PREFIX = "mlops_"


def is_reserved(top_level_name: str) -> bool:
    """Whether a model code folder named so would clash with the folder's own files."""
    return top_level_name in RESERVED_NAMES or top_level_name.startswith(RESERVED_PREFIX)
