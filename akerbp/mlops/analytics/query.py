"""SQL over a model's prediction calls: the one engine `mlops analytics`, metric-based triggers and dynamic build
metric thresholds use.

    run_sql(client, model, env, sql, since_ms)       -> Result(columns, rows)
    metric_value(client, model, env, sql, since_ms)  -> float: one row, one numeric non-NULL column
    check_sql(sql)                                   -> the problem, or None (EMPTY tables: no CDF needed)
    SUMMARY, since_ms(text)                          -> the summary `mlops analytics` and the dashboard show

The tables (`calls`, `versions`) are rows.py's. Every problem with a query is an AnalyticsQueryError (a UsageError,
exit 2) that names the query and says what is wrong, DuckDB's own message included for syntax and binder errors.
duckdb is imported only here and in the modules behind rows.py, inside the functions.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from akerbp.mlops.errors import UsageError

if TYPE_CHECKING:
    from cognite.client import CogniteClient

    from akerbp.mlops.analytics.cache import Sync
    from akerbp.mlops.analytics.rows import Tables

UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
HOURLY_UP_TO_MS = 2 * 86_400_000  # the summary is per hour up to --since 2d, per day beyond

SUMMARY = """SELECT date_trunc('{by}', time) AS {by}, version, count(*) AS calls,
  count(*) FILTER (WHERE status = 'error') AS errors,
  round(quantile_cont(latency_total_ms, 0.5), 1) AS p50_ms,
  round(quantile_cont(latency_total_ms, 0.95), 1) AS p95_ms,
  sum("rows") AS input_rows
FROM calls GROUP BY ALL ORDER BY 1, 2"""
MAX_SHOWN_SQL = 200  # characters of the query an error repeats
CHECK_PREFIX = "PREPARE mlops_check AS "  # binds without running


class AnalyticsQueryError(UsageError):
    """An analytics query that cannot give what was asked of it (syntax, unknown column, wrong shape, NULL)."""

    def __init__(self, sql: str, problem: str):
        self.sql, self.problem = sql, problem
        super().__init__(f"analytics query {shown(sql)}: {problem}")


def since_ms(text: str, now_ms: int | None = None) -> int | None:
    """--since: a duration back from now (30m, 12h, 7d, 2w) as epoch ms, or None for 'all'."""
    if text.strip().lower() == "all":
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if match is None or int(match[1]) == 0:
        raise UsageError(f"--since {text!r} is invalid: write a duration like 30m, 12h, 7d or 2w, or 'all'")
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return now - int(match[1]) * UNITS_MS[match[2]]


def by_period(start_ms: int | None, now_ms: int | None = None) -> str:
    """The summary's period: hour up to HOURLY_UP_TO_MS back, day beyond (and for 'all')."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return "hour" if start_ms is not None and now - start_ms <= HOURLY_UP_TO_MS else "day"


def shown(sql: str) -> str:
    text = " ".join(sql.split())
    return repr(text if len(text) <= MAX_SHOWN_SQL else text[:MAX_SHOWN_SQL] + "...")


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]
    types: list[str] = field(default_factory=list)  # DuckDB's type of each column
    sync: Sync | None = None  # how the cache was brought up to date

    def as_dict(self) -> dict[str, Any]:
        """The --json form: columns and rows of JSON values (timestamps as ISO 8601, NaN as null)."""
        return {"columns": list(self.columns), "rows": [[_json_value(v) for v in row] for row in self.rows]}


def _json_value(value: object) -> object:
    import datetime
    import decimal

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # UUID, intervals, ...


def _problem(error: Exception) -> str:
    """DuckDB's message, its first lines (the caret lines of a syntax error included)."""
    import duckdb

    kinds = {duckdb.ParserException: "syntax error", duckdb.BinderException: "it does not bind to the tables",
             duckdb.CatalogException: "it names something that does not exist",
             duckdb.ConversionException: "a value does not convert", duckdb.InvalidInputException: "invalid input"}
    kind = next((k for cls, k in kinds.items() if isinstance(error, cls)), "DuckDB cannot run it")
    lines = [line.replace(CHECK_PREFIX, "") for line in str(error).splitlines() if line.strip(" ^")][:4]
    return f"{kind}: " + " | ".join(lines)


