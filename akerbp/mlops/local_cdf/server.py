"""LocalCDF: the server object. Starts the HTTP server on a loopback port in a background thread and owns the
store, auth, faults, function workers and schedules of one data dir.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from .api import calls, datasets, events, files, functions, projects, schedules, sessions, timeseries, upload_sweep
from .api import raw
from .api import workflow_triggers, workflows
from .http import auth, faults, health
from .http.app import App, Services
from .runtime import environments, processes, sandbox
from .runtime.host import FunctionRuntime
from .served import SERVER_FILE
from .store import Store
from . import served

log = logging.getLogger("akerbp.mlops.local_cdf")
# The API modules served, each with its `routes`: a new resource (workflows, RAW) is one more module in api/ and here.
ROUTERS = (auth, projects, sessions, files, datasets, events, timeseries, functions, calls, schedules, raw, workflows,
           workflow_triggers, faults, health)


@dataclass
class Limits:
    """CDF's limits, configurable for tests (a 1 s call timeout beats waiting 10 minutes)."""

    call_timeout_s: float = 600.0
    max_response_bytes: int = 1_000_000
    max_call_data_bytes: int = 9_000_000
    max_functions: int = 100
    max_schedules_per_function: int = 100
    max_task_io_bytes: int = 200_000  # CDF Data Workflows: a task's input or output, 0.2 MB (as compact JSON here)
    # How long POST /functions/{id}/call waits for the call to finish before answering "Running". CDF answers at
    # once; waiting a little lets fast calls complete in one round trip instead of the SDK's 1 s polling.
    sync_call_wait_s: float = 5.0


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):  # one line per request is noise for a laptop server
        if log.isEnabledFor(logging.DEBUG):
            super().log_request(code, size)


