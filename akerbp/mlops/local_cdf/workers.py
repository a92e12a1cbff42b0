"""Warm worker processes that run local CDF Functions (see runner.py for the child side).

One worker per function stays alive between calls, so module state (a loaded model) survives like in a
warm CDF container; concurrent calls to one function get extra workers up to a cap. A worker that times
out, crashes or exits is killed with its process group and replaced by the next call. Nothing here raises
into the caller: every outcome is a CallResult.
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
MAX_LOG_BYTES = 5 * 1024 * 1024
_POLL_SECONDS = 0.25  # how often new log lines are timestamped while a call runs


@dataclass
class CallResult:
    status: str  # "Completed" | "Failed" | "Timeout"
    response: Any = None
    error: dict | None = None
    logs: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class _Spec:
    folder: str
    function_path: str
    python: str
    env_vars: tuple


class _Timeout(Exception):
    pass


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _now_ms() -> int:
    return int(time.time() * 1000)


def default_env() -> dict:
    """The server's environment minus COGNITE_* variables: a function must not see the deployer's credentials."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COGNITE_")}


class _LogCollector:
    """Turns the call's log file into timestamped lines while the call runs (tail -f, capped)."""

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
        now = _now_ms()
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


class _Worker:
    """One runner.py process and its pipes."""

    def __init__(self, spec: _Spec, base_env: dict, tmp_root: str | None):
        self.spec = spec
        self.dir = Path(tempfile.mkdtemp(prefix="local-cdf-worker-", dir=tmp_root))
        self.ready = False
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
                raise _Timeout()
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

    def wait_ready(self, deadline: float) -> dict | None:
        """None once the handler imported, else the error; raises _Timeout."""
        msg = self._read(deadline)
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
        collector = _LogCollector(log_path)
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
        except _Timeout:
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


class _FunctionWorkers:
    def __init__(self, spec: _Spec):
        self.spec = spec
        self.idle: list[_Worker] = []
        self.count = 0  # idle + busy + being spawned


