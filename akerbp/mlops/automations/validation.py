"""Validating what the loader read into AutomationDefinitions (definition.py), with every problem of a file
collected rather than the first raised.

Input is what the loader read: for a .py file, the spec classes' recorded calls (dicts with spec.CLASS_KEY...); for
YAML, plain mappings whose `type` says the kind where a field takes several (trigger, action, conditions,
notifications). Normalised: an interval becomes its cron, thresholds and margins floats, defaults filled in.
A problem is (index of the automation, field path, message); the loader adds the file, line and name.
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from akerbp.mlops import conditions
from akerbp.mlops.automations.definition import AutomationDefinition
from akerbp.mlops.conditions import short
from akerbp.mlops.automations.spec import CLASS_KEY, CLASSES, FILE_KEY, LINE_KEY, POSITIONAL_KEY
from akerbp.mlops.vocabulary import AUTOMATION_NAME_MAX, ENVIRONMENTS, MODEL_NAME_PATTERN, is_automation_name

Loc = tuple[Any, ...]
INTERVALS = {"Hourly": "0 * * * *", "Daily": "0 0 * * *", "Weekly": "0 0 * * 0"}  # Weekly: Sunday 00:00
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
DEFAULT_ENVIRONMENTS = ["test"]
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
DEFAULT_CHECK_CRON = "*/15 * * * *"
DEFAULT_COOLDOWN = "1d"
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000


# --- validation ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    index: int  # which automation of the file
    loc: Loc  # the field path, e.g. ("action", "deployment_condition", 0, "threshold")
    message: str


class _Checker:
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


# --- the parts ------------------------------------------------------------------------------------------------------


def _trigger(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "ScheduledTrigger", ("cron", "interval", "timezone"))
    if f is None:
        return None
    cron, interval = (f.get(k) or None for k in ("cron", "interval"))  # JFrog's defaults are ""
    timezone = f.get("timezone") or "UTC"
    ok = True
    if (cron is None) == (interval is None):
        c.bad(loc + ("cron",), "give exactly one of cron and interval" + (", not both" if cron else
              f": cron='0 0 * * 0' or interval= one of {', '.join(INTERVALS)}"))
        ok = False
    elif cron is not None:
        problem = _cron_problem(cron)
        if problem:
            c.bad(loc + ("cron",), problem)
            ok = False
    else:
        named = {k.lower(): k for k in INTERVALS}.get(interval.lower()) if isinstance(interval, str) else None
        if named is None:
            c.bad(loc + ("interval",), f"{short(interval)} is not an interval; use one of "
                  + ", ".join(f"{k} ({v})" for k, v in INTERVALS.items()) + ", or a cron expression")
            ok = False
        else:
            interval, cron = named, INTERVALS[named]
    problem = _timezone_problem(timezone)
    if problem:
        c.bad(loc + ("timezone",), problem)
        ok = False
    return {"type": "schedule", "cron": cron, "timezone": timezone, "interval": interval} if ok else None


def _metric_trigger(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "MetricBasedTrigger", ("name", "metric", "direction", "threshold", "check_cron",
                                                      "cooldown", "timezone"), ("metric", "threshold"))
    if f is None:
        return None
    ok = True
    name = c.text(f.get("name") or "", loc + ("name",), max_length=DESCRIPTION_MAX)
    metric = c.fields(f.get("metric"), loc + ("metric",), "SqlMetric", ("sql_query",), ("sql_query",)) \
        if f.get("metric") is not None else None
    sql = None
    if metric and metric.get("sql_query") not in (None, ""):
        sql = c.text(metric["sql_query"], loc + ("metric", "sql_query"), empty=False)
        problem = sql_problem(sql) if sql else None
        if problem:
            c.bad(loc + ("metric", "sql_query"), problem)
            ok = False
    direction = _direction(c, f.get("direction"), loc + ("direction",))
    bound = _threshold(c, f.get("threshold"), loc + ("threshold",)) if f.get("threshold") not in (None, "") else None
    cron = f.get("check_cron") or DEFAULT_CHECK_CRON
    problem = _cron_problem(cron)
    if problem:
        c.bad(loc + ("check_cron",), problem)
        ok = False
    cooldown = f.get("cooldown", DEFAULT_COOLDOWN)
    seconds = _duration(c, DEFAULT_COOLDOWN if cooldown is None else cooldown, loc + ("cooldown",))
    timezone = f.get("timezone") or "UTC"
    problem = _timezone_problem(timezone)
    if problem:
        c.bad(loc + ("timezone",), problem)
        ok = False
    if not ok or sql is None or direction is None or bound is None or seconds is None or name is None:
        return None
    return {"type": "metric", "name": name, "metric": {"sql_query": sql}, "direction": direction, "threshold": bound,
            "cron": cron, "timezone": timezone, "cooldown": str(cooldown).strip(), "cooldown_s": seconds}


def _duration(c: _Checker, value: Any, loc: Loc) -> float | None:
    """"30m", "12h", "1d", "1w" (also "45s", "0d": no cooldown) as seconds."""
    found = _DURATION.match(value) if isinstance(value, str) else None
    if found is None:
        c.bad(loc, f"{short(value)} is not a duration: a number and a unit, e.g. '30m', '12h', '1d' or '1w'")
        return None
    return float(found.group(1)) * DURATION_UNITS[found.group(2)]


def _cron_problem(cron: Any) -> str | None:
    if not isinstance(cron, str) or len(cron.split()) != 5:
        return (f"{short(cron)} is not a cron expression of 5 fields (minute hour day-of-month month day-of-week), "
                "e.g. '0 0 * * 0'")
    from datetime import datetime, timezone

    from croniter import croniter

    try:
        croniter(cron, datetime(2000, 1, 1, tzinfo=timezone.utc)).get_next(datetime)
    except Exception as e:  # noqa: BLE001 - croniter's errors are many kinds
        return f"{cron!r} is not a valid cron expression: {e}"
    return None


def _timezone_problem(name: Any) -> str | None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if isinstance(name, str):
        try:
            ZoneInfo(name)
            return None
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return f"{short(name)} is not a known timezone: use an IANA name, e.g. 'UTC' or 'Europe/Oslo'"


def _training(c: _Checker, value: Any, loc: Loc) -> dict[str, Any]:
    f = c.fields({} if value is None else value, loc, "TrainingSpecifications", ("data", "env_vars", "cpu", "memory"))
    f = f or {}
    data = f.get("data") or {}
    if not isinstance(data, dict):
        c.bad(loc + ("data",), f"must be a mapping (what train() gets), not {short(data)}")
        data = {}
    else:
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as e:
            c.bad(loc + ("data",), f"must be JSON (it travels in the workflow's task data): {e}")
    return {"data": data, "env_vars": c.env_vars(f.get("env_vars"), loc + ("env_vars",)),
            "cpu": c.positive(f.get("cpu"), loc + ("cpu",), "cores"),
            "memory": c.positive(f.get("memory"), loc + ("memory",), "GB")}


def _deployment(c: _Checker, value: Any, loc: Loc) -> dict[str, Any]:
    f = c.fields({} if value is None else value, loc, "DeploymentSpecifications",
                 ("environments", "cpu", "memory", "env_vars", "timeout")) or {}
    envs = f.get("environments")
    envs = list(DEFAULT_ENVIRONMENTS) if envs in (None, []) else envs
    here = loc + ("environments",)
    if isinstance(envs, str) or not isinstance(envs, (list, tuple)):
        c.bad(here, f"must be a list of environments, e.g. ['test'] or ['test', 'prod'], not {short(envs)}")
        envs = list(DEFAULT_ENVIRONMENTS)
    else:
        envs = list(envs)
        unknown = [e for e in envs if e not in ENVIRONMENTS]
        if unknown:
            c.bad(here, f"{', '.join(map(short, unknown))}: not an environment; use dev, test, prod")
        elif len(set(envs)) != len(envs):
            c.bad(here, f"{envs}: an environment is listed twice")
        elif envs[0] == "prod":
            c.bad(here, "training happens in the first environment, and prod accepts versions only by promotion: "
                        "train in test and promote: environments=['test', 'prod']")
        elif "prod" in envs and envs[envs.index("prod") - 1] != "test":
            c.bad(here, f"{envs}: prod may only follow test (a version reaches prod by promotion from test): "
                        "environments=['test', 'prod']")
    timeout = f.get("timeout")
    return {"environments": envs, "cpu": c.positive(f.get("cpu"), loc + ("cpu",), "cores"),
            "memory": c.positive(f.get("memory"), loc + ("memory",), "GB"),
            "env_vars": c.env_vars(f.get("env_vars"), loc + ("env_vars",)),
            "timeout": c.positive(timeout, loc + ("timeout",), "seconds")}


def _number(c: _Checker, value: Any, loc: Loc, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(value)
    except ValueError as e:
        c.bad(loc, str(e))
        return None


def _direction(c: _Checker, value: Any, loc: Loc) -> str | None:
    try:
        return conditions.direction("above" if value is None else value).value
    except ValueError as e:
        c.bad(loc, str(e))
        return None


def _build_metric(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "BuildMetric", ("metric_name", "direction", "threshold"), ("metric_name", "threshold"))
    if f is None or not f.get("metric_name") or f.get("threshold") in (None, ""):
        return None
    return {"type": "build_metric", "metric_name": c.text(f["metric_name"], loc + ("metric_name",)),
            "direction": _direction(c, f.get("direction"), loc + ("direction",)),
            "threshold": _threshold(c, f["threshold"], loc + ("threshold",))}


def _threshold(c: _Checker, value: Any, loc: Loc) -> float | str | None:
    """A number, or a SQL query checked against the analytics tables' schema (no CDF needed)."""
    found = _number(c, value, loc, conditions.threshold_or_sql)
    if isinstance(found, str):
        problem = sql_problem(found)
        if problem:
            c.bad(loc, problem)
            return None
    return found


