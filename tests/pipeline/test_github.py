"""The GitHub Actions workflow (pipeline_github): the forms of `on`, a pull request's base, jobs and their `if:`, the
template (schema, same mapping as the Bitbucket pipeline, shipped), `mlops init --ci`, and `mlops pipeline show|run`
reading either file. The filter patterns and the expressions have their own test modules."""
from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from akerbp.mlops import model_manager, model_repo
from akerbp.mlops import pipeline as pl
from akerbp.mlops import pipeline_github as gh
from akerbp.mlops.cli import main
from akerbp.mlops.cli.pipeline import resolve_source
from akerbp.mlops.errors import UsageError
from support import REPO, Repo, copy_template

TEMPLATE = model_repo.MODEL_REPO / model_repo.GITHUB_WORKFLOW_FILE


@pytest.fixture(scope="module")
def workflow():
    return gh.load_workflow_file(TEMPLATE)


def invoke(*args, cwd: Path | None = None):
    if cwd is None:
        return CliRunner().invoke(main, list(map(str, args)))
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, list(map(str, args)))
    finally:
        os.chdir(previous)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def names(sel: pl.Selection) -> list[tuple[str, bool]]:
    return [(s.name, s.manual) for s in sel.steps]


# ------------------------------------------------------------------------------------------ the workflow's `on`


