"""What a newcomer's first dev deploys hit: which artifact an id names, a missing artifact folder, a test file that
collects no tests, an unknown --model. Each test deploys a copy of the template repo to its own local CDF."""
from __future__ import annotations

import re
import shutil

import pytest

from akerbp.mlops import model_manager
from akerbp.mlops.deployment.artifacts import local_model_id
from model_code.test_model import ServiceTest
from support import Repo, TEMPLATE_SETTINGS, copy_template


@pytest.fixture
def repo(tmp_path):
    repo = Repo(copy_template(tmp_path / "repo"))
    yield repo
    repo.close()


def pin(repo: Repo, version: int) -> None:
    (repo.root / "mlops_settings.py").write_text(TEMPLATE_SETTINGS.replace(
        'artifact_folder="model_artifact",', f'artifact_folder="model_artifact", artifact_version={version},'))


def test_one_id_names_one_artifact_and_a_dev_training_run_is_deployed_by_pinning_it(repo):
    # A dev training service: its smoke call trains and uploads the registry's dev version 1.
    trained = repo.deploy("--json", service="training")
    assert trained.code == 0, trained.stderr
    registry = model_manager.get_model_version("well_density", "dev", client=repo.client)
    assert registry["model_id"] == "well_density/dev/1"

    # The dev prediction deploy serves the local folder, under an id of its own (not the registry's dev/1).
    local = repo.deploy("--json")
    assert local.code == 0, local.stderr
    local_id = local.result()["model_id"]
    assert local_id == local_model_id("well_density", repo.root / "model_artifact") != registry["model_id"]
    assert re.fullmatch(r"well_density/dev/local-[0-9a-f]{10}", local_id)
    assert repo.call("well_density-prediction-dev", ServiceTest.prediction_input)["model_id"] == local_id

    # Other content, other id.
    (repo.root / "model_artifact" / "notes.txt").write_text("retrained by hand\n")
    assert local_model_id("well_density", repo.root / "model_artifact") != local_id

    # The trained version: pin it.
    pin(repo, registry["version"])
    pinned = repo.deploy("--json")
    assert pinned.code == 0, pinned.stderr
    assert pinned.result()["model_id"] == "well_density/dev/1" and pinned.result()["version"] == 1
    answer = repo.call("well_density-prediction-dev", ServiceTest.prediction_input)
    assert answer["model_id"] == "well_density/dev/1" and ServiceTest.prediction_check(answer)


def test_a_missing_artifact_folder_is_named_by_deploy_and_by_validate(repo):
    shutil.rmtree(repo.root / "model_artifact")
    run = repo.deploy("--json")
    assert run.code == 2, run.stderr
    message = run.result()["message"]
    assert "field 'artifact_folder': folder model_artifact was not found" in message
    assert "no version in dev" not in message and "upload one" not in message

    plain = repo.cli("settings", "validate")
    assert plain.code == 0, plain.stderr
    assert "ENV=dev deploys would refuse model 'well_density': field 'artifact_folder': folder model_artifact was " \
           "not found" in plain.stderr
    dev = repo.cli("settings", "validate", "--env", "dev")
    assert dev.code == 2 and "folder model_artifact was not found" in dev.stderr


NO_TESTS = '''
class ServiceTest:
    prediction_input = {"data": [{"GR": 35.0, "NPHI": 0.18, "DEPTH": 1800.0}]}

    @staticmethod
    def prediction_check(output):
        return output.get("status") == "ok"
'''


def test_a_test_file_collecting_no_tests_stops_the_deploy_unless_the_settings_allow_it(repo):
    (repo.root / "model_code" / "test_model.py").write_text(NO_TESTS)
    refused = repo.deploy("--dry-run", "--json")
    assert refused.code == 1, refused.stderr
    message = refused.result()["message"]
    assert refused.result()["result"] == "failed"
    assert message.startswith("model tests failed: no tests collected from test_model.py: add tests, or set "
                              "allow_no_tests=True"), message
    assert "above" not in message  # --json: the JSON is all of stdout; pytest's output went to stderr
    assert "on stderr" in message

    (repo.root / "mlops_settings.py").write_text(TEMPLATE_SETTINGS.replace(
        'artifact_folder="model_artifact",', 'artifact_folder="model_artifact", allow_no_tests=True,'))
    allowed = repo.deploy("--dry-run", "--json")
    assert allowed.code == 0, allowed.stderr
    assert allowed.result()["result"] == "would deploy"


def test_an_unknown_model_given_to_deploy_is_the_one_unknown_model_error(repo):
    run = repo.deploy("--model", "wel_density")
    assert run.code == 2
    assert "unknown model 'wel_density': the known models are well_density (in the settings)" in run.stderr
