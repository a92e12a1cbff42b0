"""The local hint .mlops/verified/{function}.json: an unchanged redeploy whose hint matches starts neither the model
tests nor the ServiceTest process; a matching hint with other content live still runs them; a corrupt hint is
ignored and rewritten. The model's test file records every process that imports it (pytest, or the ServiceTest
process run with `python -c`) in a marker file (real CLI subprocesses, a real local CDF)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from akerbp.mlops.deployment import verified_hint
from support import Repo, change_code, copy_template, verified_live

LIVE = "well_density-prediction-dev"
RECORD_IMPORT = '''

import os as _os
import sys as _sys

if _os.environ.get("MLOPS_TEST_MARKER"):  # which process imported this file: the deploy's tests are asserted on it
    with open(_os.environ["MLOPS_TEST_MARKER"], "a") as _marker:
        _marker.write(("ServiceTest" if _sys.argv[0] == "-c" else "pytest") + "\\n")
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_template(tmp_path_factory.mktemp("hint") / "repo")
    test_file = root / "model_code" / "test_model.py"
    test_file.write_text(test_file.read_text() + RECORD_IMPORT)
    repo = Repo(root, isolation=None)
    yield repo
    repo.close()


def hint_file(repo: Repo) -> Path:
    return repo.root / ".mlops" / "verified" / f"{LIVE}.json"


def deploy(repo: Repo, marker: Path, *args: str) -> tuple[dict, str, list[str]]:
    """(the result, stderr, the processes that imported the test file) of one deploy."""
    marker.unlink(missing_ok=True)
    run = repo.deploy("--json", *args, MLOPS_TEST_MARKER=str(marker))
    assert run.code == 0, run.stderr
    imported = marker.read_text().split() if marker.exists() else []
    return run.result(), run.stderr, imported


def baseline(repo: Repo, marker: Path) -> str:
    """The hash of the repo's content, live and verified with its hint written: what the test before left (each
    leaves it so), else a deploy's."""
    return verified_live(repo, LIVE) or deploy(repo, marker)[0]["hash"]


def test_an_unchanged_redeploy_with_a_matching_hint_starts_no_model_tests(repo, tmp_path):
    first, _, imported = deploy(repo, tmp_path / "marker")
    assert first["result"] in ("deployed", "unchanged") and "pytest" in imported and "ServiceTest" in imported
    hint = verified_hint.read(hint_file(repo))
    assert hint is not None and hint.content_hash == first["hash"]

    result, stderr, imported = deploy(repo, tmp_path / "marker")
    assert result["result"] == "unchanged" and result["hash"] == first["hash"]
    assert imported == [], stderr  # neither pytest nor the ServiceTest process was started
    assert "model tests not rerun" in stderr and "the model tests wait for the plan" in stderr
    assert not [p for p in hint_file(repo).parent.iterdir() if p.name.endswith(".tmp")]  # written atomically


def test_a_matching_hint_with_other_content_live_still_runs_the_tests(repo, tmp_path):
    baseline(repo, tmp_path / "marker")
    model, hint = repo.root / "model_code" / "model.py", hint_file(repo)
    code, verified = model.read_text(), hint.read_text()
    change_code(repo.root, "someone else's")
    other, _, _ = deploy(repo, tmp_path / "marker")  # other content goes live (as from another copy of the repo)
    assert other["result"] == "deployed"
    model.write_text(code)
    hint.write_text(verified)  # the hint matches these inputs again, but the live function runs other content

    result, stderr, imported = deploy(repo, tmp_path / "marker")
    assert result["result"] == "deployed" and result["hash"] != other["hash"]
    assert "starting the model tests: the plan is replace" in stderr
    assert "model tests passed" in stderr and "service test passed" in stderr
    assert "pytest" in imported and "ServiceTest" in imported


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": 1, "content_hash": 3}), ""])
def test_a_corrupt_hint_is_ignored_and_rewritten(repo, tmp_path, content):
    first = baseline(repo, tmp_path / "marker")
    hint_file(repo).write_text(content)

    result, stderr, imported = deploy(repo, tmp_path / "marker")
    assert result["result"] == "unchanged" and "the model tests wait for the plan" not in stderr
    assert "ServiceTest" in imported  # started first, as without a hint
    hint = verified_hint.read(hint_file(repo))
    assert hint is not None and hint.content_hash == first == result["hash"]
