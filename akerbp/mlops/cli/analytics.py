"""`mlops analytics MODEL`: SQL over the model's prediction calls (analytics/query.py), a summary by default.

Reads the CDF the deploy of the environment wrote to (cdf.client.client_for_env), like `mlops status`. The table goes
to stdout, the cache's note to stderr; errors are UsageError (exit 2: a bad --since, an unknown model, a query
DuckDB refuses) or MlopsError (exit 1), mapped by the root command.
"""
from __future__ import annotations

import time

import click

from akerbp.mlops.analytics.query import SUMMARY, by_period, since_ms
from akerbp.mlops.analytics.schema import CALLS_COLUMNS, VERSIONS_COLUMNS
from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_json, print_table
from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import MODEL_NAME_RULE, is_model_name

EXAMPLE = ("SELECT avg(features.GR.mean) - (SELECT metrics.gr_mean FROM versions WHERE live) AS drift "
           "FROM calls WHERE time > now() - INTERVAL 1 DAY")


def _columns_help(columns: tuple[tuple[str, str, str], ...]) -> str:
    return "\b\n" + "\n".join(f"  {name:<19} {kind:<10} {meaning}" for name, kind, meaning in columns)


HELP = f"""SQL (DuckDB) over MODEL's prediction calls in ENV; without --sql, a summary per hour (--since up to 2d) or
day and version: calls, errors, latency p50/p95, input rows.

Every prediction call with analytics enabled (settings `analytics`) is a row of RAW table {{model}}-calls of database
mlops-analytics-{{env}}. The rows are cached locally ($XDG_CACHE_HOME or ~/.cache/akerbp-mlops/analytics/): a query
fetches only the rows written since the last one. --since filters `calls` by time.

Table calls, one row per call:

{_columns_help(CALLS_COLUMNS)}

Table versions, the registry's versions of MODEL in ENV:

{_columns_help(VERSIONS_COLUMNS)}

Example: the drift of GR over the last day against the live version's training mean:

\b
  mlops analytics well_density --env prod --since 1d --sql "{EXAMPLE}"
"""


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if hasattr(value, "isoformat"):
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


@click.command(help=HELP)
@click.argument("model")
@options.env()
@click.option("--since", "since", default="7d", show_default=True, metavar="DURATION",
              help="Only calls this recent: 30m, 12h, 7d, 2w, or 'all'.")
@click.option("--sql", default=None, metavar="QUERY", help="The query (default: the summary).")
@click.option("--by", type=click.Choice(["hour", "day"]), default=None,
              help="The summary's period (default: hour up to --since 2d, else day).")
@options.json_output(help="Print {model, env, since, columns, rows, cache} as JSON.")
def analytics(model: str, env: str | None, since: str, sql: str | None, by: str | None, as_json: bool) -> None:
    if not is_model_name(model):
        raise UsageError(f"{model!r} is not a model name: {MODEL_NAME_RULE}")
    start = since_ms(since)
    env = options.env_or_default(env)
    if sql is None:
        sql = SUMMARY.format(by=by or by_period(start))
    from akerbp.mlops.analytics.query import run_sql
    from akerbp.mlops.cdf.client import client_for_env

    client = client_for_env(env)
    result = run_sql(client, model, env, sql, start)
    sync = result.sync
    if sync is not None and sync.stored == 0:  # nothing recorded: a model without calls yet, or a typo
        from akerbp.mlops.cli.known_models import check_known

        check_known(model, [client])
    cache = {"file": sync.cache, "stored": sync.stored, "fetched": sync.fetched, "full": sync.full,
             "seconds": round(sync.seconds, 3), "rebuilt": sync.rebuilt} if sync else None
    if as_json:
        since_iso = None if start is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000))
        print_json({"model": model, "env": env, "since": since_iso, **result.as_dict(), "cache": cache})
        return
    if sync is not None:
        rebuilt = f"; the cache was rebuilt: {sync.rebuilt}" if sync.rebuilt else ""
        note(f"{sync.stored:,} calls cached, {sync.fetched:,} rows fetched from RAW in {sync.seconds:.2f} s{rebuilt}")
    if not result.rows:
        echo(f"No rows (model {model} in {env}, since {since}).")
        return
    print_table([[_cell(v) for v in row] for row in result.rows], result.columns)
