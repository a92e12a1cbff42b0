"""Validating an automation's action: TrainDeploy (its TrainingSpecifications, deployment conditions and
DeploymentSpecifications: which environments, in which order) or BatchExecution (input, output, batch size,
environment), normalised with the defaults filled in.
"""
from __future__ import annotations

import json
from typing import Any

from akerbp.mlops import conditions
from akerbp.mlops.automations.checker import Checker, Loc
from akerbp.mlops.conditions import short
from akerbp.mlops.vocabulary import ENVIRONMENTS

DEFAULT_ENVIRONMENTS = ["test"]
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000


def action(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    """An automation's action: a TrainDeploy (the default in YAML: the one kind before batch executions came) or a
    BatchExecution."""
    return c.kind(value, loc, "action", {"train_deploy": lambda v, at: _train_deploy(c, v, at),
                                         "batch": lambda v, at: _batch(c, v, at)}, default="train_deploy")


def _training(c: Checker, value: Any, loc: Loc) -> dict[str, Any]:
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


def _deployment(c: Checker, value: Any, loc: Loc) -> dict[str, Any]:
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


def _build_metric(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "BuildMetric", ("metric_name", "direction", "threshold"), ("metric_name", "threshold"))
    if f is None or not f.get("metric_name") or f.get("threshold") in (None, ""):
        return None
    return {"type": "build_metric", "metric_name": c.text(f["metric_name"], loc + ("metric_name",)),
            "direction": c.direction(f.get("direction"), loc + ("direction",)),
            "threshold": c.threshold(f["threshold"], loc + ("threshold",))}


def _deployed_model_metric(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
    f = c.fields(value, loc, "DeployedModelMetric", ("metric_name", "direction", "margin"), ("metric_name",))
    if f is None or not f.get("metric_name"):
        return None
    margin = c.number(f.get("margin", 0), loc + ("margin",), conditions.threshold)
    if margin is not None and margin < 0:
        c.bad(loc + ("margin",), f"{margin:g} is negative: give by how much the new version must be better (>= 0)")
    return {"type": "deployed_model_metric", "metric_name": c.text(f["metric_name"], loc + ("metric_name",)),
            "direction": c.direction(f.get("direction"), loc + ("direction",)), "margin": margin}


def _train_deploy(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
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


def _batch(c: Checker, value: Any, loc: Loc) -> dict[str, Any] | None:
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

