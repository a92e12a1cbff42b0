"""`mlops deploy` end to end: the deploy scripts run in a subprocess from a copy of a model repo, against a local CDF
served by this test process (real cognite-sdk over HTTP, real function builds and calls, no mocks).

Tests in a module share one repo copy and one local CDF (module-scoped, for speed). A test that needs an earlier
state (a model deployed, a registry version) asks for it through a fixture that makes it when it is missing, so any
test also runs alone (`pytest -k NAME`).
"""
from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import pytest

from akerbp.mlops import audit, model_manager
from akerbp.mlops.deployment import artifacts, build, functions, release
from akerbp.mlops.deployment.model_tests import ModelTests, ModelTestsTimeout
from akerbp.mlops.deployment.options import FunctionOptions
from akerbp.mlops.deployment.service_check import ServiceTest as ServiceTestProcess
from akerbp.mlops.deployment.service_check import ServiceTestError
from akerbp.mlops.errors import UsageError
from akerbp.mlops.local_cdf import LocalCDF
from akerbp.mlops.settings import load_settings
from model_code.test_model import ServiceTest
from support import REPO, Repo, TEMPLATE_SETTINGS, TWO_MODEL_SETTINGS, copy_template, fault_rules, inject_faults, write_two_model_repo


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    repo = Repo(copy_template(tmp_path_factory.mktemp("template") / "repo"))
    yield repo
    repo.close()


def ensure_deployed(repo: Repo, xid: str, *args: str, **env) -> object:
    """The live function xid, deployed now (with the deploy script's args) if it is not live and Ready."""
    live = repo.functions().get(xid)
    if live is None or live.status != "Ready":
        run = repo.deploy(*args, **env)
        assert run.code == 0, run.stderr
        live = repo.functions()[xid]
    return live


@pytest.fixture
def dev_deployed(template):
    """The template model's prediction service live in dev."""
    return ensure_deployed(template, "well_density-prediction-dev")


# --- the function folder (no CDF needed) --------------------------------------------------------------------------

def test_the_function_folder_is_complete_deterministic_and_hashes_what_matters(tmp_path):
    root = copy_template(tmp_path / "repo")
    (root / "schema.json").write_text('{"type": "object", "required": ["data"]}')
    (root / "model_code" / "requirements.model").write_text("numpy>=1.24\nakerbp.mlops==0.1.0\n")
    (root / "model_code" / "__pycache__").mkdir(exist_ok=True)
    (root / "model_code" / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"stale")
    (root / "mlops_settings.py").write_text(TEMPLATE_SETTINGS.replace(
        'artifact_folder="model_artifact",', 'artifact_folder="model_artifact", input_schema="schema.json", '
        'secrets=["api-key"],'))
    model = load_settings(root / "mlops_settings.py")[0]

    def make(service="prediction", model_id="well_density/dev/1", secret="first-secret"):
        artifact = model.artifact_path if service == "prediction" else None
        return build.build_folder(model, service, "dev", artifact=artifact, model_id=model_id,
                                  secrets={"api-key": secret})

    built = make()
    assert (root / ".mlops" / "build" / "well_density-prediction-dev").resolve() == built.path.resolve()  # latest
    for name in ("handler.py", "requirements.txt", "mlops_service_settings.json", "mlops_function.json", "schema.json",
                 "artifact/model.json", "model_code/model.py", "model_code/test_model.py",
                 "akerbp/mlops/services/runtime.py", "akerbp/mlops/registry/versions.py", "akerbp/mlops/audit.py"):
        assert name in built.files, name
    assert not [n for n in built.files if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in built.files if n.startswith(("akerbp/mlops/cli/", "akerbp/mlops/deployment/",
                                                        "akerbp/mlops/local_cdf/", "akerbp/mlops/settings"))]
    assert (built.path / "requirements.txt").read_text().splitlines()[0] == "numpy>=1.24"
    assert "akerbp.mlops==" not in (built.path / "requirements.txt").read_text()
    assert "jsonschema" in (built.path / "requirements.txt").read_text()
    service = json.loads((built.path / "mlops_service_settings.json").read_text())
    assert (service["model_id"], service["artifact_folder"], service["input_schema"], service["model_module"]) == \
        ("well_density/dev/1", "artifact", "schema.json", "model_code.model")
    assert json.loads((built.path / "mlops_function.json").read_text())["secrets"] == ["api-key"]
    assert not [n for n in built.files if b"first-secret" in (built.path / n).read_bytes()]

    again = make()
    assert again.content_hash == built.content_hash and build.zip_folder(again.path) == build.zip_folder(built.path)
    assert make(model_id="well_density/dev/2").content_hash != built.content_hash
    assert make(secret="rotated-secret").content_hash != built.content_hash  # a rotated secret redeploys
    training = make(service="training", model_id=None)
    assert not [n for n in training.files if n.startswith("artifact/")]

    (root / "mlops_settings.py").write_text(TEMPLATE_SETTINGS.replace(
        '"metadata": {"team": "ds"}', '"metadata": {f"k{i}": "v" for i in range(7)}'))
    with pytest.raises(UsageError, match=r"field 'info.prediction.metadata' has 7 pairs.*keep at most 6"):
        build.function_options(load_settings(root / "mlops_settings.py")[0], "prediction", "dev")


