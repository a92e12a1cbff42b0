"""The classes an mlops_automations.py file builds automations with, named as JFrog ML's (frogml) so its users
recognise them.

Constructing one never raises, whatever it is given: it records its keywords and the line of the file where it
was built, and the loader (definition.py) validates them all at once, reporting every problem with its line, as
the settings do. Standard library only: the file is read in a child process that must start fast.
"""
from __future__ import annotations

import sys
from typing import Any, ClassVar

from akerbp.mlops.conditions import ThresholdDirection

__all__ = [
    "Automation", "ScheduledTrigger", "MetricBasedTrigger", "SqlMetric", "TrainDeploy", "BatchExecution", "TrainingSpecifications", "BuildMetric", "DeployedModelMetric",
    "ThresholdDirection", "DeploymentSpecifications", "SlackNotification", "CustomWebhook", "CLASS_KEY", "LINE_KEY",
    "FILE_KEY", "POSITIONAL_KEY",
]

# Keys of the recorded form (raw()) that are not the user's: which class, where it was built, positional arguments.
CLASS_KEY, LINE_KEY, FILE_KEY, POSITIONAL_KEY = "$class", "$line", "$file", "$args"


class Spec:
    """A recorded constructor call: its keywords, any positional arguments, and where it was made."""

    # The `type` a YAML file writes for this class where a field takes one of several (trigger, action, ...).
    type_key: ClassVar[str | None] = None

    def __init__(self, *args: Any, **kwargs: Any):
        object.__setattr__(self, "_mlops_args", list(args))
        object.__setattr__(self, "_mlops_data", dict(kwargs))
        object.__setattr__(self, "_mlops_where", _caller())

    def _mlops_raw(self) -> dict[str, Any]:
        """The call as data: the keywords, plus CLASS_KEY, LINE_KEY, FILE_KEY (and POSITIONAL_KEY when given)."""
        file, line = self._mlops_where
        raw: dict[str, Any] = {CLASS_KEY: type(self).__name__, LINE_KEY: line, FILE_KEY: file}
        if self._mlops_args:
            raw[POSITIONAL_KEY] = list(self._mlops_args)
        raw.update(self._mlops_data)
        return raw

    def __getattr__(self, name: str) -> Any:  # automation.name, trigger.cron: what was given
        if name.startswith("_mlops_"):
            raise AttributeError(name)
        try:
            return self._mlops_data[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} was not given {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._mlops_data[name] = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and type(other) is type(self) and other._mlops_args == self._mlops_args \
            and other._mlops_data == self._mlops_data

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclasses it stands for

    def __repr__(self) -> str:
        parts = [repr(a) for a in self._mlops_args] + [f"{k}={v!r}" for k, v in self._mlops_data.items()]
        return f"{type(self).__name__}({', '.join(parts)})"


def _caller() -> tuple[str | None, int | None]:
    """(file, line) of the first frame outside this module: where the user's file built the object."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else (None, None)


class Automation(Spec):
    """One automation: name, model (alias model_id), trigger, action, on_success, on_error, execute_immediately
    (False), enabled (True; alias is_enabled), description."""


class ScheduledTrigger(Spec):
    """cron="0 0 * * 0" (5 fields) or interval="Hourly" | "Daily" | "Weekly"; timezone (IANA, default "UTC")."""

    type_key = "schedule"


class MetricBasedTrigger(Spec):
    """Checks a metric on check_cron (alias override_cron; default every 15 minutes) and runs the action when it is
    `direction` (alias directive) of `threshold` (a number or a SQL query): name, metric=SqlMetric(sql_query=...),
    cooldown ("1d": no second run within it of a triggered one), timezone ("UTC")."""

    type_key = "metric"


class SqlMetric(Spec):
    """sql_query: one row, one numeric column, over the model's `calls` (prediction calls) and `versions` tables."""


class TrainDeploy(Spec):
    """Train, check the deployment condition(s), deploy: training (alias build_spec), deployment_condition (one or a
    list), deployment (alias deployment_spec)."""

    type_key = "train_deploy"


class BatchExecution(Spec):
    """Score files with the live prediction service: input (a file external id, or a prefix ending in "/"), output
    (an external id prefix; default beside the input), batch_size (1000 rows per call), environment ("test")."""

    type_key = "batch"


class TrainingSpecifications(Spec):
    """What train() gets: data (a dict), env_vars (a dict); cpu and memory (GB) of the automation function."""


class DeploymentSpecifications(Spec):
    """environments (ordered, from dev/test/prod; default ["test"]), cpu, memory (GB), env_vars (a dict), timeout
    (seconds) of the deployed services, as CDF Functions allow."""


class BuildMetric(Spec):
    """The new version's metric_name against threshold: a number (or a string holding one), or a SQL query
    ("SELECT max(metrics.r2) FROM versions ...") evaluated when the gate runs; direction says how."""

    type_key = "build_metric"


class DeployedModelMetric(Spec):
    """Champion/challenger: the new version's metric_name against the live version's, better by margin (0)."""

    type_key = "deployed_model_metric"


class SlackNotification(Spec):
    """A Slack incoming webhook: webhook=URL, or webhook_secret=NAME (value from MLOPS_SECRET_<NAME>)."""

    type_key = "slack"


class CustomWebhook(Spec):
    """url=URL or url_secret=NAME, http_method ("GET"), headers, header_secrets {header: secret name}, data."""

    type_key = "webhook"


CLASSES: dict[str, type[Spec]] = {cls.__name__: cls for cls in (
    Automation, ScheduledTrigger, MetricBasedTrigger, SqlMetric, TrainDeploy, BatchExecution, TrainingSpecifications,
    DeploymentSpecifications, BuildMetric, DeployedModelMetric, SlackNotification, CustomWebhook)}
