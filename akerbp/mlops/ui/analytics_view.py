"""The analytics page of one model in one environment: calls, errors and latency p50/p95 per hour or day, and each
input feature's mean and std per period against the training statistics of the version that served the calls.

Read with analytics/'s one engine (rows.open_tables: the DuckDB cache of the model's RAW call rows, fetched
incrementally) and three queries over one sync. A feature's period mean and std pool the per-call summaries (each
call's count, mean and std), so they are those of every value the period's calls carried. The baseline is the
served version's metadata key `training_features` ({feature: {mean, std, ...}}, what the template's train() returns).
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from akerbp.mlops.analytics import query
from akerbp.mlops.analytics.schema import NO_NAMES, quote_name

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.ui.versions_index import VersionRecord

TRAINING_FEATURES = "training_features"
MAX_FEATURES = 50  # charts on a page

SERIES = """SELECT date_trunc('{by}', time) AS t, count(*) AS calls,
  count(*) FILTER (WHERE status = 'error') AS errors,
  quantile_cont(latency_total_ms, 0.5) AS p50_ms, quantile_cont(latency_total_ms, 0.95) AS p95_ms
FROM calls GROUP BY 1 ORDER BY 1"""
SERVED = """SELECT model_id FROM calls WHERE model_id IS NOT NULL GROUP BY model_id ORDER BY max(time) DESC LIMIT 1"""


def _iso(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if hasattr(value, "strftime") else str(value)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def features_sql(names: list[str], by: str) -> str:
    parts = []
    for i, name in enumerate(names):
        f = f"features.{quote_name(name)}"
        parts.append(f"sum({f}.mean * {f}.count) / nullif(sum({f}.count), 0) AS m{i}, "
                     f"sum({f}.count * (coalesce({f}.std, 0) * coalesce({f}.std, 0) + {f}.mean * {f}.mean)) "
                     f"/ nullif(sum({f}.count), 0) AS s{i}")
    return f"SELECT date_trunc('{by}', time) AS t, {', '.join(parts)} FROM calls GROUP BY 1 ORDER BY 1"


def baseline_of(version: VersionRecord | None) -> dict[str, dict]:
    """feature -> its training statistics in the version's metadata ({} when it has none)."""
    if version is None:
        return {}
    try:
        found = json.loads(version.raw.get(TRAINING_FEATURES) or "null")
    except ValueError:
        return {}
    return {str(k): v for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def read(client: CogniteClient, model: str, env: str, start_ms: int | None, by: str,
         version_of: Any) -> dict[str, Any]:
    """series, features and the served model_id of model's calls in env since start_ms; version_of(model_id) gives
    the VersionRecord of a model_id (None when the registry has none)."""
    from akerbp.mlops.analytics.rows import open_tables

    tables = open_tables(client, model, env, "", start_ms, versions=False)
    try:
        rows = query.run_on(tables, SERIES.format(by=by)).rows
        calls = [int(r[1]) for r in rows]
        series: dict[str, list] = {"time": [_iso(r[0]) for r in rows], "calls": calls,
                  "errors": [int(r[2]) for r in rows], "p50_ms": [_number(r[3]) for r in rows],
                  "p95_ms": [_number(r[4]) for r in rows]}
        served_rows = query.run_on(tables, SERVED).rows
        served = served_rows[0][0] if served_rows else None
        names = [n for n in tables.feature_names.get("features", []) if n != NO_NAMES][:MAX_FEATURES]
        feature_rows = query.run_on(tables, features_sql(names, by)).rows if names and rows else []
    finally:
        tables.close()
    version = version_of(served) if served else None
    training = baseline_of(version)
    features: dict[str, dict] = {}
    for i, name in enumerate(names):
        means = [_number(r[1 + 2 * i]) for r in feature_rows]
        squares = [_number(r[2 + 2 * i]) for r in feature_rows]
        stds = [math.sqrt(max(0.0, s - m * m)) if s is not None and m is not None else None
                for m, s in zip(means, squares)]
        stats = training.get(name)
        features[name] = {
            "time": [_iso(r[0]) for r in feature_rows], "mean": means, "std": stds,
            "baseline": {"mean": _number(stats.get("mean")), "std": _number(stats.get("std")),
                         "version": version.number, "model_id": version.model_id}
            if stats is not None and version is not None else None,
            "baseline_note": None if stats is not None else (
                f"no training statistics in {served}'s metadata" if served else "no served version in the calls"),
        }
    return {"series": series, "features": features, "served_model_id": served, "calls": sum(calls)}
