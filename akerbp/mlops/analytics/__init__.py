"""Model analytics: one RAW row per prediction call (summary.py and recorder.py write them, inside the prediction
function) and SQL over them (rows.py loads them into DuckDB with a local cache, query.py runs the queries for
`mlops analytics` and for metric-based automations).

Nothing is imported here: the prediction functions bundle summary.py and recorder.py (standard library only), and
duckdb is imported only when a query runs.
"""
