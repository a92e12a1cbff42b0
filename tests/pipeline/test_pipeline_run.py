"""`mlops pipeline run` end to end: the repo's own bitbucket-pipelines.yml, run here against a local CDF, deploys what
Bitbucket would deploy for a branch (real scripts, real `mlops deploy`, real function builds and calls). A trainpred
branch's pipeline, prod training and its condition included, runs in tests/cli/test_init.py on the scaffold `mlops
init` makes (the suite's one full run of it: four deploys)."""
from __future__ import annotations

import shutil

import pytest

from akerbp.mlops import model_manager
from model_code.test_model import ServiceTest
from support import REPO, Repo, copy_template


@pytest.fixture
def repo(tmp_path):
    root = copy_template(tmp_path / "repo")
    shutil.copy(REPO / "bitbucket-pipelines.yml", root / "bitbucket-pipelines.yml")
    repo = Repo(root)
    yield repo
    repo.close()


def live(repo: Repo) -> dict[str, str]:
    """Live mlops functions -> the model version they serve ("" for training)."""
    return {xid: (f.metadata or {}).get("mlops_model_id", "")
            for xid, f in repo.functions().items() if f.metadata and xid == f.metadata.get("mlops_model") + "-"
            + f.metadata.get("mlops_service") + "-" + f.metadata.get("mlops_env")}


def test_master_deploys_prediction_to_test_only_and_manual_steps_reach_prod(repo):
    first = model_manager.upload_new_model_version("well_density", "test", REPO / "model_artifact",
                                                   client=repo.client)
    run = repo.run("mlops", "pipeline", "run", "--branch", "master")
    assert run.code == 0, run.stderr
    assert live(repo) == {"well_density-prediction-test": first["model_id"]}
    assert "manual" in run.stdout + run.stderr  # the prod step was skipped, and says why

    model_manager.promote_model("well_density", first["version"], to_env="prod", client=repo.client)
    run = repo.run("mlops", "pipeline", "run", "--branch", "master", "--include-manual")
    assert run.code == 0, run.stderr
    assert live(repo) == {"well_density-prediction-test": first["model_id"],
                          "well_density-prediction-prod": f"well_density/prod/{first['version']}"}
    answer = repo.call("well_density-prediction-prod", ServiceTest.prediction_input)
    assert ServiceTest.prediction_check(answer) and answer["model_id"] == f"well_density/prod/{first['version']}"


def test_a_feature_branch_deploys_nothing(repo):
    run = repo.run("mlops", "pipeline", "show", "--branch", "feature/x")
    assert run.code == 0
    assert live(repo) == {}