def test_concurrent_builds_of_one_model_each_zip_their_own_content(tmp_path):
    root = copy_template(tmp_path / "repo")
    model = load_settings(root / "mlops_settings.py")[0]
    both = threading.Barrier(2, timeout=120)  # a failing thread breaks it for the other
    built: dict[int, tuple] = {}

    def deploy_build(version: int) -> None:  # what a deploy does with its folder: build, then zip (and test) it
        artifact = tmp_path / f"artifact-{version}"
        shutil.copytree(REPO / "model_artifact", artifact)
        (artifact / "version.txt").write_text(str(version))
        both.wait()
        folder = build.build_folder(model, "prediction", "dev", artifact=artifact,
                                    model_id=f"well_density/dev/{version}", secrets={})
        both.wait()  # both folders are built before either is zipped
        built[version] = (folder, build.zip_folder(folder.path))

    threads = [threading.Thread(target=deploy_build, args=(version,)) for version in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads)
    assert built[1][0].content_hash != built[2][0].content_hash
    for version, (folder, zipped) in built.items():
        unzipped = tmp_path / f"unzipped-{version}"
        with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
            archive.extractall(unzipped)
            for info in archive.infolist():
                os.chmod(unzipped / info.filename, (info.external_attr >> 16) & 0o777)
        assert (unzipped / "artifact" / "version.txt").read_text() == str(version)
        assert build.content_hash(build.tree_digest(unzipped)[1], "well_density-prediction-dev", {}) == \
            folder.content_hash

    build_root = root / ".mlops" / "build"
    latest = (build_root / "well_density-prediction-dev").resolve()
    assert latest in {built[1][0].path.resolve(), built[2][0].path.resolve()}
    del folder
    built.clear()  # the deploys are over (nothing refers to their folders): the next build sweeps all but the latest
    third = build.build_folder(model, "prediction", "dev", artifact=REPO / "model_artifact",
                               model_id="well_density/dev/3", secrets={})
    assert sorted(p.name for p in build_root.iterdir()) == sorted(
        ["well_density-prediction-dev", latest.name, third.path.name])


# --- model tests and the ServiceTest honour the deploy's timeout (no CDF needed) -----------------------------------

