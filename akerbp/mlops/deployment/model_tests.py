"""Step 1 of a deploy: the model's own pytest tests, in a subprocess per model.

A subprocess so one model's modules (and its test fixtures' side effects) never leak into another model's tests
or into the deploy process. It starts at once (or at start(), when made with start=False) and runs while the deploy
step fetches artifacts and builds the folder; `wait()` joins it. Output goes to a temporary file (a pipe could fill up and stall the tests).
With a timeout (the deploy's --timeout), tests still running when it passes are killed, with every process they
started (their own process group), and wait() raises ModelTestsTimeout.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable

from akerbp.mlops.errors import MlopsError
from akerbp.mlops.utils.logger import mask
from akerbp.mlops.utils.processes import kill_session

TAIL_LINES = 60
NO_TESTS_COLLECTED = 5  # pytest's exit code
_SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+)(?: in [\d.]+s.*)?=*\s*$")


@dataclass
class ModelTestResult:
    passed: bool
    summary: str  # e.g. "22 passed", "1 failed, 21 passed", "no tests collected"
    output: str
    seconds: float
    returncode: int | None  # None: killed at the timeout

    def tail(self, lines: int = TAIL_LINES) -> str:
        kept = self.output.rstrip().splitlines()[-lines:]
        return "\n".join(kept)


class ModelTestsTimeout(MlopsError):
    """The model tests were still running when the deploy's time was up."""


class ModelTests:
    """`python -m pytest <test_file> -q` with cwd and PYTHONPATH = the repo root; `timeout` (seconds from now,
    None: no limit) bounds them. A file that collects no tests fails unless allow_no_tests (the model's setting):
    "no tests" must not pass for "the tests passed"."""

    def __init__(self, root: Path, test_file: Path, timeout: float | None = None, allow_no_tests: bool = False,
                 start: bool = True):
        self.root, self.test_file, self.timeout = Path(root), Path(test_file), timeout
        self.allow_no_tests = allow_no_tests
        self._process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._started = time.monotonic()
        self._deadline: float | None = None
        self._result: ModelTestResult | None = None
        if start:
            self.start()

    @property
    def started(self) -> bool:
        return self._process is not None

    def start(self, deadline: float | None = None) -> None:
        """Start pytest (once; start=False in the constructor defers it: a deploy that expects `unchanged` starts
        the tests only when its plan needs them). `deadline` (time.monotonic()) may cut the timeout short."""
        if self._process is not None:
            return
        self._output = tempfile.TemporaryFile(mode="w+b")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the model code that gets deployed
        env["PYTHONUNBUFFERED"] = "1"  # tests that get killed still show how far they got
        command = [sys.executable, "-m", "pytest", str(self.test_file), "-q", "-p", "no:cacheprovider"]
        self._started = time.monotonic()
        limits = [t for t in (None if self.timeout is None else self._started + self.timeout, deadline)
                  if t is not None]
        self._deadline = min(limits) if limits else None
        self._process = subprocess.Popen(command, cwd=self.root, env=env, stdout=self._output,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def wait(self, stop: Callable[[], None] | None = None) -> ModelTestResult:
        """The tests' result; ModelTestsTimeout (the tests killed) if they do not end within the timeout.
        `stop` is called while waiting: an exception from it (a Ctrl-C noticed) kills the tests and propagates."""
        if self._result is not None:
            if self._result.returncode is None:
                raise ModelTestsTimeout(self._result.summary)
            return self._result
        self.start()
        process = self._process
        assert process is not None
        try:
            code = None
            while code is None:
                remaining = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                try:
                    code = process.wait(timeout=remaining if stop is None else min(remaining or 0.2, 0.2))
                except subprocess.TimeoutExpired:
                    if self._deadline is not None and time.monotonic() >= self._deadline:
                        raise
                    if stop is not None:
                        try:
                            stop()
                        except BaseException:
                            self._kill()
                            raise
        except subprocess.TimeoutExpired:
            self._kill()
            output = self._read_output()
            tail = "\n".join(output.rstrip().splitlines()[-TAIL_LINES:])
            limit = f"{self.timeout:g} s" if self.timeout is not None else "the deploy's time"
            summary = (f"model tests did not finish within {limit} (--timeout): they were stopped"
                       + (f"; the end of pytest's output:\n{tail}" if tail.strip() else ""))
            self._result = ModelTestResult(False, summary, output, time.monotonic() - self._started, None)
            raise ModelTestsTimeout(summary) from None
        seconds = time.monotonic() - self._started
        output = self._read_output()
        summary = _summary(output) or f"pytest exited with code {code}"
        passed = code == 0
        if code == NO_TESTS_COLLECTED:
            passed = self.allow_no_tests
            summary = "no tests collected" + ("" if passed else (
                f" from {self.test_file.name}: add tests, or set allow_no_tests=True in the model's settings to "
                "deploy it untested"))
        self._result = ModelTestResult(passed, summary, output, seconds, code)
        return self._result

    def stop(self) -> None:
        """Stop the tests if they still run (the deploy of this model failed for another reason)."""
        if self._result is None and self._process is not None and self._process.poll() is None:
            self._kill()
        if self._output is not None and not self._output.closed:
            self._output.close()

    def _kill(self) -> None:
        if self._process is not None:
            kill_session(self._process)  # the subprocess and whatever it started

    def _read_output(self) -> str:
        assert self._output is not None  # started
        self._output.seek(0)
        output = mask(self._output.read().decode("utf-8", "replace"))
        self._output.close()
        return output


def _summary(output: str) -> str | None:
    for line in reversed(output.strip().splitlines()):
        match = _SUMMARY.match(line.strip())
        if match:
            return match.group(1).strip().rstrip(",")
    return None