def sql_problem(sql: str) -> str | None:
    """What is wrong with a metric or threshold query, as far as the empty tables tell (its syntax, its tables and
    columns, its shape where it shows without rows); a wrong shape only rows show is reported when it runs."""
    from akerbp.mlops.analytics.query import check_metric_sql

    return check_metric_sql(sql)


def _deployed_model_metric(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "DeployedModelMetric", ("metric_name", "direction", "margin"), ("metric_name",))
    if f is None or not f.get("metric_name"):
        return None
    margin = _number(c, f.get("margin", 0), loc + ("margin",), conditions.threshold)
    if margin is not None and margin < 0:
        c.bad(loc + ("margin",), f"{margin:g} is negative: give by how much the new version must be better (>= 0)")
    return {"type": "deployed_model_metric", "metric_name": c.text(f["metric_name"], loc + ("metric_name",)),
            "direction": _direction(c, f.get("direction"), loc + ("direction",)), "margin": margin}


def _action(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "TrainDeploy", ("training", "deployment_condition", "deployment"))
    if f is None:
        return None
    given = f.get("deployment_condition")
    items = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
    many = isinstance(given, (list, tuple))
    kinds = {"build_metric": lambda v, at: _build_metric(c, v, at),
             "deployed_model_metric": lambda v, at: _deployed_model_metric(c, v, at)}
    found = [c.kind(item, loc + (("deployment_condition", i) if many else ("deployment_condition",)),
                    "deployment condition", kinds) for i, item in enumerate(items)]
    return {"type": "train_deploy", "training": _training(c, f.get("training"), loc + ("training",)),
            "deployment_condition": found, "deployment": _deployment(c, f.get("deployment"), loc + ("deployment",))}


