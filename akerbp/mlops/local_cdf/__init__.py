"""An offline CDF: an HTTP server speaking the subset of the CDF REST API that cognite-sdk 8.x uses.

It knows nothing of akerbp.mlops and could be published on its own:

    from akerbp.mlops.local_cdf import LocalCDF
    with LocalCDF(".mlops/local-cdf") as cdf:
        client = cdf.client(project="test")      # a real CogniteClient

Layers, each importing only those below it:
    server.py   LocalCDF: starts the HTTP server, owns one data dir's store, credentials, faults and runtime, and
                lists the API modules it serves (ROUTERS)
    api/        the CDF resources, one module each (files, datasets, events, timeseries + datapoints, sessions,
                functions, calls, schedules, projects); a new one (workflows, RAW) is one more module
    http/       plumbing: the WSGI app and routing, auth, errors, validation, the standard routes (resources.Kind),
                filters, fault injection, health; handlers get a Ctx with the Services they may use
    runtime/    the function runtime: build, environments, warm workers, the runner, sandbox, processes, cron;
                FunctionRuntime (runtime/host.py) is what builds and calls reach it by
    store.py    SQLite + blobs: the one place that runs SQL on the resources table (http/filters.py only builds
                where-clauses for it; api/datapoints.py keeps the SQL of its own datapoints table)
"""
from .server import Limits, LocalCDF

__all__ = ["LocalCDF", "Limits"]
