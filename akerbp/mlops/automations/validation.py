"""Validating what the loader read into AutomationDefinitions (definition.py), with every problem of a file
collected rather than the first raised.

Input is what the loader read: for a .py file, the spec classes' recorded calls (dicts with spec.CLASS_KEY...); for
YAML, plain mappings whose `type` says the kind where a field takes several (trigger, action, conditions,
notifications). Normalised: an interval becomes its cron, thresholds and margins floats, defaults filled in.
A problem is (index of the automation, field path, message); the loader adds the file, line and name.
Here: the Automation itself and the checks across a file's automations; each part has its module (trigger_checks,
action_checks, notification_checks), all reporting to one Checker (checker.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from akerbp.mlops.automations import action_checks, notification_checks, trigger_checks
from akerbp.mlops.automations.checker import DESCRIPTION_MAX, Checker, Loc
from akerbp.mlops.automations.definition import AutomationDefinition
from akerbp.mlops.automations.spec import LINE_KEY
from akerbp.mlops.conditions import short
from akerbp.mlops.vocabulary import AUTOMATION_NAME_MAX, MODEL_NAME_PATTERN, is_automation_name


@dataclass(frozen=True)
class Problem:
    index: int  # which automation of the file
    loc: Loc  # the field path, e.g. ("action", "deployment_condition", 0, "threshold")
    message: str


def validate(raw: Any, model_names: Sequence[str] | None = None) -> tuple[AutomationDefinition | None,
                                                                          list[tuple[Loc, str]]]:
    """One automation's recorded input validated: (definition or None, [(field path, problem)])."""
    c = Checker()
    f = c.fields(raw, (), "Automation", ("name", "model", "trigger", "action", "on_success", "on_error",
                                         "execute_immediately", "enabled", "description"),
                 ("name", "model", "trigger", "action"))
    if f is None:
        return None, c.problems
    name = f.get("name")
    if name not in (None, "") and not is_automation_name(name):
        c.bad(("name",), f"{short(name)} is not a valid automation name: lowercase letters, digits and '_', starting "
                         f"with a letter, at most {AUTOMATION_NAME_MAX} characters ({MODEL_NAME_PATTERN})")
    model = f.get("model")
    if model not in (None, "") and model_names is not None and model not in model_names:
        c.bad(("model",), f"{short(model)} is not a model of mlops_settings; the models are "
                          f"{', '.join(sorted(model_names)) or 'none'}")
    elif model not in (None, "") and not isinstance(model, str):
        c.bad(("model",), f"{short(model)} is not a model name")
    trigger = trigger_checks.trigger(c, f["trigger"], ("trigger",)) if f.get("trigger") is not None else None
    action = action_checks.action(c, f["action"], ("action",)) if f.get("action") is not None else None
    on_success = notification_checks.notification(c, f.get("on_success"), ("on_success",))
    on_error = notification_checks.notification(c, f.get("on_error"), ("on_error",))
    description = c.text(f.get("description") or "", ("description",), max_length=DESCRIPTION_MAX)
    enabled = c.flag(f.get("enabled", True), ("enabled",))
    immediately = c.flag(f.get("execute_immediately", False), ("execute_immediately",))
    if c.problems or trigger is None or action is None or not isinstance(name, str) or not isinstance(model, str):
        return None, c.problems
    return AutomationDefinition(
        name=name, model=model, description=description or "", enabled=bool(enabled),
        execute_immediately=bool(immediately), env=registered_env(action), trigger=trigger,
        action=action, on_success=on_success, on_error=on_error, line=raw.get(LINE_KEY)), []


def registered_env(action: Mapping[str, Any]) -> str:
    """Where an automation registers: a BatchExecution's environment, a TrainDeploy's last deployment one."""
    if action.get("type") == "batch":
        return str(action.get("environment") or "test")
    return str(action["deployment"]["environments"][-1])


def validate_all(raws: Sequence[Any], model_names: Sequence[str] | None = None
                 ) -> tuple[list[AutomationDefinition], list[Problem]]:
    """Every automation of a file: the valid ones, and every problem (also across automations: names unique,
    automations sharing a function agreeing on its options)."""
    definitions: list[tuple[int, AutomationDefinition]] = []
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, raw in enumerate(raws):
        definition, found = validate(raw, model_names)
        problems += [Problem(i, loc, message) for loc, message in found]
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name:
            if name in first:
                problems.append(Problem(i, ("name",), f"{name!r} is the name of automation #{first[name] + 1} too: "
                                                      "names must be unique in the repo"))
            first.setdefault(name, i)
        if definition is not None:
            definitions.append((i, definition))
    problems += _shared_function_conflicts(definitions)
    return [d for _, d in definitions], problems


def _shared_function_conflicts(definitions: Sequence[tuple[int, AutomationDefinition]]) -> list[Problem]:
    """Automations of one model registered in one env share its automation function, so its options
    (TrainingSpecifications cpu, memory, env_vars) must agree."""
    problems = []
    seen: dict[tuple[str, str], tuple[int, AutomationDefinition]] = {}
    for i, d in definitions:
        key = (d.model, d.env)
        if key not in seen:
            seen[key] = (i, d)
            continue
        j, other = seen[key]
        for option in ("cpu", "memory", "env_vars"):
            if "training" not in d.action or "training" not in other.action:
                continue  # a BatchExecution sets no function option
            mine, theirs = d.action["training"][option], other.action["training"][option]
            if mine != theirs:
                problems.append(Problem(i, ("action", "training", option), (
                    f"{short(mine)} differs from automation {other.name!r}'s {short(theirs)}: automations of model "
                    f"{d.model!r} registered in {d.env} share one function, so they must agree on its {option}")))
    return problems

