"""The `mlops ui` web app: werkzeug routing over a Snapshot, pages from jinja2 templates, the same dicts as JSON.

Read-only by construction: GET and HEAD only (405 else), and the Snapshot behind it only reads CDF. Every response
carries Server-Timing (the server-side time, so the 300 ms goal can be checked in the browser's network panel) and a
Content-Security-Policy allowing this origin only: no CDN (plotly.min.js is served from the installed plotly package)
and no inline script (a page's data sits in <script type="application/json" id="page-data">, drawn by
static/app.js). Pages are Cache-Control: no-store. Bodies pass through utils.logger.mask, so a secret the framework
knows never leaves even if some metadata held one. The request log never shows the token (auth.redact).
"""
from __future__ import annotations

import importlib.util
import json
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import jinja2
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from akerbp.mlops.cdf.failures import NETWORK_ERRORS, causes, network_failure
from akerbp.mlops.errors import UsageError
from akerbp.mlops.ui import auth, format
from akerbp.mlops.utils.logger import get_logger, mask

if TYPE_CHECKING:
    from akerbp.mlops.ui.snapshot import Snapshot

log = get_logger(__name__)

STATIC = Path(__file__).parent / "static"
# Only this origin, and no inline script. style-src allows 'unsafe-inline' because plotly.js injects its stylesheet as
# a <style> element when it loads (Chromium reports each as a CSP violation otherwise); its content is generated at
# run time and differs between plotly versions, so hashes would break on an upgrade. Inline styles cannot run code.
# img-src data: for the favicon placeholder and plotly's PNG export.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HISTORY_LIMIT = 200
MAX_HISTORY_LIMIT = 5000
SINCE_CHOICES = ("1h", "12h", "1d", "7d", "30d", "all")
CDF_HELP = ("check the COGNITE_* variables (COGNITE_PROJECT, COGNITE_BASE_URL, COGNITE_CLIENT_ID, ...) and the "
            "network, or, for the local CDF, that it is running (mlops local-cdf status)")

PAGES = {  # page -> (template, section of the navigation, the keys app.js draws from: None for all)
    "models": ("models.html", "models", ("generated_at", "envs")),
    "model": ("model.html", "models", ("generated_at", "name", "envs", "metric", "series", "live")),
    "history": ("history.html", "history", ("generated_at", "model", "events")),
    "automations": ("automations.html", "automations", ("generated_at",)),
    "analytics": ("analytics.html", "models", None),
}

ROUTES = Map([
    Rule("/", endpoint="root", methods=["GET"]),
    Rule("/models", endpoint="page:models", methods=["GET"]),
    Rule("/models/<name>", endpoint="page:model", methods=["GET"]),
    Rule("/history", endpoint="page:history", methods=["GET"]),
    Rule("/automations", endpoint="page:automations", methods=["GET"]),
    Rule("/analytics/<name>", endpoint="page:analytics", methods=["GET"]),
    Rule("/api/models.json", endpoint="api:models", methods=["GET"]),
    Rule("/api/models/<name>.json", endpoint="api:model", methods=["GET"]),
    Rule("/api/history.json", endpoint="api:history", methods=["GET"]),
    Rule("/api/automations.json", endpoint="api:automations", methods=["GET"]),
    Rule("/api/analytics/<name>.json", endpoint="api:analytics", methods=["GET"]),
    Rule("/static/<file>", endpoint="static", methods=["GET"]),
])


class Failure(Exception):
    """A request that ends in an error page (or JSON for /api): its status and what the user should know."""

    def __init__(self, status: int, title: str, message: str, known: list[str] | None = None):
        super().__init__(message)
        self.status, self.title, self.message, self.known = status, title, message, known


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package (found without importing plotly, which is slow)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise Failure(500, "Plotly missing", "the plotly package is not installed: pip install 'plotly>=5'")
    return Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"


