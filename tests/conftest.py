"""Shared fixtures: a real local CDF over HTTP and a real cognite-sdk client talking to it."""
from __future__ import annotations

import compileall
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from akerbp.mlops.local_cdf import Limits, LocalCDF
from akerbp.mlops.local_cdf.runtime.environments import CACHE_ENV
from support import CLEARED

# CI runs this suite with CI=true, which makes the framework refuse a throwaway local CDF. Tests start from a
# laptop-like environment; the tests of the CI and API-key guards set what they need themselves.
# The scripts and CLI subprocesses the tests start run `mlops` from PATH: put this interpreter's bin first, so the
# suite never depends on the venv being activated (nor picks up another `mlops` installed elsewhere).
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])

# One venv cache for every local CDF of the session (the xdist workers inherit it from the controller, which imports
# this file first): a function venv is built once per requirements, not once per data dir. Builds are keyed by content
# and file-locked, so workers share it safely; the tests of a first build (test_environments.py) use their own.
_VENV_CACHE: str | None = None
if not os.environ.get(CACHE_ENV):
    _VENV_CACHE = os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="mlops-test-venvs-")


# This machine (and CI) may set PYTHONDONTWRITEBYTECODE, and Repo.env() sets it for the CLI subprocesses: then no
# process writes akerbp's bytecode and every one of the suite's hundreds of `mlops` subprocesses compiles the
# framework again. Compile it once here (compileall skips what is up to date; imports still check each file's mtime,
# so an edited module is recompiled, never run stale). Function folders never bundle __pycache__ (build.IGNORED).
if not os.environ.get("PYTEST_XDIST_WORKER"):
    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "akerbp"), quiet=2)


# The modules that take longest, in seconds of a full run (rounded; only their order matters): they start first.
# xdist's loadscope hands out whole modules, by default in order of their number of tests, which starts these last
# (most of them are a few tests of 20-110 s each); one of them still running alone at the end leaves the other core
# idle. Longest first, the last modules handed out are short. A module not listed starts after these.
SLOW_MODULES = {
    "tests/deployment/test_interrupts.py": 110, "tests/deployment/test_deploy.py": 90,
    "tests/ui/test_browser.py": 80, "tests/deployment/test_concurrency.py": 75,
    "tests/automations/test_scenarios.py": 45, "tests/deployment/test_verified_hint.py": 43,
    "tests/deployment/test_plan.py": 40, "tests/cli/test_init.py": 40, "tests/local_cdf/test_functions.py": 38,
    "tests/local_cdf/test_environments.py": 35, "tests/registry/test_dev_artifacts.py": 33,
    "tests/local_cdf/test_api.py": 32, "tests/automations/test_cli.py": 28, "tests/cli/test_targets.py": 27,
    "tests/registry/test_registry.py": 26, "tests/deployment/test_rollback.py": 25,
    "tests/automations/test_metric_trigger.py": 25, "tests/automations/test_steps.py": 21,
    "tests/pipeline/test_github.py": 20, "tests/pipeline/test_pipeline_run.py": 17,
}


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # xdist loaded: hand modules out in the collection's order
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    # A stable sort: each module's tests stay together and in their order (module-scoped states rely on it).
    items.sort(key=lambda item: -SLOW_MODULES.get(item.nodeid.split("::")[0], 0))


def pytest_unconfigure(config):
    if _VENV_CACHE is not None:  # the process that made it, after the workers ended
        shutil.rmtree(_VENV_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def laptop_environment(monkeypatch):
    for name in list(os.environ):
        if name in CLEARED or name.startswith("COGNITE_") or name.startswith("MLOPS_SECRET_"):
            monkeypatch.delenv(name)
    # Every deploy a test starts runs the model's tests in a pytest subprocess, which would load this venv's
    # plugins (xdist, anyio: ~0.6 s of CPU each time, hundreds of times in a run); model tests use none of them.
    # The suite's own processes started before this is set, so they keep theirs.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def unsandboxed(monkeypatch):
    """For tests of the local CDF's own process handling, whose handlers write host files or report host pids: no
    bubblewrap sandbox (it hides the host's /tmp and gives workers pids of their own namespace)."""
    monkeypatch.setenv("MLOPS_LOCAL_CDF_SANDBOX", "off")


@pytest.fixture
def own_venv_cache(monkeypatch):
    """For tests of how a data dir builds and caches its venvs: its own venvs/ folder, not the session's cache."""
    monkeypatch.delenv(CACHE_ENV)


@pytest.fixture
def local_cdf(tmp_path):
    with LocalCDF(tmp_path / "cdf", limits=Limits(call_timeout_s=30)) as cdf:
        yield cdf


@pytest.fixture
def client(local_cdf):
    return local_cdf.client(project="test")