def _batch(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "BatchExecution", ("input", "output", "batch_size", "environment"), ("input",))
    if f is None:
        return None
    given = f.get("input")
    inputs = given if isinstance(given, (list, tuple)) else [given]
    if given in (None, "", []) or not all(isinstance(i, str) and i.strip() for i in inputs):
        if given not in (None, ""):
            c.bad(loc + ("input",), f"{short(given)} is not a file external id, a prefix ending in '/' or a list "
                                    "of file external ids")
        return None
    output = f.get("output")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        c.bad(loc + ("output",), f"{short(output)} is not an external id prefix for the output files")
    size = f.get("batch_size", DEFAULT_BATCH_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH_SIZE:
        c.bad(loc + ("batch_size",), f"{short(size)} is not a whole number of rows from 1 to {MAX_BATCH_SIZE}")
    env = f.get("environment") or "test"
    if env not in ENVIRONMENTS:
        c.bad(loc + ("environment",), f"{short(env)}: not an environment; use dev, test, prod")
    return {"type": "batch", "input": list(inputs) if isinstance(given, (list, tuple)) else given,
            "output": output, "batch_size": size, "environment": env}


def _slack(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "SlackNotification", ("webhook", "webhook_secret"))
    if f is None:
        return None
    webhook, secret = f.get("webhook") or None, f.get("webhook_secret")
    if (webhook is None) == (secret is None):
        c.bad(loc + ("webhook",), "give exactly one of webhook (a URL) and webhook_secret (a secret's name, so the URL "
                                  "never appears in CDF or logs)")
    return {"type": "slack", "webhook": c.url(webhook, loc + ("webhook",)),
            "webhook_secret": c.secret(secret, loc + ("webhook_secret",))}


def _webhook(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "CustomWebhook", ("url", "url_secret", "http_method", "headers", "header_secrets", "data"))
    if f is None:
        return None
    url, secret = f.get("url") or None, f.get("url_secret")
    if (url is None) == (secret is None):
        c.bad(loc + ("url",), "give exactly one of url and url_secret (a secret's name, so the URL never appears in "
                              "CDF or logs)")
    method = f.get("http_method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        c.bad(loc + ("http_method",), f"{short(method)} is not an HTTP method; use one of {', '.join(HTTP_METHODS)}")
        method = None
    headers = c.string_map(f.get("headers"), loc + ("headers",), "headers")
    header_secrets = c.string_map(f.get("header_secrets"), loc + ("header_secrets",), "header_secrets")
    for header, name in header_secrets.items():
        c.secret(name, loc + ("header_secrets", header))
        if header.lower() in {h.lower() for h in headers}:
            c.bad(loc + ("header_secrets", header), f"header {header!r} is in headers too: give it once")
    return {"type": "webhook", "url": c.url(url, loc + ("url",)), "url_secret": c.secret(secret, loc + ("url_secret",)),
            "http_method": method.upper() if method else None, "headers": headers, "header_secrets": header_secrets,
            "data": c.string_map(f.get("data"), loc + ("data",), "data")}


def _notification(c: _Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    if value is None:
        return None
    return c.kind(value, loc, "notification", {"slack": lambda v, at: _slack(c, v, at),
                                                "webhook": lambda v, at: _webhook(c, v, at)})


def validate(raw: Any, model_names: Sequence[str] | None = None) -> tuple[AutomationDefinition | None,
                                                                          list[tuple[Loc, str]]]:
    """One automation's recorded input validated: (definition or None, [(field path, problem)])."""
    c = _Checker()
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
    trigger = c.kind(f["trigger"], ("trigger",), "trigger", {"schedule": lambda v, at: _trigger(c, v, at),
                                                             "metric": lambda v, at: _metric_trigger(c, v, at)},
                     default="schedule") if f.get("trigger") is not None else None
    action = c.kind(f["action"], ("action",), "action", {"train_deploy": lambda v, at: _action(c, v, at),
                                                          "batch": lambda v, at: _batch(c, v, at)},
                    default="train_deploy") if f.get("action") is not None else None
    on_success = _notification(c, f.get("on_success"), ("on_success",))
    on_error = _notification(c, f.get("on_error"), ("on_error",))
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

