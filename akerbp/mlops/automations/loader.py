"""Finding and reading a repo's automations file (mlops_automations.py or mlops_automations.yaml at the root), into
validated AutomationDefinitions, every problem reported at once: `FILE:LINE: automation 'NAME': FIELD: problem`.

The .py file is read as settings are (settings_python: a child process with a time and memory budget, the same
MLOPS_SETTINGS_TIMEOUT / MLOPS_SETTINGS_MEMORY_MB; whatever it does, it ends in automations or an error naming it);
it must define a module-level list `automations` of Automation(...). The YAML file has the same field names:

    automations:
      - name: retrain_well_density
        model: well_density
        trigger: {type: schedule, cron: "0 0 * * 0", timezone: UTC}     # or interval: Daily | Weekly | Hourly
        action:
          type: train_deploy
          training: {data: {...}, env_vars: {...}, cpu: 1, memory: 2}
          deployment_condition:                       # one mapping or a list; optional
            - {type: build_metric, metric_name: r2, direction: above, threshold: "0.8"}
            - {type: deployed_model_metric, metric_name: rmse, direction: below, margin: 0}
          deployment: {environments: [test]}
        on_success: {type: slack, webhook_secret: slack-hook}            # or webhook: URL
        on_error: {type: webhook, url: "https://ops.example/hook", http_method: POST, headers: {X-Team: geo},
                   header_secrets: {Authorization: ops-token}, data: {k: v}}   # or url_secret: NAME
        execute_immediately: false
        enabled: true
        description: Weekly refit on the latest logs

`type` says which class a mapping stands for (schedule = ScheduledTrigger, train_deploy = TrainDeploy, build_metric,
deployed_model_metric, slack = SlackNotification, webhook = CustomWebhook); trigger and action may leave it out
(each has one kind today). Directions are the lowercase names: above, below, above_or_equals, below_or_equals, equals.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from akerbp.mlops.automations.definition import AutomationDefinition
from akerbp.mlops.automations.validation import Problem, validate_all
from akerbp.mlops.automations.spec import CLASS_KEY, FILE_KEY, LINE_KEY
from akerbp.mlops.errors import FileProblems
from akerbp.mlops.settings_files import RawModel, UnreadableSettings, display_path, field_name

AUTOMATIONS_FILES = ("mlops_automations.py", "mlops_automations.yaml")
MAX_ERRORS = 100


class AutomationsFileError(FileProblems):
    """An invalid automations file; `errors` holds one line per problem (a UsageError: exit 2)."""

    what = "automations"


@dataclass(frozen=True)
class LoadedAutomations:
    path: Path
    automations: list[AutomationDefinition] = field(default_factory=list)  # file order

    def for_env(self, env: str) -> list[AutomationDefinition]:
        """The automations registered in `env`: those whose last deployment environment it is."""
        return [a for a in self.automations if a.env == env]


def find_file(repo_root: Path) -> Path | None:
    """The automations file at the repo root; None when there is none; both: an error (one source of truth)."""
    found = [repo_root / name for name in AUTOMATIONS_FILES if (repo_root / name).is_file()]
    if len(found) == 2:
        raise AutomationsFileError([f"both mlops_automations.py and mlops_automations.yaml are in {repo_root}: keep "
                                    "one, so there is one source of truth"])
    if not found and (repo_root / "mlops_automations.yml").is_file():
        raise AutomationsFileError([f"{display_path(repo_root / 'mlops_automations.yml')}: rename it to "
                                    "mlops_automations.yaml"])
    return found[0] if found else None


def load(repo_root: Path | str, path: Path | str | None = None, *,
         model_names: Sequence[str] | Callable[[], Sequence[str]] | None = None) -> LoadedAutomations | None:
    """The repo's automations, validated; None when no path is given and the root has no automations file.

    model_names: the models an automation may name, or a function giving them once the file is read (the caller may
    read the settings meanwhile); None reads them from the repo's settings (load_settings).
    """
    root = Path(repo_root)
    if path is None:
        found = find_file(root)
        if found is None:
            return None
        path = found
    path = Path(path)
    name = display_path(path)
    if not path.is_file():
        raise AutomationsFileError([f"{name}: not found"])
    if path.suffix not in (".py", ".yaml", ".yml"):
        raise AutomationsFileError([f"{name}: an automations file is a .py or .yaml file"])
    try:
        raws = _read_python(path, name) if path.suffix == ".py" else _read_yaml(path, name)
    except UnreadableSettings as e:
        raise AutomationsFileError(e.errors, name) from None
    names = _model_names(root) if model_names is None else model_names() if callable(model_names) else model_names
    definitions, problems = validate_all([raw.data for raw in raws], names)
    if problems:
        errors = [_message(name, raws, p) for p in sorted(problems, key=lambda p: (raws[p.index].line_of(p.loc) or 0,
                                                                                   p.index))]
        if len(errors) > MAX_ERRORS:
            errors = errors[:MAX_ERRORS] + [f"{name}: ... and {len(errors) - MAX_ERRORS} more errors"]
        raise AutomationsFileError(errors, name)
    return LoadedAutomations(path, definitions)


def _model_names(root: Path) -> list[str]:
    from akerbp.mlops.settings import find_settings_file, load_settings

    return [m.model_name for m in load_settings(find_settings_file(root))]


def _message(name: str, raws: Sequence[RawModel], problem: Problem) -> str:
    raw = raws[problem.index]
    line = raw.line_of(problem.loc)
    given = raw.data.get("name") if isinstance(raw.data, dict) else None
    label = f"automation {given!r}" if isinstance(given, str) and given else f"automation #{problem.index + 1}"
    where = f"{name}:{line}" if line else name
    what = f"{field_name(problem.loc)}: " if problem.loc else ""
    return f"{where}: {label}: {what}{problem.message}"


# --- reading --------------------------------------------------------------------------------------------------------


def _read_python(path: Path, name: str) -> list[RawModel]:
    """The file's `automations`, run in a child process; each with the lines of its calls' keywords."""
    from akerbp.mlops import settings_python

    raws = settings_python.read(path, name, "automations")
    calls = _call_keyword_lines(path)
    here = os.path.realpath(path)
    for raw in raws:
        _add_call_lines(raw.data, (), raw.key_lines, calls, here)
    return raws


def _call_keyword_lines(path: Path) -> dict[tuple[int, str], dict[str, int]]:
    """(line, class name) of every call in the file -> the line of each of its keywords."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
        return {}
    out: dict[tuple[int, str], dict[str, int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if fname:
                out.setdefault((node.lineno, fname), {k.arg: k.lineno for k in node.keywords if k.arg})
    return out


def _add_call_lines(value: Any, loc: tuple, lines: dict[tuple, int], calls: dict[tuple[int, str], dict[str, int]],
                    here: str) -> None:
    """key_lines for the nested recorded calls of one automation (where each was built and each keyword)."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _add_call_lines(item, loc + (i,), lines, calls, here)
        return
    if not isinstance(value, dict):
        return
    line, file, cls = value.get(LINE_KEY), value.get(FILE_KEY), value.get(CLASS_KEY)
    keywords: dict[str, int] = {}
    if isinstance(line, int) and isinstance(file, str) and os.path.realpath(file) == here:
        if loc:
            lines.setdefault(loc, line)
        keywords = calls.get((line, cls), {}) if isinstance(cls, str) else {}
    for key, item in value.items():
        if isinstance(key, str) and not key.startswith("$"):
            if key in keywords:
                lines.setdefault(loc + (key,), keywords[key])
            _add_call_lines(item, loc + (key,), lines, calls, here)


def _read_yaml(path: Path, name: str) -> list[RawModel]:
    from akerbp.mlops.settings_files import node_lines, read_yaml_documents

    nodes, values = read_yaml_documents(path, name)
    docs = [(n, v) for n, v in zip(nodes, values) if v is not None]
    if len(docs) != 1 or not isinstance(docs[0][1], dict) or "automations" not in docs[0][1]:
        raise UnreadableSettings(f"{name}: defines no `automations:`: write one document with `automations:` and a "
                                 "list of automations (- name: ..., model: ..., trigger: ..., action: ...)")
    node, top = docs[0]
    key_node, list_node = next((k, v) for k, v in node.value if k.value == "automations")
    others = sorted(str(k) for k in top if k != "automations")
    if others:
        raise UnreadableSettings(f"{name}, line {node.start_mark.line + 1}: only `automations:` belongs at the top, "
                                 f"not {', '.join(others)}")
    automations = top["automations"]
    if automations is None:
        return []
    if not isinstance(automations, list):
        raise UnreadableSettings(f"{name}, line {key_node.start_mark.line + 1}: `automations` must be a list (one "
                                 "'- name: ...' each)")
    return [RawModel(item, item_node.start_mark.line + 1, node_lines(item_node))
            for item_node, item in zip(list_node.value, automations)]
