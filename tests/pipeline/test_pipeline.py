"""The Bitbucket pipeline: the file validates, branches select the steps Bitbucket would run, `mlops pipeline`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from akerbp.mlops import model_repo
from akerbp.mlops import pipeline as pl
from akerbp.mlops.cli import main

REPO = Path(__file__).resolve().parents[2]
ROOT_PIPELINE = REPO / pl.PIPELINE_FILE


@pytest.fixture(scope="module")
def config():
    return pl.load_pipeline_file(ROOT_PIPELINE)


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------------------------------ the files themselves


def check_schema(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is needed (pip install -e .[test])"
    return subprocess.run([exe, "--builtin-schema", "vendor.bitbucket-pipelines", str(path)],
                          capture_output=True, text=True)


def test_root_pipeline_validates_against_bitbucket_schema():
    proc = check_schema(ROOT_PIPELINE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_pipeline(tmp_path):
    bad = tmp_path / pl.PIPELINE_FILE
    bad.write_text(ROOT_PIPELINE.read_text().replace("trigger: manual", "trigger: by-hand", 1))
    proc = check_schema(bad)
    assert proc.returncode != 0
    assert "by-hand" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", [model_repo.PIPELINE_FILE, *model_repo.DEPLOY_SCRIPTS.values()])
def test_the_repo_files_are_the_templates_for_mlops_init(name):
    template, root = model_repo.MODEL_REPO / name, REPO / name
    assert root.resolve() == template.resolve(), f"{name} should be a link to {template}"
    assert template.read_bytes() == root.read_bytes()
    if name.endswith(".sh"):
        assert os.access(root, os.X_OK) and os.access(template, os.X_OK)


def test_each_deployment_is_used_at_most_once_per_pipeline(config):
    # Bitbucket refuses a pipeline that uses one deployment environment in two steps.
    for section in ("branches", "pull-requests"):
        for pattern, items in config["pipelines"][section].items():
            deployments = [s.deployment for s in pl.parse_steps(items) if s.deployment]
            assert len(deployments) == len(set(deployments)), (section, pattern)


# ------------------------------------------------------------------------------------------ the deploy scripts


@pytest.fixture
def fake_mlops(tmp_path):
    """A stand-in `mlops` first on PATH that records its arguments and ENV, to test the scripts alone."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "mlops"
    exe.write_text('#!/usr/bin/env bash\necho "args=$* ENV=$ENV"\nexit "${FAKE_EXIT:-0}"\n')
    exe.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "ENV"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


