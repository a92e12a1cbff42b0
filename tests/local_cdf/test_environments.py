"""Function environments of the local CDF, as CDF makes them: requirements.txt installed at build time (a requirement
pip cannot install fails the build, and `mlops deploy` before anything goes live), on the runtime's Python version.

Through the real SDK and the deploy CLI. Needs PyPI (six, and cognite-sdk for another Python); the tests that build
an environment on another Python share one local CDF, so its base venv (cognite-sdk) is installed once.
"""
from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

import pytest

from akerbp.mlops.deployment.functions import runtime_mismatch
from akerbp.mlops.local_cdf.runtime import pythons
from akerbp.mlops.local_cdf.runtime.environments import CACHE_ENV
from support import Repo, TWO_MODEL_SETTINGS, deploy_function, write_two_model_repo

SERVER_RUNTIME = f"py{sys.version_info[0]}{sys.version_info[1]}"
OTHER_RUNTIME = "py312" if SERVER_RUNTIME != "py312" else "py311"  # a runtime that is not the server's Python
VERSION_HANDLER = """
    import sys
    def handle(client):
        return {"version": sys.version.split()[0], "client": type(client).__name__}
"""


@pytest.fixture(scope="module", autouse=True)
def own_venv_cache():
    """Every local CDF here builds in its own data dir's venvs/ (the default), not in the session's shared cache
    (conftest.py): these tests see first builds and look into that folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(CACHE_ENV, raising=False)
        yield


def venvs(cdf) -> list[Path]:
    """The function venvs of a local CDF (the base venvs of other Pythons aside)."""
    folder = cdf.data_dir / "venvs"
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("base-")) if folder.exists() else []


def test_a_requirement_that_does_not_exist_fails_the_build_with_pips_output(client, tmp_path):
    fn = deploy_function(client, tmp_path, "def handle():\n    return 1\n",
                extra={"requirements.txt": "nosuchpkg-xyz==1.0\n"}, skip_folder_validation=True)
    assert fn.status == "Failed"
    assert fn.error["message"] == "Failed to install requirements"
    assert "No matching distribution found for nosuchpkg-xyz==1.0" in fn.error["trace"]


def test_requirements_install_once_and_what_the_server_has_is_not_installed_again(local_cdf, client, tmp_path):
    assert "six" not in {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
    source = """
        import numpy, six
        def handle():
            return {"six": six.__file__, "numpy": numpy.__file__}
    """
    requirements = {"requirements.txt": "six==1.16.0\nnumpy>=1.24\n"}  # six: the server lacks it; numpy: it has it
    first = deploy_function(client, tmp_path, source, xid="first", extra=requirements, skip_folder_validation=True)
    assert first.status == "Ready", first.error
    [env] = venvs(local_cdf)
    (env / "not-rebuilt").write_text("a second build of the same requirements would wipe this file")
    second = deploy_function(client, tmp_path, source, xid="second", extra=requirements, skip_folder_validation=True)
    assert second.status == "Ready", second.error
    assert venvs(local_cdf) == [env] and (env / "not-rebuilt").exists()
    for fn in (first, second):
        where = fn.call().get_response()
        assert Path(where["six"]).is_relative_to(env)  # installed in the function's venv
        assert Path(where["numpy"]).is_relative_to(sys.prefix)  # the server's, not downloaded again
    assert "Requirement already satisfied: numpy" in (env / "local-cdf-pip.log").read_text()


def test_a_runtime_this_machine_lacks_runs_on_the_servers_python_and_says_so(client, tmp_path, monkeypatch):
    monkeypatch.setenv(pythons.ENV_VAR, str(tmp_path / "no-pythons-here"))  # look for other Pythons nowhere
    fn = deploy_function(client, tmp_path, VERSION_HANDLER, runtime=OTHER_RUNTIME)
    assert fn.status == "Ready", fn.error
    assert fn.runtime == OTHER_RUNTIME and fn.runtime_version == f"Python {platform.python_version()}"
    assert fn.call().get_response()["version"] == platform.python_version()
    assert runtime_mismatch(fn) == (
        f"the function asks for runtime {OTHER_RUNTIME} but runs on Python {platform.python_version()}: to run it on "
        f"3.{OTHER_RUNTIME[3:]}, install that Python here (or name it in MLOPS_LOCAL_CDF_PYTHONS)")


# --- deploys through the CLI: one local CDF for the module (its base venv for another Python is built once) -------
@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = write_two_model_repo(tmp_path_factory.mktemp("envs") / "repo", model2_test="")
    # model1 asks for another Python; model2 for one requirement that exists nowhere.
    (root / "mlops_settings.py").write_text(TWO_MODEL_SETTINGS.format(model1_extra=f', python_version="{OTHER_RUNTIME}"'))
    (root / "models" / "model2" / "requirements.model").write_text("nosuchpkg-xyz==1.0\n")
    repo = Repo(root)
    yield repo
    repo.close()


@pytest.fixture(scope="module")
def other_python():
    found = pythons.find(OTHER_RUNTIME)
    if found is None:
        pytest.skip(f"no Python for {OTHER_RUNTIME} on this machine")
    return found


def test_a_deploy_whose_requirement_cannot_be_installed_fails_and_nothing_goes_live(repo):
    run = repo.deploy("--model", "model2", "--json")
    assert run.code == 1, run.stderr
    result = run.result()
    assert result["result"] == "failed" and "service test passed" in run.stderr  # only CDF's install can fail it
    assert "CDF could not build function model2-prediction-dev" in result["message"]
    assert "No matching distribution found for nosuchpkg-xyz==1.0" in result["message"]
    assert not [xid for xid in repo.functions() if xid.startswith("model2-")]


def test_a_function_runs_on_the_python_of_its_runtime(repo, other_python, tmp_path):
    fn = deploy_function(repo.client, tmp_path, VERSION_HANDLER, xid="versioned", runtime=OTHER_RUNTIME)
    assert fn.status == "Ready", fn.error
    assert fn.runtime_version == f"Python {other_python.version}" and runtime_mismatch(fn) is None
    assert fn.call().get_response() == {"version": other_python.version, "client": "CogniteClient"}


def test_a_model_deploys_on_the_python_of_its_runtime_with_the_bundled_framework(repo, other_python, monkeypatch):
    run = repo.deploy("--model", "model1", "--json")
    assert run.code == 0, run.stderr
    live = repo.functions()["model1-prediction-dev"]
    assert live.runtime == OTHER_RUNTIME and live.runtime_version == f"Python {other_python.version}"
    assert repo.call("model1-prediction-dev", {"x": [1, 2, 3]})["prediction"] == [2, 4, 6]
    assert "warning:" not in run.stderr
    # The same model where that Python cannot be found: it runs, on the server's, and the deploy says so once.
    monkeypatch.setenv(pythons.ENV_VAR, "")
    run = repo.deploy("--model", "model1", "--force", "--json")
    assert run.code == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if "warning:" in line]
    assert warnings == [f"[model1-prediction-dev] warning: the function asks for runtime {OTHER_RUNTIME} but runs on "
                        f"Python {platform.python_version()}: to run it on 3.{OTHER_RUNTIME[3:]}, install that Python "
                        "here (or name it in MLOPS_LOCAL_CDF_PYTHONS)"], run.stderr
    assert repo.functions()["model1-prediction-dev"].runtime_version == f"Python {platform.python_version()}"
