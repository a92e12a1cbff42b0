"""The models of a repo, read from mlops_settings.py or mlops_settings.yaml, validated all at once.

Bad settings must stop a pipeline with every problem named (file, model, field, line), never a traceback: the
anchor swallowed validation errors, so broken settings reached CDF. Structure is checked by pydantic; paths and
uniqueness by the loader, which knows the settings file's folder.
Reading the file (with the line of every key) and wording pydantic's errors live in settings_files.py.
"""
from __future__ import annotations

import json
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

from akerbp.mlops.vocabulary import ENVIRONMENTS, MODEL_NAME_PATTERN, SECRET_ENV_PREFIX, SERVICES, secret_env_var  # noqa: F401 -- re-exported
from akerbp.mlops.errors import UsageError
from akerbp.mlops.settings_files import RawModel, UnreadableSettings, display_path, explain, field_name, read_models
from akerbp.mlops.settings_capture import pending_models, safe_repr, safe_str

SETTINGS_FILES = ("mlops_settings.py", "mlops_settings.yaml")
PythonVersion = Literal["py310", "py311", "py312", "py313"]
PYTHON_VERSIONS: tuple[str, ...] = get_args(PythonVersion)
SECRET_NAME_PATTERN = r"^[a-z0-9-]+$"
MAX_ERRORS = 100


class SettingsError(UsageError):
    """Invalid settings; `errors` holds one line per problem, the message lists them all."""

    def __init__(self, errors: list[str], file: str | None = None):
        self.errors = list(errors)
        self.file = file
        head = f"{file} is invalid" if file else "invalid settings"
        count = f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}"
        super().__init__(f"{head} ({count}):\n" + "\n".join(f"  {e}" for e in self.errors))


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
    """Deploy only when the artifact's metadata[metric] is above/below threshold (a quality gate)."""

    metric: str = Field(min_length=1, description="Key in the model artifact's metadata, e.g. 'accuracy'.")
    direction: Literal["above", "below"] = Field(description="'above': metric must exceed threshold; 'below': stay under.")
    threshold: Finite


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


# --- finding the file -------------------------------------------------------------------------------------------


def find_settings_file(folder: Path | None = None) -> Path:
    folder = Path.cwd() if folder is None else folder
    found = [folder / name for name in SETTINGS_FILES if (folder / name).is_file()]
    if len(found) == 2:
        raise UsageError(
            f"both mlops_settings.py and mlops_settings.yaml are in {folder}: keep one, so there is one source of truth"
        )
    if found:
        return found[0]
    hint = " (found mlops_settings.yml: rename it to mlops_settings.yaml)" if (folder / "mlops_settings.yml").is_file() else ""
    raise UsageError(
        f"no mlops_settings.py or mlops_settings.yaml in {folder}{hint}: create one, or run `mlops init` to scaffold "
        "a model repo"
    )


def defined_model_names(folder: Path | None = None) -> tuple[str | None, list[str]]:
    """(settings file as shown, model names it defines) in `folder` (default: the working directory), read without
    validating, so a command given a model name can tell a typo from a model whose settings have other problems.
    (None, []) when there is no settings file; when it cannot be read, the file is shown with that said."""
    try:
        path = find_settings_file(folder)
    except UsageError:
        return None, []
    name = display_path(path)
    try:
        raws = read_models(path, name, ModelSettings)
    except UnreadableSettings:
        return f"{name}, which cannot be read: see `mlops settings validate`", []
    given = [raw.data.get("model_name") for raw in raws if isinstance(raw.data, dict)]
    return name, list(dict.fromkeys(n for n in given if isinstance(n, str) and n))


def unknown_model_error(names, known, where: str) -> UsageError:
    """The one error of every command given a model that neither the settings (nor, for commands reading CDF, CDF)
    know: exit 2, naming the known models and where they were looked up (`where`, e.g. "mlops_settings.py and CDF")."""
    names = [names] if isinstance(names, str) else list(names)
    known = sorted(set(known))
    return UsageError(f"unknown model {', '.join(map(repr, names))}: the known models are "
                      f"{', '.join(known) if known else 'none'} (in {where})")


