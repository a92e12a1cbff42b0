"""How every mlops command prints, in one place: result lines, tables and --json documents on stdout; notes,
progress and errors on stderr; secrets masked in all of them (utils.logger.mask: COGNITE_CLIENT_SECRET, every
MLOPS_SECRET_* value and every registered secret).

Results go to stdout so scripts can pipe them; progress and notes go to stderr. The registry's transfer progress
(TransferProgress) and the deploy's plan and summary table (deploy_plan_text, deploy_summary_table) are here too, so
no other CLI module writes to a stream.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Protocol, Sequence, cast

import click

from akerbp.mlops.utils.logger import mask

if TYPE_CHECKING:
    from akerbp.mlops.deployment.result import ModelResult

PROGRESS_AFTER = 1.0  # seconds a step (archiving, uploading, downloading, ...) runs before its progress shows
PROGRESS_TICK = 0.5  # on a terminal the progress line is rewritten at most this often
PROGRESS_LOG_EVERY = 5.0  # into a file or CI log: a line this often
MIB = 1024 * 1024


# --- lines, tables, JSON, errors -------------------------------------------------------------------------------------

def table(rows: Sequence[Sequence[object]], headers: Sequence[object] | None = None) -> str:
    """Rows (the first is the header unless `headers` is given) as left-aligned columns two spaces apart."""
    cells = [[str(cell) for cell in row] for row in ([headers] if headers is not None else []) + list(rows)]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells)


def echo(text: str = "", nl: bool = True) -> None:
    """A result line on stdout."""
    click.echo(mask(text), nl=nl)


def note(text: str, nl: bool = True) -> None:
    """A note or progress line on stderr (nl=False: a chunk of a child's output, passed on as it comes)."""
    click.echo(mask(text), err=True, nl=nl)


def error(text: str) -> None:
    """The one line a failed command prints on stderr: 'Error: ...'."""
    note(f"Error: {text}")


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[object] | None = None) -> None:
    echo(table(rows, headers))


class _Typed(Protocol):
    def as_dict(self) -> dict: ...


def _as_json(value: object) -> object:
    """Typed results (ModelVersion, deployment.live's) are written as their as_dict()."""
    if hasattr(value, "as_dict"):
        return cast(_Typed, value).as_dict()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def print_json(data: object) -> None:
    """A --json document on stdout, indented; typed results as their as_dict()."""
    echo(json.dumps(data, indent=2, default=_as_json))


def print_compact_json(data: object) -> None:
    """A JSON document on one line."""
    echo(json.dumps(data, separators=(",", ":"), default=_as_json))


def size(n: float) -> str:
    """A file size in decimal units: 512 B, 1.2 kB, 3.4 MB, 5.6 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


# --- transfer progress -----------------------------------------------------------------------------------------------

class _TransferDisplay:
    """The current step's progress (bytes done / total, MiB/s) on stderr once it has run for PROGRESS_AFTER:
    rewritten in place on a terminal, a line every PROGRESS_LOG_EVERY seconds otherwise, and a last line when a
    step that showed ends. Reports may come from SDK threads; a ticker thread prints, so a transfer stalled on the
    network still shows."""

    def __init__(self, stream: IO[str]):
        self._stream, self._tty = stream, stream.isatty()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._ticker: threading.Thread | None = None
        self._step: dict | None = None
        self._open = 0  # length of the line being rewritten in place (terminal only)

    def report(self, what: str, done: int, total: int, finished: bool) -> None:
        with self._lock:
            now = time.monotonic()
            if self._step is None or self._step["what"] != what:
                self._end_line()
                self._step = {"what": what, "started": now, "shown": None}
            step = self._step
            step.update(done=done, total=total)
            if finished:
                if now - step["started"] >= PROGRESS_AFTER:
                    self._show(step, now, final=True)
                self._step = None
            elif self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="mlops-progress", daemon=True)
                self._ticker.start()

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)  # the ticker only waits on _stop and the lock
        with self._lock:
            self._end_line()

    def _tick(self) -> None:
        while not self._stop.wait(PROGRESS_TICK):
            with self._lock:
                step, now = self._step, time.monotonic()
                if step is None or now - step["started"] < PROGRESS_AFTER:
                    continue
                if not self._tty and step["shown"] is not None and now - step["shown"] < PROGRESS_LOG_EVERY:
                    continue
                self._show(step, now)

    def _show(self, step: dict, now: float, final: bool = False) -> None:
        line = mask(_progress_line(step["what"], step["done"], step["total"], now - step["started"], final))
        step["shown"] = now
        if self._tty:
            self._stream.write("\r" + line.ljust(self._open) + ("\n" if final else ""))
            self._open = 0 if final else len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def _end_line(self) -> None:
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = 0


def _progress_line(what: str, done: int, total: int, elapsed: float, final: bool) -> str:
    done = min(done, total) if total else done
    rate = f"{done / MIB / elapsed:.1f} MiB/s" if elapsed > 0 else "-"
    if final:
        return f"{what}: {_bytes(done)} in {elapsed:.1f} s ({rate})" if done else f"{what}: {elapsed:.1f} s"
    if total:
        return f"{what}: {_bytes(done)} of {_bytes(total)} ({100 * done // total}%), {rate}"
    return f"{what}: {_bytes(done)}, {rate}" if done else f"{what}: {elapsed:.0f} s"


def _bytes(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB"


class TransferProgress:
    """The registry's Progress callback a command passes: one display per command on stderr, closed (its line
    ended, its ticker stopped) with the command's click context, also when the command fails."""

    def __init__(self) -> None:
        self._display: _TransferDisplay | None = None

    def __call__(self, what: str, done: int, total: int, finished: bool) -> None:
        if self._display is None:  # a step's first report comes from the command's own thread
            self._display = _TransferDisplay(sys.stderr)
            click.get_current_context().call_on_close(self._close)
        self._display.report(what, done, total, finished)

    def _close(self) -> None:
        display, self._display = self._display, None
        if display is not None:
            display.close()


# --- the deploy's plan and summary -----------------------------------------------------------------------------------

def deploy_summary_table(results: Sequence[ModelResult]) -> str:
    """One row per model (version, result, seconds), then the first line of each failure's message."""
    rows = [["model", "service", "env", "version", "result", "seconds"]]
    for r in results:
        # a registry version's number, or the last part of another artifact's id (dev: local-{digest})
        version = str(r.version) if r.version is not None else (r.model_id or "-").rsplit("/", 1)[-1]
        rows.append([r.model, r.service, r.env, version, r.result, f"{r.seconds:.1f}"])
    lines = [table(rows)]
    for r in results:
        if not r.ok:
            first, *more = r.message.splitlines() or [""]
            lines.append(f"{r.model} ({r.service}, {r.env}): {first}" + (" (details above)" if more else ""))
    return mask("\n".join(lines))


def deploy_plan_text(results: Sequence[ModelResult]) -> str:
    """What a --dry-run would do, per model: the plan the apply would execute (deployment.plan.describe)."""
    from akerbp.mlops.deployment.plan import describe

    lines = ["Plan (dry run: nothing in CDF was changed):"]
    for r in results:
        if r.plan is None or not r.ok:
            lines.append(f"  {r.function}: not deployable: {r.message.splitlines()[0] if r.message else r.result}")
            continue
        lines += describe(r.plan)
    return mask("\n".join(lines))
