"""The Checker every part of an automation's validation reports to (validation.py, trigger_checks.py,
action_checks.py, notification_checks.py): the shape of a recorded call or mapping (its known fields, JFrog ML's
names and fields that mean nothing in CDF, a field taking one of several classes) and the values every part takes
(text, flags, numbers, env vars, secret names, URLs, a direction, a threshold), so one file's problems are all
collected with their field paths rather than the first raised.
"""
from __future__ import annotations

import difflib
import math
import re
from typing import Any, Callable, Mapping, Sequence

from akerbp.mlops import conditions
from akerbp.mlops.automations.spec import CLASS_KEY, CLASSES, FILE_KEY, LINE_KEY, POSITIONAL_KEY
from akerbp.mlops.conditions import short

Loc = tuple[Any, ...]
DESCRIPTION_MAX = 500
SECRET_NAME_MAX = 15
_SECRET_NAME = re.compile(r"^[a-z0-9-]+$")  # settings_schema.SECRET_NAME_PATTERN: CDF's rule
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CODE_IS_REGISTERED = ("the code is the code registered: the pipeline re-registers the automations on every merge, "
                      "which is how an automation retrains on the latest main; remove it")
RESOURCES = "CDF Functions take cpu (cores) and memory (GB)"
# Fields of frogml's classes with no meaning in CDF, and what CDF offers instead.
JFROG_ONLY: dict[str, dict[str, str]] = {
    "Automation": {"environment": "use action=TrainDeploy(deployment=DeploymentSpecifications(environments=[...])): "
                                  "dev, test, prod"},
    "TrainingSpecifications": {
        **{k: CODE_IS_REGISTERED for k in ("git_uri", "git_branch", "git_access_token_secret", "git_credentials_secret",
                                            "git_secret_ssh", "main_dir", "model_uri", "push_image", "base_image",
                                            "tags", "dependency_file_path", "build_name")},
        **{k: RESOURCES for k in ("resources", "instance", "purchase_option", "gpu_type", "gpu_amount",
                                  "cpu_fraction")},
        "assumed_iam_role_arn": "CDF Functions have no IAM role: give the model secrets in its settings",
        "iam_role_arn": "CDF Functions have no IAM role: give the model secrets in its settings",
    },
    "DeploymentSpecifications": {
        "number_of_pods": "a CDF Function scales by itself; give cpu, memory, env_vars, timeout",
        "cpu_fraction": "use cpu (cores per call)",
        "variation_name": "CDF serves one live version per environment: no variations (A/B tests)",
        "auto_scale_config": "a CDF Function scales by itself; give cpu, memory, env_vars, timeout",
        "iam_role_arn": "CDF Functions have no IAM role: give the model secrets in its settings",
        "custom_iam_role_arn": "CDF Functions have no IAM role: give the model secrets in its settings",
        "instance": RESOURCES, "purchase_option": RESOURCES,
        "number_of_http_server_workers": "CDF runs the function; give cpu, memory, env_vars, timeout",
        "http_request_timeout_ms": "use timeout (seconds)", "deployment_timeout": "use timeout (seconds)",
        "deployment_process_timeout_limit": "use timeout (seconds)", "daemon_mode": "CDF runs the function",
        "max_batch_size": "CDF runs the function; give cpu, memory, env_vars, timeout",
    },
    "DeployedModelMetric": {"variation": "CDF serves one live version per environment: no variations"},
}
ALIASES: dict[str, dict[str, str]] = {  # class -> {JFrog's name: ours}
    "Automation": {"model_id": "model", "is_enabled": "enabled"},
    "TrainDeploy": {"build_spec": "training", "deployment_spec": "deployment"},
    "MetricBasedTrigger": {"override_cron": "check_cron", "directive": "direction"},
}