class LocalCDF:
    """A CDF on this machine. `with LocalCDF(dir) as cdf: client = cdf.client(project="test")`."""

    def __init__(
        self,
        data_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = 0,
        clients: dict[str, str] | None = None,
        isolation: str | None = None,
        limits: Limits | None = None,
        projects: list[str] | None = None,
        build_delay_s: float | None = None,
    ) -> None:
        """isolation: "venv" (each function in its runtime's Python with its requirements.txt installed, as in CDF)
        or "shared-no-install" (the server's Python, nothing installed); default $MLOPS_LOCAL_CDF_ISOLATION, else
        venv. projects: listed by token/inspect before any request used them (also $MLOPS_LOCAL_CDF_PROJECTS), for
        clients that check their project there first (cognite-toolkit). build_delay_s: the least time a function
        build takes before the function is Ready (default $MLOPS_LOCAL_CDF_BUILD_DELAY_S, else 0), to see how a
        deploy behaves against CDF, whose builds take minutes."""
        self.data_dir = Path(data_dir)
        self.host, self.port = host, port
        self.isolation = environments.check_isolation(isolation) if isolation else environments.default_isolation()
        self.limits = limits or Limits()
        self.build_delay_s = _build_delay(build_delay_s)
        self._clients = clients
        self._declared_projects = list(projects or [])
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.runtime: FunctionRuntime | None = None

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> "LocalCDF":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir)
        sandbox.protect_data_dir(self.data_dir)  # the store's secrets and blobs unreadable to function workers
        self._clean_up_after_dead_servers()
        self.auth = auth.Auth(self.store, self._clients)
        # A fresh runtime per start: builds of an earlier run keep seeing their stop signal set.
        self.runtime = FunctionRuntime(self.store, self.data_dir, self.isolation, self.limits, self.build_delay_s,
                                       base_url=lambda: self.base_url, session_token=self.auth.session_token)
        self.projects = projects.Projects(self.store, self._declared_projects + projects.declared_from_env())
        self.faults = faults.Faults()
        env_faults = os.environ.get("MLOPS_LOCAL_CDF_FAULTS")
        if env_faults:
            self.faults.add(json.loads(env_faults))
        self.app = App([m.routes for m in ROUTERS])
        self._server = make_server(self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self.app.serve(Services(store=self.store, limits=self.limits, auth=self.auth, projects=self.projects,
                                faults=self.faults, runtime=self.runtime, base_url=self.base_url,
                                about={"dataDir": str(self.data_dir), "isolation": self.isolation}))
        # A short poll interval makes stop() take milliseconds instead of half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="local-cdf-http", daemon=True)
        self._thread.start()
        functions.resume_builds(self.runtime)
        workflows.resume_running(self.runtime)  # executions whose driver is gone: claimed once across processes
        return self

    def _clean_up_after_dead_servers(self) -> None:
        """A server killed (SIGKILL, a crash) leaves workers its watchdog could not end, half-written blobs, parts of
        uploads and calls still Running; those of owners that are gone are ended, removed and recorded Failed (and
        uploads no one can finish removed). What a live process sharing the data dir owns is left alone."""
        ended = processes.end_orphans(self.store)
        removed = self.store.remove_stale_temp_files()
        swept = upload_sweep.sweep(self.store)  # parts of expired uploads, blobs no file refers to
        calls.fail_orphans(self.store)
        if ended or removed or swept:
            log.info("Local CDF: ended %d worker(s), removed %d half-written blob(s) and %d unfinishable upload(s) "
                     "left by a server that died", len(ended), len(removed), len(swept))

    def stop(self) -> None:
        """Stop serving, give unfinished builds back (Queued, resumed at the next start, never Failed by the
        shutdown), then stop the function workers and wait until each interrupted call is recorded Failed."""
        if self.runtime is not None:
            self.runtime.stopping_event.set()  # before the HTTP server goes: builds start giving up at once
            workflows.stop(self.runtime)  # workflow drivers hand their executions back
            pool = self.runtime.started_workers
            if pool is not None and self._server is not None:
                pool.retire_idle()  # idle workers end as CDF stops one: what their exit handlers send still lands
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        left = self.runtime.stop() if self.runtime is not None else []
        if left:
            log.warning("Local CDF stopped with work still running: %s", ", ".join(left))

    def __enter__(self) -> "LocalCDF":
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/token"

    @property
    def stopping(self) -> bool:
        return self.runtime is not None and self.runtime.stopping

    def _running_runtime(self) -> FunctionRuntime:
        if self.runtime is None:
            raise RuntimeError("The local CDF is not started: use `with LocalCDF(dir) as cdf:` or cdf.start()")
        return self.runtime

    # -- conveniences -----------------------------------------------------------------------------------------
    def client(self, project: str = "local", client_name: str = "akerbp-mlops-local", token: str = "local-token"):
        """A ready CogniteClient for one project of this local CDF."""
        from cognite.client import ClientConfig, CogniteClient, global_config
        from cognite.client.credentials import Token

        global_config.disable_pypi_version_check = True
        _bypass_proxy()
        if self.auth.restricted:
            token = self.auth.issue_token(client_name)
        return CogniteClient(
            ClientConfig(client_name=client_name, project=project, base_url=self.base_url, credentials=Token(token))
        )

    def run_due_schedules(self, now: datetime | None = None, wait: bool = True) -> list[dict]:
        """The one clock: fire each function schedule and workflow trigger due at `now` (UTC; default: the current
        time) once; returns the calls (finished, unless wait=False), then the trigger runs (items with a
        `fireTime`, as the trigger's history lists them; their executions ended, unless wait=False)."""
        rt = self._running_runtime()
        return schedules.run_due(rt, now, wait) + workflow_triggers.run_due(rt, now, wait)

    # -- a long-running server that other processes can find ---------------------------------------------------
    def announce(self, **extra) -> None:
        """Tell other processes where this server is (server.json); `restricted` says whether it accepts only the
        configured clients, so they know an ordinary token will be refused."""
        record = {"pid": os.getpid(), "base_url": self.base_url, "started": time.time(),
                  "restricted": self.auth.restricted, **extra}
        path = self.data_dir / SERVER_FILE
        tmp = path.with_name(f".{SERVER_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)  # readers never see half a record

    def withdraw(self) -> None:
        path = self.data_dir / SERVER_FILE
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass

    @staticmethod
    def server_info(data_dir: str | Path) -> dict | None:
        """The announced record (pid, base_url, started, restricted, ...) of a live server for this data dir, if one
        answers (served.server_info, which needs no import of this module)."""
        return served.server_info(data_dir)

    @staticmethod
    def running(data_dir: str | Path) -> str | None:
        """The base_url of a live `mlops local-cdf serve` for this data dir, if one answers."""
        info = LocalCDF.server_info(data_dir)
        return info["base_url"] if info else None


BUILD_DELAY_ENV = "MLOPS_LOCAL_CDF_BUILD_DELAY_S"


def _build_delay(value: float | None) -> float:
    """The argument, else $MLOPS_LOCAL_CDF_BUILD_DELAY_S, else 0; a negative or non-number one is refused."""
    if value is None:
        raw = os.environ.get(BUILD_DELAY_ENV, "").strip()
        try:
            value = float(raw) if raw else 0.0
        except ValueError:
            raise ValueError(f"${BUILD_DELAY_ENV} must be a number of seconds, got {raw!r}") from None
    if not value >= 0:
        raise ValueError(f"The build delay must be 0 or more seconds, got {value}")
    return float(value)


def _bypass_proxy() -> None:
    """cognite-sdk honours proxy variables; loopback traffic must never go through a proxy."""
    current = os.environ.get("NO_PROXY", os.environ.get("no_proxy", ""))
    wanted = [h for h in ("127.0.0.1", "localhost") if h not in current.split(",")]
    if wanted:
        value = ",".join([p for p in [current, *wanted] if p])
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = value
