"""The framework's words, defined once: environments, services, the model-name rule, every external id the framework
writes to CDF, and the names of secret variables.

Standard library only, so settings, the CLI, the deployer, the registry and the code bundled into every CDF function
can all import it. Model names hold no '-' (and no '/'), which is what keeps the id forms below from colliding:

    live function        {model}-{service}-{env}
    standby function     {model}-{service}-{env}-{hash[:10]}     same code as it will go live with
    function code file   mlops-code/{model}-{service}-{env}/{hash[:16]}
    model version        {model}/{env}/{n}                        n = 1, 2, ...
    local dev artifact   {model}/dev/local-{digest[:10]}           never a registry id
    version index marker mlops-index/{model}/{env}/{block}
    deploy lock event    mlops-lock/{live function}
    audit event          mlops-audit/{uuid4 hex}
    automation function  {model}-automation-{env}                 the framework + the model code, run by workflows
    automation workflow  mlops-automation-{env}-{automation}      its trigger has the same external id
    batch function       {model}-batch-{env}                      the live prediction's code, run over CDF Files
    batch output file    mlops-batch/{model}/{env}/{execution}/{input file external id or id}
    analytics RAW table  database mlops-analytics-{env}, table {model}-calls: one row per prediction call
    secret variable      MLOPS_SECRET_{NAME}                       'my-key' -> MLOPS_SECRET_MY_KEY
"""
from __future__ import annotations

import re

ENVIRONMENTS = ("dev", "test", "prod")
SERVICES = ("prediction", "training")
AUTOMATION = "automation"  # the third kind of function per model and environment: the steps automations run
BATCH = "batch"  # the fourth: the live prediction's code and artifact, predicting over CDF Files

MODEL_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
MODEL_NAME_MAX = 40  # CDF's function external id limit leaves room for '-{service}-{env}-{hash[:10]}'
MODEL_NAME_RULE = (f"lowercase letters, digits and '_', starting with a letter, at most {MODEL_NAME_MAX} characters "
                   f"({MODEL_NAME_PATTERN})")
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)

SECRET_ENV_PREFIX = "MLOPS_SECRET_"

CODE_PREFIX = "mlops-code/"
INDEX_PREFIX = "mlops-index/"
LOCK_PREFIX = "mlops-lock/"
AUDIT_PREFIX = "mlops-audit/"
AUTOMATION_PREFIX = "mlops-automation-"
AUTOMATION_WORKFLOW_VERSION = "1"  # one version per automation workflow, upserted in place: executions keep their history
# An automation's name: the model-name rule (it forms external ids; no '-', so ids do not collide).
AUTOMATION_NAME_PATTERN = MODEL_NAME_PATTERN
AUTOMATION_NAME_MAX = 100
BATCH_OUTPUT_PREFIX = "mlops-batch/"
ANALYTICS_DATABASE_PREFIX = "mlops-analytics-"
ANALYTICS_CALLS_SUFFIX = "-calls"
LOCAL_ARTIFACT_PREFIX = "local-"
LOCAL_DIGEST_CHARS = 10

# A registry version's external id: (model, env, number).
VERSION_XID = re.compile(r"^([a-z][a-z0-9_]*)/(dev|test|prod)/([1-9][0-9]*)$")


def is_model_name(name: object) -> bool:
    return isinstance(name, str) and bool(_MODEL_NAME.match(name)) and len(name) <= MODEL_NAME_MAX


def function_external_id(model: str, service: str, env: str) -> str:
    """The live function of MODEL's SERVICE in ENV."""
    return f"{model}-{service}-{env}"


def standby_external_id(live: str, content_hash: str) -> str:
    return f"{live}-{content_hash[:10]}"


def is_standby(live: str, external_id: str | None) -> bool:
    """Whether `external_id` is a standby of the live function `live`."""
    suffix = (external_id or "")[len(live) + 1:]
    return (external_id or "").startswith(f"{live}-") and suffix.isalnum()


def code_file_external_id(live: str, content_hash: str) -> str:
    return f"{CODE_PREFIX}{live}/{content_hash[:16]}"


def code_file_prefix(live: str) -> str:
    return f"{CODE_PREFIX}{live}/"


def version_external_id(model: str, env: str, number: int) -> str:
    return f"{model}/{env}/{number}"


def local_artifact_id(model: str, digest: str) -> str:
    return f"{model}/dev/{LOCAL_ARTIFACT_PREFIX}{digest[:LOCAL_DIGEST_CHARS]}"


def index_marker_external_id(model: str, env: str, block: int) -> str:
    return f"{INDEX_PREFIX}{model}/{env}/{block}"


def lock_external_id(live: str) -> str:
    return f"{LOCK_PREFIX}{live}"


def audit_external_id(uuid_hex: str) -> str:
    return f"{AUDIT_PREFIX}{uuid_hex}"


def secret_env_var(name: str) -> str:
    """The environment variable holding secret `name`."""
    return SECRET_ENV_PREFIX + name.upper().replace("-", "_")


def automation_function_external_id(model: str, env: str) -> str:
    """The function whose calls are the steps (train, gate, deploy, notify) of MODEL's automations in ENV."""
    return function_external_id(model, AUTOMATION, env)


def automation_workflow_external_id(name: str, env: str) -> str:
    """The Data Workflow (and its schedule trigger) of automation NAME registered in ENV."""
    return f"{AUTOMATION_PREFIX}{env}-{name}"


def automation_workflow_prefix(env: str) -> str:
    return f"{AUTOMATION_PREFIX}{env}-"


def is_automation_name(name: object) -> bool:
    return isinstance(name, str) and bool(_MODEL_NAME.match(name)) and len(name) <= AUTOMATION_NAME_MAX


def batch_function_external_id(model: str, env: str) -> str:
    """The function that runs MODEL's live prediction code over files in ENV (mlops batch, BatchExecution)."""
    return function_external_id(model, BATCH, env)


def batch_output_external_id(model: str, env: str, execution: str, source: str) -> str:
    """The predictions written for input file `source` (its external id, or its id) by batch run `execution`."""
    return f"{BATCH_OUTPUT_PREFIX}{model}/{env}/{execution}/{source}"


def analytics_database(env: str) -> str:
    """The RAW database holding model analytics of ENV (one per environment, so access can be granted per env)."""
    return f"{ANALYTICS_DATABASE_PREFIX}{env}"


def analytics_calls_table(model: str) -> str:
    """The RAW table of MODEL's prediction calls (in analytics_database(env))."""
    return f"{model}{ANALYTICS_CALLS_SUFFIX}"
