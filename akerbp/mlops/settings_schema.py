"""The settings' schema: one model's fields as pydantic models (ModelSettings and its parts), their documentation,
and the JSON Schema of mlops_settings.yaml made from them.

Kept apart from settings.py (finding, reading and validating a settings file, all problems at once), which
re-exports these names: import them from akerbp.mlops.settings.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from akerbp.mlops.vocabulary import MODEL_NAME_PATTERN, SERVICES
from akerbp.mlops.settings_files import field_name
from akerbp.mlops.settings_capture import pending_models


PythonVersion = Literal["py310", "py311", "py312", "py313"]
PYTHON_VERSIONS: tuple[str, ...] = get_args(PythonVersion)
SECRET_NAME_PATTERN = r"^[a-z0-9-]+$"


# --- the schema ----------------------------------------------------------------------------------------------------

MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=32)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
SecretName = Annotated[str, StringConstraints(min_length=1, max_length=15, pattern=SECRET_NAME_PATTERN)]
EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _not_a_boolean(value: Any) -> Any:
    # pydantic reads true as 1: `artifact_version: true` became a pin to version 1, `cpu: true` one core.
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean, not a number")
    return value


# Numbers of the settings: never a boolean; floats finite (`cpu: .inf` and `memory: "1e309"` are not sizes).
Count = Annotated[int, BeforeValidator(_not_a_boolean)]
Finite = Annotated[float, BeforeValidator(_not_a_boolean), Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ServiceInfo(_Strict):
    """What CDF shows for one deployed service; the limits are CDF Functions' own."""

    # default= by keyword, here and in ModelInfo: mypy reads a positional Field default as none, and ServiceInfo()
    # and ModelInfo() are built without arguments.
    description: str | None = Field(default=None, max_length=500, description="Function description (<= 500 characters).")
    owner: str | None = Field(default=None, max_length=128, description="Function owner, e.g. an email (<= 128 characters).")
    metadata: dict[MetadataKey, MetadataValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Function metadata: <= 16 pairs, keys <= 32 characters, values <= 512 characters.",
    )


class ModelInfo(_Strict):
    prediction: ServiceInfo | None = Field(default=None, description="Shown on the prediction service's function.")
    training: ServiceInfo | None = Field(default=None, description="Shown on the training service's function.")


class DeploymentCondition(_Strict):
    """Deploy only when the artifact's metadata[metric] compares with threshold as `direction` says (a quality
    gate); the meaning of each direction is akerbp.mlops.conditions', shared with the automations' BuildMetric."""

    metric: str = Field(min_length=1, description="Key in the model artifact's metadata, e.g. 'accuracy'.")
    direction: Literal["above", "below", "above_or_equals", "below_or_equals", "equals"] = Field(
        description="'above': metric > threshold; 'below': <; 'above_or_equals': >=; 'below_or_equals': <=; "
        "'equals': ==."
    )
    threshold: Finite


class Analytics(_Strict):
    """Model analytics: what the prediction service records of each call (akerbp.mlops.analytics, RAW table
    '{model}-calls' of database 'mlops-analytics-{env}')."""

    enabled: bool = Field(
        default=True, strict=True,
        description="Record one row per prediction call (latency, status, input and prediction statistics). The "
        "function then names `client`, so a fresh worker also imports cognite-sdk (~1 s, once).",
    )
    sample_inputs: Finite = Field(
        default=0.0, ge=0, le=1,
        description="Share of calls (0 to 1) whose raw input is stored too (cut to 64 kB of JSON); 0 stores none.",
    )


def _relative_path(value: str) -> str:
    path = PurePosixPath(value.replace("\\", "/"))
    if not value.strip():
        raise ValueError("is empty")
    if path.is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{value!r} is absolute; give a path relative to the settings file's folder")
    if ".." in path.parts:
        raise ValueError(f"{value!r} leaves the repo ('..'); keep model files under the settings file's folder")
    return str(path)