def ended(pid: int, within: float = 10.0) -> bool:
    """Whether process pid ends (or has ended) within `within` seconds: waits on a pidfd, no polling."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], within)[0])
    finally:
        os.close(fd)


def test_model_tests_that_hang_are_stopped_with_what_they_started_at_the_timeout(tmp_path):
    started = tmp_path / "started.pid"
    test_file = tmp_path / "test_hangs.py"
    test_file.write_text(textwrap.dedent(f'''
        import subprocess, sys, threading
        from pathlib import Path


        def test_waits_forever():
            child = subprocess.Popen([sys.executable, "-c", "import threading; threading.Event().wait()"])
            Path({str(started)!r}).write_text(str(child.pid))
            threading.Event().wait()
    '''))
    tests = ModelTests(tmp_path, test_file, timeout=3)
    with pytest.raises(ModelTestsTimeout, match=r"^model tests did not finish within 3 s \(--timeout\)"):
        tests.wait()
    assert tests._process.poll() is not None
    assert started.exists(), "the hanging test did not start within the 3 s: the machine is too slow for this test"
    assert ended(int(started.read_text())), "a process the tests started survived them"
    with pytest.raises(ModelTestsTimeout):  # asked again, the same answer
        tests.wait()


def test_a_service_test_that_does_not_answer_is_stopped_at_the_timeout(tmp_path):
    (tmp_path / "hangs_on_import.py").write_text("import threading\nthreading.Event().wait()\n")
    with ServiceTestProcess(tmp_path, tmp_path / "hangs_on_import.py", "model 'slow'", timeout=1) as tester:
        with pytest.raises(ServiceTestError,
                           match=r"^model 'slow': ServiceTest did not answer within 1 s \(--timeout\)"):
            tester.input("prediction")
        assert ended(tester._process.pid, within=0)
        with pytest.raises(ServiceTestError, match="did not answer within 1 s"):
            tester.input("prediction")

    (tmp_path / "hangs_in_check.py").write_text(textwrap.dedent('''
        import threading


        class ServiceTest:
            prediction_input = {"x": [1]}

            def prediction_check(self, response):
                threading.Event().wait()
    '''))
    with ServiceTestProcess(tmp_path, tmp_path / "hangs_in_check.py", "model 'slow'", timeout=2) as tester:
        assert tester.input("prediction") == {"x": [1]}
        with pytest.raises(ServiceTestError, match="ServiceTest did not answer within 2 s"):
            tester.check("prediction", {"status": "ok"})


# --- the template model in dev ------------------------------------------------------------------------------------

def test_dev_deploy_to_a_fresh_local_cdf_serves_the_local_artifact(template):
    run = template.deploy("--json")
    assert run.code == 0, run.stderr
    result = run.result()
    # The local folder, under an id the registry never issues (its ids end in a number).
    local_id = artifacts.local_model_id("well_density", template.root / "model_artifact")
    assert result["result"] == "deployed" and result["model_id"] == local_id
    assert re.fullmatch(r"well_density/dev/local-[0-9a-f]{10}", local_id) and result["version"] is None
    assert result["gap_seconds"] is None  # nothing was live: created, not replaced
    response = template.call("well_density-prediction-dev", ServiceTest.prediction_input)
    assert response["model_id"] == local_id and ServiceTest.prediction_check(response)

    fn = template.client.functions.retrieve(external_id="well_density-prediction-dev")
    md = fn.metadata
    assert md["team"] == "ds" and fn.owner == "ds@example.com" and fn.description == "RHOB from logs"
    assert (md["mlops_model"], md["mlops_service"], md["mlops_env"]) == ("well_density", "prediction", "dev")
    assert md.get("mlops_version", "") == "" and md["mlops_model_id"] == local_id  # no registry version
    assert md["mlops_hash"] == result["hash"] and md["mlops_code_file"] == str(result["code_file"])
    assert md["mlops_deployed_at"].endswith("+00:00") and md["mlops_deployed_by"]
    code = template.client.files.retrieve(id=fn.file_id)
    assert code.external_id == f"mlops-code/well_density-prediction-dev/{result['hash'][:16]}"
    assert code.directory == "/mlops/code" and code.metadata["mlops_status"] == "deployed"
    record = audit.history(template.client, "well_density", "dev")[0]
    assert (record["action"], record["outcome"], record["hash"]) == ("deploy", "success", result["hash"])
    assert "model tests passed" in run.stderr and "service test passed" in run.stderr

    called = template.cli("call", "well_density", "--data", json.dumps(ServiceTest.prediction_input))
    assert called.code == 0, called.stderr
    answer = json.loads(called.stdout)
    assert answer["model_id"] == local_id and ServiceTest.prediction_check(answer)


def test_the_same_content_again_is_unchanged_and_force_redeploys(template, dev_deployed):
    before = dev_deployed
    # A configured project does not matter: ENV=dev goes to the local CDF (LOCAL_DEPLOYMENT=True would not).
    project = {"COGNITE_PROJECT": "elsewhere", "COGNITE_BASE_URL": "http://127.0.0.1:9", "COGNITE_CLIENT_ID": "id",
               "COGNITE_CLIENT_SECRET": "not-used-secret", "COGNITE_TOKEN_URL": "http://127.0.0.1:9/token"}
    run = template.deploy(**project)
    assert run.code == 0, run.stderr
    row = next(line.split() for line in run.stdout.splitlines() if line.startswith("well_density"))
    local = dev_deployed.metadata["mlops_model_id"].rsplit("/", 1)[-1]  # local-{digest}: the local folder
    assert row[:5] == ["well_density", "prediction", "dev", local, "unchanged"]
    after = template.functions()["well_density-prediction-dev"]
    assert after.id == before.id  # not recreated
    assert len(template.code_files("well_density-prediction-dev")) == 1

    template.client.functions.schedules.create(name="keep-warm", cron_expression="*/15 * * * *",
                                               function_id=after.id, data={"data": []})
    forced = template.deploy("--force", "--json")
    assert forced.code == 0, forced.stderr
    assert forced.result()["result"] == "deployed" and forced.result()["gap_seconds"] > 0
    replaced = template.functions()["well_density-prediction-dev"]
    assert replaced.id != before.id
    # CDF deletes a function's schedules with it: the deploy puts them on the replacement.
    schedules = template.client.functions.schedules.list(function_id=replaced.id)
    assert [(s.name, s.cron_expression) for s in schedules] == [("keep-warm", "*/15 * * * *")]
    assert template.client.functions.schedules.get_input_data(id=schedules[0].id) == {"data": []}
    assert audit.history(template.client, "well_density", "dev")[1]["outcome"] == "unchanged"


def test_dry_run_runs_the_tests_prints_the_plan_and_changes_nothing(template, dev_deployed):
    model_file = template.root / "model_code" / "model.py"
    original = model_file.read_text()
    model_file.write_text(original + "\n# a change\n")
    try:
        before = template.snapshot()
        run = template.deploy("--dry-run", "--json")
        assert run.code == 0, run.stderr
        result = run.result()
        live = template.functions()["well_density-prediction-dev"]
        assert result["result"] == "would deploy" and result["plan"]["changed"]
        assert result["plan"]["live_hash"] == live.metadata["mlops_hash"] != result["hash"]
        assert result["plan"]["create"] == [f"well_density-prediction-dev-{result['hash'][:10]}",
                                            "well_density-prediction-dev"]
        assert "model tests passed" in run.stderr and "service test passed" in run.stderr
        assert template.snapshot() == before
    finally:
        model_file.write_text(original)


def test_local_deployment_true_sends_a_dev_deploy_to_the_configured_project(template, tmp_path):
    with LocalCDF(tmp_path / "project") as project:  # stands in for a real CDF project, reached with OIDC
        env = {"COGNITE_PROJECT": "remote", "COGNITE_BASE_URL": project.base_url, "COGNITE_CLIENT_ID": "ci",
               "COGNITE_CLIENT_SECRET": "ci-secret-value", "COGNITE_TOKEN_URL": project.token_url}
        run = template.deploy("--json", LOCAL_DEPLOYMENT="True", **env)
        assert run.code == 0, run.stderr
        remote = project.client(project="remote")
        fn = remote.functions.retrieve(external_id="well_density-prediction-dev")
        assert fn is not None and fn.metadata["mlops_hash"] == run.result()["hash"]
        assert "ci-secret-value" not in run.stdout + run.stderr


def test_a_model_id_that_is_not_in_the_settings_is_a_usage_error(template):
    run = template.cli("deploy", "prediction", "--model", "nope")
    assert run.code == 2
    assert "nope" in run.stderr and "well_density" in run.stderr and "Traceback" not in run.stderr


# --- the template model in test: artifacts from the registry --------------------------------------------------------

def test_test_deploys_the_latest_registry_version_replacing_the_live_one(template):
    missing = template.deploy("--json", ENV="test")
    assert missing.code == 1
    assert "no artifact to deploy for model well_density in test" in missing.result()["message"]
    assert "mlops models upload well_density --env test" in missing.result()["message"]
    assert "well_density-prediction-test" not in template.functions()

    model_manager.upload_new_model_version("well_density", "test", REPO / "model_artifact", {"note": "v1"},
                                           client=template.client)
    first = template.deploy("--json", ENV="test")
    assert first.code == 0, first.stderr
    assert template.call("well_density-prediction-test", ServiceTest.prediction_input)["model_id"] == \
        "well_density/test/1"

    model_manager.upload_new_model_version("well_density", "test", REPO / "model_artifact", {"note": "v2"},
                                           client=template.client)
    second = template.deploy("--json", ENV="test")
    assert second.code == 0, second.stderr
    result = second.result()
    assert result["model_id"] == "well_density/test/2" and result["gap_seconds"] > 0
    response = template.call("well_density-prediction-test", ServiceTest.prediction_input)
    assert response["model_id"] == "well_density/test/2" and ServiceTest.prediction_check(response)
    standbys = [x for x in template.functions() if x.startswith("well_density-prediction-test-")]
    assert standbys == []  # the standby served the gap; rollback needs only the code files
    assert len(template.code_files("well_density-prediction-test")) == 2
    assert "live again after a gap of" in second.stderr


def test_training_deploy_then_call_makes_a_version_that_prediction_deploys(template):
    def latest() -> int:
        return model_manager.get_model_version("well_density", "test", client=template.client)["version"]

    if not model_manager.list_model_versions("well_density", "test", client=template.client):
        model_manager.upload_new_model_version("well_density", "test", REPO / "model_artifact", {"note": "v1"},
                                               client=template.client)
    before = latest()
    run = template.deploy("--json", service="training", ENV="test")
    assert run.code == 0, run.stderr
    assert run.result()["version"] is None and run.result()["result"] == "deployed"
    assert latest() == before + 1  # the smoke call trains and uploads (documented)

    answer = template.call("well_density-training-test", ServiceTest.training_input)
    assert ServiceTest.training_check(answer) and answer["training"]["version"] == before + 2
    assert latest() == before + 2

    prediction = template.deploy("--json", ENV="test")
    assert prediction.code == 0, prediction.stderr
    assert prediction.result()["model_id"] == f"well_density/test/{before + 2}"
    assert template.call("well_density-prediction-test", ServiceTest.prediction_input)["model_id"] == \
        f"well_density/test/{before + 2}"


# --- a two-model repo with common code ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    # venv isolation: each function's requirements are installed as CDF installs them, so a requirement that
    # cannot be installed fails the function's build, as it would in CDF.
    repo = Repo(write_two_model_repo(tmp_path_factory.mktemp("two") / "repo"), isolation="venv")
    yield repo
    repo.close()


@pytest.fixture
def model1_deployed(two_models):
    """model1 live in dev, answering [2, 4, 6] for x = [1, 2, 3] (model2 fails its tests: never deployed)."""
    return ensure_deployed(two_models, "model1-prediction-dev", "--model", "model1")


def test_one_model_failing_its_tests_does_not_stop_the_other(two_models):
    run = two_models.deploy("--json")
    assert run.code == 1
    assert run.result("model1")["result"] == "deployed"
    failed = run.result("model2")
    assert failed["result"] == "failed" and failed["message"].startswith("model tests failed: 1 failed, 1 passed")
    assert "test_model2_is_broken" in run.stderr and "assert 1 == 2" in run.stderr  # the data scientist sees why
    assert "model2-prediction-dev" not in two_models.functions()
    response = two_models.call("model1-prediction-dev", {"x": [1, 2, 3]})
    model1_id = artifacts.local_model_id("model1", two_models.root / "artifacts" / "model1")
    assert response == {"status": "ok", "prediction": [2, 4, 6], "model_id": model1_id}
    before = two_models.snapshot()
    plan = two_models.deploy("--dry-run")
    assert plan.code == 1 and two_models.snapshot() == before
    assert "Plan (dry run: nothing in CDF was changed)" in plan.stdout
    assert f"model1-prediction-dev: artifact {model1_id}; unchanged" in plan.stdout
    assert "model2-prediction-dev: not deployable: model tests failed" in plan.stdout
    assert "model2 (prediction, dev): model tests failed" in plan.stdout  # under the summary table


def test_failing_tests_leave_the_live_version_answering(two_models, model1_deployed):
    live = model1_deployed
    test_file = two_models.root / "models" / "model1" / "test_model.py"
    artifact = two_models.root / "artifacts" / "model1" / "factor.json"
    original = test_file.read_text()
    test_file.write_text(original + "\ndef test_new_is_broken():\n    assert False\n")
    artifact.write_text('{"factor": 3}')
    try:
        run = two_models.deploy("--model", "model1", "--json")
        assert run.code == 1 and run.result()["message"].startswith("model tests failed")
        assert two_models.functions()["model1-prediction-dev"].id == live.id
        assert two_models.call("model1-prediction-dev", {"x": [1]})["prediction"] == [2]
    finally:
        test_file.write_text(original)
        artifact.write_text('{"factor": 2}')


def test_code_that_does_not_build_in_cdf_never_touches_the_live_function(two_models, model1_deployed, monkeypatch):
    live = model1_deployed
    requirements = two_models.root / "models" / "model1" / "requirements.model"
    # The local service test runs in this environment; CDF must install the requirement, and cannot.
    requirements.write_text("no-such-package-anywhere==9.9\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # the local CDF's pip fails at once, offline
    try:
        run = two_models.deploy("--model", "model1", "--json")
    finally:
        requirements.write_text("# no requirements\n")
    assert run.code == 1
    result = run.result()
    assert result["result"] == "failed" and "service test passed" in run.stderr
    assert result["message"].startswith(f"CDF could not build function model1-prediction-dev-{result['hash'][:10]}")
    now = two_models.functions()
    assert now["model1-prediction-dev"].id == live.id and now["model1-prediction-dev"].status == "Ready"
    assert not any(x.startswith(f"model1-prediction-dev-{result['hash'][:10]}") for x in now)
    assert all(f.metadata["mlops_hash"] != result["hash"] for f in two_models.code_files("model1-prediction-dev"))
    assert two_models.call("model1-prediction-dev", {"x": [1, 2, 3]})["prediction"] == [2, 4, 6]


def test_a_failing_smoke_check_rolls_back_automatically(two_models, model1_deployed):
    settings = two_models.root / "mlops_settings.py"
    live = model1_deployed
    settings.write_text(TWO_MODEL_SETTINGS.format(model1_extra=', env_vars={"MODEL_BROKEN_IN_CDF": "1"}'))
    try:
        run = two_models.deploy("--model", "model1", "--json")
    finally:
        settings.write_text(TWO_MODEL_SETTINGS.format(model1_extra=""))
    assert run.code == 1, run.stderr
    result = run.result()
    assert result["result"] == "rolled_back"
    assert "the smoke call of model1-prediction-dev failed the prediction check" in result["message"]
    assert "rolled back to the previous deployment" in result["message"]
    now = two_models.functions()
    assert now["model1-prediction-dev"].metadata["mlops_hash"] == live.metadata["mlops_hash"]
    assert not any(x.startswith(f"model1-prediction-dev-{result['hash'][:10]}") for x in now)
    assert all(f.metadata["mlops_hash"] != result["hash"] for f in two_models.code_files("model1-prediction-dev"))
    assert two_models.call("model1-prediction-dev", {"x": [1, 2, 3]})["prediction"] == [2, 4, 6]
    assert audit.history(two_models.client, "model1", "dev")[0]["outcome"] == "rolled_back"


# --- release: replacing, rolling back, keeping code (in-process, a fresh local CDF per test, no deploy script) -----

LIVE = "scaled-prediction-dev"


def ship(client, tmp_path: Path, answer: int, *, smoke=lambda: (True, ""), keep: int = release.KEEP_DEPLOYMENTS):
    """Release a minimal function answering {"answer": answer}, as a deploy's apply does: switch live, smoke, then
    confirm or roll back."""
    folder = tmp_path / f"code-{answer}"
    folder.mkdir(exist_ok=True)
    (folder / "handler.py").write_text(f"def handle(data):\n    return {{'answer': {answer}}}\n")
    options = {"name": LIVE, "metadata": {"team": "ds"}, "function_path": "handler.py", "secrets": []}
    (folder / build.OPTIONS_FILE).write_text(json.dumps(options))
    content_hash = build.tree_digest(folder)[1]
    md = release.mlops_metadata(model="scaled", service="prediction", env="dev", version=answer, model_id=None,
                                content_hash=content_hash, commit="", deployed_at=release.now_iso(), by="tests")
    ctx = release.ReleaseContext(client, LIVE, time.monotonic() + 120, by="tests", keep=keep)
    out = release.put_live(ctx, release.NewCode(content_hash, build.zip_folder(folder),
                                                FunctionOptions.from_dict(options), {}, md))
    passed, detail = smoke()
    if not passed:
        release.roll_back(ctx, out, detail)
    release.confirm(ctx, out)
    return out


def answer(client, xid: str = LIVE) -> int:
    call = client.functions.call(external_id=xid, data={})
    assert call.status == "Completed", call.error
    return call.get_response()["answer"]


def kept_code(client) -> dict[str, str]:
    """Artifact version -> status of the code files kept for LIVE."""
    return {f.metadata["mlops_version"]: f.metadata["mlops_status"] for f in functions.code_files(client, LIVE)}


def inject(cdf, *rules: dict) -> None:
    inject_faults(cdf.base_url, rules)


# A function create is a POST to .../functions; the other function requests' paths go on (/byids, /list, /call).
CREATE = {"path": "re:/functions$", "method": "POST"}
LET_ONE_THROUGH = {**CREATE, "delay": 0.001, "count": 1}  # a rule with a delay and no status serves the request


def test_a_replacement_that_cannot_be_created_puts_the_live_function_back(local_cdf, client, tmp_path):
    ship(client, tmp_path, 1)
    before = client.functions.retrieve(external_id=LIVE)
    client.functions.schedules.create(name="nightly", cron_expression="0 3 * * *", function_id=before.id,
                                      data={"x": 1})
    inject(local_cdf, LET_ONE_THROUGH, {**CREATE, "status": 400})  # the standby is created; the live one is not
    with pytest.raises(release.ReplaceFailed) as failed:
        ship(client, tmp_path, 2)
    message = str(failed.value)
    assert failed.value.restored and f"CDF refused to create function {LIVE}" in message
    assert f"it was created again from the code it ran before (code file {before.file_id})" in message
    assert all(rule["count"] == 0 for rule in fault_rules(local_cdf.base_url))

    back = client.functions.retrieve(external_id=LIVE)
    assert back.status == "Ready" and back.file_id == before.file_id and back.metadata == before.metadata
    assert answer(client) == 1
    schedules = client.functions.schedules.list(function_id=back.id)
    assert [(s.name, s.cron_expression) for s in schedules] == [("nightly", "0 3 * * *")]
    assert client.functions.schedules.get_input_data(id=schedules[0].id) == {"x": 1}
    assert [f.external_id for f in functions.standbys(client, LIVE)] == []  # the new code answers nowhere
    assert kept_code(client) == {"1": "deployed"}  # the new code's file, uploaded by this deploy, is gone


def test_a_replacement_nothing_can_put_back_says_the_function_is_gone(local_cdf, client, tmp_path):
    ship(client, tmp_path, 1)
    inject(local_cdf, LET_ONE_THROUGH, {**CREATE, "status": 400, "count": 2})
    with pytest.raises(release.ReplaceFailed) as failed:
        ship(client, tmp_path, 2)
    assert not failed.value.restored
    assert "failed too" in str(failed.value) and f"{LIVE} does not exist now" in str(failed.value)
    standby = [f.external_id for f in functions.standbys(client, LIVE)]
    assert len(standby) == 1 and answer(client, standby[0]) == 2  # what `mlops call` falls back to meanwhile


def test_redeploying_code_that_went_live_before_keeps_it_a_rollback_target(client, tmp_path):
    ship(client, tmp_path, 1)
    ship(client, tmp_path, 2)
    first = next(d for d in release.history(client, LIVE) if d.version == "1")
    release.restore(client, LIVE, first, time.monotonic() + 120, None, use_standby=True)  # mlops rollback
    release.cleanup(client, LIVE)
    assert answer(client) == 1

    with pytest.raises(release.SmokeFailed) as failed:  # the same code as version 2 again; its smoke call fails
        ship(client, tmp_path, 2, smoke=lambda: (False, "the smoke check failed"))
    assert failed.value.rolled_back_to.version == "1" and answer(client) == 1
    assert kept_code(client) == {"1": "deployed", "2": "deployed"}  # 2 went live once: still a rollback target
    second = next(d for d in release.history(client, LIVE) if d.version == "2")
    release.restore(client, LIVE, second, time.monotonic() + 120, None, use_standby=True)
    assert answer(client) == 2


def test_keep_sets_how_many_deployments_keep_their_code(client, tmp_path):
    for version in (1, 2, 3):
        ship(client, tmp_path, version, keep=2)
    assert kept_code(client) == {"3": "deployed", "2": "deployed"}
    assert [d.version for d in release.history(client, LIVE)] == ["3", "2"]
    ship(client, tmp_path, 4, keep=1)
    assert kept_code(client) == {"4": "deployed"}
