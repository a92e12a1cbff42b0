"""The `versions` table: the registry's versions of a model in an environment, each with its metrics and whether the
live prediction service serves it, so a query can join calls to what was trained (metrics.rmse, live).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from akerbp.mlops.analytics.schema import quote_text
from akerbp.mlops.vocabulary import function_external_id

if TYPE_CHECKING:
    import duckdb
    from cognite.client import CogniteClient


@dataclass(frozen=True)
class VersionRow:
    version: int
    model_id: str
    created: str  # ISO 8601 UTC or ""
    created_by: str
    git_commit: str
    promoted_from: str
    live: bool
    metrics: dict[str, float]


def version_metrics(metadata: dict[str, str]) -> dict[str, float]:
    """A version's metrics: metadata['metrics'] (train()'s), then top-level numeric metadata (as conditions.metric
    reads them); the registry's own keys are not metrics."""
    from akerbp.mlops.registry.rules import RESERVED_KEYS, decoded_metadata

    decoded = decoded_metadata(metadata)
    out: dict[str, float] = {}

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value

    metrics = decoded.get("metrics")
    if isinstance(metrics, dict):
        out.update({str(k): float(v) for k, v in metrics.items() if number(v)})
    for key, value in decoded.items():
        if key not in RESERVED_KEYS and key not in out and number(value):
            out[key] = float(value)
    return out


def versions_of(client: CogniteClient, model: str, env: str) -> list[VersionRow]:
    """The registry's versions of model in env, and which one the live prediction service serves (one request)."""
    from akerbp.mlops import registry

    fn = client.functions.retrieve(external_id=function_external_id(model, "prediction", env))
    live_id = (fn.metadata or {}).get("mlops_model_id") if fn is not None else None
    return [VersionRow(v.version, v.model_id, v.created_time, v.created_by, v.git_commit, v.promoted_from,
                       v.model_id == live_id, version_metrics(v.metadata))
            for v in registry.list_model_versions(model, env, client=client)]


def versions_table(con: duckdb.DuckDBPyConnection, versions: list[VersionRow], names: set[str]) -> None:
    """The TEMP table `versions`; metrics a STRUCT of every metric name (of any version or the query) as DOUBLE."""
    con.execute("CREATE OR REPLACE TEMP TABLE versions_raw (version INTEGER, model_id VARCHAR, created VARCHAR, "
                "created_by VARCHAR, git_commit VARCHAR, promoted_from VARCHAR, live BOOLEAN, metrics JSON)")
    if versions:
        con.executemany("INSERT INTO versions_raw VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [[v.version, v.model_id, v.created, v.created_by, v.git_commit, v.promoted_from, v.live,
                          json.dumps(v.metrics)] for v in versions])
    all_names = sorted(names.union(*(v.metrics for v in versions)))
    shape = json.dumps({n: "DOUBLE" for n in all_names or ["(none)"]})
    con.execute(f"CREATE OR REPLACE TEMP TABLE versions AS SELECT version, model_id, "
                f"CAST(nullif(replace(created, '+00:00', ''), '') AS TIMESTAMP) AS created, created_by, git_commit, "
                f"promoted_from, live, json_transform(metrics, {quote_text(shape)}) AS metrics "
                f"FROM versions_raw ORDER BY version")
    con.execute("DROP TABLE versions_raw")
