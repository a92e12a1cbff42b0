"""Deployment conditions: one meaning of each threshold direction for the settings' deployment_condition, the
training service and an automation's gate (BuildMetric, DeployedModelMetric).

Standard library only: every function bundles it. A verdict says what was compared with what and why it holds or
not, so a notification or an audit event can show it without re-deriving anything.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Mapping

DYNAMIC_THRESHOLD = ("a dynamic (SQL) threshold is evaluated by an automation's gate (BuildMetric or "
                     "MetricBasedTrigger in mlops_automations.py); here give a number, e.g. threshold=\"0.8\"")
SQL_STARTS = ("select", "with")  # a threshold string starting so is a query (DuckDB, over the analytics tables)
_SQL = re.compile(r"^\s*(" + "|".join(SQL_STARTS) + r")\b", re.IGNORECASE)
SQL_SHOWN = 80  # characters of a query a verdict's detail shows


class ThresholdDirection(str, Enum):
    """How a metric compares with its threshold; the values are what settings and automation files write."""

    ABOVE = "above"
    BELOW = "below"
    ABOVE_OR_EQUALS = "above_or_equals"
    BELOW_OR_EQUALS = "below_or_equals"
    EQUALS = "equals"

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]

    def __str__(self) -> str:  # f"{direction}" is the value, as in a settings file, not "ThresholdDirection.ABOVE"
        return self.value


_SYMBOLS = {ThresholdDirection.ABOVE: ">", ThresholdDirection.BELOW: "<", ThresholdDirection.ABOVE_OR_EQUALS: ">=",
            ThresholdDirection.BELOW_OR_EQUALS: "<=", ThresholdDirection.EQUALS: "=="}
DIRECTIONS: tuple[str, ...] = tuple(d.value for d in ThresholdDirection)


def direction(value: object) -> ThresholdDirection:
    """The direction `value` names (a ThresholdDirection or its lowercase value); ValueError saying the five."""
    if isinstance(value, ThresholdDirection):
        return value
    if isinstance(value, str):
        try:
            return ThresholdDirection(value)
        except ValueError:
            pass
        if value.upper() in ThresholdDirection.__members__:
            raise ValueError(f"{value!r}: write it in lowercase, {value.lower()!r} (or ThresholdDirection.{value.upper()})")
    raise ValueError(f"{short(value)} is not a direction; use one of {', '.join(DIRECTIONS)}")


def threshold(value: object) -> float:
    """A threshold as a number: a finite int/float or a string holding one ("0.65", as JFrog ML writes it).
    Any other string is a dynamic (SQL) threshold, refused until model analytics exist. ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{str(value).lower()} is a boolean, not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            if not value.strip():
                raise ValueError("is empty; give a number, e.g. '0.8'") from None
            raise ValueError(f"{short(value)}: {DYNAMIC_THRESHOLD}") from None
    else:
        raise ValueError(f"{short(value)} is not a number; give one, e.g. 0.8 or '0.8'")
    if not math.isfinite(number):
        raise ValueError(f"{short(value)} is not a finite number")
    return number


def is_sql(value: object) -> bool:
    """Whether a threshold is a dynamic one: text starting with SELECT or WITH (any case)."""
    return isinstance(value, str) and _SQL.match(value) is not None


def threshold_or_sql(value: object) -> float | str:
    """An automation's threshold: a number (as threshold()), or a SQL query returned as its stripped text, which
    the caller evaluates (analytics.query.metric_value). ValueError for anything else."""
    if is_sql(value):
        return str(value).strip()
    try:
        return threshold(value)
    except ValueError as e:
        if DYNAMIC_THRESHOLD in str(e):
            raise ValueError(f"{short(value)} is neither a number nor a SQL query: give a number, e.g. '0.8', or a "
                             "query, e.g. 'SELECT max(metrics.r2) FROM versions'") from None
        raise


def sql_text(sql: str) -> str:
    """A query on one line, cut to SQL_SHOWN characters, for a verdict's detail."""
    one = " ".join(sql.split())
    return one if len(one) <= SQL_SHOWN else one[:SQL_SHOWN - 3] + "..."