# --- validation ----------------------------------------------------------------------------------------------------

_FIELD_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): ModelSettings,
    ("info",): ModelInfo,
    ("info", "prediction"): ServiceInfo,
    ("info", "training"): ServiceInfo,
    ("deployment_condition",): DeploymentCondition,
}
PATH_FIELDS = ("model_file", "req_file", "test_file", "input_schema")


def _path_errors(values: dict, root: Path, env: str | None, services, skip: set[str]) -> list[tuple[tuple, str]]:
    """(loc, problem) for each path that is not where the settings say, and with `env` what deploying there needs;
    runs on raw input too, so a model with other errors still gets its missing files reported."""
    errors = []
    defaults = {f: ModelSettings.model_fields[f].default for f in PATH_FIELDS + ("artifact_folder",)}
    model_file = values.get("model_file")
    code_folder = PurePosixPath(model_file).parts[0] if isinstance(model_file, str) and "/" in model_file else None
    escaped = set()
    for field, rel in [("model_file", code_folder)] + [(f, values.get(f, defaults[f])) for f in defaults]:
        leads_to = _outside(root, rel) if field not in skip and isinstance(rel, str) and rel else None
        if leads_to is not None and field not in escaped:
            escaped.add(field)
            errors.append(((field,), f": {rel} leads outside the repo (to {leads_to}) through a "
                           "symbolic link: a deploy ships the repo's own files; copy them in instead"))
    for field in PATH_FIELDS:
        rel = values.get(field, defaults[field])
        if field in skip or field in escaped or not isinstance(rel, str) or not rel:
            continue
        target = root / rel
        if not target.is_file():
            what = "is a folder, not a file" if target.is_dir() else "was not found"
            default = "" if field in values else " (the default; set the field to your file)"
            errors.append(((field,), f": {display_path(target)} {what}{default}"))
        elif field == "input_schema":
            problem = _schema_problem(target)
            if problem:
                errors.append(((field,), f": {display_path(target)}: {problem}"))
    if env is not None:
        errors += [(loc, problem) for loc, problem in deploy_problems(values, root, env, services)
                   if loc[0] not in skip]
    return errors


def _outside(root: Path, rel: str) -> Path | None:
    """Where `rel` really leads when a symbolic link takes it out of `root`, else None."""
    base = root.resolve()
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError):  # a link loop
        return root / rel
    return None if target == base or target.is_relative_to(base) else target


def deploy_problems(values: dict, root: Path, env: str, services=SERVICES) -> list[tuple[tuple, str]]:
    """(loc, problem) for what a deploy of `services` to `env` would refuse although the settings are valid: the
    local artifact folder of a dev prediction deploy, the deployment_condition of a prod training deploy.
    Works on raw input too, so a model with other errors still gets these reported."""
    problems = []
    folder = values.get("artifact_folder", ModelSettings.model_fields["artifact_folder"].default)
    if env == "dev" and "prediction" in services and values.get("artifact_version") is None \
            and isinstance(folder, str) and not (root / folder).is_dir():
        problems.append((("artifact_folder",), f": folder {display_path(root / folder)} was not found: an ENV=dev "
                         "prediction deploy serves the local artifact folder; create it, or pin artifact_version "
                         "to deploy a version from the registry (e.g. one a dev training run uploaded)"))
    if env == "prod" and "training" in services and not values.get("deployment_condition"):
        problems.append((("deployment_condition",), ": not set: a training deploy to prod is refused without it (the "
                         "training service uploads to prod only when the condition holds); set it, e.g. {'metric': "
                         "'r2', 'direction': 'above', 'threshold': 0.8}, or train in test and promote (validate with "
                         "--service prediction if this model never trains in prod)"))
    return problems