class App:
    """The WSGI app: make_app() builds it."""

    def __init__(self, snapshot: "Snapshot", token: str | None):
        self.snapshot, self.token = snapshot, token
        self.templates = jinja2.Environment(loader=jinja2.PackageLoader("akerbp.mlops.ui", "templates"),
                                            autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(format.FILTERS)
        self._static: dict[str, tuple[bytes, str]] = {}
        self._static_lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        started = time.perf_counter()
        request = Request(environ)
        response = auth.check(request, self.token) or self.respond(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response(environ, start_response)

    def respond(self, request: Request) -> Response:
        api = request.path.startswith("/api/")
        try:
            try:
                endpoint, args = ROUTES.bind_to_environ(request.environ).match()
            except RequestRedirect as e:
                return e.get_response(request.environ)
            except HTTPException as e:
                if e.code == 405:
                    raise Failure(405, "Method not allowed", "this dashboard is read-only: only GET and HEAD") from None
                raise Failure(e.code or 404, "Not found", f"there is no page at {request.path}") from None
            if endpoint == "root":
                return Response(status=302, headers={"Location": "/models"})
            if endpoint == "static":
                return self.static(request, args["file"])
            kind, page = endpoint.split(":")
            data = self.data(page, request, args.get("name"))
            return self.json(data) if kind == "api" else self.page(page, data, request)
        except Failure as f:
            return self.failure(f, api, request)
        except Exception as e:  # noqa: BLE001 - whatever it is, the user gets a page, never a traceback
            return self.failure(_failure(e), api, request)

    def data(self, page: str, request: Request, name: str | None) -> dict:
        """The Snapshot's dict of a page, with the query's parameters."""
        query, snapshot = request.args, self.snapshot
        if page == "models":
            return snapshot.models()
        if page == "model":
            return snapshot.model(str(name), metric=query.get("metric") or None)
        if page == "history":
            return snapshot.history(query.get("model") or None, limit=_limit(query.get("limit")))
        if page == "automations":
            return snapshot.automations()
        return snapshot.analytics(str(name), env=query.get("env") or None, since=query.get("since") or "7d")

    def render(self, template: str, **context: Any) -> str:
        return mask(self.templates.get_template(template).render(**context))

    def page(self, page: str, data: dict, request: Request) -> Response:
        template, section, drawn = PAGES[page]
        # page-data holds what the charts draw, not the whole dict (the tables are HTML already): at 3 x 200 versions
        # the model page's JSON would cost more than its rendering. The whole dict is at /api.
        charts = data if drawn is None else {key: data[key] for key in drawn if key in data}
        html = self.render(template, page=page, section=section, data=data, page_data=charts, args=request.args,
                           since_choices=SINCE_CHOICES)
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"})

    def json(self, data: object, status: int = 200) -> Response:
        body = mask(json.dumps(data, separators=(",", ":"), allow_nan=False))
        return Response(body, status=status, mimetype="application/json", headers={"Cache-Control": "no-store"})

    def static(self, request: Request, file: str) -> Response:
        """app.js, app.css and plotly.min.js, read once; an ETag lets the browser revalidate instead of refetch."""
        with self._static_lock:
            if file not in self._static:
                if file == "plotly.min.js":
                    path = plotly_js()
                elif file in ("app.js", "app.css"):
                    path = STATIC / file
                else:
                    raise Failure(404, "Not found", f"there is no static file {file}")
                mimetype = "text/javascript" if file.endswith(".js") else "text/css"
                self._static[file] = (path.read_bytes(), mimetype)
            body, mimetype = self._static[file]
        response = Response(body, mimetype=mimetype, headers={"Cache-Control": "no-cache"})
        response.add_etag()
        return response.make_conditional(request)

    def failure(self, f: Failure, api: bool, request: Request) -> Response:
        if api:
            response = self.json({"error": f.message, "status": f.status, "known": f.known}, status=f.status)
        else:
            html = self.render("error.html", page="error", section=None, data={}, page_data={}, args=request.args,
                               failure=f)
            response = Response(html, status=f.status, mimetype="text/html", headers={"Cache-Control": "no-store"})
        if f.status == 405:
            response.headers["Allow"] = "GET, HEAD"
        return response


def _limit(text: str | None) -> int:
    if not text:
        return HISTORY_LIMIT
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_HISTORY_LIMIT:
        raise Failure(400, "Bad request", f"limit must be a whole number from 1 to {MAX_HISTORY_LIMIT}, got {text!r}")
    return value


def _failure(e: Exception) -> Failure:
    """An exception from the Snapshot or a template as the page to show: 404 for an unknown model, 400 for other
    bad input, 502 when a CDF could not be read, 500 (logged at DEBUG with its traceback) for a bug."""
    from akerbp.mlops.ui.snapshot import CdfReadFailed, UnknownModel

    if isinstance(e, CdfReadFailed):
        log.debug("a CDF could not be read", exc_info=e)
        return Failure(502, "CDF could not be read", mask(f"{e} ({CDF_HELP})"))
    if isinstance(e, UnknownModel):
        return Failure(404, "Unknown model", mask(str(e)), known=getattr(e, "known", None))
    if isinstance(e, UsageError):
        return Failure(400, "Bad request", mask(str(e)))
    names = {cls.__name__ for x in causes(e) for cls in type(x).__mro__}
    if names & (NETWORK_ERRORS | {"CogniteException"}):
        what = network_failure(e) or f"a CDF request failed: {type(e).__name__}: {e}"
        log.debug("a CDF could not be read", exc_info=e)
        return Failure(502, "CDF could not be read", mask(f"{what}. To fix: {CDF_HELP}; then reload this page."))
    log.debug("the traceback of a failed page", exc_info=e)
    return Failure(500, "Unexpected error", "the dashboard failed on this page (a bug): run with "
                   "MLOPS_LOG_LEVEL=DEBUG to see the traceback in its log")


def make_app(snapshot: "Snapshot", *, token: str | None = None) -> App:
    """The dashboard over `snapshot`; with `token`, every request must carry it (auth.py)."""
    return App(snapshot, token)


class _RequestLog(WSGIRequestHandler):
    """werkzeug's request handler with its log lines through the framework's logger, the token redacted."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info(auth.redact(f"{self.address_string()} {self.requestline} {getattr(code, 'value', code)}"))

    def log(self, type: str, message: str, *args: Any) -> None:
        line = auth.redact(message % args if args else message)
        (log.warning if type == "error" else log.info)(f"{self.address_string()} {line}")


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket (bound here: werkzeug's own bind exits the process on failure)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family = infos[0][0]
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        hint = " Try another --port, or --port 0 for a free one." if port else ""
        raise UsageError(f"Cannot listen on {host}:{port}: {e.strerror}.{hint}") from None


class Server:
    """The app served on host:port, a thread per request, until close()."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 8050):
        sock = _listen(host, port)
        try:
            self._httpd: BaseWSGIServer = make_server(host, sock.getsockname()[1], app, threaded=True,
                                                      request_handler=_RequestLog, fd=sock.fileno())
        finally:
            sock.close()  # werkzeug holds its own duplicate of the descriptor
        self._serving = threading.Event()
        self.port = self._httpd.socket.getsockname()[1]
        shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{f'[{shown}]' if ':' in shown else shown}:{self.port}/"

    def serve_forever(self) -> None:
        self._serving.set()
        try:
            self._httpd.serve_forever(poll_interval=0.2)
        finally:
            self._serving.clear()

    def close(self) -> None:
        """Stop serving (a serve_forever in another thread returns) and release the port."""
        if self._serving.is_set():
            self._httpd.shutdown()
        self._httpd.server_close()


def serve(snapshot: "Snapshot", host: str = "127.0.0.1", port: int = 8050, token: str | None = None,
          ready: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard until interrupted (KeyboardInterrupt propagates); `ready` gets the URL once listening."""
    server = Server(make_app(snapshot, token=token), host, port)
    try:
        if ready is not None:
            ready(server.url)
        server.serve_forever()
    finally:
        server.close()
