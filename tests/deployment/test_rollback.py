"""`mlops rollback` end to end: deployments made by the deploy script, rolled back by the CLI in a subprocess,
against a local CDF served by this test process (the further rollbacks and the refusals: the same CLI in this
process, Repo.cli). The tests share one repo and one local CDF and run in order."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from akerbp.mlops import audit, model_manager
from support import REPO, Repo

SECRET = "rollback-s3cret-value"
FILES = {
    "mlops_settings.py": '''
        from akerbp.mlops import ModelSettings

        models = [ModelSettings(model_name="scaler", model_file="scaler_code/model.py",
                                req_file="scaler_code/requirements.model", test_file="scaler_code/test_model.py",
                                artifact_folder="artifact", secrets=["api-key"],
                                analytics={"enabled": False})]  # as support.TEMPLATE_SETTINGS: a faster worker
    ''',
    "scaler_code/__init__.py": "",
    "scaler_code/requirements.model": "# nothing to install\n",
    "scaler_code/model.py": '''
        import json
        from pathlib import Path


        class ModelException(Exception):
            pass


        def initialization(folder, secrets):
            if secrets.get("api-key") != "rollback-s3cret-value":
                raise ModelException("the api-key secret did not reach the function")
            return json.loads((Path(folder) / "factor.json").read_text())["factor"]


        def predict(data, factor, secrets):
            return [x * factor for x in data["x"]]


        def train(data, folder, secrets):
            Path(folder, "factor.json").write_text(json.dumps({"factor": 2}))
            return {}
    ''',
    "scaler_code/test_model.py": '''
        from scaler_code import model


        class ServiceTest:
            prediction_input = {"x": [1]}

            @staticmethod
            def prediction_check(output):
                return output["status"] == "ok" and len(output["prediction"]) == 1


        def test_predict():
            assert model.predict({"x": [2]}, 3, {}) == [6]
    ''',
    "artifact/factor.json": '{"factor": 1}',
}
XID = "scaler-prediction-test"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollback") / "repo"
    for relative, text in FILES.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(text).lstrip())
    shutil.copy(REPO / "deploy_prediction_service.sh", root)
    repo = Repo(root)
    yield repo
    repo.close()


def upload(repo: Repo, factor: int, tmp: Path) -> int:
    folder = tmp / f"factor-{factor}"
    folder.mkdir()
    (folder / "factor.json").write_text(json.dumps({"factor": factor}))
    return model_manager.upload_new_model_version("scaler", "test", folder, client=repo.client)["version"]


def answer(repo: Repo) -> tuple[str, list]:
    response = repo.call(XID, {"x": [1]})
    return response["model_id"], response["prediction"]


def test_rollback_without_previous_deployments_says_so(repo):
    run = repo.cli("rollback", "scaler", "--env", "test", MLOPS_SECRET_API_KEY=SECRET)
    assert run.code == 1 and "no previous deployment of scaler-prediction-test is kept" in run.stderr
    unknown = repo.cli("rollback", "nope", "--env", "test")
    assert unknown.code == 2 and "unknown model 'nope': the known models are scaler" in unknown.stderr


def test_rollback_to_the_previous_and_to_a_version_without_tests_or_rebuild(repo, tmp_path):
    for factor in (10, 20, 30):
        upload(repo, factor, tmp_path)
        run = repo.deploy("--json", ENV="test", MLOPS_SECRET_API_KEY=SECRET)
        assert run.code == 0, run.stderr
        assert SECRET not in run.stdout + run.stderr
    assert answer(repo) == ("scaler/test/3", [30])
    assert len(repo.code_files(XID)) == 3

    listed = repo.cli("rollback", "scaler", "--env", "test", "--list", "--json")
    rows = json.loads(listed.stdout)
    assert [r["version"] for r in rows] == ["3", "2", "1"] and [r["live"] for r in rows] == [True, False, False]

    back = repo.run("mlops", "rollback", "scaler", "--env", "test", "--json", MLOPS_SECRET_API_KEY=SECRET)
    assert back.code == 0, back.stderr
    result = json.loads(back.stdout)
    assert result["result"] == "rolled back" and result["gap_seconds"] > 0
    assert result["from_deployment"]["version"] == "3" and result["to_deployment"]["version"] == "2"
    assert "model tests" not in back.stderr and SECRET not in back.stdout + back.stderr
    assert answer(repo) == ("scaler/test/2", [20])  # the secret reached the function again (initialization checks)
    record = audit.history(repo.client, "scaler", "test")[0]
    assert (record["action"], record["outcome"], record["version"]) == ("rollback", "success", "2")

    to_first = repo.cli("rollback", "scaler", "--env", "test", "--to-version", "1", MLOPS_SECRET_API_KEY=SECRET)
    assert to_first.code == 0, to_first.stderr
    assert "rolled back to version 1" in to_first.stdout
    assert answer(repo) == ("scaler/test/1", [10])

    again = repo.cli("rollback", "scaler", "--env", "test", MLOPS_SECRET_API_KEY=SECRET)
    assert again.code == 0, again.stderr
    assert answer(repo) == ("scaler/test/2", [20])  # the previous deployment is the one rolled away from
    standbys = [x for x in repo.functions() if x.startswith(f"{XID}-")]
    assert standbys == []  # one function per service between deploys

    missing = repo.cli("rollback", "scaler", "--env", "test", "--to-version", "3")
    assert missing.code == 2 and "needs its secrets: set MLOPS_SECRET_API_KEY" in missing.stderr


def test_a_new_deploy_keeps_the_code_of_the_two_previous_deployments(repo, tmp_path):
    kept_before = {f.metadata["mlops_version"] for f in repo.code_files(XID)}
    assert kept_before == {"1", "2", "3"}
    upload(repo, 40, tmp_path)
    run = repo.deploy("--json", ENV="test", MLOPS_SECRET_API_KEY=SECRET)
    assert run.code == 0, run.stderr
    # Live: 4; the two deployments before it: 2 (live before) and 1 (live before that); 3 is the oldest.
    assert {f.metadata["mlops_version"] for f in repo.code_files(XID)} == {"4", "2", "1"}
    assert answer(repo) == ("scaler/test/4", [40])
