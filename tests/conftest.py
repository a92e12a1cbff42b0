"""Shared fixtures: a real local CDF over HTTP and a real cognite-sdk client talking to it."""
from __future__ import annotations

import pytest

from akerbp.mlops.local_cdf import Limits, LocalCDF


@pytest.fixture
def local_cdf(tmp_path):
    with LocalCDF(tmp_path / "cdf", limits=Limits(call_timeout_s=30)) as cdf:
        yield cdf


@pytest.fixture
def client(local_cdf):
    return local_cdf.client(project="test")
