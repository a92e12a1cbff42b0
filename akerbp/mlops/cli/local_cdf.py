"""`mlops local-cdf`: run, inspect, tick and reset the offline CDF."""
from __future__ import annotations

import os
import shutil
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path

import click

from akerbp.mlops.cli import output
from akerbp.mlops.errors import UsageError

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where the local CDF keeps its state (default: $MLOPS_LOCAL_CDF_DIR, else .mlops/local-cdf in the repo "
         "root, the folder every other mlops command uses).",
)


def _data_dir(value: Path | None) -> Path:
    """--data-dir, else the data dir of every other command (found from the repo root, not the working dir)."""
    from akerbp.mlops.cdf.client import local_cdf_dir

    return value or local_cdf_dir()


SECRET_ENV = "MLOPS_LOCAL_CDF_CLIENT_SECRET"


def _parse_clients(values: tuple[str, ...]) -> dict[str, str] | None:
    """--client ID:SECRET, ID:@FILE (the secret is the file's content) or ID (the secret is $SECRET_ENV): the two
    last keep the secret out of the process list."""
    clients = {}
    for value in values:
        client_id, sep, secret = value.partition(":")
        if not sep:
            secret = os.environ.get(SECRET_ENV, "")
            if not secret:
                raise UsageError(f"--client {value!r} names no secret and ${SECRET_ENV} is not set: use ID with "
                                 f"${SECRET_ENV}, ID:@FILE or ID:SECRET")
        elif secret.startswith("@"):
            secret = _secret_file(Path(secret[1:]), client_id)
        if not client_id or not secret:
            raise UsageError(f"--client must look like ID:SECRET, ID:@FILE or ID, got {value.split(':')[0]!r}:...")
        clients[client_id] = secret
    return clients or None


def _secret_file(path: Path, client_id: str) -> str:
    try:
        secret = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--client {client_id}:@{path}: cannot read the secret file: {e}") from None
    if not secret:
        raise UsageError(f"--client {client_id}:@{path}: the secret file is empty")
    return secret


@click.group("local-cdf")
def local_cdf():
    """The local CDF: an HTTP server speaking the CDF API subset cognite-sdk uses, with its state on disk.

    Every mlops command uses it when no CDF project is configured. Run `serve` to keep one running (warm function
    workers, function schedules and workflow triggers firing on time); other mlops commands then use that server.
    """


@local_cdf.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (keep it loopback).")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0 picks a free one).")
@data_dir_option
@click.option("--client", "clients", multiple=True, metavar="ID[:SECRET|:@FILE]",
              help="Only accept these OAuth client credentials (repeatable). Default: any non-empty id/secret. "
                   "ID:SECRET shows the secret to anyone running ps; ID:@FILE reads it from FILE, and ID alone "
                   f"from ${SECRET_ENV}.")
@click.option("--isolation", type=click.Choice(["venv", "shared-no-install"]), default=None,
              help="venv (default, as CDF): each function runs in its runtime's Python with its requirements.txt "
                   "installed (cached; a requirement pip cannot install fails the build). shared-no-install: in this "
                   "Python, requirements NOT installed (fast; a missing one fails at call time). "
                   "Default: $MLOPS_LOCAL_CDF_ISOLATION, else venv.")
@click.option("--project", "projects", multiple=True, metavar="NAME",
              help="A project that token/inspect lists from the start, before anything used it (repeatable; also "
                   "$MLOPS_LOCAL_CDF_PROJECTS=a,b). Other clients, such as cognite-toolkit, check it first.")
@click.option("--call-timeout", type=float, default=600, show_default=True, help="Function call timeout, seconds.")
@click.option("--build-delay", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Simulate CDF's function build latency: a function becomes Ready no sooner than SECONDS after "
                   "its build starts (CDF takes minutes; e.g. 20). Default: $MLOPS_LOCAL_CDF_BUILD_DELAY_S, else 0.")
