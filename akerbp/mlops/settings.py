"""The models of a repo, read from mlops_settings.py or mlops_settings.yaml, validated all at once.

Bad settings must stop a pipeline with every problem named (file, model, field, line), never a traceback: the
anchor swallowed validation errors, so broken settings reached CDF. Structure is checked by pydantic; paths and
uniqueness by the loader, which knows the settings file's folder.
Reading the file (with the line of every key) and wording pydantic's errors live in settings_files.py; the schema
(the pydantic models) in settings_schema.py, re-exported here.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from pydantic import (
    BaseModel,
    ValidationError,
)

from akerbp.mlops.vocabulary import ENVIRONMENTS, MODEL_NAME_PATTERN, SECRET_ENV_PREFIX, SERVICES, secret_env_var  # noqa: F401 -- re-exported
from akerbp.mlops.errors import FileProblems, UsageError
from akerbp.mlops.settings_files import RawModel, UnreadableSettings, display_path, explain, field_name, read_models
from akerbp.mlops.settings_capture import safe_repr, safe_str
from akerbp.mlops.settings_schema import (  # noqa: F401 -- re-exported: the schema is part of this module's API
    PYTHON_VERSIONS,
    Analytics,
    DeploymentCondition,
    ModelInfo,
    ModelSettings,
    PythonVersion,
    ServiceInfo,
    settings_json_schema,
)

SETTINGS_FILES = ("mlops_settings.py", "mlops_settings.yaml")
MAX_ERRORS = 100


class SettingsError(FileProblems):
    """Invalid settings; `errors` holds one line per problem, the message lists them all."""

    what = "settings"


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
    ("analytics",): Analytics,
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
