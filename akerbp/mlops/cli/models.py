"""`mlops models`: the versioned model registry from the shell (upload, list, promote, download, delete).

Tables go to stdout, --json gives the same data for scripts, progress goes to stderr. Errors are MlopsError
(exit 1) or UsageError (exit 2), mapped by the root command.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import click

from akerbp.mlops.vocabulary import ENVIRONMENTS as ENVS
from akerbp.mlops.cli.output import echo, print_json, print_table
from akerbp.mlops.errors import UsageError

PROGRESS_AFTER = 1.0  # seconds a step (archiving, uploading, downloading, ...) runs before its progress shows
PROGRESS_TICK = 0.5  # on a terminal the progress line is rewritten at most this often
PROGRESS_LOG_EVERY = 5.0  # into a file or CI log: a line this often
MIB = 1024 * 1024


@click.group()
def models():
    """The versioned model registry: upload, list, promote, download, delete."""


def _client():
    from akerbp.mlops.cdf.client import get_client

    return get_client()


def _default_env(env: str | None) -> str:
    if env:
        return env
    from akerbp.mlops.cdf.client import get_environment

    return get_environment()


class _TransferDisplay:
    """The current step's progress (bytes done / total, MiB/s) on stderr once it has run for PROGRESS_AFTER:
    rewritten in place on a terminal, a line every PROGRESS_LOG_EVERY seconds otherwise, and a last line when a
    step that showed ends. Reports may come from SDK threads; a ticker thread prints, so a transfer stalled on the
    network still shows."""

    def __init__(self, stream):
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
            self._ticker.join()
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
        line = _progress_line(step["what"], step["done"], step["total"], now - step["started"], final)
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


class _CommandProgress:
    """The registry's Progress callback the commands pass: one display per command, closed (its line ended, its
    ticker stopped) with the command's click context, also when the command fails."""

    def __init__(self):
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


_progress = _CommandProgress()


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _emit(info, as_json: bool, summary: str) -> None:
    if as_json:
        print_json(info)
    else:
        echo(summary)


def _parse_metadata(pairs: tuple[str, ...], metadata_file: Path | None) -> dict:
    metadata: dict = {}
    if metadata_file is not None:
        try:
            loaded = json.loads(metadata_file.read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"--metadata-file {metadata_file}: cannot read it as JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise UsageError(f"--metadata-file {metadata_file}: must hold a JSON object, not {type(loaded).__name__}")
        metadata.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--metadata {pair!r}: write it as KEY=VALUE")
        metadata[key.strip()] = value
    return metadata


json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")


@models.command()
@click.argument("model")
@click.option("--env", type=click.Choice(ENVS), help="Target environment (default: $ENV, else dev).")
@click.option("--folder", required=True, type=click.Path(path_type=Path), help="The artifact folder to upload.")
@click.option("--metadata", "pairs", multiple=True, metavar="KEY=VALUE", help="Metadata to attach (repeatable).")
@click.option("--metadata-file", type=click.Path(dir_okay=False, path_type=Path), help="A JSON object of metadata.")
@click.option("--dataset", default="mlops", show_default=True, help="External id of the data set of the files.")
@json_option
def upload(model, env, folder, pairs, metadata_file, dataset, as_json):
    """Upload the artifact folder given by --folder as the next version of MODEL.

    dev and test take uploads; prod takes versions only by promotion (`mlops models promote`).
    """
    from akerbp.mlops.model_manager import upload_new_model_version

    env = _default_env(env)
    metadata = _parse_metadata(pairs, metadata_file)
    info = upload_new_model_version(model, env, folder, metadata, client=_client(), dataset=dataset,
                                    progress=_progress)
    _emit(info, as_json, f"uploaded {info['model_id']}: {info.get('files', '?')} files, {_size(info['size'])}, "
                         f"sha256 {info['sha256'][:12]}")


@models.command(name="list")
@click.argument("model", required=False)
@click.option("--env", type=click.Choice(ENVS), help="Only this environment.")
@json_option
def list_(model, env, as_json):
    """List the versions of MODEL (default: every model), deleted ones excluded."""
    from akerbp.mlops.model_manager import list_model_versions

    versions = list_model_versions(model, env, client=_client())
    if model and not versions:
        from akerbp.mlops.cli.known_models import check_known

        check_known(model, [_client()])
    if as_json:
        print_json(versions)
        return
    if not versions:
        click.echo("no model versions" + (f" of {model}" if model else "") + (f" in {env}" if env else ""))
        return
    rows = [["MODEL", "ENV", "VERSION", "SIZE", "SHA256", "CREATED", "BY", "PROMOTED FROM"]]
    for v in versions:
        rows.append([v["model_name"], v["env"], str(v["version"]), _size(v["size"]), v["sha256"][:12],
                     v["created_time"], v["created_by"], v["promoted_from"] or "-"])
    print_table(rows)


@models.command()
@click.argument("model")
@click.option("--version", required=True, type=int, help="The version number to promote (kept in the target).")
@click.option("--to", "to_env", type=click.Choice(ENVS[1:]), default="prod", show_default=True)
@click.option("--from", "from_env", type=click.Choice(ENVS[:-1]), help="Source env (default: the one before --to).")
@json_option
def promote(model, version, to_env, from_env, as_json):
    """Copy version N of MODEL to the next environment (test -> prod by default), verified by sha256."""
    from akerbp.mlops.model_manager import promote_model

    info = promote_model(model, version, to_env, client=_client(), from_env=from_env, progress=_progress)
    if info.get("unchanged"):
        by = ", by a promotion that ran at the same time" if info.get("concurrent") else ""
        summary = f"{info['model_id']} is already promoted (sha256 {info['sha256'][:12]}{by}): nothing to do"
    else:
        summary = f"promoted {info['promoted_from']} to {info['model_id']} (sha256 {info['sha256'][:12]})"
    _emit(info, as_json, summary)


@models.command()
@click.argument("model")
@click.option("--env", type=click.Choice(ENVS), help="Environment (default: $ENV, else dev).")
@click.option("--version", type=int, help="Version number (default: the latest).")
@click.option("--to", "target", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A new or empty folder to extract into.")
@json_option
def download(model, env, version, target, as_json):
    """Download, verify (sha256) and extract a version of MODEL into a new or empty folder."""
    from akerbp.mlops.model_manager import download_model_version

    env = _default_env(env)
    info = download_model_version(model, env, target, version, client=_client(), progress=_progress)
    _emit(info, as_json, f"extracted {info['model_id']} into {info['path']} (sha256 {info['sha256'][:12]} verified)")


@models.command()
@click.argument("model")
@click.option("--env", required=True, type=click.Choice(ENVS))
@click.option("--version", required=True, type=int)
@click.option("--yes", is_flag=True, help="Confirm: the version is gone for good (its number is never reused).")
@click.option("--force", is_flag=True, help="Required as well to delete a prod version.")
@json_option
def delete(model, env, version, yes, force, as_json):
    """Delete a version of MODEL: a tombstone keeps its number taken forever."""
    from akerbp.mlops.model_manager import delete_model_version

    if not yes:
        raise UsageError(f"deleting {model}/{env}/{version} cannot be undone: add --yes to confirm")
    info = delete_model_version(model, env, version, client=_client(), confirm=True, force=force)
    _emit(info, as_json, f"deleted {info['model_id']} (its number stays taken)")
