"""`mlops ui`: the read-only dashboard (ui/server.py over ui/snapshot.py), served until Ctrl-C.

Loads everything once with progress on stderr, then prints the URL on stdout (the one line a script reads) and opens
the browser. Beyond loopback every request needs a token: $MLOPS_UI_TOKEN, else one generated here and printed
once, in the URL. A port in use, an unknown host or a short token is a UsageError (exit 2).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import webbrowser
from typing import TYPE_CHECKING
from urllib.parse import quote

import click

from akerbp.mlops.cli import options
from akerbp.mlops.cli.output import echo, note, print_compact_json
from akerbp.mlops.errors import UsageError
from akerbp.mlops.vocabulary import ENVIRONMENTS

if TYPE_CHECKING:
    from akerbp.mlops.ui.server import Server

TOKEN_ENV = "MLOPS_UI_TOKEN"
MIN_TOKEN_LENGTH = 16  # a short token is guessed; token_urlsafe(24) gives 32 characters

HELP = f"""A read-only web dashboard over the configured CDF (a real project, or the local CDF): which model version
runs where, since when and by whom; each model's versions with their metrics and a chart across versions; the audit
trail on a timeline; the automations' triggers, next runs and last executions; analytics charts (calls, errors,
latency, input drift against the training statistics).

Reads every environment's CDF as `mlops status` does (--env, repeatable, for fewer), prints the URL on stdout and
opens it in the browser. Nothing on the page can change CDF; scripts, styles and plotly are served from the installed
packages, so it works offline. The JSON behind each page is at /api/models.json, /api/models/NAME.json,
/api/history.json, /api/automations.json and /api/analytics/NAME.json.

Binds to 127.0.0.1. Any other --host requires a token on every request: ${TOKEN_ENV} (at least {MIN_TOKEN_LENGTH}
characters), else a generated one, printed once in the URL. Open that URL (it sets a cookie), or send
`Authorization: Bearer TOKEN`. ${TOKEN_ENV} also protects a loopback dashboard when set.

Examples:

\b
  mlops ui
  mlops ui --env prod --port 8051 --no-browser
  MLOPS_UI_TOKEN=$(cat ~/.mlops-ui-token) mlops ui --host 0.0.0.0
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_token(host: str) -> str | None:
    """$MLOPS_UI_TOKEN if set (and long enough); else, beyond loopback, a new one; else None (no token)."""
    token = os.environ.get(TOKEN_ENV)
    if token is not None:
        if len(token.strip()) < MIN_TOKEN_LENGTH:
            raise UsageError(f"${TOKEN_ENV} must be at least {MIN_TOKEN_LENGTH} characters (a short token is "
                             f"guessed): e.g. export {TOKEN_ENV}=$(openssl rand -hex 24)")
        return token.strip()
    return None if is_loopback(host) else secrets.token_urlsafe(24)


@click.command(help=HELP)
@options.env(help="Only this environment (repeatable; default: all).", multiple=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback requires a token.")
@click.option("--port", default=8050, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0 picks a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open the browser; just print the URL.")
@options.json_output(help='Print {"url": ...} as JSON (the URL with the token, if there is one).')
def ui(env: tuple[str, ...], host: str, port: int, no_browser: bool, as_json: bool) -> None:
    token = choose_token(host)
    from akerbp.mlops.ui.server import Server, make_app
    from akerbp.mlops.ui.snapshot import Snapshot

    envs = list(env) or list(ENVIRONMENTS)
    snapshot = Snapshot(envs, progress=note)
    try:
        server = Server(make_app(snapshot, token=token), host, port)  # first: a port in use fails before the load
        try:
            note(f"Reading {', '.join(envs)} ...")
            snapshot.load()
            url = server.url + (f"?token={quote(token)}" if token else "")
            if as_json:
                print_compact_json({"url": url})
            else:
                echo(url)
            note(f"Serving the dashboard at {server.url} (read-only{', token required' if token else ''}). "
                 "Ctrl-C stops.")
            if not no_browser:
                webbrowser.open(url)
            _serve_until_stopped(server)
        finally:
            server.close()
    finally:
        snapshot.close()
    note("Dashboard stopped.")


def _stop(*_: object) -> None:
    raise KeyboardInterrupt


def _serve_until_stopped(server: "Server") -> None:
    """Serve until Ctrl-C or SIGTERM; both end the command with exit 0."""
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