class WorkerPool:
    """Thread-safe pool of warm workers, keyed by function (e.g. its id)."""

    def __init__(self, max_workers_per_function: int = 4, base_env: dict | None = None, tmp_root: str | None = None):
        self._cap = max_workers_per_function
        self._base_env = default_env() if base_env is None else dict(base_env)
        self._tmp_root = tmp_root
        self._cond = threading.Condition()
        self._functions: dict[str, _FunctionWorkers] = {}
        self._all: set[_Worker] = set()
        self._closed = False

    def _acquire(self, key: str, spec: _Spec, deadline: float) -> tuple[_FunctionWorkers, _Worker | None]:
        """An idle worker, or (fw, None) with a reserved slot for spawning one; raises _Timeout."""
        dead: list[_Worker] = []
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise RuntimeError("The worker pool is closed")
                    fw = self._functions.get(key)
                    if fw is None or fw.spec != spec:  # redeployed under the same key: retire the old workers
                        if fw is not None:
                            dead += fw.idle
                        fw = self._functions[key] = _FunctionWorkers(spec)
                    while fw.idle:
                        worker = fw.idle.pop()
                        if worker.alive():
                            return fw, worker
                        fw.count -= 1
                        dead.append(worker)
                    if fw.count < self._cap:
                        fw.count += 1
                        return fw, None
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise _Timeout()
                    self._cond.wait(remaining)
        finally:
            for worker in dead:
                self._discard(worker)

    def _spawn(self, spec: _Spec) -> _Worker:
        worker = _Worker(spec, self._base_env, self._tmp_root)
        with self._cond:
            self._all.add(worker)
            closed = self._closed
        if closed:
            self._discard(worker)
            raise RuntimeError("The worker pool is closed")
        return worker

    def _release(self, key: str, fw: _FunctionWorkers, worker: _Worker | None, reusable: bool) -> None:
        with self._cond:
            keep = (
                reusable
                and worker is not None
                and not self._closed
                and self._functions.get(key) is fw
                and worker.alive()
            )
            if keep:
                fw.idle.append(worker)
            else:
                fw.count -= 1
            self._cond.notify_all()
        if worker is not None and not keep:
            self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.close()
        with self._cond:
            self._all.discard(worker)

    @staticmethod
    def _spec(folder, function_path, python, env_vars) -> _Spec:
        env = tuple(sorted((str(k), str(v)) for k, v in (env_vars or {}).items()))
        return _Spec(str(Path(folder).resolve()), function_path, python, env)

    def check_import(
        self, key: str, folder: Path, function_path: str, python: str, env_vars: dict, timeout: float
    ) -> dict | None:
        """Start a warm worker; None if the handler imported, else {"message", "trace"} for the function's error."""
        spec = self._spec(folder, function_path, python, env_vars)
        deadline = time.monotonic() + timeout
        try:
            fw, worker = self._acquire(key, spec, deadline)
        except _Timeout:
            return None  # every slot is busy running calls, so the handler imports
        if worker is not None:
            self._release(key, fw, worker, True)
            return None
        reusable = False
        try:
            worker = self._spawn(spec)
            error = worker.wait_ready(deadline)
            reusable = error is None
            return error
        except _Timeout:
            return {"message": f"Importing the function's handler timed out after {_seconds(timeout)} seconds",
                    "trace": ""}
        except Exception as exc:  # noqa: BLE001 - e.g. the interpreter does not exist
            return {"message": f"Could not start the function's process: {exc}", "trace": repr(exc)}
        finally:
            self._release(key, fw, worker, reusable)

    def call(
        self,
        key: str,
        folder: Path,
        function_path: str,
        python: str,
        env_vars: dict,
        data: Any,
        secrets: dict,
        call_info: dict,
        client: dict | None,
        timeout: float,
        max_response_bytes: int,
    ) -> CallResult:
        """Run one call on a warm (or fresh) worker. Timeout covers waiting for a worker, import and the call."""
        spec = self._spec(folder, function_path, python, env_vars)
        timed_out = CallResult(
            "Timeout", error={"message": f"Function call timed out after {_seconds(timeout)} seconds", "trace": ""}
        )
        request = {
            "data": data,
            "secrets": secrets,
            "function_call_info": call_info,
            "client": client,
            "env": dict(spec.env_vars),
            "max_response_bytes": max_response_bytes,
        }
        try:
            json.dumps(request)
        except (TypeError, ValueError) as exc:
            return CallResult("Failed", error={"message": f"Function call data is not JSON serializable: {exc}",
                                               "trace": ""})
        deadline = time.monotonic() + timeout
        for _attempt in range(3):  # retry only when a worker died before taking the call
            try:
                fw, worker = self._acquire(key, spec, deadline)
            except _Timeout:
                return timed_out
            except RuntimeError as exc:
                return CallResult("Failed", error={"message": str(exc), "trace": ""})
            reusable = False
            try:
                if worker is None:
                    worker = self._spawn(spec)
                if not worker.ready:
                    error = worker.wait_ready(deadline)
                    if error is not None:
                        return CallResult("Failed", error=error)
                result, reusable = worker.call(request, deadline)
                if result is None:
                    continue
                if result.status == "Timeout":
                    result.error = timed_out.error
                return result
            except _Timeout:
                return timed_out
            except Exception as exc:  # noqa: BLE001 - never raise into the HTTP handler
                return CallResult("Failed", error={"message": f"Could not run the function: {exc}", "trace": repr(exc)})
            finally:
                self._release(key, fw, worker, reusable)
        return CallResult("Failed", error={"message": "The function's process kept exiting before taking the call",
                                           "trace": ""})

    def evict(self, key: str) -> None:
        """Forget a function (deleted): idle workers stop now, busy ones when their call ends."""
        with self._cond:
            fw = self._functions.pop(key, None)
            idle = fw.idle[:] if fw else []
            if fw:
                fw.idle.clear()
                fw.count -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            self._discard(worker)

    def close(self) -> None:
        """Kill every worker (busy ones too; their calls end Failed) and reap them."""
        with self._cond:
            self._closed = True
            workers = list(self._all)
            idle = [w for fw in self._functions.values() for w in fw.idle]
            self._functions.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
        for worker in idle:  # busy workers are closed by their calling thread when it sees the worker gone
            self._discard(worker)
