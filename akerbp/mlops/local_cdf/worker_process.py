"""One warm worker: a runner.py process (see runner.py for the child side), the pipes to it, the call protocol
and the call's logs. The pool that shares workers between calls is in workers.py.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNNER = str(Path(__file__).resolve().with_name("runner.py"))
KEPT_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "TEMP", "TMP", "TZ", "SYSTEMROOT",
                      "NO_PROXY", "no_proxy"})
INTERRUPTED = "the local CDF process running this call stopped before it finished"
_POLL_SECONDS = 0.25  # how often new log lines are timestamped while a call runs
MAX_LOG_BYTES = 5 * 1024 * 1024


@dataclass
class CallResult:
    status: str  # "Completed" | "Failed" | "Timeout"
    response: Any = None
    error: dict | None = None
    logs: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class Spec:
    folder: str
    function_path: str
    python: str
    env_vars: tuple


class WorkerTimeout(Exception):
    """The deadline passed while waiting on the worker."""


class Cancelled(Exception):
    """The caller's cancel event was set (the server is stopping)."""


def default_env() -> dict:
    """What a CDF container would have of this machine's environment: the basics a process needs, nothing else.

    A function must not read the deployer's credentials or other models' secrets just because the server's shell
    has them: code relying on that works here and fails in CDF. The Python is chosen by the worker's interpreter
    path (shared or venv), not by the environment, so nothing like PYTHONPATH or VIRTUAL_ENV is passed.
    """
    return {k: v for k, v in os.environ.items() if k in KEPT_ENV or k.startswith("LC_")}


class LogCollector:
    """Turns the call's log file into timestamped lines while the call runs (tail -f, capped), so each line gets
    the time it appeared, like CDF's log entries, and a chatty function cannot fill memory."""

    def __init__(self, path: Path):
        path.touch()
        self._file = open(path, "rb")
        self._partial = b""
        self._size = 0
        self.entries: list[dict] = []

    def poll(self) -> None:
        data = self._file.read()
        if not data or self._size > MAX_LOG_BYTES:
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._add(lines)

    def _add(self, lines: list[bytes]) -> None:
        now = int(time.time() * 1000)
        for line in lines:
            self._size += len(line) + 1
            if self._size > MAX_LOG_BYTES:
                self.entries.append({"timestamp": now, "message": f"[logs truncated at {MAX_LOG_BYTES} bytes]"})
                return
            self.entries.append({"timestamp": now, "message": line.decode("utf-8", "replace").rstrip("\r")})

    @property
    def finished(self) -> bool:
        return self._file.closed

    def finish(self) -> list[dict]:
        self.poll()
        if self._partial and self._size <= MAX_LOG_BYTES:
            self._add([self._partial])
        self._file.close()
        return self.entries


class Worker:
    """One runner.py process and its pipes."""

    def __init__(self, spec: Spec, base_env: dict, tmp_root: str | None):
        self.spec = spec
        self.dir = Path(tempfile.mkdtemp(prefix="local-cdf-worker-", dir=tmp_root))
        self.ready = False
        self.stopped_by_pool = False  # killed by WorkerPool.close(): its call was interrupted, not failed
        self._killed = self._closed = False
        self._kill_lock = threading.Lock()
        self._buf = bytearray()
        self._calls = 0
        env = dict(base_env)
        env.update(dict(spec.env_vars))
        env["COGNITE_FUNCTION_RUNTIME"] = "true"
        env["PYTHONUNBUFFERED"] = "1"
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            with open(self.dir / "worker.log", "wb") as out:
                self.proc = subprocess.Popen(
                    [spec.python, "-u", RUNNER, str(req_r), str(rep_w), spec.function_path],
                    cwd=spec.folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    pass_fds=(req_r, rep_w),
                    start_new_session=True,
                )
        except BaseException:
            for fd in (req_r, req_w, rep_r, rep_w):
                os.close(fd)
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        os.close(req_r)
        os.close(rep_w)
        self._requests = os.fdopen(req_w, "wb")
        self._replies = rep_r
        self._poller = select.poll()
        self._poller.register(rep_r, select.POLLIN)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read(self, deadline: float, tick=None) -> dict | None:
        """Next reply message; None when the worker closed the pipe (died)."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return json.loads(line)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout()
            events = self._poller.poll(min(remaining, _POLL_SECONDS) * 1000)
            if tick:
                tick()
            if events:
                chunk = os.read(self._replies, 1 << 20)
                if not chunk:
                    return None
                self._buf += chunk

    def _death(self, when: str) -> dict:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        tail = (self.dir / "worker.log").read_bytes()[-4000:].decode("utf-8", "replace")
        return {"message": f"The function's process {how} {when}", "trace": tail}

    def wait_ready(self, deadline: float, cancel: threading.Event | None = None) -> dict | None:
        """None once the handler imported, else the error; raises WorkerTimeout, or Cancelled once `cancel` is set."""

        def check_cancel() -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()

        msg = self._read(deadline, tick=check_cancel)
        if msg is None:
            return self._death("while importing the handler")
        if msg.get("type") == "ready":
            self.ready = True
            return None
        return {"message": msg.get("message", "Import failed"), "trace": msg.get("trace", "")}

    def call(self, request: dict, deadline: float) -> tuple[CallResult | None, bool]:
        """(result, reusable). result None means the worker died before taking the call (safe to retry)."""
        self._calls += 1
        log_path = self.dir / f"call-{self._calls}.log"
        collector = LogCollector(log_path)
        line = json.dumps(dict(request, log_path=str(log_path))).encode() + b"\n"
        try:
            try:
                self._requests.write(line)
                self._requests.flush()
            except (BrokenPipeError, OSError):
                return None, False
            started = self._read(deadline)
            if started is None:
                return None, False
            msg = self._read(deadline, tick=collector.poll)
            if msg is None:
                err = self._death("during the call")
                return CallResult("Failed", error=err, logs=collector.finish()), False
        except WorkerTimeout:
            self.kill()
            return CallResult("Timeout", error={"message": "", "trace": ""}, logs=collector.finish()), False
        finally:
            if not collector.finished:
                logs = collector.finish()
            log_path.unlink(missing_ok=True)
        if msg.get("status") == "Completed":
            return CallResult("Completed", response=msg.get("response"), logs=logs), True
        return CallResult("Failed", error=msg.get("error"), logs=logs), not msg.get("worker_exits")

    def kill(self) -> None:
        """Kill the whole process group (the function's own subprocesses too) and reap the worker."""
        with self._kill_lock:
            if not self._killed:  # once only: after reaping, the pid may belong to someone else
                self._killed = True
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                if self.proc.poll() is None:
                    self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Kill, then release the pipes; only the thread that owns the worker may call this."""
        self.kill()
        if self._closed:
            return
        self._closed = True
        for closer in (self._requests.close, lambda: os.close(self._replies)):
            try:
                closer()
            except OSError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)
