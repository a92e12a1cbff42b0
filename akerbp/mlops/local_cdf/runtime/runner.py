"""Worker process of a local CDF Function: imports the handler once, then serves calls (a warm container).

Run as `python /abs/path/runner.py REQUEST_FD REPLY_FD FUNCTION_PATH [MEMORY_BYTES]` with cwd = the function folder.
Only the standard library is imported at top level, so any interpreter (e.g. a function's venv) can run it.
Requests and replies are JSON lines on dedicated pipes; fd 0/1/2 stay free for the function: during a call
fd 1 and fd 2 point at the call's log file, so print(), logging and C-level or subprocess output all become logs.
The worker must never outlive its server, even one killed with SIGKILL: a thread reads the request pipe, and its
end of file (the server closed it, or died) ends the worker's whole process group, the function's own subprocesses
included. (Not prctl's PR_SET_PDEATHSIG: it fires when the *thread* that started the worker ends, and the server
starts workers from short-lived call threads.)
The worker is a child subreaper: whatever a call starts (even forked twice and detached with setsid) stays its
descendant, and is killed when the call ends. MEMORY_BYTES caps its data segment (RLIMIT_DATA), the function's memory.
Messages sent on the reply pipe:
  {"type": "ready"} | {"type": "import_error", "message", "trace"}          once, after importing the handler
  {"type": "started"} then {"type": "result", "status", "response"|"error"}   per call
"""

import ctypes
import faulthandler
import importlib
import inspect
import json
import os
import queue
import signal
import sys
import threading
import traceback
from pathlib import PurePosixPath

ALLOWED_ARGS = ("data", "client", "secrets", "function_call_info")
PR_SET_CHILD_SUBREAPER = 36
OUT_OF_MEMORY = "Function ran out of memory: it needed more than its memory limit of {gb:g} GB"
_memory_gb = None


def _prctl(option, value):
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):  # not Linux
        return False