def test_pull_request_filters_match_the_base_branch(tmp_path):
    path = write(tmp_path / "wf.yml", """\
        on:
          pull_request:
            branches: [main]
        jobs:
          t: {runs-on: x, steps: [{run: echo t}]}
        """)
    config = gh.load_workflow_file(path)
    with pytest.raises(UsageError, match="--base"):
        gh.select_jobs(config, "feature/x", pull_request=True)
    assert names(gh.select_jobs(config, "feature/x", pull_request=True, base="main")) == [("t", False)]
    assert gh.select_jobs(config, "feature/x", pull_request=True, base="dev").steps == []
    assert gh.select_jobs(config, "main").where == "the workflow has no 'on.push'"
    result = invoke("pipeline", "show", "--branch", "f", "--pull-request", "--file", path)
    assert result.exit_code == 2 and "--base" in result.stderr
    result = invoke("pipeline", "show", "--branch", "f", "--pull-request", "--base", "main", "--file", path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ci"] == "github"  # told from the contents: the name says nothing


@pytest.mark.parametrize("on", ["push", "[push, pull_request]", "{push: null}"])
def test_the_forms_of_on(tmp_path, on):
    path = write(tmp_path / "wf.yml", f"on: {on}\njobs:\n  t: {{runs-on: x, steps: [{{run: echo t}}]}}\n")
    assert names(gh.select_jobs(gh.load_workflow_file(path), "any/branch")) == [("t", False)]


# ------------------------------------------------------------------------------------------ jobs

JOBS = """\
on: push
env: {WORKFLOW: w}
jobs:
  last:
    needs: [build, prod]
    if: always()
    runs-on: x
    steps: [{run: echo last}]
  build:
    runs-on: x
    env: {TOKEN: "${{ secrets.TOKEN }}", KIND: "build-${{ github.ref_name }}"}
    steps:
      - uses: actions/checkout@v4
      - run: echo build
        env: {STEP: s}
        working-directory: sub
      - run: echo never
        if: github.ref_name == 'other'
  prod:
    needs: build
    if: github.ref_name == 'main'
    environment: {name: production-x}
    runs-on: x
    steps: [{run: echo prod}]
  only-other:
    if: github.ref_name == 'other'
    runs-on: x
    steps: [{run: echo other}]
  after-other:
    needs: only-other
    runs-on: x
    steps: [{run: echo after}]
"""


def test_jobs_follow_needs_and_if_with_githubs_skip_rules(tmp_path):
    config = gh.load_workflow_file(write(tmp_path / "wf.yml", JOBS))
    sel = gh.select_jobs(config, "main", source="wf.yml")
    assert names(sel) == [("build", False), ("prod", True), ("last", False)]  # needs order; production-* waits
    assert [s.final for s in sel.steps] == [False, False, True]  # always(): runs after a failure too
    assert dict(sel.skipped) == {"only-other": "if: github.ref_name == 'other'",
                                 "after-other": "needs only-other, which did not run"}
    build = sel.steps[0]
    assert build.env == {"WORKFLOW": "w", "KIND": "build-main"} and build.unset_locally == ("TOKEN",)
    assert build.script[0].startswith("# uses: actions/checkout@v4")
    assert build.script[1] == '(\ncd "sub"\nexport STEP="s"\necho build\n)'
    assert build.script[2].startswith("# skipped")
    # an environment gives no ENV (on GitHub it sets none): only the workflow's env or an inline ENV= does
    assert sel.steps[1].deployment == "production-x" and sel.steps[1].effective_env is None
    assert names(gh.select_jobs(config, "dev")) == [("build", False), ("last", False)]


@pytest.mark.parametrize("text, expected", [
    ("on: push\njobs:\n  a: {needs: b, runs-on: x, steps: [{run: x}]}\n  b: {needs: a, runs-on: x, steps: [{run: x}]}\n",
     "need each other"),
    ("on: push\njobs:\n  a: {needs: c, runs-on: x, steps: [{run: x}]}\n", "unknown job c"),
    ("on: push\njobs:\n  a: {runs-on: x, steps: [{run: 'echo ${{ secrets.T }}'}]}\n", "through the step's env"),
    ("on: push\njobs:\n  a: {if: 'secrets.T', runs-on: x, steps: [{run: x}]}\n", "cannot be evaluated here"),
    ("on: push\njobs:\n  a: {if: 'github.ref ==', runs-on: x, steps: [{run: x}]}\n", "ends too early"),
    ("on: push\njobs:\n  a: {runs-on: x, steps: [{run: x, shell: pwsh}]}\n", "shell 'pwsh'"),
    ("on: push\njobs:\n  a: {runs-on: x}\n", "'steps' must be a non-empty list"),
    ("jobs:\n  a: {runs-on: x, steps: [{run: x}]}\n", "no 'on' section"),
    ("on: [push\n", "invalid YAML at line"),
])
def test_an_invalid_workflow_is_a_usage_error_naming_the_file(tmp_path, text, expected):
    path = tmp_path / ".github" / "workflows" / "ci.yml"
    write(path, text)
    result = invoke("pipeline", "show", "--branch", "main", "--file", path)
    assert result.exit_code == 2, result.output
    assert str(path) in result.stderr and expected in result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------ the template


def check_schema(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is needed (pip install -e .[test])"
    return subprocess.run([exe, "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_the_template_validates_against_githubs_workflow_schema_and_a_broken_one_does_not(tmp_path):
    proc = check_schema(TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "mlops.yml"
    bad.write_text(TEMPLATE.read_text().replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest", 1))
    proc = check_schema(bad)
    assert proc.returncode != 0 and "runs_on" in proc.stdout + proc.stderr


@pytest.mark.parametrize("branch, pull_request", [
    ("master", False), ("main", False), ("deploy/new-model", False), ("trainpred/x", False), ("feature/x", False),
    ("feature/x", True), ("master", True),
])
def test_the_template_maps_branches_as_the_bitbucket_pipeline_does(workflow, branch, pull_request):
    bitbucket = pl.select_pipeline(pl.load_pipeline_file(model_repo.MODEL_REPO / model_repo.PIPELINE_FILE), branch,
                                   pull_request=pull_request)
    github = gh.select_jobs(workflow, branch, pull_request=pull_request)

    def mapping(sel):
        return [(s.name, s.deployment, s.effective_env, s.manual) for s in sel.steps]

    assert mapping(github) == mapping(bitbucket)
    # the same commands, less GitHub's setup (actions, the secrets step) and Bitbucket's deployment per step
    commands = [[line for entry in s.script if not entry.startswith(("# uses:", "python - "))
                 for line in entry.splitlines()] for s in github.steps]
    assert commands == [s.script for s in bitbucket.steps]


def test_the_template_deploys_nested_deploy_branches_and_takes_cognite_from_secrets(workflow):
    sel = gh.select_jobs(workflow, "deploy/team/model")  # deploy/** (Bitbucket's deploy/* stops at the first /)
    assert [s.effective_env for s in sel.steps] == ["test", "prod"]
    for step in sel.steps:
        assert {"COGNITE_PROJECT", "COGNITE_CLIENT_SECRET", "COGNITE_TOKEN_URL", "SECRETS"} <= set(step.unset_locally)
        assert "ENV=test mlops automations register --prune" in "\n".join(sel.steps[0].script)
    deploys = [job for job in workflow["jobs"].values() if job.get("environment")]
    assert len(deploys) == 4
    for job in deploys:
        (deploy,) = [s for s in job["steps"] if "deploy_" in s.get("run", "")]
        assert deploy["env"]["COGNITE_CLIENT_SECRET"] == "${{ secrets.COGNITE_CLIENT_SECRET }}"
        assert any(s.get("env", {}).get("SECRETS") == "${{ toJSON(secrets) }}" for s in job["steps"])


def test_the_package_data_ships_the_workflow_template():
    """setuptools expands package_data with glob(recursive=True), whose `**` skips hidden folders like .github."""
    tree = ast.parse((REPO / "setup.py").read_text())
    (data,) = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
               for kw in node.keywords if kw.arg == "package_data"]
    patterns = ast.literal_eval(data)["akerbp.mlops"]
    package = REPO / "akerbp" / "mlops"
    shipped = {Path(p).resolve() for pattern in patterns for p in glob.glob(str(package / pattern), recursive=True)}
    assert TEMPLATE.resolve() in shipped


# ------------------------------------------------------------------------------------------ mlops init --ci


def test_init_ci_github_writes_the_workflow_instead_of_the_bitbucket_pipeline(tmp_path):
    result = invoke("init", tmp_path / "g", "--ci", "github")
    assert result.exit_code == 0, result.output
    assert "GitHub setup" in result.stdout
    assert (tmp_path / "g" / model_repo.GITHUB_WORKFLOW_FILE).read_bytes() == TEMPLATE.read_bytes()
    assert not (tmp_path / "g" / model_repo.PIPELINE_FILE).exists()
    assert (tmp_path / "g" / "deploy_prediction_service.sh").is_file()

    result = invoke("pipeline", "show", "--branch", "master", cwd=tmp_path / "g")  # the one file there
    assert result.exit_code == 0, result.output
    assert "on.push.branches['master']" in result.stdout and "production-prediction" in result.stdout
    assert "set by the CI, not by a local run" in result.stdout


def test_with_both_files_pipeline_needs_ci_and_with_neither_it_names_both(tmp_path):
    assert invoke("init", tmp_path / "b", "--ci", "both").exit_code == 0
    both = invoke("pipeline", "show", "--branch", "master", cwd=tmp_path / "b")
    assert both.exit_code == 2 and "--ci" in both.stderr
    for ci in ("github", "bitbucket"):
        shown = invoke("pipeline", "show", "--branch", "master", "--ci", ci, "--json", cwd=tmp_path / "b")
        assert shown.exit_code == 0, shown.output
        out = json.loads(shown.stdout)
        assert out["ci"] == ci and [s["name"] for s in out["steps"]] == [
            "Deploy prediction service to test", "Deploy prediction service to prod"]
    (tmp_path / "none").mkdir()
    neither = invoke("pipeline", "run", "--branch", "master", cwd=tmp_path / "none")
    assert neither.exit_code == 2
    assert model_repo.PIPELINE_FILE in neither.stderr and model_repo.GITHUB_WORKFLOW_FILE in neither.stderr


def test_pipeline_show_json_for_branches_of_the_github_template(tmp_path):
    root = tmp_path / "r"
    (root / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(TEMPLATE, root / model_repo.GITHUB_WORKFLOW_FILE)
    expected = {
        "trainpred/x": ["Deploy training service to test", "Deploy prediction service to test",
                        "Deploy training service to prod", "Deploy prediction service to prod"],
        "deploy/a/b": ["Deploy prediction service to test", "Deploy prediction service to prod"],
        "feature/x": [],
    }
    for branch, jobs in expected.items():
        result = invoke("pipeline", "show", "--branch", branch, "--json", cwd=root)
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        assert [s["name"] for s in out["steps"]] == jobs, branch
    text = invoke("pipeline", "show", "--branch", "feature/x", cwd=root).stdout
    assert "no on.push.branches pattern matches 'feature/x'" in text
    assert "A pull request from it runs on.pull_request (mlops pipeline show --ci github" in text
    pr = json.loads(invoke("pipeline", "show", "--branch", "feature/x", "--pull-request", "--json", cwd=root).stdout)
    assert [s["name"] for s in pr["steps"]] == ["Model and service tests"]
    assert resolve_source(None, None, root).repo == root.resolve()  # the jobs run in the repo, not in workflows/


# ------------------------------------------------------------------------------------------ mlops pipeline run

RUNNABLE = """\
on:
  push:
    branches: ['**', '!leaky']
jobs:
  first:
    runs-on: x
    environment: test-x
    env: {ENV: test}
    steps:
      - uses: actions/checkout@v4
      - run: echo "first ENV=$ENV local=$MLOPS_LOCAL_CDF project=${COGNITE_PROJECT:-none} step=$STEP"
        env: {STEP: one, COGNITE_PROJECT: "${{ secrets.COGNITE_PROJECT }}"}
      - run: echo "step not carried=${STEP:-unset}"
      - run: exit ${{ github.ref_name == 'broken' && 3 || 0 }}
  prod:
    needs: first
    runs-on: x
    environment: production-x
    steps: [{run: 'export ENV=prod; echo "prod ENV=$ENV"'}]
  report:
    needs: [first, prod]
    if: always()
    runs-on: x
    steps: [{run: echo reported}]
"""


def test_run_executes_jobs_with_their_env_stops_before_manual_and_failures(tmp_path, monkeypatch):
    path = write(tmp_path / ".github" / "workflows" / "ci.yml", RUNNABLE)
    monkeypatch.setenv("COGNITE_PROJECT", "must-not-leak")
    result = invoke("pipeline", "run", "--branch", "master", "--file", path, "--json")
    assert result.exit_code == 0, result.output
    assert "first ENV=test local=1 project=none step=one" in result.stderr
    assert "step not carried=unset" in result.stderr and "must-not-leak" not in result.output
    runs = {r["name"]: r["status"] for r in json.loads(result.stdout)["results"]}
    assert runs == {"first": "passed", "prod": "skipped", "report": "skipped"}  # a manual job pauses the rest

    result = invoke("pipeline", "run", "--branch", "master", "--file", path, "--include-manual", "--json")
    assert result.exit_code == 0, result.output
    assert "prod ENV=prod" in result.stderr and "reported" in result.stderr

    result = invoke("pipeline", "run", "--branch", "broken", "--file", path, "--json")
    assert result.exit_code == 1
    runs = {r["name"]: r["status"] for r in json.loads(result.stdout)["results"]}
    assert runs == {"first": "failed", "prod": "skipped", "report": "passed"}  # always() runs after the failure

    result = invoke("pipeline", "run", "--branch", "leaky", "--file", path)
    assert result.exit_code == 0 and "No pipeline runs" in result.stderr
    # the job runs in the repo two folders above .github/workflows
    assert resolve_source("github", path).repo == tmp_path.resolve()


@pytest.fixture
def github_repo(tmp_path):
    root = copy_template(tmp_path / "repo")
    (root / model_repo.PIPELINE_FILE).unlink()  # a GitHub repo: the workflow is its one CI file
    (root / ".github" / "workflows").mkdir(parents=True)
    shutil.copy(TEMPLATE, root / model_repo.GITHUB_WORKFLOW_FILE)
    repo = Repo(root)
    yield repo
    repo.close()


def test_run_master_deploys_prediction_to_test_and_waits_before_prod(github_repo):
    """The one deploy: the template's workflow run here, as `mlops pipeline run` finds it (no --ci, no --file)."""
    first = model_manager.upload_new_model_version("well_density", "test", REPO / "model_artifact",
                                                   client=github_repo.client)
    run = github_repo.run("mlops", "pipeline", "run", "--branch", "master", "--json")
    assert run.code == 0, run.stderr[-3000:]
    results = [(r["name"], r["status"]) for r in json.loads(run.stdout)["results"]]
    assert results == [("Deploy prediction service to test", "passed"),
                       ("Deploy prediction service to prod", "skipped")]
    live = {xid: f.metadata["mlops_model_id"] for xid, f in github_repo.functions().items()
            if f.metadata and xid == "-".join(f.metadata.get(k, "") for k in ("mlops_model", "mlops_service", "mlops_env"))}
    assert live == {"well_density-prediction-test": first["model_id"]}
    assert "uses: actions/checkout" in run.stderr and "automations register" in run.stderr
