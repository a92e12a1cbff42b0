"""What one prediction call's row says about its input and its prediction: rows, and count, nulls, mean, std, min
and max per numeric feature (the row schema of issue 12's analytics table).

Standard library only and pure Python: it is bundled into every prediction function and runs on the call path, where
numpy may be absent (a model's environment is its own); a 1,000-record input summarises in well under 2 ms.
Input shapes recognised: {"data": [{feature: value}, ...]} (the template's), {"data": {feature: [values]}} and
[{feature: value}, ...]. A value is numeric when it is an int or a float, not a bool; None, NaN and +-inf count as
nulls (JSON cannot carry the last two, so a mean over them would break the row); other values count as neither. A
feature appears when it has a numeric value, or only nulls (a dead sensor is worth seeing). std is the population
std (ddof=0).
"""
from __future__ import annotations

import math
from typing import Any

_NUMBER = (int, float)
_FLOAT = {float}


def summarize(data: Any, prediction: Any = None) -> dict:
    """{"rows": int | None, "features": {...}, "prediction": {...}} for one call's input and (when it answered ok)
    prediction; never raises on any JSON-shaped value."""
    rows, columns = _columns(data)
    return {"rows": rows, "features": _stats_of(columns), "prediction": _stats_of(_prediction_columns(prediction))}


def _columns(data: Any) -> tuple[int | None, dict[str, list]]:
    """(number of records or None, feature -> its values) of an input in one of the recognised shapes."""
    records = data.get("data") if isinstance(data, dict) else data
    if isinstance(records, dict):
        columns = {str(k): v for k, v in records.items() if isinstance(v, list)}
        return (max((len(v) for v in columns.values()), default=0) if columns else None), columns
    if isinstance(records, list):
        return len(records), _records_to_columns(records)
    return None, {}


def _records_to_columns(records: list) -> dict[str, list]:
    """feature -> values of a list of records; a key a record lacks is a null there, a record not a dict is skipped."""
    if not all(type(r) is dict for r in records):
        records = [r for r in records if isinstance(r, dict)]
    if not records:
        return {}
    if len(set(map(len, records))) == 1:  # the common case: every record has the first one's keys
        try:
            return {str(k): [r[k] for r in records] for k in records[0]}
        except KeyError:
            pass
    return {str(k): [r.get(k) for r in records] for k in dict.fromkeys(k for r in records for k in r)}


def _prediction_columns(prediction: Any) -> dict[str, list]:
    """A flat list is one column "prediction"; a list of dicts or a dict of lists, one column per key."""
    if isinstance(prediction, dict):
        return {str(k): v for k, v in prediction.items() if isinstance(v, list)}
    if isinstance(prediction, list):
        if any(isinstance(p, dict) for p in prediction):
            return _records_to_columns(prediction)
        return {"prediction": prediction}
    return {}


def _stats_of(columns: dict[str, list]) -> dict[str, dict]:
    found = {}
    for name, values in columns.items():
        stats = column_stats(values)
        if stats is not None:
            found[name] = stats
    return found


def column_stats(values: list) -> dict | None:
    """count, nulls, mean, std, min, max of one column; None when it is not numeric (no number and not all nulls)."""
    kinds = set(map(type, values))
    if kinds <= _FLOAT:  # the common case: no conversion, no filtering
        numbers = values
    elif kinds.isdisjoint(_NUMBER):
        numbers = []
    else:  # type(), not isinstance: True is no number here
        numbers = [_float(v) for v in values if type(v) in _NUMBER]
    total = sum(numbers)
    finite = numbers if math.isfinite(total) else [v for v in numbers if math.isfinite(v)]
    nulls = len(numbers) - len(finite) + (values.count(None) if type(None) in kinds else 0)
    if not finite:
        if nulls == 0 or nulls != len(values):
            return None
        return {"count": 0, "nulls": nulls, "mean": None, "std": None, "min": None, "max": None}
    n = len(finite)
    mean = (total if finite is numbers else sum(finite)) / n
    if not math.isfinite(mean):  # finite values whose sum overflows
        mean = math.fsum(v / n for v in finite)
    variance = sum([(x - mean) * (x - mean) for x in finite]) / n
    return {"count": n, "nulls": nulls, "mean": mean, "std": math.sqrt(variance) if math.isfinite(variance) else None,
            "min": min(finite), "max": max(finite)}


def _float(value: int | float) -> float:
    """An int as a float (JSON ints beyond float's range are non-finite, like NaN)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
