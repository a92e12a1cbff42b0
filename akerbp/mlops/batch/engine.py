"""The batch engine, run inside the batch function: one call predicts one input file (or a row range of it).

A call downloads the input file to a temporary file (the SDK streams it), reads it a row at a time (formats.py),
calls the model's predict({"data": records}, state, secrets) per `batch_size` records, as the prediction service's
callers do, writes each predicted row to a temporary output file of the same format, and uploads that as the output
file. The model is imported and initialised once per worker by the prediction service's own load().

A batch whose predict() raises or answers other than one prediction per record is predicted again a record at a
time, so only the bad rows are left out; each is reported with its row index and the error (masked), the first
MAX_REPORTED of them, plus their count. A row the format cannot read (a csv row with too many fields, a jsonl line
that is not an object) is a bad row too.

A call stops after the batch that passes `seconds` (CDF ends a call after its time limit): the answer's next_row
says where the next call starts, and the output of each such call is a part, `{output}.rows-{start}-{end}`.

Call data: {"file_id", "format", "output", "name", "execution", "source", "batch_size", "start_row", "seconds",
"data_set_id"}. Answer: {"status": "ok", "rows", "rows_out", "bad_rows", "bad": [{"row", "error"}], "next_row"
(None when the file is done), "output", "output_id", "model_id", "phases", "peak_rss_mb"} or {"status": "error",
"message"}.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from akerbp.mlops.batch import formats

MAX_REPORTED = 100  # bad rows reported in full; the rest are counted
ERROR_CHARS = 300  # of each bad row's error


def handle(root: Path, data: Any, client, secrets: dict | None, function_call_info: dict | None = None) -> dict:
    """Serve one call of the batch function whose folder is `root`: never raises, failures are answers."""
    from akerbp.mlops.services import masking

    secrets = dict(secrets or {})
    try:
        with masking.masked_output(secrets):
            answer = _handle(Path(root), data, client, secrets)
    except Exception as e:  # noqa: BLE001 - the last line of defence: the caller reads the answer
        print(masking.mask("".join(traceback.format_exception(e)), secrets), flush=True)
        answer = {"status": "error", "message": f"{type(e).__name__}: {e}"}
    return masking.mask_value(answer, secrets)


def _handle(root: Path, data: Any, client, secrets: dict) -> dict:
    from akerbp.mlops.services import prediction, runtime

    settings = runtime.load_settings(root)
    model_id = settings.get("model_id")
    try:
        loaded = prediction.load(root, settings, secrets)
    except Exception as e:  # noqa: BLE001 - the model's own failure, said as the prediction service says it
        return {"status": "error", "message": f"the model could not be initialised: {type(e).__name__}: {e}",
                "model_id": model_id}
    if not data:  # a ping: the bundle imports and the model initialises
        return {"status": "ok", "model_id": model_id}
    work = Path(tempfile.mkdtemp(prefix="mlops-batch-"))
    try:
        return _predict_file(client, loaded, data, model_id, secrets, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _predict_file(client, loaded, data: dict, model_id, secrets: dict, work: Path) -> dict:
    fmt = data["format"]
    phases: dict[str, float] = {}
    started = time.monotonic()
    source = str(work / f"input{fmt}")
    client.files.download_to_path(source, id=int(data["file_id"]))
    phases["download"] = time.monotonic() - started
    stop_after = started + (float(data["seconds"]) if data.get("seconds") is not None else float("inf"))
    batch_size = max(1, int(data.get("batch_size") or 1000))
    start_row = int(data.get("start_row") or 0)
    target = str(work / f"output{fmt}")
    t = time.monotonic()
    try:
        done = _predict_rows(loaded, formats.Source(source, fmt, start_row, batch_size), target, stop_after, secrets)
    except formats.Malformed as e:
        if fmt != ".csv":
            return {"status": "error", "message": f"{data.get('source')}: {e}", "model_id": model_id}
        print(f"DuckDB cannot read {data.get('source')} as standard csv ({e}): reading it row by row", flush=True)
        done = _predict_rows(loaded, formats.Source(source, fmt, start_row, batch_size, columnar=False), target,
                             stop_after, secrets)
    counts, bad, next_row, rows_out = done
    phases["predict"] = time.monotonic() - t
    t = time.monotonic()
    metadata = {"source": str(data.get("source", "")), "source_id": str(data["file_id"]), "model_id": model_id or "",
                "execution": str(data.get("execution", "")), "rows": str(counts["rows"]),
                "bad_rows": str(counts["bad"]), "first_row": str(start_row), "format": fmt.lstrip(".")}
    xid, name = data["output"], data.get("name") or Path(target).name
    if start_row or next_row is not None:  # a part of the file: its rows say which
        end = next_row if next_row is not None else start_row + counts["rows"]
        xid, name = part_external_id(xid, start_row, end), f"{name}.rows-{start_row}-{end}"
    uploaded = client.files.upload(target, external_id=xid, name=name, metadata=metadata,
                                   data_set_id=data.get("data_set_id"), overwrite=True)
    phases["upload"] = time.monotonic() - t
    return {"status": "ok", "rows": counts["rows"], "rows_out": rows_out, "bad_rows": counts["bad"], "bad": bad,
            "next_row": next_row, "output": xid, "output_id": uploaded.id, "model_id": model_id,
            "phases": {k: round(v, 3) for k, v in phases.items()}, "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float | None:
    """The worker's peak resident memory so far (Linux: ru_maxrss is in kB), so a run can show it is bounded."""
    try:
        import resource
    except ImportError:  # not on Linux
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def part_external_id(output: str, start: int, end: int) -> str:
    """The output of rows [start, end) of a file predicted over several calls."""
    return f"{output}.rows-{start}-{end}"


