"""FunctionRuntime: what function builds and calls need from the server, and nothing else of it: the store, the
data dir, the isolation mode, the limits, the simulated build delay, the background threads, the warm worker pool
and the stop signal. Handlers and schedules reach the runtime through this object, never through the server.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import processes

if TYPE_CHECKING:
    from ..server import Limits
    from ..store import Store
    from .workers import WorkerPool


class Threads:
    """Background work (builds, calls) of one runtime, so its stop waits for its own work and nobody else's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[threading.Thread] = set()

    def start(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._running.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._running.add(thread)
        thread.start()
        return thread

    def join(self, timeout: float) -> list[str]:
        """Wait for the threads running now, at most `timeout` seconds in all; the names of those still running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._running)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in threads if t.is_alive()]


class FunctionRuntime:
    """The function runtime of one started server (a fresh one per start: an earlier run's builds keep seeing
    their own stop signal set)."""

    def __init__(self, store: "Store", data_dir: Path, isolation: str, limits: "Limits", build_delay_s: float,
                 base_url: Callable[[], str], session_token: Callable[[str, int], str]) -> None:
        self.store, self.data_dir, self.isolation, self.limits = store, data_dir, isolation, limits
        self.build_delay_s = build_delay_s
        self._base_url = base_url
        self.session_token = session_token  # (project, session id) -> a token a call's client acts with
        self.builds = Threads()
        self.call_threads = Threads()
        self.stopping_event = threading.Event()  # set by stop(): long build steps watch it to give up
        self._workers: "WorkerPool | None" = None
        self._workers_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return self._base_url()

    @property
    def stopping(self) -> bool:
        return self.stopping_event.is_set()

    @property
    def workers(self) -> "WorkerPool":
        """The warm function workers, started on first use; refused once stop() began (it would leak)."""
        with self._workers_lock:
            if self._workers is None:
                if self.stopping_event.is_set():
                    raise RuntimeError("The local CDF is stopping: no function can start")
                from .workers import WorkerPool

                self._workers = WorkerPool(registry=processes.Registry(self.store), data_dir=str(self.data_dir))
            return self._workers

    @property
    def started_workers(self) -> "WorkerPool | None":
        """The worker pool if one runs, without starting one."""
        return self._workers

    def stop(self) -> list[str]:
        """Give unfinished builds back, stop the workers, wait until each interrupted call is recorded; the names
        of the threads still running after that."""
        self.stopping_event.set()
        left = self.builds.join(timeout=30)  # a cancelled build notices within a fraction of a second
        with self._workers_lock:
            workers, self._workers = self._workers, None
        if workers is not None:
            workers.close()
        return left + self.call_threads.join(timeout=self.limits.call_timeout_s)
