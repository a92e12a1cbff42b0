"""Warm worker processes that run local CDF Functions (see worker_process.py for one worker).

One worker per function stays alive between calls, so module state (a loaded model) survives like in a
warm CDF container; concurrent calls to one function get extra workers up to a cap. A worker that times
out, crashes or exits is killed with its process group and replaced by the next call. Nothing here raises
into the caller: every outcome is a CallResult.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from . import sandbox
from .worker_process import INTERRUPTED, RUNNER, CallResult, Cancelled, Spec, Worker, WorkerTimeout, default_env

__all__ = ["CallResult", "INTERRUPTED", "WorkerPool", "default_env"]

RETIRE_S = 2.5  # how long a closing pool waits for its idle workers to end by themselves (the runner's grace: 2 s)


def seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _interrupted(logs: list[dict] | None = None) -> CallResult:
    return CallResult("Failed", error={"message": INTERRUPTED, "trace": ""}, logs=logs or [])


class _FunctionWorkers:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.idle: list[Worker] = []
        self.count = 0  # idle + busy + being spawned


class WorkerPool:
    """Thread-safe pool of warm workers, keyed by function (e.g. its id)."""

    def __init__(self, max_workers_per_function: int = 4, base_env: dict | None = None, tmp_root: str | None = None,
                 registry=None, data_dir: str | None = None):
        """registry (processes.Registry): where each worker is recorded while it lives, so a server starting after
        this process died can end the workers it left. data_dir: hidden from sandboxed workers (sandbox.py)."""
        self._data_dir = None if data_dir is None else str(Path(data_dir).resolve())
        self._cap = max_workers_per_function
        self._registry = registry
        self._base_env = default_env() if base_env is None else dict(base_env)
        self._tmp_root = tmp_root
        self._cond = threading.Condition()
        self._functions: dict[str, _FunctionWorkers] = {}
        self._all: set[Worker] = set()
        self._closed = False

    def _acquire(self, key: str, spec: Spec, deadline: float) -> tuple[_FunctionWorkers, Worker | None]:
        """An idle worker, or (fw, None) with a reserved slot for spawning one; raises WorkerTimeout."""
        dead: list[Worker] = []
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
                        raise WorkerTimeout()
                    self._cond.wait(remaining)
        finally:
            for worker in dead:
                self._discard(worker)

    def _spawn(self, spec: Spec) -> Worker:
        worker = Worker(spec, self._base_env, self._tmp_root, self._data_dir)
        if self._registry is not None:
            try:
                self._registry.record(worker.proc.pid, str(worker.dir))
            except BaseException:
                worker.close()
                raise
        with self._cond:
            self._all.add(worker)
            closed = self._closed
        if closed:
            self._discard(worker)
            raise RuntimeError("The worker pool is closed")
        return worker

    def _release(self, key: str, fw: _FunctionWorkers, worker: Worker | None, reusable: bool) -> None:
        with self._cond:
            keep = (
                reusable
                and worker is not None
                and not self._closed
                and self._functions.get(key) is fw
                and worker.alive()
            )
            if keep and worker is not None:  # keep implies a worker: the check is for mypy
                fw.idle.append(worker)
            else:
                fw.count -= 1
            self._cond.notify_all()
        if worker is not None and not keep:
            self._discard(worker)

    def _discard(self, worker: Worker) -> None:
        worker.close()
        if self._registry is not None:
            self._registry.forget(worker.proc.pid)
        with self._cond:
            self._all.discard(worker)

    @staticmethod
    def _spec(key, folder, function_path, python, env_vars, memory_gb) -> Spec:
        env = tuple(sorted((str(k), str(v)) for k, v in (env_vars or {}).items()))
        folder = str(Path(folder).resolve())
        memory = None if memory_gb is None else int(float(memory_gb) * 1024**3)
        return Spec(folder, function_path, python, env, memory, sandbox.worker_uid(key, python, RUNNER, folder))

    def check_import(
        self, key: str, folder: Path, function_path: str, python: str, env_vars: dict, timeout: float,
        cancel: threading.Event | None = None, memory_gb: float | None = None,
    ) -> dict | None:
        """Start a warm worker; None if the handler imported, else {"message", "trace"} for the function's error.

        Setting `cancel` (the server is stopping) kills a worker still importing: an error is returned, and the
        caller, seeing `cancel` set, knows it is no verdict on the handler."""
        spec = self._spec(key, folder, function_path, python, env_vars, memory_gb)
        deadline = time.monotonic() + timeout
        try:
            fw, worker = self._acquire(key, spec, deadline)
        except WorkerTimeout:
            return None  # every slot is busy running calls, so the handler imports
        if worker is not None:
            self._release(key, fw, worker, True)
            return None
        reusable = False
        try:
            worker = self._spawn(spec)
            error = worker.wait_ready(deadline, cancel)
            reusable = error is None
            return error
        except Cancelled:
            return {"message": "The build was cancelled: the local CDF is stopping", "trace": ""}
        except WorkerTimeout:
            return {"message": f"Importing the function's handler timed out after {seconds(timeout)} seconds",
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
        memory_gb: float | None = None,
    ) -> CallResult:
        """Run one call on a warm (or fresh) worker. Timeout covers waiting for a worker, import and the call."""
        spec = self._spec(key, folder, function_path, python, env_vars, memory_gb)
        timed_out = CallResult(
            "Timeout", error={"message": f"Function call timed out after {seconds(timeout)} seconds", "trace": ""}
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
            except WorkerTimeout:
                return timed_out
            except RuntimeError:  # closed: the server is stopping
                return _interrupted()
            reusable = False
            try:
                if worker is None:
                    worker = self._spawn(spec)
                if not worker.ready:
                    error = worker.wait_ready(deadline)
                    if error is not None:
                        return _interrupted() if worker.stopped_by_pool else CallResult("Failed", error=error)
                result, reusable = worker.call(request, deadline)
                if result is None:
                    continue
                if result.status == "Timeout":
                    result.error = timed_out.error
                elif result.status == "Failed" and worker.stopped_by_pool:
                    return _interrupted(result.logs)
                return result
            except WorkerTimeout:
                return timed_out
            except Exception as exc:  # noqa: BLE001 - never raise into the HTTP handler
                if self._closed:
                    return _interrupted()
                return CallResult("Failed", error={"message": f"Could not run the function: {exc}", "trace": repr(exc)})
            finally:
                self._release(key, fw, worker, reusable)
        if self._closed:
            return _interrupted()
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

    def retire_idle(self) -> None:
        """End the idle workers gracefully (their exit handlers run, within RETIRE_S in all), while the server still
        answers what those handlers send; the server's stop calls it first."""
        with self._cond:
            idle = [w for fw in self._functions.values() for w in fw.idle]
            for fw in self._functions.values():
                fw.count -= len(fw.idle)
                fw.idle.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + RETIRE_S
        for worker in idle:
            worker.retire(deadline - time.monotonic())
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
            worker.stopped_by_pool = True
            worker.kill()
        for worker in idle:  # busy workers are closed by their calling thread when it sees the worker gone
            self._discard(worker)
