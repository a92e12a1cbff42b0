"""Batch executions: the live prediction code of a model run over CDF files, inside CDF (`mlops batch`, an
automation's BatchExecution).

    driver.py    run(client, model, env, input, ...) -> BatchResult: checks the input, makes the batch function
                 ready, calls it per file, collects what it wrote
    function.py  the batch function {model}-batch-{env}: the live prediction's code and artifact, re-made when it
                 changes
    engine.py    what a call of the batch function does: download, read, predict per batch, write, upload
    formats.py   .csv, .jsonl and .parquet, read and written a row at a time
    handler.py   the batch function's entry point

Bundled into the batch function (engine, formats, handler and this file): standard library only at import, so `run`
and `BatchResult` are imported on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["run", "BatchResult"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from akerbp.mlops.batch import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
