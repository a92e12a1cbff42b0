"""Deployment conditions: one meaning of each threshold direction for the settings' deployment_condition, the
training service and an automation's gate (BuildMetric, DeployedModelMetric).

Standard library only: every function bundles it. A verdict says what was compared with what and why it holds or
not, so a notification or an audit event can show it without re-deriving anything.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Mapping

DYNAMIC_THRESHOLD = ("a dynamic (SQL) threshold needs model analytics, which this version of akerbp.mlops does "
                     "not have yet: give a number, e.g. threshold=\"0.8\"")


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
    met: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_metric(metric_name: str, direction_: ThresholdDirection | str, threshold_: object, metadata: object, *,
                 env: str | None = None) -> Verdict:
    """The newly trained version's metric against a fixed threshold."""
    d = direction(direction_)
    bound = threshold(threshold_)
    value, where = metric(metadata, metric_name)
    common: dict[str, Any] = {"kind": "build_metric", "metric": metric_name, "direction": d.value, "threshold": bound,
                              "env": env}
    if value is None:
        return Verdict(**common, met=False, detail=f"{where}: not met")
    met = holds(value, d, bound)
    detail = f"{metric_name} = {value:g} {'' if met else 'not '}{d.symbol} {bound:g}: {'met' if met else 'not met'}"
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
          live_metadata: Mapping[str, Any] | None = None, live_model_id: str | None = None) -> Verdict:
    """One condition of an automation definition ({"type": "build_metric" | "deployed_model_metric", ...}, as
    definition.AutomationDefinition.as_dict() writes it) checked; the live_* arguments serve the champion one."""
    if condition.get("type") == "deployed_model_metric":
        return deployed_model_metric(condition["metric_name"], condition["direction"], condition.get("margin", 0),
                                     metadata, live_metadata, live_model_id=live_model_id, env=env)
    return build_metric(condition["metric_name"], condition["direction"], condition["threshold"], metadata, env=env)


def short(value: object) -> str:
    """repr(value) cut to 60 characters, for messages; never raises."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a user's object
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
