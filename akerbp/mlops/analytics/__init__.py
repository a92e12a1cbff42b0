"""Model analytics: one RAW row per prediction call (summary.py and recorder.py write them, inside the prediction
function) and SQL over them (rows.py opens them in DuckDB: pages.py fetches them, sync.py loads them into the
local cache of cache.py; query.py runs the queries for `mlops analytics` and for metric-based automations).

Nothing is imported here: the prediction functions bundle summary.py and recorder.py (standard library only), and
duckdb is imported only when a query runs.
"""