class ModelSettings(_Strict):
    """One model of the repo: its code, artifacts and how its services run in CDF.

    Paths are relative to the folder of the settings file (the repo root), which `root` holds after loading.
    """

    model_name: str = Field(
        max_length=40,
        pattern=MODEL_NAME_PATTERN,
        description="Lowercase letters, digits and '_', starting with a letter, <= 40 characters. Forms the "
        "function external ids '{model}-{service}-{env}' and artifact ids '{model}/{env}/{version}'.",
    )
    human_friendly_model_name: str | None = Field(
        None, max_length=140, description="Display name in CDF (default: model_name)."
    )
    model_file: str = Field(
        description="The model interface (initialization, predict, train), e.g. 'model_code/model.py'. Its top "
        "folder is deployed whole, so 'models/model1/model.py' ships 'models/' (with models/common_code)."
    )
    req_file: str = Field(
        "model_code/requirements.model",
        description="Pinned requirements of the model (not named requirements.txt: CDF installs that itself).",
    )
    test_file: str = Field("model_code/test_model.py", description="pytest tests and the ServiceTest payloads.")
    artifact_folder: str = Field(
        "model_artifact",
        description="Local artifact folder: uploaded as a new version, and deployed as-is when ENV=dev.",
    )
    artifact_version: Count | None = Field(
        None, ge=1, description="Pin: deploy this artifact version instead of the latest one of the environment."
    )
    info: ModelInfo = Field(default_factory=ModelInfo, description="Description, owner and metadata per service.")
    python_version: PythonVersion = Field("py311", description="CDF Functions runtime.")
    dataset: str = Field(
        "mlops", min_length=1, max_length=255, description="External id of the CDF data set for artifacts and functions."
    )
    cpu: Finite | None = Field(None, gt=0, description="CPU cores per function call (CDF's default when unset).")
    memory: Finite | None = Field(None, gt=0, description="Memory in GB per function call (CDF's default when unset).")
    env_vars: dict[EnvVarName, str] = Field(
        default_factory=dict, description="Environment variables of the deployed functions (not for secrets)."
    )
    secrets: list[SecretName] = Field(
        default_factory=list,
        max_length=30,
        description="Names of CDF Function secrets: lowercase letters, digits and '-', <= 15 characters, unique, "
        "at most 30. The value of secret 'my-key' is read at deploy time from the environment variable "
        "MLOPS_SECRET_MY_KEY (upper case, '-' -> '_') and never written to settings, logs or output.",
    )
    input_schema: str | None = Field(
        None, description="JSON Schema file (relative path) that prediction input must satisfy before predict() runs."
    )
    deployment_condition: DeploymentCondition | None = Field(
        None, description="Deploy only if the artifact's metadata passes this gate, e.g. accuracy above 0.8."
    )
    models_to_keep: Count = Field(3, ge=1, description="Deployments whose code is kept for rollback, the live one "
                                "included: 3 keeps the live deployment and 2 to roll back to.")
    analytics: Analytics = Field(
        default_factory=Analytics,
        description="Model analytics of the prediction service: {'enabled': true, 'sample_inputs': 0.0} by default.",
    )
    allow_no_tests: bool = Field(
        False, strict=True,
        description="Deploy even when test_file collects no pytest tests. Off by default: a model whose tests are "
        "missing (an empty file, a renamed test function) must not reach CDF untested.",
    )

    _root: Path | None = PrivateAttr(None)

    def __init__(self, /, **data: Any):
        pending = pending_models.get()
        if pending is None:
            super().__init__(**data)
            return
        # Loading a settings file: record the raw input so the loader validates every model and reports every
        # error together, instead of stopping at the first ModelSettings(...) that fails.
        pending[id(self)] = dict(data)
        try:
            super().__init__(**data)
        except ValidationError:
            object.__setattr__(self, "__dict__", dict(data))
            object.__setattr__(self, "__pydantic_fields_set__", set(data))
            object.__setattr__(self, "__pydantic_extra__", None)
            object.__setattr__(self, "__pydantic_private__", {"_root": None})

    @field_validator("model_file", "req_file", "test_file", "artifact_folder", "input_schema")
    @classmethod
    def _paths_stay_inside(cls, value: str | None) -> str | None:
        return None if value is None else _relative_path(value)

    @field_validator("model_file")
    @classmethod
    def _model_file_in_a_folder(cls, value: str) -> str:
        parts = PurePosixPath(value).parts
        if not value.endswith(".py"):
            raise ValueError(f"{value!r} is not a Python file (.py)")
        if len(parts) < 2:
            raise ValueError(f"{value!r} must be inside a folder, e.g. 'model_code/model.py': the top folder is deployed")
        if not all(p.isidentifier() for p in parts[:-1] + (parts[-1][:-3],)):
            raise ValueError(f"{value!r} is not importable: folder and file names must be Python identifiers")
        return value

    @field_validator("req_file")
    @classmethod
    def _not_requirements_txt(cls, value: str) -> str:
        if PurePosixPath(value).name == "requirements.txt":
            raise ValueError(
                f"{value!r}: name it requirements.model; CDF installs any requirements.txt by itself"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _unique_secrets(cls, value: list[str]) -> list[str]:
        dupes = sorted({s for s in value if value.count(s) > 1})
        if dupes:
            raise ValueError(f"secret names must be unique; repeated: {', '.join(dupes)}")
        return value

    @model_validator(mode="after")
    def _default_display_name(self) -> "ModelSettings":
        if self.human_friendly_model_name is None:
            self.human_friendly_model_name = self.model_name
        return self

    # --- derived values ------------------------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        """Folder of the settings file; the working directory for a ModelSettings made outside a settings file."""
        return self._root if self._root is not None else Path.cwd()

    @property
    def code_folder(self) -> str:
        """Top folder of model_file: deployed whole, so shared code beside the model ships too."""
        return PurePosixPath(self.model_file).parts[0]

    @property
    def module(self) -> str:
        """Dotted import path of model_file from the repo root, e.g. 'model_code.model'."""
        return ".".join(PurePosixPath(self.model_file).with_suffix("").parts)

    def path(self, relative: str) -> Path:
        return self.root / relative

    @property
    def model_path(self) -> Path:
        return self.path(self.model_file)

    @property
    def req_path(self) -> Path:
        return self.path(self.req_file)

    @property
    def test_path(self) -> Path:
        return self.path(self.test_file)

    @property
    def artifact_path(self) -> Path:
        return self.path(self.artifact_folder)

    @property
    def input_schema_path(self) -> Path | None:
        return self.path(self.input_schema) if self.input_schema else None

    @property
    def has_local_artifacts(self) -> bool:
        return self.artifact_path.is_dir()

    def function_external_id(self, service: str, env: str) -> str:
        from akerbp.mlops.vocabulary import function_external_id

        return function_external_id(self.model_name, service, env)

    def service_info(self, service: str) -> ServiceInfo:
        return getattr(self.info, service, None) or ServiceInfo()

    def deploy_problems(self, env: str, services=SERVICES) -> list[str]:
        """What a deploy of `services` to `env` would refuse, one line each ("field 'x': ..."); empty when none."""
        from akerbp.mlops.settings import deploy_problems

        return [f"model '{self.model_name}': field '{field_name(loc)}'{problem}"
                for loc, problem in deploy_problems(self.model_dump(exclude_unset=True), self.root, env, services)]

    def secret_values(self) -> dict[str, str]:
        """Secret name -> value from MLOPS_SECRET_*; registered for masking. UsageError names missing variables."""
        from akerbp.mlops.deployment.secrets import resolve

        return resolve(self.secrets, lambda missing: (
            f"model '{self.model_name}': field 'secrets': set the environment variable(s) {', '.join(missing)} "
            "to the secret values (in CI: as secured repository or deployment variables)"))


def settings_json_schema() -> dict:
    """JSON Schema of mlops_settings.yaml: `{"models": [...]}`, or (per YAML document) one model's mapping."""
    model = ModelSettings.model_json_schema(ref_template="#/$defs/{model}")
    defs = model.pop("$defs", {})
    defs["ModelSettings"] = model
    ref = {"$ref": "#/$defs/ModelSettings"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "akerbp.mlops settings (mlops_settings.yaml)",
        "description": "Either one document with a 'models' list, or one model per YAML document ('---' between).",
        "if": {"type": "object", "required": ["models"]},
        "then": {
            "type": "object",
            "properties": {"models": {"type": "array", "minItems": 1, "items": ref}},
            "additionalProperties": False,
        },
        "else": ref,
        "$defs": defs,
    }