def _predict_rows(loaded, source: formats.Source, target: str, stop_after: float, secrets: dict):
    """Predict the source's batches into `target` until they end or the time is up: (counts, the first bad rows,
    the row the next call starts from or None, rows written)."""
    from akerbp.mlops.services import masking

    counts = {"rows": 0, "bad": 0}
    bad: list[dict] = []

    def report(index: int, error: str) -> None:
        counts["bad"] += 1
        if len(bad) < MAX_REPORTED:
            bad.append({"row": index, "error": masking.mask(error, secrets)[:ERROR_CHARS]})

    writer = source.writer(target)
    batches = source.batches()
    next_row = None
    try:
        for batch in batches:
            counts["rows"] += len(batch.records)
            ok, predictions = _predictions(loaded, batch, secrets, report)
            writer.write_batch(batch, ok, predictions)
            if time.monotonic() >= stop_after:
                if next(batches, None) is not None:  # more rows: the next call goes on from here
                    next_row = batch.start + len(batch.records)
                break
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    writer.close()
    return counts, bad, next_row, writer.rows


def _predictions(loaded, batch: formats.Batch, secrets: dict, report) -> tuple[list[bool] | None, list]:
    """(which rows were predicted, None for all; a prediction per row, None where not). One predict() call for the
    batch; a record at a time only when that call fails."""
    for position, error in batch.errors.items():
        report(batch.start + position, error)
    n = len(batch.records)
    if not batch.errors:
        try:
            answer = _as_list(loaded.module.predict({"data": batch.records}, loaded.state, secrets), n)
        except Exception:  # noqa: BLE001 - some record is bad: find which
            answer = None
        if answer is not None:
            return None, answer
    ok = [False] * n
    predictions: list = [None] * n
    for i, record in enumerate(batch.records):
        if record is None:
            continue
        try:
            one = _as_list(loaded.module.predict({"data": [record]}, loaded.state, secrets), 1, strict=True)
            assert one is not None  # strict: raised instead
        except Exception as e:  # noqa: BLE001 - the row's own error is the report
            report(batch.start + i, f"{type(e).__name__}: {e}")
            continue
        ok[i], predictions[i] = True, one[0]
    return ok, predictions


def _as_list(answer: Any, n: int, strict: bool = False) -> list | None:
    """The prediction as one value per record: a list of n, or a dict of n-long lists (one column per key)."""
    if isinstance(answer, dict) and answer and all(isinstance(v, list) and len(v) == n for v in answer.values()):
        keys = list(answer)
        return [{k: answer[k][i] for k in keys} for i in range(n)]
    if isinstance(answer, (list, tuple)) and len(answer) == n:
        return list(answer)
    if strict:
        got = f"{len(answer)} values" if isinstance(answer, (list, tuple)) else type(answer).__name__
        raise ValueError(f"predict() answered {got} for {n} record(s), not one prediction per record")
    return None

