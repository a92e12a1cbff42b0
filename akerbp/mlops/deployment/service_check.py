"""ServiceTest: the payloads and checks of the model's test file, used before deploying and after (smoke call).

The test file is imported in a subprocess per model (so one model's modules never leak into another's) that
stays up for that model's deploy: it hands out `<service>_input` and runs `<service>_check(response)` on
request, over stdin/stdout, one JSON line each. A check passes when it returns a truthy value or None without
raising (assert-style checks); it fails when it returns a falsy value other than None or raises.
With a timeout (the deploy's --timeout), an answer that does not come before it passes (a test file that hangs
on import, a check that never returns) stops the process and everything it started (its own process group).
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from akerbp.mlops.errors import MlopsError
from akerbp.mlops.deployment.local_call import LocalCallError, call_handler
from akerbp.mlops.utils.logger import mask
from akerbp.mlops.utils.processes import kill_session

RESPONSE_SHOWN = 600

# Runs in the subprocess. The protocol uses the real stdout; the user's prints go to stderr.
RUNNER = r'''
import importlib.util, json, sys, traceback
root, test_file = sys.argv[1], sys.argv[2]
proto, sys.stdout = sys.stdout, sys.stderr
sys.path.insert(0, root)


def reply(message):
    proto.write(json.dumps(message) + "\n")
    proto.flush()


try:
    spec = importlib.util.spec_from_file_location("mlops_service_test", test_file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = module.ServiceTest
except Exception as e:
    what = "has no class ServiceTest" if isinstance(e, AttributeError) and "ServiceTest" in str(e) else \
        f"cannot be imported: {type(e).__name__}: {e}"
    reply({"error": what, "trace": traceback.format_exc()[-3000:]})
    sys.exit(0)
try:
    target = cls()
except Exception:
    target = cls
reply({"ready": True})
for line in sys.stdin:
    request = json.loads(line)
    name = request["service"] + ("_input" if request["op"] == "input" else "_check")
    if not hasattr(target, name):
        reply({"error": f"ServiceTest has no {name}"})
        continue
    try:
        if request["op"] == "input":
            value = getattr(target, name)
            value = value() if callable(value) else value
            reply({"input": json.loads(json.dumps(value, allow_nan=False))})
        else:
            returned = getattr(target, name)(request["response"])
            passed = returned is None or bool(returned)
            reply({"passed": passed, "detail": "" if passed else f"{name} returned {returned!r}"})
    except AssertionError as e:
        reply({"passed": False, "detail": f"{name} failed: AssertionError: {e}"})
    except Exception as e:
        reply({"passed": False, "error": f"{name} raised {type(e).__name__}: {e}",
               "trace": traceback.format_exc()[-3000:]})
'''


class ServiceTestError(MlopsError):
    """The test file's ServiceTest cannot be used."""


@dataclass
class CheckResult:
    passed: bool
    detail: str


