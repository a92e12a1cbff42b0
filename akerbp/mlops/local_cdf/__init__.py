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
    served.py   what a served local CDF announces (server.json), read without importing the server
    store.py    SQLite + blobs: the one place that runs SQL on the resources table (http/filters.py only builds
                where-clauses for it; api/datapoints.py keeps the SQL of its own datapoints table)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Limits, LocalCDF

__all__ = ["LocalCDF", "Limits"]


def __getattr__(name: str) -> object:
    """LocalCDF and Limits on first use: `akerbp.mlops.local_cdf.served` (what a client reads to find a served local
    CDF) must not import the server."""
    if name in __all__:
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