class Checker:
    """Validates one automation, collecting (loc, message) for everything wrong."""

    def __init__(self) -> None:
        self.problems: list[tuple[Loc, str]] = []

    def bad(self, loc: Loc, message: str) -> None:
        self.problems.append((loc, message))

    # -- the shape of a call / mapping --

    def fields(self, value: Any, loc: Loc, cls: str, allowed: Sequence[str], required: Sequence[str] = ()
               ) -> dict[str, Any] | None:
        """The known fields of `value` (a recorded `cls(...)` or a mapping), aliases resolved; every other key,
        JFrog-only field and positional argument reported."""
        if not isinstance(value, dict):
            self.bad(loc, f"expected {cls}(...) (or a mapping of its fields), got {short(value)}")
            return None
        given = value.get(CLASS_KEY)
        if given is not None and given != cls:
            self.bad(loc, f"expected {cls}(...), got {given}(...)")
            return None
        if value.get(POSITIONAL_KEY):
            self.bad(loc, f"{cls}() takes its fields by name ({', '.join(f'{a}=...' for a in allowed[:3])}), not "
                          f"{len(value[POSITIONAL_KEY])} positional argument(s)")
        out: dict[str, Any] = {}
        aliases = ALIASES.get(cls, {})
        jfrog = JFROG_ONLY.get(cls, {})
        for key, item in value.items():
            if key in (CLASS_KEY, LINE_KEY, FILE_KEY, POSITIONAL_KEY) or (key == "type" and given is None):
                continue
            if type(key) is not str:
                self.bad(loc + (short(key),), "a field name must be text")
                continue
            name = aliases.get(key, key)
            if name in allowed:
                if name in out:
                    self.bad(loc + (key,), f"{key} is another name of {name}, which is given too: give one")
                    continue
                out[name] = item
            elif key in jfrog:
                self.bad(loc + (key,), f"JFrog ML's {key} has no meaning in CDF: {jfrog[key]}")
            else:
                close = difflib.get_close_matches(key, list(allowed) + list(aliases), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(allowed)}"
                self.bad(loc + (key,), f"{cls} has no field {key!r}; {hint}")
        for name in required:
            if out.get(name) in (None, ""):
                self.bad(loc + (name,), "is required")
        return out

    def kind(self, value: Any, loc: Loc, what: str, kinds: Mapping[str, Callable[[Any, Loc], Any]],
             default: str | None = None) -> Any:
        """A field that takes one of several classes: dispatch on the class (Python) or `type` (YAML; `default` when
        it has none: the one kind a field had before others came)."""
        by_type = {CLASSES[c].type_key: c for c in CLASSES if CLASSES[c].type_key}
        if not isinstance(value, dict):
            choices = " or ".join(f"{by_type[k]}(...)" for k in kinds)
            self.bad(loc, f"expected {choices}, got {short(value)}")
            return None
        if CLASS_KEY in value:
            type_key = CLASSES[value[CLASS_KEY]].type_key if value[CLASS_KEY] in CLASSES else None
        else:
            type_key = value.get("type", default or (next(iter(kinds)) if len(kinds) == 1 else None))
            if type_key is None:
                self.bad(loc, f"{what} needs a type: one of {', '.join(kinds)}")
                return None
        if not isinstance(type_key, str) or type_key not in kinds:
            shown = value.get(CLASS_KEY) or type_key
            choices = " or ".join(f"{by_type[k]}(...) (type: {k})" for k in kinds)
            self.bad(loc, f"{short(shown)} is not a {what}: use {choices}")
            return None
        return kinds[type_key](value, loc)

    # -- values --

    def text(self, value: Any, loc: Loc, *, empty: bool = True, max_length: int | None = None) -> str | None:
        if not isinstance(value, str):
            self.bad(loc, f"{short(value)} is not text; quote it")
            return None
        if not empty and not value.strip():
            self.bad(loc, "is empty")
            return None
        if max_length is not None and len(value) > max_length:
            self.bad(loc, f"is longer than {max_length} characters")
            return None
        return value

    def flag(self, value: Any, loc: Loc) -> bool | None:
        if not isinstance(value, bool):
            self.bad(loc, f"{short(value)} is not True or False")
            return None
        return value

    def positive(self, value: Any, loc: Loc, unit: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            hint = " (a number of GB: '2Gi' is 2)" if isinstance(value, str) and unit == "GB" else ""
            self.bad(loc, f"{short(value)} is not a positive number of {unit}{hint}")
            return None
        return float(value)

    def string_map(self, value: Any, loc: Loc, what: str, key_rule: Callable[[str], str | None] | None = None
                   ) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(loc, f"{what} must be a mapping of text to text, not {short(value)}")
            return {}
        out = {}
        for k, v in value.items():
            if type(k) is not str or type(v) is not str:
                self.bad(loc + (str(k),), f"{what}: {short(k)}: {short(v)}: keys and values must be text")
                continue
            problem = key_rule(k) if key_rule else None
            if problem:
                self.bad(loc + (k,), problem)
                continue
            out[k] = v
        return out

    def env_vars(self, value: Any, loc: Loc) -> dict[str, str]:
        if isinstance(value, list):  # JFrog ML writes ["K=V", ...]
            pairs: dict[str, str] = {}
            for i, item in enumerate(value):
                if not isinstance(item, str) or "=" not in item:
                    self.bad(loc + (i,), f"{short(item)} is not 'NAME=value'; or give a mapping {{'NAME': 'value'}}")
                else:
                    k, _, v = item.partition("=")
                    pairs[k] = v
            value = pairs
        return self.string_map(value, loc, "env_vars", lambda k: None if _ENV_VAR.match(k) else
                               f"{k!r} is not a valid environment variable name")

    def secret(self, value: Any, loc: Loc) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _SECRET_NAME.match(value) or len(value) > SECRET_NAME_MAX:
            self.bad(loc, f"{short(value)} is not a valid secret name: lowercase letters, digits and '-', at most "
                          f"{SECRET_NAME_MAX} characters (its value comes from MLOPS_SECRET_<NAME>)")
            return None
        return value

    def url(self, value: Any, loc: Loc) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
            self.bad(loc, f"{short(value)} is not an http(s) URL: give one (https://...), or put it in a secret and "
                          "give the secret's name (the *_secret field)")
            return None
        return value


    def number(self, value: Any, loc: Loc, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(value)
        except ValueError as e:
            self.bad(loc, str(e))
            return None

    def direction(self, value: Any, loc: Loc) -> str | None:
        try:
            return conditions.direction("above" if value is None else value).value
        except ValueError as e:
            self.bad(loc, str(e))
            return None

    def threshold(self, value: Any, loc: Loc) -> float | str | None:
        """A number, or a SQL query checked against the analytics tables' schema (no CDF needed)."""
        found = self.number(value, loc, conditions.threshold_or_sql)
        if isinstance(found, str):
            problem = sql_problem(found)
            if problem:
                self.bad(loc, problem)
                return None
        return found


def sql_problem(sql: str) -> str | None:
    """What is wrong with a metric or threshold query, as far as the empty tables tell (its syntax, its tables and
    columns, its shape where it shows without rows); a wrong shape only rows show is reported when it runs."""
    from akerbp.mlops.analytics.query import check_metric_sql

    return check_metric_sql(sql)

