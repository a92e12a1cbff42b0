"""The WSGI application: routing, request decoding (gzip JSON), auth, fault injection and the error envelope.

API modules (files, functions, ...) declare their routes on a `Router` and receive a `Ctx`; they never touch
WSGI, headers or encodings.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import traceback
import uuid
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from .errors import CDFError, bad_request
from .validation import resource_id

if TYPE_CHECKING:
    from ..api.projects import Projects
    from ..runtime.host import FunctionRuntime
    from ..server import Limits
    from ..store import Store
    from .auth import Auth
    from .faults import Faults

log = logging.getLogger("akerbp.mlops.local_cdf")
PROJECT_PREFIX = "/api/v1/projects/<project>"
# A JSON request body, compressed as sent and decompressed, is at most 10 MiB: CDF's request limit is about 10 MB
# and its largest bodies (9 MB of function call data, 1000-item byids/list/create requests) fit below it. File
# content (the signed upload URLs) is streamed to disk and not capped this way. Decompression stops at the cap, so
# a gzip bomb costs the server the cap, not its decompressed size.
MAX_JSON_BYTES = 10 << 20
READ_CHUNK = 1 << 20
# Parsed JSON takes up to ~30x its text (10 MiB of `{}` became 300 MiB): the requests holding a parsed body at one
# time have at most this many bytes of JSON text together; others wait their turn (PARSE_WAIT_S at most, then 503,
# which the SDK retries).
PARSE_BUDGET_BYTES = 12 << 20
PARSE_WAIT_S = 60.0
# CDF's project URL names: lowercase letters, digits and '-' (the local CDF also accepts one-letter names, as tests
# use them), so a name can never be a path segment like '..' nor a 1,000-character key.
PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


class Router:
    """Routes of one API module; paths are relative to /api/v1/projects/{project} unless `root=True`."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, str, Callable, bool, bool]] = []

    def route(self, method: str, path: str, root: bool = False, auth: bool = True):
        """auth=False: the route checks its own credential (a signed URL) or none (the token endpoint, health)."""

        def decorate(fn: Callable) -> Callable:
            self.routes.append((method, path, fn, root, auth))
            return fn

        return decorate

    def get(self, path: str, **kw):
        return self.route("GET", path, **kw)

    def post(self, path: str, **kw):
        return self.route("POST", path, **kw)

    def put(self, path: str, **kw):
        return self.route("PUT", path, **kw)

    def delete(self, path: str, **kw):
        return self.route("DELETE", path, **kw)


@dataclass(frozen=True)
class Services:
    """What handlers may use, and all of it: the store, the limits, the credentials, the projects, the fault rules,
    the function runtime, the server's base URL and what the health probe tells about the server."""

    store: "Store"
    limits: "Limits"
    auth: "Auth"
    projects: "Projects"
    faults: "Faults"
    runtime: "FunctionRuntime"
    base_url: str
    about: dict[str, str]


@dataclass
class Ctx:
    """What a handler gets: the project, the decoded body, query args, the services and the caller's token."""

    services: Services
    request: Request
    project: str = ""
    token: str = ""
    _body: Any = field(default=None, repr=False)

    @property
    def store(self) -> "Store":
        return self.services.store

    @property
    def limits(self) -> "Limits":
        return self.services.limits

    @property
    def runtime(self) -> "FunctionRuntime":
        return self.services.runtime

    @property
    def args(self):
        return self.request.args

    @property
    def body(self) -> dict:
        if self._body is None:
            self._body = _decode_json(self.request)
        return self._body

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.request.args.get(name)
        if value is None:
            return default
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise bad_request(f"Query parameter '{name}' must be true or false, got {value!r}")

    def url(self, path: str) -> str:
        return self.services.base_url + path


