"""The batch driver: `run` predicts every input file with the batch function and says what it wrote.

Used by `mlops batch` and by an automation's BatchExecution step (inside the automation function), so it takes a
client and a `say` for progress, and returns a BatchResult (`as_dict()` is the --json form). Every input file is
checked (it exists, its format is known) before anything is made or called; then the batch function is made ready
(function.py), and each file is one call of it, a few files at a time. A file that does not fit in one call's time
is continued by further calls from the row where the last one stopped, each writing a part.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Mapping

from akerbp.mlops.batch import formats
from akerbp.mlops.errors import MlopsError, UsageError
from akerbp.mlops.vocabulary import ENVIRONMENTS, batch_function_external_id, batch_output_external_id, is_model_name

if TYPE_CHECKING:
    from cognite.client import CogniteClient
    from cognite.client.data_classes import FileMetadata

MAX_BAD_ROWS = 100  # bad rows listed in a result (over all files); the rest are counted
CONCURRENT_FILES = 3
CALL_SHARE = 0.6  # of CDF's call time limit a call predicts for; the rest is for download, upload and slack
DEFAULT_CALL_LIMIT_S = 600.0  # CDF's, when the project does not say
BUILD_TIMEOUT_S = 900.0


class NoInputFiles(UsageError):
    """The input names no file, or a prefix no file has."""


@dataclass
class FileResult:
    source: str  # the input file's external id (its id when it has none)
    source_id: int
    outputs: list[str] = field(default_factory=list)
    rows: int = 0
    rows_out: int = 0
    bad_rows: int = 0
    calls: int = 0
    error: str | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # the calls' download, predict, upload seconds, summed
    peak_rss_mb: float | None = None  # the batch function worker's peak memory, as its last call saw it

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "source_id": self.source_id, "outputs": self.outputs, "rows": self.rows,
                "rows_out": self.rows_out, "bad_rows": self.bad_rows, "calls": self.calls, "error": self.error,
                "seconds": round(self.seconds, 3), "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "peak_rss_mb": self.peak_rss_mb}


@dataclass
class BatchResult:
    model: str
    env: str
    execution: str
    function: str
    function_outcome: str  # created | updated | unchanged
    model_id: str
    files: list[FileResult]
    bad_rows: list[dict]  # {file, row, error}, the first MAX_BAD_ROWS
    seconds: float

    @property
    def rows_in(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def rows_out(self) -> int:
        return sum(f.rows_out for f in self.files)

    @property
    def bad_row_count(self) -> int:
        return sum(f.bad_rows for f in self.files)

    @property
    def outputs(self) -> list[str]:
        return [x for f in self.files for x in f.outputs]

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.error]

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "env": self.env, "execution": self.execution, "function": self.function,
                "function_outcome": self.function_outcome, "model_id": self.model_id, "ok": self.ok,
                "files": [f.as_dict() for f in self.files], "rows_in": self.rows_in, "rows_out": self.rows_out,
                "bad_row_count": self.bad_row_count, "bad_rows": self.bad_rows, "outputs": self.outputs,
                "seconds": round(self.seconds, 3)}


def new_execution_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def input_files(client: CogniteClient, input: str | list[str]) -> list[FileMetadata]:
    """The files `input` names: external ids, or every uploaded file under a prefix ending in '/'. NoInputFiles
    when there is none; UsageError naming each file of an unknown format."""
    names = [input] if isinstance(input, str) else list(input)
    if not names or any(not isinstance(n, str) or not n for n in names):
        raise NoInputFiles("--input: give a file external id, or a prefix ending in '/'")
    found: list[FileMetadata] = []
    for name in names:
        if name.endswith("/"):
            under = [f for f in client.files.list(external_id_prefix=name, limit=None) if f.uploaded]
            if not under:
                raise NoInputFiles(f"no uploaded file has an external id starting with {name!r}")
            found += sorted(under, key=lambda f: f.external_id or "")
        else:
            one = client.files.retrieve(external_id=name)
            if one is None:
                raise NoInputFiles(f"no file has external id {name!r} (a prefix must end in '/')")
            found.append(one)
    unknown = [f.external_id or str(f.id) for f in found if _format(f) is None]
    if unknown:
        raise UsageError(f"unknown format of {', '.join(repr(u) for u in unknown[:10])}"
                         f"{f' and {len(unknown) - 10} more' if len(unknown) > 10 else ''}: a batch reads "
                         f"{', '.join(formats.FORMATS)} files (by the external id's or the name's extension)")
    return found


def _format(f: FileMetadata) -> str | None:
    return formats.format_of(f.external_id) or formats.format_of(f.name)


def _source(f: FileMetadata) -> str:
    return f.external_id or str(f.id)


def output_external_id(model: str, env: str, execution: str, output: str | None, source: str, prefix: str | None,
                       single: bool) -> str:
    """Where the predictions of input `source` go: batch_output_external_id by default; under --output PREFIX
    (ending in '/') the source's path below the input prefix (its last part for a file named by its id); a single
    input file's --output not ending in '/' is its output's external id."""
    if output is None:
        return batch_output_external_id(model, env, execution, source)
    if not output.endswith("/"):
        if not single:
            raise UsageError(f"--output {output!r} names one file, but the input has several: end it with '/'")
        return output
    below = source[len(prefix):] if prefix and source.startswith(prefix) else PurePosixPath(source).name
    return output + below


def _call_limit(client: CogniteClient) -> float:
    try:
        minutes = client.functions.limits().timeout_minutes
    except Exception:  # noqa: BLE001 - a project that does not say: CDF's documented limit
        return DEFAULT_CALL_LIMIT_S
    return float(minutes) * 60 if minutes else DEFAULT_CALL_LIMIT_S


def run(client: CogniteClient, model: str, env: str, input: str | list[str], output: str | None = None,
        batch_size: int = 1000, execution: str | None = None, say: Callable[[str], None] = print, *,
        secrets: Mapping[str, str] | None = None, concurrency: int = CONCURRENT_FILES,
        call_seconds: float | None = None) -> BatchResult:
    """Predict every file of `input` with the live prediction code of `model` in `env`, inside CDF.

    `secrets`: the live function's secret values by name (else MLOPS_SECRET_<NAME>), needed only when the batch
    function is (re-)made. `call_seconds`: how long one call predicts before it stops and a next call goes on
    (default: CALL_SHARE of CDF's call time limit). A file that fails is in the result (`failed`), not raised;
    bad rows are counted and the first MAX_BAD_ROWS listed.
    """
    from akerbp.mlops.batch import function

    started = time.monotonic()
    if not is_model_name(model):
        raise UsageError(f"model {model!r} is not a model name")
    if env not in ENVIRONMENTS:
        raise UsageError(f"env must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    execution = execution or new_execution_id()
    files = input_files(client, input)
    prefix = input if isinstance(input, str) and input.endswith("/") else None
    targets = [output_external_id(model, env, execution, output, _source(f), prefix, len(files) == 1) for f in files]
    batch = function.ensure(client, model, env, deadline=time.monotonic() + BUILD_TIMEOUT_S, say=say,
                            secrets=secrets)
    limit = _call_limit(client)
    seconds = call_seconds if call_seconds is not None else limit * CALL_SHARE
    say(f"batch {execution}: {len(files)} file(s) with {batch.function.external_id} "
        f"({(batch.live.metadata or {}).get('mlops_model_id') or 'the live model'})")

    xid = batch_function_external_id(model, env)

    def one(pair: tuple[FileMetadata, str]) -> tuple[FileResult, list[dict]]:
        f, target = pair
        return _predict_file(client, xid, f, target, execution, batch_size, seconds,
                             limit, say)

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(files)))) as pool:
        done = list(pool.map(one, zip(files, targets)))
    results = [r for r, _ in done]
    bad = [row for _, rows in done for row in rows][:MAX_BAD_ROWS]
    out = BatchResult(model, env, execution, xid, batch.outcome,
                      (batch.live.metadata or {}).get("mlops_model_id", ""), results, bad,
                      time.monotonic() - started)
    say(f"batch {execution}: {out.rows_out} of {out.rows_in} rows predicted, {out.bad_row_count} bad, "
        f"{len(out.failed)} file(s) failed, in {out.seconds:.1f} s")
    return out


def _predict_file(client: CogniteClient, xid: str, f: FileMetadata, target: str, execution: str, batch_size: int,
                  seconds: float, limit: float, say: Callable[[str], None]) -> tuple[FileResult, list[dict]]:
    """One file, over as many calls as it takes: its result and its first bad rows."""
    from akerbp.mlops.deployment import functions

    source = _source(f)
    result = FileResult(source, f.id)
    bad: list[dict] = []
    started = time.monotonic()
    start_row: int | None = 0
    while start_row is not None:
        data = {"file_id": f.id, "source": source, "format": _format(f), "output": target,
                "name": PurePosixPath(f.name or source).name, "execution": execution, "batch_size": batch_size,
                "start_row": start_row, "seconds": seconds, "data_set_id": f.data_set_id}
        result.calls += 1
        try:
            call = functions.call(client, xid, data, time.monotonic() + limit + 60)
        except MlopsError as e:
            result.error = str(e)
            break
        answer = call.response if isinstance(call.response, dict) else {}
        if call.status != "Completed" or answer.get("status") != "ok":
            logs = f"\nthe end of its logs:\n{call.logs}" if call.logs else ""
            result.error = (f"the call of {xid} for {source} (from row {start_row}) ended {call.status}: "
                            f"{answer.get('message') or call.error or answer}{logs}")
            break
        result.rows += answer["rows"]
        result.rows_out += answer["rows_out"]
        result.bad_rows += answer["bad_rows"]
        result.outputs.append(answer["output"])
        for phase, spent in (answer.get("phases") or {}).items():
            result.phases[phase] = result.phases.get(phase, 0.0) + spent
        result.peak_rss_mb = answer.get("peak_rss_mb")
        bad += [{"file": source, **row} for row in answer.get("bad") or []][:MAX_BAD_ROWS - len(bad)]
        start_row = answer.get("next_row")
        if start_row is not None:
            say(f"{source}: {result.rows} rows so far, going on from row {start_row}")
    result.seconds = time.monotonic() - started
    say(f"{source}: " + (f"FAILED: {result.error.splitlines()[0]}" if result.error else
                         f"{result.rows_out} of {result.rows} rows predicted ({result.bad_rows} bad) in "
                         f"{result.seconds:.1f} s -> {', '.join(result.outputs)}"))
    return result, bad