def _execute(tables: Tables, sql: str) -> Result:
    import duckdb

    if not sql.strip():
        raise AnalyticsQueryError(sql, "the query is empty")
    try:
        cursor = tables.con.execute(sql)
        if cursor.description is None:
            raise AnalyticsQueryError(sql, "it returns no result: write a SELECT (or WITH ... SELECT)")
        rows = cursor.fetchall()
    except duckdb.Error as e:
        hint = _names_hint(tables, str(e))
        raise AnalyticsQueryError(sql, _problem(e) + hint) from None
    columns = [d[0] for d in cursor.description]
    types = [str(d[1]) for d in cursor.description]
    return Result(columns, rows, types, tables.sync)


def _names_hint(tables: Tables, message: str) -> str:
    if "struct" not in message.lower():
        return ""
    seen = "; ".join(f"{k}: {', '.join(v) or '(none yet)'}" for k, v in tables.feature_names.items())
    return f" (names in the calls: {seen})"


def run_sql(client: CogniteClient, model: str, env: str, sql: str, since_ms: int | None = None, *,
            use_cache: bool = True) -> Result:
    """The query over `calls` (only calls since since_ms when given) and `versions` of model in env."""
    from akerbp.mlops.analytics.rows import open_tables

    tables = open_tables(client, model, env, sql, since_ms, use_cache=use_cache)
    try:
        return _execute(tables, sql)
    finally:
        tables.close()


def run_on(tables: Tables, sql: str) -> Result:
    """The query on tables already open (rows.open_tables): several queries over one sync of the cache."""
    return _execute(tables, sql)


def metric_value(client: CogniteClient, model: str, env: str, sql: str, since_ms: int | None = None, *,
                 use_cache: bool = True) -> float:
    """The one number the query gives: exactly one row of exactly one numeric, non-NULL column."""
    return single_number(run_sql(client, model, env, sql, since_ms, use_cache=use_cache), sql)


NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
           "UHUGEINT", "FLOAT", "DOUBLE", "REAL")


def single_number(result: Result, sql: str) -> float:
    if len(result.columns) != 1:
        raise AnalyticsQueryError(sql, f"a metric query must return one column, it returns {len(result.columns)} "
                                       f"({', '.join(result.columns)})")
    if len(result.rows) != 1:
        why = " (no calls in the period? check --since and that analytics is enabled)" if not result.rows else ""
        raise AnalyticsQueryError(sql, f"a metric query must return one row, it returns {len(result.rows)}{why}")
    name, kind, value = result.columns[0], result.types[0] if result.types else "", result.rows[0][0]
    numeric = kind.upper() in NUMERIC or kind.upper().startswith("DECIMAL")
    if not numeric and kind:
        raise AnalyticsQueryError(sql, f"column {name!r} is {kind}, not a number")
    if value is None:
        raise AnalyticsQueryError(sql, f"column {name!r} is NULL (no calls matched, or a feature or metric no row "
                                       "has)")
    number = float(value)
    if not math.isfinite(number):
        raise AnalyticsQueryError(sql, f"column {name!r} is {number}, not a finite number")
    return number


def check_sql(sql: str) -> str | None:
    """What is wrong with the query against EMPTY tables of the schema (syntax, unknown table or column), or None.

    Only binds: a field of features, prediction or metrics cannot be checked before calls exist (any name binds)."""
    import duckdb

    from akerbp.mlops.analytics.rows import empty_tables

    if not isinstance(sql, str) or not sql.strip():
        return "the query is empty"
    con = empty_tables(sql)
    try:
        con.execute(f"{CHECK_PREFIX}{sql}")
    except duckdb.Error as e:
        return _problem(e)
    finally:
        con.close()
    return None


def check_metric_sql(sql: str) -> str | None:
    """check_sql, then that the query has one numeric column (its row count is known only when it runs)."""
    problem = check_sql(sql)
    if problem is not None:
        return problem
    from akerbp.mlops.analytics.rows import empty_tables

    con = empty_tables(sql)
    try:
        cursor = con.execute(sql)
        description = cursor.description or []
    finally:
        con.close()
    if len(description) != 1:
        return f"a metric query must return one column, it returns {len(description)}"
    kind = str(description[0][1]).upper()
    if kind not in NUMERIC and not kind.startswith("DECIMAL"):
        return f"column {description[0][0]!r} is {kind}, not a number"
    return None
