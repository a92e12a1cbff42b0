"""`mlops init`: the scaffold is complete, valid, its model tests pass, and it never overwrites silently."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from support import mlops_command
from akerbp.mlops.cli import main
from akerbp.mlops import model_manager, model_repo
from akerbp.mlops.cdf.client import LOCAL_PROJECT
from akerbp.mlops.deployment import build
from akerbp.mlops.local_cdf import LocalCDF
from akerbp.mlops.model_repo import DEFAULT_MODEL_NAME, ENTRIES, MODEL_REPO, TEMPLATE_ENTRIES
from akerbp.mlops.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "mlops_settings.py", "mlops_automations.py", ".gitignore", "README.md", "bitbucket-pipelines.yml", "deploy_prediction_service.sh",
    "deploy_training_service.sh", "model_code/__init__.py", "model_code/model.py", "model_code/well_logs.py",
    "model_code/test_model.py", "model_code/requirements.model", "model_artifact/model.json",
}


def run(*args, code=0):
    result = CliRunner().invoke(main, ["init", *map(str, args)])
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    return result


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts}


def test_init_creates_a_valid_repo_whose_model_tests_pass(tmp_path):
    repo = tmp_path / "new-repo"
    result = run(repo, "--model-name", "rhob")
    assert files_under(repo) == EXPECTED
    assert "cd " in result.stdout and "bash deploy_prediction_service.sh" in result.stdout
    assert "mlops call rhob --data" in result.stdout
    assert os.access(repo / "deploy_prediction_service.sh", os.X_OK)
    assert ".mlops/" in (repo / ".gitignore").read_text().splitlines()
    assert "mlops call rhob" in (repo / "README.md").read_text()

    models = load_settings(repo / "mlops_settings.py", env="dev")
    assert [m.model_name for m in models] == ["rhob"]
    assert models[0].model_path == repo / "model_code" / "model.py" and models[0].has_local_artifacts

    validated = subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", "settings", "validate", "--file",
                                str(repo / "mlops_settings.py"), "--env", "dev"],
                               capture_output=True, text=True, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert "settings are valid" in validated.stdout

    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "model_code/test_model.py"], capture_output=True, text=True, cwd=repo)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout and "skipped" not in tested.stdout  # the artifact check ran too


def test_init_defaults_to_the_working_directory_and_the_template_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run()
    assert files_under(tmp_path) == EXPECTED
    assert "cd " not in result.stdout
    assert [m.model_name for m in load_settings(tmp_path / "mlops_settings.py")] == [DEFAULT_MODEL_NAME]


def test_init_refuses_to_overwrite_without_force(tmp_path):
    (tmp_path / "model_code").mkdir()
    (tmp_path / "model_code" / "model.py").write_text("# mine\n")
    (tmp_path / "README.md").write_text("mine\n")
    (tmp_path / "notes.txt").write_text("unrelated\n")
    refused = run(tmp_path, code=2)
    assert "model_code/model.py" in refused.stderr and "README.md" in refused.stderr and "--force" in refused.stderr
    assert "mlops_settings.py" not in refused.stderr
    assert files_under(tmp_path) == {"model_code/model.py", "README.md", "notes.txt"}  # nothing written
    assert (tmp_path / "README.md").read_text() == "mine\n"

    forced = run(tmp_path, "--force")
    assert "overwrote" in forced.stdout and "README.md" in forced.stdout
    assert files_under(tmp_path) == EXPECTED | {"notes.txt"}
    assert (tmp_path / "model_code" / "model.py").read_bytes() == (ROOT / "model_code" / "model.py").read_bytes()


def test_init_refuses_what_even_force_must_not_touch(tmp_path):
    (tmp_path / "mlops_settings.yaml").write_text("models: []\n")
    (tmp_path / "README.md").mkdir()
    refused = run(tmp_path, "--force", code=2)
    assert "mlops_settings.yaml" in refused.stderr and "README.md" in refused.stderr
    assert not (tmp_path / "mlops_settings.py").exists()


@pytest.mark.parametrize("name", ["Bad", "1model", "has-dash", "x" * 41])
def test_init_rejects_a_bad_model_name(tmp_path, name):
    assert "is not a model name" in run(tmp_path, "--model-name", name, code=2).stderr
    assert files_under(tmp_path) == set()


def test_the_scaffold_is_the_one_list_of_what_a_model_repo_contains(tmp_path):
    run(tmp_path / "r")
    listed = {entry.path for entry in ENTRIES}
    assert {name.split("/")[0] for name in files_under(tmp_path / "r")} == listed
    for entry in ENTRIES:
        assert entry.source.exists() and entry.purpose, entry.path


def test_the_repo_roots_template_entries_are_relative_links_into_the_one_template():
    """The framework repo's root is a model repo made of the package's template, not a copy of it."""
    for entry in TEMPLATE_ENTRIES:
        link = ROOT / entry.path
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), f"{entry.path} is not a relative link"
        assert link.resolve() == (MODEL_REPO / entry.path).resolve(), entry.path
    if (ROOT / ".git").exists():  # git stores them as links (mode 120000), so a clone has them too
        staged = subprocess.run(["git", "ls-files", "-s", "--", *(e.path for e in TEMPLATE_ENTRIES)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
        assert sorted(line.split()[0] for line in staged) == ["120000"] * len(TEMPLATE_ENTRIES), staged


def test_the_root_example_repo_validates_and_builds_real_files_through_its_links(tmp_path):
    """The settings' refusal of links leaving the repo lets these in-repo links pass; the function folder gets files."""
    (model,) = [m for m in load_settings(ROOT / "mlops_settings.py", env="dev") if m.model_name == DEFAULT_MODEL_NAME]
    built = build.build_folder(model, "prediction", "dev", artifact=model.root / model_repo.MODEL_ARTIFACT,
                               model_id="well_density/dev/local-x", secrets={}, build_root=tmp_path)
    expected = {name: source for name, source in model_repo.template_files().items()
                if name.startswith((f"{model_repo.MODEL_CODE}/", f"{model_repo.MODEL_ARTIFACT}/"))}
    in_folder = {name: name.replace(f"{model_repo.MODEL_ARTIFACT}/", "artifact/", 1) for name in expected}
    assert set(in_folder.values()) == {n for n in built.files if n.startswith((f"{model_repo.MODEL_CODE}/", "artifact/"))}
    for name, source in expected.items():
        target = built.path / in_folder[name]
        assert not target.is_symlink() and target.read_bytes() == source.read_bytes(), name