def serve(host, port, data_dir, clients, isolation, projects, call_timeout, build_delay):
    """Run the local CDF until stopped (Ctrl-C), firing function schedules and workflow triggers on time."""
    from akerbp.mlops.local_cdf import Limits, LocalCDF

    try:
        cdf = LocalCDF(_data_dir(data_dir), host=host, port=port, clients=_parse_clients(clients),
                       isolation=isolation, projects=list(projects), limits=Limits(call_timeout_s=call_timeout),
                       build_delay_s=build_delay)
    except ValueError as e:  # $MLOPS_LOCAL_CDF_ISOLATION is not a mode, $MLOPS_LOCAL_CDF_BUILD_DELAY_S no number
        raise UsageError(str(e)) from None
    try:
        cdf.start()
    except OSError as e:
        raise UsageError(f"Cannot listen on {host}:{port}: {e.strerror}. Is another local CDF running? "
                         "Try --port 0 for a free port.") from None
    cdf.announce()  # with "restricted": other mlops commands then ask for COGNITE_* instead of failing with 401
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    delay = f", builds take at least {cdf.build_delay_s:g} s" if cdf.build_delay_s else ""
    output.note(f"Local CDF serving {cdf.data_dir} at {cdf.base_url} (token URL {cdf.token_url}, isolation "
                f"{cdf.isolation}{delay}). Ctrl-C stops.")
    try:
        while not stop.wait(1.0):  # the scheduler's clock: fire what is due each second
            cdf.run_due_schedules(wait=False)
    except KeyboardInterrupt:
        pass
    finally:
        cdf.withdraw()
        cdf.stop()
        output.note("Local CDF stopped.")


@local_cdf.command()
@data_dir_option
@click.option("--now", "now", default=None, metavar="ISO-TIME",
              help="Pretend it is this time (UTC if no offset), e.g. 2026-01-01T08:00:00. Default: now.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the calls started, then the trigger runs (items with fireTime), as JSON.")
def tick(data_dir, now, as_json):
    """Fire the function schedules and workflow triggers that are due, once, and wait for their calls and
    workflow executions to finish."""
    from akerbp.mlops.local_cdf import LocalCDF

    moment = _parse_time(now)
    with LocalCDF(_data_dir(data_dir)) as cdf:
        fired = cdf.run_due_schedules(now=moment)
    if as_json:
        output.print_json(fired)
        return
    if not fired:
        output.echo(f"No schedule was due, nor any workflow trigger, at {moment.isoformat()}.")
    for item in fired:
        output.echo(_trigger_line(item) if "fireTime" in item else
                    f"schedule {item.get('scheduleId')} -> function {item['functionId']} call {item['id']}: "
                    f"{item['status']}")


def _trigger_line(run: dict) -> str:
    """One trigger run as tick prints it: the execution it started, or why it started none."""
    fired_at = datetime.fromtimestamp(run["fireTime"] / 1000, timezone.utc).isoformat()
    outcome = (f"execution {run['workflowExecutionId']}" if run.get("workflowExecutionId")
               else f"no execution: {run.get('reasonForFailure')}")
    return (f"trigger {run['externalId']} (due {fired_at}) -> workflow {run['workflowExternalId']} version "
            f"{run['workflowVersion']} {outcome}: {run['status']}")


def _parse_time(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"--now must be an ISO time like 2026-01-01T08:00:00, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@local_cdf.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(data_dir, as_json):
    """Where the local CDF's state is, whether a server is running, and what it holds."""
    from akerbp.mlops.local_cdf import LocalCDF
    from akerbp.mlops.local_cdf.store import Store

    folder = _data_dir(data_dir)
    info = {"dataDir": str(folder), "exists": (folder / "cdf.sqlite3").exists(), "server": LocalCDF.running(folder)}
    info["resources"] = Store(folder).kinds_count() if info["exists"] else {}
    if as_json:
        output.print_json(info)
        return
    output.echo(f"Data dir: {folder}" + ("" if info["exists"] else " (empty: nothing stored yet)"))
    output.echo(f"Server:   {info['server'] or 'not running (commands start an embedded one on demand)'}")
    for key, count in info["resources"].items():
        output.echo(f"  {key:40} {count}")


@local_cdf.command()
@data_dir_option
@click.option("--yes", is_flag=True, help="Really delete everything in the data dir.")
def reset(data_dir, yes):
    """Delete all local CDF state (files, functions, calls, schedules, events, time series)."""
    from akerbp.mlops.local_cdf import LocalCDF

    folder = _data_dir(data_dir)
    if not yes:
        raise UsageError(f"This deletes everything under {folder}. Run again with --yes to confirm.")
    if LocalCDF.running(folder):
        raise UsageError(f"A local CDF server is running on {folder}: stop it first.")
    if folder.exists():
        shutil.rmtree(folder)
    output.echo(f"Local CDF at {folder} reset.")