def _schema_problem(path: Path) -> str | None:
    import jsonschema

    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except (ValueError, UnicodeDecodeError) as e:
        return f"not valid JSON: {e}"
    except jsonschema.SchemaError as e:
        return f"not a valid JSON Schema: {e.message}"
    return None


def _validate(raw: RawModel, index: int, name: str, root: Path, env: str | None,
              services) -> tuple[ModelSettings | None, list[str]]:
    data = raw.data
    given = data.get("model_name") if isinstance(data, dict) else None
    label = f"model '{given}'" if isinstance(given, str) and given else f"model #{index + 1}"
    if not isinstance(data, dict):
        line = f" (line {raw.line})" if raw.line else ""
        return None, [f"{name}: {label}: expected a mapping of settings or ModelSettings(...), got {type(data).__name__}{line}"]
    # A key that is not text (YAML `1: 2`, a dict's 1:) is no field: pydantic would raise TypeError on it.
    found: list[tuple[tuple, str]] = [((safe_repr(k),), ": a field name must be text") for k in data if type(k) is not str]
    data = {k: v for k, v in data.items() if type(k) is str}
    model = None
    try:
        model = ModelSettings.model_validate(data)
        model._root = root
    except ValidationError as e:
        found += [(tuple(err["loc"]), explain(err, _FIELD_MODELS)) for err in e.errors()]
    except (TypeError, ValueError, RecursionError) as e:  # what pydantic does not report as a validation error
        found.append(((), f": cannot be validated: {type(e).__name__}: {safe_str(e)}"))
    skip = {str(loc[0]) for loc, _ in found if loc}
    found += _path_errors(model.model_dump(exclude_unset=True) if model else data, root, env, services, skip)
    found.sort(key=lambda item: raw.line_of(item[0]) or 0)
    messages = []
    for loc, problem in found:
        line_no = raw.line_of(loc)
        field = f"field '{field_name(loc)}'" if loc else "its settings"
        messages.append(f"{name}: {label}: {field}{problem}{f' (line {line_no})' if line_no else ''}")
    return (model if not messages else None), messages


def load_settings(path: Path | str | None = None, *, env: str | None = None,
                  services: tuple[str, ...] = SERVICES) -> list[ModelSettings]:
    """The models of a repo, validated; SettingsError lists every problem at once.

    path: a settings file; None looks for mlops_settings.py or mlops_settings.yaml in the working directory.
    env: also what deploying `services` there needs (deploy_problems): dev prediction, the local artifact_folder
    unless artifact_version is pinned; prod training, a deployment_condition.
    """
    path = find_settings_file() if path is None else Path(path)
    name = display_path(path)
    if not path.is_file():
        raise UsageError(f"settings file {name} was not found")
    if path.suffix not in (".py", ".yaml", ".yml"):
        raise UsageError(f"{name}: settings must be a .py or .yaml file")
    try:
        raws = read_models(path, name, ModelSettings)
    except UnreadableSettings as e:
        raise SettingsError(e.errors, name) from None
    root = path.resolve().parent
    models: list[ModelSettings] = []
    errors: list[str] = []
    first_seen: dict[str, int] = {}
    for i, raw in enumerate(raws):
        model, problems = _validate(raw, i, name, root, env, services)
        errors += problems
        given = raw.data.get("model_name") if isinstance(raw.data, dict) else None
        if isinstance(given, str) and given:
            if given in first_seen:
                errors.append(f"{name}: model '{given}': field 'model_name': defined twice (models #{first_seen[given] + 1}"
                              f" and #{i + 1}); model names must be unique{f' (line {raw.line})' if raw.line else ''}")
            first_seen.setdefault(given, i)
        if model is not None:
            models.append(model)
    if len(errors) > MAX_ERRORS:  # a list of 100,000 bad values is one mistake, not a report to scroll through
        errors = errors[:MAX_ERRORS] + [f"{name}: ... and {len(errors) - MAX_ERRORS} more errors"]
    if errors:
        raise SettingsError(errors, name)
    return models