def _wheel_source(dest: Path) -> Path:
    """What a wheel is built from (setup.py, pyproject.toml, the package), copied so the build writes nothing here."""
    dest.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "akerbp", dest / "akerbp", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".mlops", ".pytest_cache"))
    return dest


def test_a_built_wheel_ships_the_template_as_real_files_equal_to_the_roots(tmp_path):
    source = _wheel_source(tmp_path / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(tmp_path / "dist"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("akerbp.mlops-*.whl")
    prefix = MODEL_REPO.relative_to(ROOT).as_posix()
    with zipfile.ZipFile(wheel) as archive:
        members = {info.filename: info for info in archive.infolist()}
        for name in model_repo.template_files():
            info = members.get(f"{prefix}/{name}")
            assert info is not None, f"the wheel lacks {prefix}/{name}"
            mode = info.external_attr >> 16
            assert not stat.S_ISLNK(mode), f"{name} is a link in the wheel"
            assert archive.read(info) == (ROOT / name).read_bytes(), f"{name} differs from the repo root's"
            if name.endswith(".sh"):
                assert mode & stat.S_IXUSR, f"{name} is not executable in the wheel"
        for entry in ENTRIES:
            if entry.generated:
                assert entry.source.relative_to(ROOT).as_posix() in members, entry.path


def test_default_model_name_is_the_repo_template_models():
    """`mlops init` names the template model as the framework repo's own settings do."""
    root_settings = [ROOT / name for name in ("mlops_settings.py", "mlops_settings.yaml") if (ROOT / name).is_file()]
    if not root_settings:
        pytest.skip("the framework repo has no mlops_settings file")
    names = [m.model_name for m in load_settings(root_settings[0]) if m.model_file == "model_code/model.py"]
    assert DEFAULT_MODEL_NAME in names, f"root settings name the template model {names}; align DEFAULT_MODEL_NAME"


def test_the_scaffold_passes_its_own_trainpred_pipeline_prod_steps_included(tmp_path):
    """`mlops init t && cd t && git init && git add -A && git commit -m i && mlops pipeline run --branch trainpred/x
    --include-manual`: training and prediction to test, then to prod (training in prod needs its condition).

    This is also the suite's one run of a trainpred pipeline (tests/pipeline/test_pipeline_run.py runs master): what
    the steps left in the repo's local CDF is checked here, where the scaffold's settings hold the condition."""
    repo = tmp_path / "t"
    run(repo)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "n", "GIT_AUTHOR_EMAIL": "n@example.com", "GIT_COMMITTER_NAME": "n",
           "GIT_COMMITTER_EMAIL": "n@example.com"}
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "i"]):
        subprocess.run(command, cwd=repo, env=env, check=True, capture_output=True, timeout=60)

    validated = subprocess.run(mlops_command(["mlops", "settings", "validate", "--env", "prod"]), cwd=repo, env=env,
                               capture_output=True, text=True, timeout=120)
    assert validated.returncode == 0, validated.stderr
    assert "would refuse" not in validated.stderr
    pipeline = subprocess.run(mlops_command(["mlops", "pipeline", "run", "--branch", "trainpred/x", "--include-manual", "--json"]),
                              cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert pipeline.returncode == 0, pipeline.stderr[-3000:]
    results = json.loads(pipeline.stdout)["results"]
    assert [(r["name"], r["status"]) for r in results] == [
        ("Deploy training service to test", "passed"), ("Deploy prediction service to test", "passed"),
        ("Deploy training service to prod", "passed"), ("Deploy prediction service to prod", "passed")]

    with LocalCDF(repo / ".mlops" / "local-cdf") as cdf:  # the one the steps used (no project configured)
        client = cdf.client(project=LOCAL_PROJECT)
        served = {f.external_id: (f.metadata or {}).get("mlops_model_id", "") for f in client.functions.list(limit=-1)}
        trained = {env: model_manager.get_model_version(DEFAULT_MODEL_NAME, env, client=client) for env in ("test", "prod")}
    name = DEFAULT_MODEL_NAME
    assert served == {f"{name}-training-test": "", f"{name}-prediction-test": trained["test"]["model_id"],
                      f"{name}-training-prod": "", f"{name}-prediction-prod": trained["prod"]["model_id"]}
    condition = next(m for m in load_settings(repo / "mlops_settings.py")).deployment_condition
    assert condition is not None and condition.metric == "r2"  # trained in prod: the version met the condition
    assert json.loads(trained["prod"]["metadata"]["metrics"])["r2"] >= condition.threshold