def _decode_json(request: Request) -> dict:
    raw = _read_capped(request)
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        raw = _gunzip_capped(raw)
    if not raw:
        return {}
    try:
        _PARSING.acquire_for(request, len(raw))  # released when the request is answered (App.__call__)
        body = json.loads(raw)
    except RecursionError:  # Python's json recurses per nesting level
        raise bad_request("Malformed JSON in request body: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise bad_request(f"Malformed JSON in request body: {e}") from None
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object")
    return body


class _Budget:
    """Bytes of parsed JSON alive at once: bounds what concurrent requests cost, whatever the thread count."""

    KEY = "local_cdf.parse_budget"

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self._cond = threading.Condition()

    def acquire_for(self, request: Request, size: int) -> None:
        size = min(size, self.total)
        with self._cond:
            if not self._cond.wait_for(lambda: self.used + size <= self.total, timeout=PARSE_WAIT_S):
                raise CDFError(503, "The local CDF is busy with other large requests: retry shortly")
            self.used += size
        request.environ[self.KEY] = size

    def release_for(self, request: Request) -> None:
        size = request.environ.pop(self.KEY, 0)
        if size:
            with self._cond:
                self.used -= size
                self._cond.notify_all()


_PARSING = _Budget(PARSE_BUDGET_BYTES)


def _too_large(what: str) -> CDFError:
    return CDFError(413, f"Request body {what} exceeds the limit of {MAX_JSON_BYTES} bytes: send fewer items "
                         "per request")


def _read_capped(request: Request) -> bytes:
    """The body as sent, refused (413) as soon as it is known to exceed the cap, never read further."""
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise _too_large(f"of {request.content_length} bytes")
    chunks, size = [], 0
    stream = request.stream
    while chunk := stream.read(READ_CHUNK):
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise _too_large("as sent")
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip_capped(raw: bytes) -> bytes:
    """Decompress one gzip member, at most MAX_JSON_BYTES of output (zlib's max_length), else 413."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, MAX_JSON_BYTES + 1)
    except zlib.error:
        raise bad_request("Request body says Content-Encoding: gzip but is not valid gzip") from None
    if len(out) > MAX_JSON_BYTES or inflater.unconsumed_tail:
        raise _too_large("decompressed")
    if not inflater.eof:
        raise bad_request("Request body says Content-Encoding: gzip but the gzip stream is truncated")
    if inflater.unused_data:
        raise bad_request("Request body holds data after its gzip stream: send one gzip member")
    return out


def _project(values: dict) -> str:
    """The route's project, checked against CDF's URL-name rule (400 naming the rule)."""
    project = values.pop("project", None)
    if project is None:
        return ""
    if not PROJECT_NAME.fullmatch(project):
        shown = project if len(project) <= 40 else project[:40] + "..."
        raise bad_request(f"Invalid project name {shown!r}: a project's URL name is 1-64 lowercase letters, digits "
                          "and '-', starting with a letter or digit")
    return project


def json_response(payload: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers, mimetype="application/json")


class App:
    """The routes of `routers`, served with the Services given to serve() (known once the port is bound)."""

    def __init__(self, routers: list[Router]) -> None:
        self.services: Services | None = None
        rules, self.endpoints = [], {}
        for router in routers:
            for method, path, fn, root, auth in router.routes:
                endpoint = f"{method} {path if root else PROJECT_PREFIX + path}"  # declared once each (Kind.serve)
                self.endpoints[endpoint] = (fn, auth)
                rules.append(Rule(path if root else PROJECT_PREFIX + path, methods=[method], endpoint=endpoint))
        self.url_map = Map(rules, strict_slashes=False, merge_slashes=False)

    def serve(self, services: Services) -> None:
        self.services = services

    def __call__(self, environ, start_response):
        request = Request(environ)
        request_id = uuid.uuid4().hex[:16]
        try:
            response = self.dispatch(request)
        except CDFError as e:
            response = json_response(e.body(), e.code, e.headers)
        except HTTPException as e:  # werkzeug's own refusals (a form over its size limit) in CDF's envelope
            response = json_response({"error": {"code": e.code or 400, "message": e.description or str(e)}},
                                     e.code or 400)
        except Exception as e:  # a bug in the local CDF must not kill the server or hang the client
            log.error("Internal error on %s %s\n%s", request.method, request.path, traceback.format_exc())
            response = json_response({"error": {"code": 500, "message": f"Local CDF internal error: {e!r}"}}, 500)
        finally:
            _PARSING.release_for(request)  # the handler, its body and any error are gone by now
            # Each request runs on a thread of its own: its SQLite connection (and the up to 2 MB page cache of what
            # it read) goes now, not whenever the thread's locals are collected. Kept, RAW listing alone grew the
            # server by ~50 MB per 300,000 rows (measured).
            if self.services is not None:
                self.services.store.close()
        response.headers["x-request-id"] = request_id
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, matched = adapter.match()
        except NotFound:
            raise CDFError(404, f"Not found: {request.method} {request.path}") from None
        except MethodNotAllowed:
            raise CDFError(405, f"Method {request.method} not allowed on {request.path}") from None
        except HTTPException as e:
            raise CDFError(e.code or 400, e.description or str(e)) from None
        values = dict(matched)  # _project pops the project from it
        services = self.services
        if services is None:
            raise CDFError(503, "The local CDF is starting: retry shortly")
        fault = services.faults.take(request.method, request.path)
        if fault is not None and not fault.serve_first:
            return fault
        fn, needs_auth = self.endpoints[endpoint]
        ctx = Ctx(services=services, request=request, project=_project(values))
        for name, value in values.items():  # ids in the path (<int:file_id>) obey the same range as in bodies
            if isinstance(value, int):
                resource_id(value, name)
        if needs_auth:
            ctx.token = services.auth.check(request.headers.get("Authorization", ""), ctx.project)
            if ctx.project:
                services.projects.touch(ctx.project)  # token/inspect lists it from now on
        result = fn(ctx, **values)
        if fault is not None:  # served, and the answer is lost
            return fault
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            return json_response(result[1], result[0])
        return json_response(result)