def children(pid):
    """The direct children of `pid` (all its threads'), from /proc; empty where that is not available."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            pass
    return found


def descendants(pid):
    result, todo = [], children(pid)
    while todo:
        child = todo.pop()
        if child not in result:
            result.append(child)
            todo += children(child)
    return result


def kill_descendants(pid, keep=(), reap=False):
    """SIGKILL every descendant of `pid` but `keep`, until none is left: a killed process's children are
    reparented to `pid` (a subreaper), so the next round finds them."""
    for _round in range(100):
        found = [p for p in descendants(pid) if p not in keep]
        if not found:
            return
        for child in found:
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        if reap:  # only those just killed: waiting on a live one could block
            for child in found:
                try:
                    os.waitpid(child, 0)
                except ChildProcessError:  # not our child, or already reaped
                    pass


def _limit_memory(nbytes):
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))
    except (ValueError, OSError):
        pass


def _send(reply, message):
    reply.write(json.dumps(message) + "\n")
    reply.flush()


def _error(exc, prefix=""):
    return {
        "message": prefix + "".join(traceback.format_exception_only(type(exc), exc)).strip(),
        "trace": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def _import_handle(function_path):
    module_name = ".".join(PurePosixPath(function_path).with_suffix("").parts)
    module = importlib.import_module(module_name)
    handle = getattr(module, "handle", None)
    if not callable(handle):
        raise AttributeError(f"{function_path} has no callable named 'handle'")
    params = inspect.signature(handle).parameters
    bad = [name for name in params if name not in ALLOWED_ARGS]
    if bad:
        raise TypeError(f"handle() has unsupported argument(s) {bad}; allowed are {list(ALLOWED_ARGS)}")
    return handle, list(params)


def _make_client(info):
    if info is None:
        return None
    from cognite.client import global_config

    global_config.disable_pypi_version_check = True
    from cognite.client import ClientConfig, CogniteClient
    from cognite.client.credentials import Token

    config = ClientConfig(
        client_name="local-cdf-function",
        project=info["project"],
        base_url=info["base_url"],
        credentials=Token(info["token"]),
    )
    return CogniteClient(config)


def _run_call(handle, params, request):
    """Call handle with the arguments it names; return the reply (status + response or error)."""
    os.environ.update({k: str(v) for k, v in (request.get("env") or {}).items()})
    try:
        available = {
            "data": lambda: request.get("data"),
            "secrets": lambda: request.get("secrets"),
            "function_call_info": lambda: request.get("function_call_info"),
            "client": lambda: _make_client(request.get("client")),
        }
        kwargs = {name: available[name]() for name in params}
        response = handle(**kwargs)
        if inspect.iscoroutine(response):
            import asyncio

            response = asyncio.run(response)
    except SystemExit as exc:
        return {"status": "Failed", "error": _error(exc, prefix=f"Function called sys.exit({exc.code!r}): ")}, True
    except MemoryError as exc:  # its state may be broken: a fresh worker takes the next call, as after a CDF OOM
        message = OUT_OF_MEMORY.format(gb=_memory_gb) if _memory_gb else "Function ran out of memory"
        return {"status": "Failed", "error": dict(_error(exc), message=message)}, True
    except BaseException as exc:  # noqa: B036 - a function's failure must never kill the worker
        return {"status": "Failed", "error": _error(exc)}, False
    try:
        encoded = json.dumps(response)
    except (TypeError, ValueError) as exc:
        return {
            "status": "Failed",
            "error": {"message": f"Function response is not JSON serializable: {exc}", "trace": ""},
        }, False
    limit = request.get("max_response_bytes")
    size = len(encoded.encode("utf-8"))
    if limit is not None and size > limit:
        return {
            "status": "Failed",
            "error": {
                "message": f"Function response is too large: {size} bytes, the limit is {limit} bytes",
                "trace": "",
            },
        }, False
    return {"status": "Completed", "response_json": encoded}, False


def _serve_call(handle, params, request, reply):
    """Redirect fd 1/2 to the call's log file around the call, then reply."""
    sys.stdout.flush()
    sys.stderr.flush()
    log_fd = os.open(request["log_path"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = os.dup(1), os.dup(2)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    before = set(children(os.getpid()))
    try:
        result, exit_after = _run_call(handle, params, request)
    finally:
        kill_descendants(os.getpid(), keep=before, reap=True)  # what the call started ends with it
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - a closed/replaced stream must not break the worker
            pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
    if "response_json" in result:
        reply.write('{"type": "result", "status": "Completed", "response": ' + result["response_json"] + "}\n")
        reply.flush()
    else:
        _send(reply, dict(result, type="result", worker_exits=exit_after))
    return exit_after


def _end_worker():
    """SIGKILL this worker and what the function started (its process group, when it leads one), at once."""
    kill_descendants(os.getpid())
    if os.getpgrp() == os.getpid():  # the server starts each worker as the leader of a session of its own
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


EXIT_GRACE_S = 2.0  # what the function's exit handlers (atexit) get when the server retires an idle worker


def _read_requests(request_fd, requests):
    """Queue each request line; at end of file the server is gone or retires this worker, so it ends: its exit
    handlers first (e.g. a buffer of records written out), for at most EXIT_GRACE_S, as a recycled CDF worker
    is stopped, not killed."""
    with os.fdopen(request_fd, "r", encoding="utf-8") as pipe:
        for line in pipe:
            requests.put(line)
    import atexit

    threading.Timer(EXIT_GRACE_S, _end_worker).start()
    try:
        atexit._run_exitfuncs()
    finally:
        _end_worker()


def main(argv):
    global _memory_gb
    request_fd, reply_fd, function_path = int(argv[1]), int(argv[2]), argv[3]
    if len(argv) > 4:
        _memory_gb = int(argv[4]) / 1024**3
        _limit_memory(int(argv[4]))
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    os.set_inheritable(request_fd, False)
    os.set_inheritable(reply_fd, False)
    requests = queue.Queue()
    # Before the handler is imported: an import that hangs must not survive the server either.
    threading.Thread(target=_read_requests, args=(request_fd, requests), name="local-cdf-lifeline",
                     daemon=True).start()
    # Running by path puts this file's folder first on sys.path; the function must not see our modules.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.getcwd())
    os.environ["COGNITE_FUNCTION_RUNTIME"] = "true"
    faulthandler.enable(file=sys.stderr, all_threads=True)
    reply = os.fdopen(reply_fd, "w", encoding="utf-8")
    try:
        handle, params = _import_handle(function_path)
    except BaseException as exc:  # noqa: B036 - report any import failure, including SystemExit
        _send(reply, dict(_error(exc), type="import_error"))
        return 1
    _send(reply, {"type": "ready"})
    while True:
        request = json.loads(requests.get())
        _send(reply, {"type": "started"})
        if _serve_call(handle, params, request, reply):
            return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
