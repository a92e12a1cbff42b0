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
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from . import sandbox
from .runner import kill_descendants

RUNNER = str(Path(__file__).resolve().with_name("runner.py"))
# The folder holding the akerbp package (site-packages or the repo): one level up per dot of this module's name.
_PACKAGES_ROOT = str(Path(RUNNER).parents[__name__.count(".")])
KEPT_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TMPDIR", "TEMP", "TMP", "TZ", "SYSTEMROOT",
                      "NO_PROXY", "no_proxy"})
INTERRUPTED = "the local CDF process running this call stopped before it finished"
_POLL_SECONDS = 0.25  # how often new log lines are timestamped while a call runs
MAX_LOG_BYTES = 5 * 1024 * 1024
_MIN_LINE_COST = 64


@dataclass
class CallResult:
    status: str  # "Completed" | "Failed" | "Timeout"
    response: Any = None
    error: dict | None = None
    logs: list[dict] = field(default_factory=list)


class _UserSwitch(TypedDict, total=False):
    """Popen's arguments that run the worker as another user (none: as the server's own)."""

    user: int
    group: int
    extra_groups: list[int]


@dataclass(frozen=True)
class Spec:
    folder: str
    function_path: str
    python: str
    env_vars: tuple
    memory_bytes: int | None = None  # the function's memory, enforced in the worker (RLIMIT_DATA)
    uid: int | None = None  # the user the worker runs as (sandbox.py); None: the server's own


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
    the time it appeared, like CDF's log entries. Memory and disk stay bounded however much the function writes:
    the file is read in chunks up to the cap, and past it emptied at each poll instead of read."""

    _CHUNK = 1 << 20

    def __init__(self, path: Path):
        path.touch()
        self._path = path
        self._file = open(path, "rb")
        self._partial = b""
        self._size = 0
        self._full = False
        self.entries: list[dict] = []

    def poll(self) -> None:
        while not self._full:
            data = self._file.read(self._CHUNK)
            if not data:
                return
            *lines, self._partial = (self._partial + data).split(b"\n")
            if len(self._partial) > MAX_LOG_BYTES:  # one endless line
                lines.append(self._partial)
                self._partial = b""
            self._add(lines)
        os.truncate(self._path, 0)  # the writer appends (O_APPEND), so it goes on at the new end
        self._file.seek(0)

    def _add(self, lines: list[bytes]) -> None:
        now = int(time.time() * 1000)
        for line in lines:
            # a line costs at least a little: a million empty lines must not become a million entries
            self._size += max(len(line) + 1, _MIN_LINE_COST)
            if self._size > MAX_LOG_BYTES:
                self.entries.append({"timestamp": now, "message": f"[logs truncated at {MAX_LOG_BYTES} bytes]"})
                self._full = True
                return
            self.entries.append({"timestamp": now, "message": line.decode("utf-8", "replace").rstrip("\r")})

    @property
    def finished(self) -> bool:
        return self._file.closed

    def finish(self) -> list[dict]:
        self.poll()
        if self._partial and not self._full:
            self._add([self._partial])
        self._file.close()
        return self.entries


def _interpreter_folders(python: str) -> list[str]:
    """What the worker's interpreter and runner read, to keep visible in the sandbox (a venv may live in /tmp)."""
    real = Path(os.path.realpath(python))
    return sorted({str(real.parent.parent), str(Path(python).absolute().parent.parent), sys.prefix,
                   sys.base_prefix, _PACKAGES_ROOT})


class Worker:
    """One runner.py process and its pipes."""

    def __init__(self, spec: Spec, base_env: dict, tmp_root: str | None, data_dir: str | None = None):
        """data_dir: the server's, hidden from the worker where it runs sandboxed (sandbox.py)."""
        self.spec = spec
        self.dir = Path(tempfile.mkdtemp(prefix="local-cdf-worker-", dir=tmp_root))
        self.ready = False
        self.stopped_by_pool = False  # killed by WorkerPool.close(): its call was interrupted, not failed
        self._killed = self._closed = False
        self._kill_lock = threading.Lock()
        self._buf = bytearray()
        self._calls = 0
        env = dict(base_env)
        if spec.uid is not None:  # its own home and temp folder, not the server's
            sandbox.give(self.dir, spec.uid)
            sandbox.grant(Path(spec.folder), spec.uid)
            env.update(HOME=str(self.dir), TMPDIR=str(self.dir))
        env.update(dict(spec.env_vars))
        env["COGNITE_FUNCTION_RUNTIME"] = "true"
        env["PYTHONUNBUFFERED"] = "1"
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            with open(self.dir / "worker.log", "wb") as out:
                memory = [] if spec.memory_bytes is None else [str(spec.memory_bytes)]
                argv = [spec.python, "-u", RUNNER, str(req_r), str(rep_w), spec.function_path, *memory]
                wrapped = sandbox.wrap(argv, folder=spec.folder, data_dir=data_dir, worker_dir=str(self.dir),
                                       extra=_interpreter_folders(spec.python))
                switch: _UserSwitch = {}
                if spec.uid is not None:
                    switch = {"user": spec.uid, "group": spec.uid, "extra_groups": []}
                self.proc = subprocess.Popen(
                    wrapped,
                    cwd=spec.folder,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    pass_fds=(req_r, rep_w),
                    start_new_session=True,
                    **switch,
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
        if self.spec.uid is not None:
            sandbox.give(log_path, self.spec.uid)
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

    def retire(self, timeout: float) -> None:
        """End an idle worker as CDF stops one: end of its request pipe (it runs its exit handlers, bounded by the
        runner's grace period), then, after `timeout` seconds at most, kill what is left."""
        try:
            self._requests.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def kill(self) -> None:
        """Kill the whole process group (the function's own subprocesses too) and reap the worker."""
        with self._kill_lock:
            if not self._killed:  # once only: after reaping, the pid may belong to someone else
                self._killed = True
                kill_descendants(self.proc.pid)  # those that left its group too (it is their subreaper)
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