class ServiceTest:
    """The model's ServiceTest, living in its own process; close() it (or use `with`). `timeout` (seconds from now,
    None: no limit) bounds every answer."""

    def __init__(self, root: Path, test_file: Path, label: str, timeout: float | None = None, start: bool = True):
        self.root, self.test_file, self.label, self.timeout = Path(root), Path(test_file), label, timeout
        self._deadline: float | None = None
        self._process: subprocess.Popen[str] | None = None
        # A thread reads the answers, so waiting for one can time out (a blocking readline cannot).
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._ready: dict[str, Any] | None = None
        self._stopped: str | None = None  # why the process was stopped
        if start:
            self.start()

    @property
    def started(self) -> bool:
        return self._process is not None

    def start(self) -> None:
        """Start the process (once; start=False in the constructor defers it to here or to the first question: a
        deploy that expects `unchanged` starts it only when its plan needs it). The timeout counts from now."""
        if self._process is not None:
            return
        self._deadline = None if self.timeout is None else time.monotonic() + self.timeout
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self._process = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(self.root), str(self.test_file)], cwd=self.root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process,), name=f"ServiceTest {self.label}",
                                        daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None  # stdout=PIPE
        try:
            for line in process.stdout:
                self._lines.put(line)
        except (OSError, ValueError):  # closed
            pass
        self._lines.put("")

    def _receive(self) -> dict[str, Any]:
        if self._stopped:
            raise ServiceTestError(self._stopped)
        self.start()
        remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
        try:
            line = self._lines.get(timeout=remaining)
        except queue.Empty:
            self._stopped = (f"{self.label}: ServiceTest did not answer within {self.timeout:g} s (--timeout): the "
                             f"process running the ServiceTest of {self.test_file} was stopped")
            self._kill()
            raise ServiceTestError(self._stopped) from None
        if not line:
            raise ServiceTestError(f"{self.label}: the ServiceTest process of {self.test_file} exited unexpectedly")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _kill(self) -> None:
        if self._process is not None:
            kill_session(self._process)  # the subprocess and whatever it started

    def _ensure_ready(self) -> None:
        if self._ready is None:
            self._ready = self._receive()
        if "error" in self._ready:
            raise ServiceTestError(
                f"{self.label}: {self.test_file} {self._ready['error']}: add class ServiceTest with <service>_input "
                "and <service>_check (see the template's model_code/test_model.py)"
            )

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._stopped:
            raise ServiceTestError(self._stopped)
        self._ensure_ready()
        assert self._process is not None and self._process.stdin is not None  # started by _ensure_ready, stdin=PIPE
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ServiceTestError(f"{self.label}: the ServiceTest process of {self.test_file} has exited") from None
        return self._receive()

    def input(self, service: str) -> Any:  # JSON: ServiceTest's payload
        answer = self._ask({"op": "input", "service": service})
        if "error" in answer:
            raise ServiceTestError(f"{self.label}: {self.test_file}: {answer['error']}: add it, e.g. "
                                   f"{service}_input = {{...}} (the payload a {service} call gets)")
        return answer["input"]

    def check(self, service: str, response: object) -> CheckResult:
        answer = self._ask({"op": "check", "service": service, "response": response})
        if "passed" not in answer:
            raise ServiceTestError(f"{self.label}: {self.test_file}: {answer['error']}")
        detail = answer.get("detail") or answer.get("error") or ""
        return CheckResult(bool(answer["passed"]), detail)

    def close(self) -> None:
        process, reader = self._process, self._reader
        if process is None or reader is None:  # never started
            return
        if process.poll() is None:
            try:
                if process.stdin is not None:
                    process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill()
        reader.join(timeout=5)  # EOF once the process is gone
        if reader.is_alive():  # something the test file started still holds the pipe
            self._kill()
            reader.join(timeout=5)
        if not reader.is_alive() and process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> "ServiceTest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def show(response: object, secrets: dict[str, str] | None = None) -> str:
    """A response, short enough for an error message, secrets masked."""
    try:
        text = json.dumps(response, default=str)
    except (TypeError, ValueError):
        text = repr(response)
    text = mask(text)
    for value in (secrets or {}).values():
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text if len(text) <= RESPONSE_SHOWN else text[:RESPONSE_SHOWN] + "..."


def verify(tester: ServiceTest, service: str, response: object, expected_model_id: str | None) -> CheckResult:
    """ServiceTest's check, and for prediction the model id the response names."""
    result = tester.check(service, response)
    if not result.passed:
        return result
    if service == "prediction" and expected_model_id and isinstance(response, dict) \
            and response.get("model_id") != expected_model_id:
        return CheckResult(False, f"the response names model {response.get('model_id')!r}, not {expected_model_id!r}")
    return result


def run_service_test(folder: Path, service: str, tester: ServiceTest, secrets: dict[str, str],
                     expected_model_id: str | None, timeout: float = 600.0,
                     env_vars: dict[str, str] | None = None) -> CheckResult:
    """Call the built folder's handler in a subprocess exactly as CDF would (client=None, the function's env vars),
    then check the answer."""
    data = tester.input(service)
    try:
        call = call_handler(folder, data, secrets, timeout=timeout, env_vars=env_vars)
    except LocalCallError as e:
        return CheckResult(False, str(e))
    result = verify(tester, service, call.response, expected_model_id)
    if not result.passed:
        logs = mask(call.stderr.strip())[-2000:]
        result.detail = (f"{result.detail}; the response was {show(call.response, secrets)}"
                         + (f"\nthe end of its logs:\n{logs}" if logs else ""))
    return result
