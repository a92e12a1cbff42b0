"""Shared fixtures: a real local CDF over HTTP and a real cognite-sdk client talking to it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from akerbp.mlops.local_cdf import Limits, LocalCDF
from support import CLEARED

# CI runs this suite with CI=true, which makes the framework refuse a throwaway local CDF. Tests start from a
# laptop-like environment; the tests of the CI and API-key guards set what they need themselves.
# The scripts and CLI subprocesses the tests start run `mlops` from PATH: put this interpreter's bin first, so the
# suite never depends on the venv being activated (nor picks up another `mlops` installed elsewhere).
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])




@pytest.fixture(autouse=True)
def laptop_environment(monkeypatch):
    for name in list(os.environ):
        if name in CLEARED or name.startswith("COGNITE_") or name.startswith("MLOPS_SECRET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def unsandboxed(monkeypatch):
    """For tests of the local CDF's own process handling, whose handlers write host files or report host pids: no
    bubblewrap sandbox (it hides the host's /tmp and gives workers pids of their own namespace)."""
    monkeypatch.setenv("MLOPS_LOCAL_CDF_SANDBOX", "off")


@pytest.fixture
def local_cdf(tmp_path):
    with LocalCDF(tmp_path / "cdf", limits=Limits(call_timeout_s=30)) as cdf:
        yield cdf


@pytest.fixture
def client(local_cdf):
    return local_cdf.client(project="test")