def holds(value: float, direction_: ThresholdDirection | str, bound: float) -> bool:
    """Whether `value` is `direction_` of `bound`: ABOVE >, BELOW <, ABOVE_OR_EQUALS >=, BELOW_OR_EQUALS <=, EQUALS ==."""
    d = direction(direction_)
    if d is ThresholdDirection.ABOVE:
        return value > bound
    if d is ThresholdDirection.BELOW:
        return value < bound
    if d is ThresholdDirection.ABOVE_OR_EQUALS:
        return value >= bound
    if d is ThresholdDirection.BELOW_OR_EQUALS:
        return value <= bound
    return value == bound


def metric(metadata: object, name: str) -> tuple[float | None, str]:
    """(value, where) of metric `name`: metadata["metrics"][name] first, then metadata[name]; value None and the
    problem instead of `where` when it is missing or not a finite number."""
    metrics = metadata.get("metrics") if isinstance(metadata, dict) else None
    if isinstance(metrics, dict) and name in metrics:
        value, where = metrics[name], f"metrics[{name!r}]"
    elif isinstance(metadata, dict) and name in metadata:
        value, where = metadata[name], repr(name)
    else:
        return None, f"metric {name!r} is not in the training metadata (looked in metadata['metrics'] and metadata)"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"metric {where} is {short(value)}, not a finite number"
    return float(value), where


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """One condition checked: what was compared, and whether it holds. `threshold` is what the value was compared
    with (for a champion comparison: the live value moved by the margin)."""

    kind: str  # "build_metric" | "deployed_model_metric"
    metric: str
    direction: str
    threshold: float | None = None
    value: float | None = None
    live_value: float | None = None
    live_model_id: str | None = None
    env: str | None = None
    threshold_sql: str | None = None  # a dynamic threshold: the query `threshold` is the value of
    met: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_metric(metric_name: str, direction_: ThresholdDirection | str, threshold_: object, metadata: object, *,
                 env: str | None = None, threshold_sql: str | None = None) -> Verdict:
    """The newly trained version's metric against a threshold: fixed, or (threshold_sql given) the value the
    caller got from that query."""
    d = direction(direction_)
    bound = threshold(threshold_)
    value, where = metric(metadata, metric_name)
    common: dict[str, Any] = {"kind": "build_metric", "metric": metric_name, "direction": d.value, "threshold": bound,
                              "env": env, "threshold_sql": threshold_sql}
    if value is None:
        return Verdict(**common, met=False, detail=f"{where}: not met")
    met = holds(value, d, bound)
    source = f" (from {sql_text(threshold_sql)})" if threshold_sql else ""
    detail = f"{metric_name} = {value:g} {'' if met else 'not '}{d.symbol} {bound:g}{source}: " \
             f"{'met' if met else 'not met'}"
    return Verdict(**common, value=value, met=met, detail=detail)


