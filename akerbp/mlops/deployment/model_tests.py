"""Step 1 of a deploy: the model's own pytest tests, in a subprocess per model.

A subprocess so one model's modules (and its test fixtures' side effects) never leak into another model's tests
or into the deploy process. It starts at once and runs while the deploy step fetches artifacts and builds the
folder; `wait()` joins it. Output goes to a temporary file (a pipe could fill up and stall the tests).
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

from akerbp.mlops.utils.logger import mask

TAIL_LINES = 60
NO_TESTS_COLLECTED = 5  # pytest's exit code
_SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+)(?: in [\d.]+s.*)?=*\s*$")


@dataclass
class ModelTestResult:
    passed: bool
    summary: str  # e.g. "22 passed", "1 failed, 21 passed", "no tests collected"
    output: str
    seconds: float
    returncode: int

    def tail(self, lines: int = TAIL_LINES) -> str:
        kept = self.output.rstrip().splitlines()[-lines:]
        return "\n".join(kept)


class ModelTests:
    """`python -m pytest <test_file> -q` with cwd and PYTHONPATH = the repo root."""

    def __init__(self, root: Path, test_file: Path):
        self.root, self.test_file = Path(root), Path(test_file)
        self._output = tempfile.TemporaryFile(mode="w+b")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(self.root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ in the model code that gets deployed
        command = [sys.executable, "-m", "pytest", str(self.test_file), "-q", "-p", "no:cacheprovider"]
        self._started = time.monotonic()
        self._process = subprocess.Popen(command, cwd=self.root, env=env, stdout=self._output,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._result: ModelTestResult | None = None

    def wait(self) -> ModelTestResult:
        if self._result is not None:
            return self._result
        code = self._process.wait()
        seconds = time.monotonic() - self._started
        self._output.seek(0)
        output = mask(self._output.read().decode("utf-8", "replace"))
        self._output.close()
        summary = _summary(output) or f"pytest exited with code {code}"
        if code == NO_TESTS_COLLECTED:
            summary = "no tests collected"
        self._result = ModelTestResult(code in (0, NO_TESTS_COLLECTED), summary, output, seconds, code)
        return self._result

    def stop(self) -> None:
        """Stop the tests if they still run (the deploy of this model failed for another reason)."""
        if self._result is None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        if not self._output.closed:
            self._output.close()


def _summary(output: str) -> str | None:
    for line in reversed(output.strip().splitlines()):
        match = _SUMMARY.match(line.strip())
        if match:
            return match.group(1).strip().rstrip(",")
    return None