@pytest.mark.parametrize("service", ["prediction", "training"])
def test_deploy_scripts_pass_arguments_and_default_env_to_dev(fake_mlops, service):
    script = str(REPO / f"deploy_{service}_service.sh")
    proc = subprocess.run(["bash", script, "--dry-run", "--model", "m1"], env=fake_mlops,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"args=deploy {service} --dry-run --model m1 ENV=dev"
    proc = subprocess.run(["bash", script], env={**fake_mlops, "ENV": "prod", "FAKE_EXIT": "3"},
                          capture_output=True, text=True)
    assert proc.returncode == 3
    assert proc.stdout.strip() == f"args=deploy {service} ENV=prod"


# ------------------------------------------------------------------------------------------ branch selection


@pytest.mark.parametrize("branch", ["master", "main", "deploy/x"])
def test_master_and_deploy_branches_deploy_prediction_to_test_then_manual_prod(config, branch):
    steps = pl.steps_for_branch(config, branch)
    assert [(s.deployment, s.effective_env, s.manual) for s in steps] == [
        ("test-prediction", "test", False), ("production-prediction", "prod", True)]
    assert steps[0].env == {"ENV": "test"} and steps[1].env == {"ENV": "prod"}
    assert "ENV=test bash deploy_prediction_service.sh" in steps[0].script
    assert "ENV=prod bash deploy_prediction_service.sh" in steps[1].script


def test_trainpred_deploys_training_and_prediction_to_test_then_both_manually_to_prod(config):
    steps = pl.steps_for_branch(config, "trainpred/new-features")
    assert [(s.deployment, s.manual) for s in steps] == [
        ("test-training", False), ("test-prediction", False),
        ("production-training", True), ("production-prediction", True)]
    assert [s.effective_env for s in steps] == ["test", "test", "prod", "prod"]


def test_star_does_not_cross_a_slash(config):
    # Bitbucket: `deploy/*` matches deploy/x but not deploy/a/b; nothing else matches, and there is no default.
    sel = pl.select_pipeline(config, "deploy/a/b")
    assert sel.section is None and sel.steps == []


def test_feature_branches_deploy_nothing_and_their_pull_requests_run_the_tests(config):
    assert pl.steps_for_branch(config, "feature/x") == []
    sel = pl.select_pipeline(config, "feature/x", pull_request=True)
    assert (sel.section, sel.pattern) == ("pull-requests", "**")
    assert [s.deployment for s in sel.steps] == [None]
    assert sel.steps[0].script[-1] == "bash deploy_prediction_service.sh --dry-run"
    # `**` crosses slashes: a pull request from a nested branch runs the tests too.
    assert pl.steps_for_branch(config, "deploy/a/b", pull_request=True) == sel.steps


SYNTHETIC = """
pipelines:
  default:
    - step: {name: fallback, script: [echo default]}
  branches:
    '*': [{step: {name: any-top-level, script: [echo 1]}}]
    '**': [{step: {name: anything, script: [echo 2]}}]
    feature/*: [{step: {name: feature-glob, script: [echo 3]}}]
    feature/bb-*: [{step: {name: bb-glob, script: [echo 4]}}]
    feature/bb-123-*: [{step: {name: bb-123-glob, script: [echo 5]}}]
    feature/bb-123-fix: [{step: {name: exact, script: [echo 6]}}]
    '{release,hotfix}/v?': [{step: {name: braces, script: [echo 7]}}]
"""


@pytest.mark.parametrize("branch, pattern", [
    ("feature/bb-123-fix", "feature/bb-123-fix"),  # an exact name beats every glob
    ("feature/bb-123-other", "feature/bb-123-*"),  # then the most specific glob
    ("feature/bb-9", "feature/bb-*"),
    ("feature/x", "feature/*"),
    ("release/v1", "{release,hotfix}/v?"),
    ("hotfix/v2", "{release,hotfix}/v?"),
    ("release/v10", "**"),  # `?` is one character
    ("develop", "*"),  # `*` beats `**`: it is more specific
    ("feature/a/b", "**"),  # only `**` crosses a slash
])
def test_most_specific_pattern_wins(branch, pattern):
    config = pl.yaml.safe_load(SYNTHETIC)
    assert pl.select_pipeline(config, branch).pattern == pattern


def test_exact_name_beats_a_glob_listed_before_it():
    config = pl.yaml.safe_load("""
        pipelines:
          branches:
            deploy/*: [{step: {name: glob, script: [echo glob]}}]
            deploy/special: [{step: {name: exact, script: [echo exact]}}]
    """)
    assert [s.name for s in pl.steps_for_branch(config, "deploy/special")] == ["exact"]
    assert [s.name for s in pl.steps_for_branch(config, "deploy/other")] == ["glob"]


def test_default_runs_when_no_branch_pattern_matches():
    config = pl.yaml.safe_load("""
        pipelines:
          default: [{step: {name: fallback, script: [echo d]}}]
          branches:
            master: [{step: {name: m, script: [echo m]}}]
    """)
    sel = pl.select_pipeline(config, "feature/a/b")
    assert (sel.section, sel.pattern, [s.name for s in sel.steps]) == ("default", None, ["fallback"])
    # Pull requests never fall back to default.
    assert pl.select_pipeline(config, "feature/a/b", pull_request=True).section is None


def test_parallel_groups_and_stages_flatten_in_order():
    config = pl.yaml.safe_load("""
        pipelines:
          branches:
            master:
              - parallel:
                  - step: {name: lint, script: [echo lint]}
                  - step: {script: [echo unnamed]}
              - stage:
                  name: Prod
                  deployment: production-prediction
                  trigger: manual
                  steps:
                    - step: {name: build, script: [echo build]}
                    - step: {name: deploy, script: [echo deploy]}
              - parallel:
                  steps: [{step: {name: staging, deployment: staging, script: [echo s]}}]
    """)
    steps = pl.steps_for_branch(config, "master")
    assert [(s.name, s.deployment, s.manual, s.effective_env) for s in steps] == [
        ("lint", None, False, None), ("Step 2", None, False, None),
        ("Prod: build", "production-prediction", True, "prod"),
        ("Prod: deploy", "production-prediction", False, "prod"),
        ("staging", "staging", False, "test")]


@pytest.mark.parametrize("deployment, env", [
    ("test-prediction", "test"), ("Test", "test"), ("staging", "test"), ("production-training", "prod"),
    ("prod-eu", "prod"), ("production", "prod"), ("qa-box", None), (None, None)])
def test_deployment_names_map_to_env(deployment, env):
    assert pl.env_for_deployment(deployment).get("ENV") == env


def test_inline_env_in_the_script_beats_the_deployment():
    step = pl.Step("s", ["echo hi", "export ENV=prod", "bash deploy.sh"], "test-x", env={"ENV": "test"})
    assert step.effective_env == "prod"
    assert pl.Step("s", ["MY_ENV=prod echo"], None).effective_env is None


# ------------------------------------------------------------------------------------------ bad files


@pytest.mark.parametrize("text, expected", [
    ("pipelines: [\n", "invalid YAML at line"),
    ("image: python:3.11\n", "no 'pipelines' section"),
    ("pipelines:\n  branches:\n    master:\n      - step: {name: x}\n", "'script' must be a non-empty list"),
    ("pipelines:\n  branches:\n    master:\n      - stepp: {script: [echo]}\n", "unsupported item 'stepp'"),
    ("pipelines:\n  branches: [master]\n", "pipelines.branches must map"),
])
def test_invalid_pipeline_file_is_a_usage_error_naming_the_file(tmp_path, text, expected):
    path = tmp_path / "bitbucket-pipelines.yml"
    path.write_text(text)
    result = invoke("pipeline", "show", "--branch", "master", "--file", str(path))
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and expected in result.stderr
    assert "Traceback" not in result.output


def test_missing_pipeline_file_is_a_usage_error(tmp_path):
    result = invoke("pipeline", "run", "--branch", "master", "--file", str(tmp_path / "nope.yml"))
    assert result.exit_code == 2
    assert "nope.yml: pipeline file not found" in result.stderr


# ------------------------------------------------------------------------------------------ mlops pipeline show


def test_show_prints_steps_deployments_env_and_the_matched_pattern():
    result = invoke("pipeline", "show", "--branch", "deploy/new-model", "--file", str(ROOT_PIPELINE))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "For a push to 'deploy/new-model': pipelines.branches['deploy/*']"
    assert lines[1].split() == ["#", "step", "deployment", "ENV", "trigger"]
    assert lines[2].split()[-3:] == ["test-prediction", "test", "automatic"]
    assert lines[3].split()[-3:] == ["production-prediction", "prod", "manual"]
    assert "   $ ENV=prod bash deploy_prediction_service.sh" in lines


def test_show_json_and_a_branch_without_pipeline():
    result = invoke("pipeline", "show", "--branch", "trainpred/x", "--file", str(ROOT_PIPELINE), "--json")
    data = json.loads(result.stdout)
    assert (data["section"], data["pattern"], data["event"]) == ("branches", "trainpred/*", "push")
    assert [(s["deployment"], s["env"], s["manual"]) for s in data["steps"]] == [
        ("test-training", "test", False), ("test-prediction", "test", False),
        ("production-training", "prod", True), ("production-prediction", "prod", True)]

    result = invoke("pipeline", "show", "--branch", "feature/x", "--file", str(ROOT_PIPELINE))
    assert result.exit_code == 0
    assert "No pipeline runs for a push to 'feature/x'" in result.stdout
    assert "pull-requests['**']" in result.stdout


# ------------------------------------------------------------------------------------------ mlops pipeline run

RUNNABLE = """
pipelines:
  branches:
    master:
      - step:
          name: to test
          deployment: test-prediction
          script:
            - echo "pip install ran" > installed.txt
            - export GREETING=hello && cd sub
            - echo "test step ENV=$ENV LOCAL=$MLOPS_LOCAL_CDF $GREETING in $(basename "$PWD")"
      - step:
          name: to prod
          deployment: production-prediction
          trigger: manual
          script:
            - echo "prod step ENV=$ENV"
      - step:
          name: after prod
          script:
            - echo "after ENV=${ENV:-unset}"
    broken:
      - step: {name: first, script: ["echo first ran"]}
      - step: {name: fails, script: ["echo before", "exit 7", "echo after-the-failure"]}
      - step: {name: never, script: ["echo never ran"]}
      - final: {name: cleanup, script: ["echo cleanup ran"]}
    leaky:
      - step: {name: leak, script: ['echo "secret is $MLOPS_SECRET_API_KEY"']}
    project:
      - step: {name: upload, script: ["mlops models upload m --folder artifact"]}
"""


@pytest.fixture
def runnable(tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("ENV", raising=False)
    monkeypatch.delenv("MLOPS_LOCAL_CDF", raising=False)
    (tmp_path / "sub").mkdir()
    return write(tmp_path / "bitbucket-pipelines.yml", RUNNABLE)


def test_run_sets_env_per_deployment_and_stops_before_manual_steps(runnable):
    result = invoke("pipeline", "run", "--branch", "master", "--file", str(runnable), "--json")
    assert result.exit_code == 0, result.output
    # Local CDF forced even with CI=true; exports and cd carry over between lines of a step, as on Bitbucket.
    assert "test step ENV=test LOCAL=1 hello in sub" in result.stderr
    assert "prod step" not in result.stderr and "after ENV" not in result.stderr
    # pip lines are skipped by default, with a note.
    assert '+ (skipped: installs packages; use --install) echo "pip install ran"' in result.stderr
    data = json.loads(result.stdout)
    assert [(r["name"], r["status"], r["exit_code"]) for r in data["results"]] == [
        ("to test", "passed", 0), ("to prod", "skipped", None), ("after prod", "skipped", None)]
    assert data["results"][0]["skipped_lines"] == ['echo "pip install ran" > installed.txt']
    assert "manual" in data["results"][1]["reason"] and data["results"][2]["reason"] == "after a manual step"


def test_run_include_manual_runs_prod_with_env_prod(runnable):
    result = invoke("pipeline", "run", "--branch", "master", "--file", str(runnable), "--include-manual")
    assert result.exit_code == 0, result.output
    assert "prod step ENV=prod" in result.stderr
    assert "after ENV=unset" in result.stderr  # a step without deployment does not inherit the previous ENV
    assert [line.split()[:3] for line in result.stdout.splitlines()[1:]] == [
        ["to", "test", "passed"], ["to", "prod", "passed"], ["after", "prod", "passed"]]


def test_run_stops_at_the_first_failure_with_exit_1(runnable):
    result = invoke("pipeline", "run", "--branch", "broken", "--file", str(runnable))
    assert result.exit_code == 1
    assert "first ran" in result.stderr and "before" in result.stderr
    assert "after-the-failure" not in result.stderr and "never ran" not in result.stderr
    assert "cleanup ran" in result.stderr  # a `final` step runs even after a failure
    assert "pipeline step 'fails' failed with exit code 7" in result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["fails"][:2] == ["failed", "7"] and rows["never"][0] == "skipped"
    assert rows["cleanup"][0] == "passed"


def test_install_lines_run_only_with_install(runnable):
    # Any line mentioning `pip install` counts as an install line; this one only writes a file.
    steps = pl.steps_for_branch(pl.load_pipeline_file(runnable), "master")
    out = []
    results = pl.run_steps(steps[:1], runnable.parent, install=False, on_output=out.append)
    assert results[0].status == "passed" and not (runnable.parent / "installed.txt").exists()
    results = pl.run_steps(steps[:1], runnable.parent, install=True, on_output=out.append)
    assert results[0].status == "passed" and results[0].skipped_lines == []
    assert (runnable.parent / "installed.txt").read_text() == "pip install ran\n"


def test_run_masks_secrets_in_step_output(runnable, monkeypatch):
    monkeypatch.setenv("MLOPS_SECRET_API_KEY", "s3cr3t-value-xyz")
    result = invoke("pipeline", "run", "--branch", "leaky", "--file", str(runnable))
    assert result.exit_code == 0
    assert "secret is ***" in result.stderr and "s3cr3t-value-xyz" not in result.output


def test_run_dry_run_runs_nothing(runnable):
    result = invoke("pipeline", "run", "--branch", "master", "--file", str(runnable), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["will_run"] for s in data["steps"]] == [True, False, False]
    assert data["steps"][0]["lines"][0] == {"command": 'echo "pip install ran" > installed.txt', "run": False}
    assert not (runnable.parent / "installed.txt").exists() and "test step ENV=test" not in result.output


def test_run_branch_without_pipeline_runs_nothing(runnable):
    result = invoke("pipeline", "run", "--branch", "feature/x", "--file", str(runnable))
    assert result.exit_code == 0
    assert "No pipeline runs for a push to 'feature/x'" in result.stderr


def test_run_never_reaches_the_configured_project(runnable, monkeypatch, tmp_path):
    """A rehearsal runs against the local CDF even when COGNITE_* name a project (maybe prod) in this shell."""
    from akerbp.mlops import model_manager
    from akerbp.mlops.local_cdf import LocalCDF

    (runnable.parent / "artifact").mkdir()
    (runnable.parent / "artifact" / "weights.txt").write_text("w")
    local_dir = tmp_path / "local-cdf"
    monkeypatch.setenv("MLOPS_LOCAL_CDF_DIR", str(local_dir))
    with LocalCDF(tmp_path / "project", clients={"ci": "ci-secret-value"}) as project:
        for name, value in {"COGNITE_PROJECT": "prod-project", "COGNITE_BASE_URL": project.base_url,
                            "COGNITE_CLIENT_ID": "ci", "COGNITE_CLIENT_SECRET": "ci-secret-value",
                            "COGNITE_TOKEN_URL": project.token_url}.items():
            monkeypatch.setenv(name, value)
        result = invoke("pipeline", "run", "--branch", "project", "--file", str(runnable))
        assert result.exit_code == 0, result.output
        assert project.client(project="prod-project").files.list(limit=5) == []
    with LocalCDF(local_dir) as local:
        assert model_manager.get_model_version("m", "dev", client=local.client(project="local"))["version"] == 1