def deployed_model_metric(metric_name: str, direction_: ThresholdDirection | str, margin: object, metadata: object,
                          live_metadata: Mapping[str, Any] | None, *, live_model_id: str | None = None,
                          env: str | None = None) -> Verdict:
    """Champion/challenger: the new version's metric against the one live in `env`, by at least `margin`.

    ABOVE: new > live + margin; ABOVE_OR_EQUALS: new >= live + margin; BELOW: new < live - margin;
    BELOW_OR_EQUALS: new <= live - margin; EQUALS: |new - live| <= margin. No live version (live_metadata None),
    or one without the metric: passes, and the detail says why (there is nothing to beat).
    """
    d = direction(direction_)
    gap = threshold(margin)
    if gap < 0:
        raise ValueError(f"margin {gap:g} is negative; give 0 or more")
    common: dict[str, Any] = {"kind": "deployed_model_metric", "metric": metric_name, "direction": d.value,
                              "live_model_id": live_model_id, "env": env}
    in_env = f" in {env}" if env else ""
    value, where = metric(metadata, metric_name)
    if value is None:
        return Verdict(**common, met=False, detail=f"{where}: not met")
    if live_metadata is None:
        return Verdict(**common, value=value, met=True,
                       detail=f"{metric_name} = {value:g}; no version is live{in_env}: nothing to beat, met")
    live, live_where = metric(live_metadata, metric_name)
    champion = f"{live_model_id or 'the live version'}{in_env}"
    if live is None:
        return Verdict(**common, value=value, met=True,
                       detail=f"{metric_name} = {value:g}; {champion} has no usable {metric_name} "
                       f"({live_where.replace('training metadata', 'its metadata')}): nothing to beat, met")
    if d is ThresholdDirection.EQUALS:
        met = abs(value - live) <= gap
        detail = (f"{metric_name} = {value:g}, live {live:g} ({champion}): difference {abs(value - live):g} "
                  f"{'<=' if met else '>'} margin {gap:g}: {'met' if met else 'not met'}")
        return Verdict(**common, threshold=live, value=value, live_value=live, met=met, detail=detail)
    upward = d in (ThresholdDirection.ABOVE, ThresholdDirection.ABOVE_OR_EQUALS)
    bound = live + gap if upward else live - gap
    met = holds(value, d, bound)
    moved = f" {'+' if upward else '-'} margin {gap:g}" if gap else ""
    detail = (f"{metric_name} = {value:g} {'' if met else 'not '}{d.symbol} live {live:g}{moved} ({champion}): "
              f"{'met' if met else 'not met'}")
    return Verdict(**common, threshold=bound, value=value, live_value=live, met=met, detail=detail)


def check(condition: Mapping[str, Any], metadata: object, *, env: str | None = None,
          live_metadata: Mapping[str, Any] | None = None, live_model_id: str | None = None,
          threshold_value: float | None = None) -> Verdict:
    """One condition of an automation definition ({"type": "build_metric" | "deployed_model_metric", ...}, as
    definition.AutomationDefinition.as_dict() writes it) checked; the live_* arguments serve the champion one,
    threshold_value a dynamic threshold (the value its query gave)."""
    if condition.get("type") == "deployed_model_metric":
        return deployed_model_metric(condition["metric_name"], condition["direction"], condition.get("margin", 0),
                                     metadata, live_metadata, live_model_id=live_model_id, env=env)
    given = condition["threshold"]
    if is_sql(given):
        if threshold_value is None:
            raise ValueError(f"the threshold of {condition['metric_name']} is a query: evaluate it first")
        return build_metric(condition["metric_name"], condition["direction"], threshold_value, metadata, env=env,
                            threshold_sql=str(given))
    return build_metric(condition["metric_name"], condition["direction"], given, metadata, env=env)


@dataclass(frozen=True, kw_only=True)
class TriggerVerdict:
    """A metric-based trigger's check: the metric's value against its threshold, and whether the action runs
    (fired: the condition holds and no cooldown holds it back)."""

    metric_sql: str
    direction: str
    threshold: float
    value: float
    threshold_sql: str | None = None
    holds: bool
    in_cooldown: bool = False
    cooldown_until: str | None = None  # ISO 8601 UTC, when in_cooldown
    fired: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def trigger_verdict(metric_sql: str, direction_: ThresholdDirection | str, bound: float, value: float, *,
                    threshold_sql: str | None = None, cooldown_until: str | None = None) -> TriggerVerdict:
    """A metric's value against its threshold; cooldown_until (the end of the cooldown of the last triggered run,
    when it is still ahead) holds a firing back."""
    d = direction(direction_)
    met = holds(value, d, bound)
    source = f" (from {sql_text(threshold_sql)})" if threshold_sql else ""
    detail = f"{value:g} {'' if met else 'not '}{d.symbol} {bound:g}{source}"
    if met and cooldown_until:
        detail += f": holds, but in cooldown until {cooldown_until}: not triggered"
    else:
        detail += ": triggered" if met else ": not triggered"
    return TriggerVerdict(metric_sql=metric_sql, direction=d.value, threshold=bound, value=value,
                          threshold_sql=threshold_sql, holds=met, in_cooldown=bool(met and cooldown_until),
                          cooldown_until=cooldown_until if met else None, fired=met and not cooldown_until,
                          detail=detail)


def short(value: object) -> str:
    """repr(value) cut to 60 characters, for messages; never raises."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a user's object
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
