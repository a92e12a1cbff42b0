"""`mlops ui`: a read-only dashboard over the configured CDF.

snapshot.py holds what the pages show, read from CDF through the library modules (deployment.live, registry, audit,
automations.executions, analytics.query) into memory and refreshed incrementally; server.py serves it as HTML and
JSON. Nothing here writes to CDF.
"""
