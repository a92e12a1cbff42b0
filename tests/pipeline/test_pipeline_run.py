"""`mlops pipeline run` end to end: the repo's own bitbucket-pipelines.yml, run here against a local CDF, deploys what
Bitbucket would deploy for a branch (real scripts, real `mlops deploy`, real function builds and calls)."""
from __future__ import annotations

import json
import shutil

import pytest

from akerbp.mlops import model_manager
from model_code.test_model import ServiceTest
from support import REPO, Repo, TEMPLATE_SETTINGS, copy_template

# Training in prod is allowed only with a deployment condition the new version meets.
SETTINGS = TEMPLATE_SETTINGS.replace(
    'artifact_folder="model_artifact",',
    'artifact_folder="model_artifact", deployment_condition={"metric": "r2", "direction": "above", "threshold": 0.5},',
)


@pytest.fixture
def repo(tmp_path):
    root = copy_template(tmp_path / "repo")
    (root / "mlops_settings.py").write_text(SETTINGS)
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


def test_trainpred_deploys_training_and_prediction_and_prod_training_needs_its_condition(repo):
    run = repo.run("mlops", "pipeline", "run", "--branch", "trainpred/new-features")
    assert run.code == 0, run.stderr
    trained = model_manager.get_model_version("well_density", "test", client=repo.client)
    assert live(repo) == {"well_density-training-test": "", "well_density-prediction-test": trained["model_id"]}

    run = repo.run("mlops", "pipeline", "run", "--branch", "trainpred/new-features", "--include-manual")
    assert run.code == 0, run.stderr
    in_prod = model_manager.get_model_version("well_density", "prod", client=repo.client)
    assert json.loads(in_prod["metadata"]["metrics"])["r2"] >= 0.5  # trained in prod: the condition was met
    assert live(repo)["well_density-prediction-prod"] == in_prod["model_id"]
    assert "well_density-training-prod" in live(repo)


def test_a_feature_branch_deploys_nothing(repo):
    run = repo.run("mlops", "pipeline", "show", "--branch", "feature/x")
    assert run.code == 0
    assert live(repo) == {}
