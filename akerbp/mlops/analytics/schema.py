"""The analytics tables' columns, in one place: what the recorder's row (the contract: one row per call) becomes in
DuckDB, and what `mlops analytics --help` and the README say of `calls` and `versions`. The cache, the loader and the
query's view all build their SQL from these, so they cannot disagree.

    calls     one row per prediction call (the row schema the recorder writes to analytics_calls_table(model)):
              `features` and `prediction` are STRUCTs keyed by name (features.GR.mean), `time` a TIMESTAMP (UTC)
    versions  the registry's versions of the model in the environment: metrics as a STRUCT (metrics.rmse), `live`
"""
from __future__ import annotations

STAT = "STRUCT(count BIGINT, nulls BIGINT, mean DOUBLE, std DOUBLE, min DOUBLE, max DOUBLE)"

# The row schema (contract: one row per call) as DuckDB types; `features` and `prediction` are stored as MAPs (any
# names) and shown as STRUCTs of the names present.
ROW_COLUMNS: dict[str, str] = {
    "time": "BIGINT", "call_id": "BIGINT", "model_id": "VARCHAR", "version": "BIGINT", "env": "VARCHAR",
    "latency_predict_ms": "DOUBLE", "latency_total_ms": "DOUBLE", "status": "VARCHAR", "error_type": "VARCHAR",
    "rows": "BIGINT", "features": f"MAP(VARCHAR, {STAT})", "prediction": f"MAP(VARCHAR, {STAT})",
    "sample": "JSON", "sample_truncated": "BOOLEAN",
}
STRUCT_COLUMNS = ("features", "prediction")
NO_NAMES = "(none)"  # the one field of a STRUCT column before any row had a name (DuckDB has no empty STRUCT)

# What `mlops analytics --help` and the README say of each table: (column, DuckDB type, meaning).
CALLS_COLUMNS = (
    ("key", "VARCHAR", "the RAW row key, {time_ms:013d}-{call_id}"),
    ("time", "TIMESTAMP", "when the call started (UTC)"),
    ("time_ms", "BIGINT", "the same in epoch ms"),
    ("call_id", "BIGINT", "the CDF function call id (NULL when unknown)"),
    ("model_id", "VARCHAR", "the artifact served, e.g. well_density/test/3"),
    ("version", "BIGINT", "its registry version (NULL for a local dev artifact)"),
    ("env", "VARCHAR", "dev, test or prod"),
    ("latency_predict_ms", "DOUBLE", "predict() alone"),
    ("latency_total_ms", "DOUBLE", "the whole call: validation, predict, response check"),
    ("status", "VARCHAR", "ok or error"),
    ("error_type", "VARCHAR", "the exception type, InputSchema or ResponseInvalid; NULL when ok"),
    ("rows", "BIGINT", "input records of the call"),
    ("features", "STRUCT", "per numeric input feature: count, nulls, mean, std, min, max (features.GR.mean)"),
    ("prediction", "STRUCT", "the same per numeric prediction output (prediction.prediction.mean)"),
    ("sample", "JSON", "the raw input, only for sampled calls (settings analytics.sample_inputs)"),
    ("sample_truncated", "BOOLEAN", "the sample was cut at 64 kB"),
    ("updated_ms", "BIGINT", "the row's lastUpdatedTime in RAW"),
)
VERSIONS_COLUMNS = (
    ("version", "INTEGER", "the registry version number n of {model}/{env}/{n}"),
    ("model_id", "VARCHAR", "{model}/{env}/{n}, as calls.model_id"),
    ("created", "TIMESTAMP", "when it was uploaded (UTC)"),
    ("created_by", "VARCHAR", "who uploaded it"),
    ("git_commit", "VARCHAR", "the commit it was trained from"),
    ("promoted_from", "VARCHAR", "the version it was promoted from, '' unless promoted"),
    ("live", "BOOLEAN", "the live prediction service of the environment serves it"),
    ("metrics", "STRUCT", "train()'s metrics, by name (metrics.rmse); top-level numeric metadata too"),
)


def quote_name(name: str) -> str:
    """A DuckDB identifier (a column, a STRUCT field) in double quotes."""
    return '"' + name.replace('"', '""') + '"'


def quote_text(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"
