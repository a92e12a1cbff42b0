"""Shared fixtures: a real local CDF over HTTP and a real cognite-sdk client talking to it."""
from __future__ import annotations

import os

import pytest

from akerbp.mlops.local_cdf import Limits, LocalCDF

# CI runs this suite with CI=true, which makes the framework refuse a throwaway local CDF. Tests start from a
# laptop-like environment; the tests of the CI and API-key guards set what they need themselves.
CLEARED = ("CI", "BITBUCKET_BUILD_NUMBER", "MLOPS_LOCAL_CDF", "MLOPS_LOCAL_CDF_DIR", "ENV", "LOCAL_DEPLOYMENT")


@pytest.fixture(autouse=True)
def laptop_environment(monkeypatch):
    for name in list(os.environ):
        if name in CLEARED or name.startswith("COGNITE_") or name.startswith("MLOPS_SECRET_"):
            monkeypatch.delenv(name)


@pytest.fixture
def local_cdf(tmp_path):
    with LocalCDF(tmp_path / "cdf", limits=Limits(call_timeout_s=30)) as cdf:
        yield cdf


@pytest.fixture
def client(local_cdf):
    return local_cdf.client(project="test")
