"""Which CDF each command talks to, and what the user sees when that CDF fails: the CLI (deploys in subprocesses, as
the scripts run them; quick reads through click's runner in this process), the real SDK, local CDFs over HTTP (one
stands in for a configured CDF project, reached with OIDC client credentials).

Each test starts from its own repo copy and local CDFs, so any test runs alone.
"""
from __future__ import annotations

import json
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from akerbp.mlops import model_manager
from akerbp.mlops.cdf import client as cdf_client
from akerbp.mlops.cli import main
from akerbp.mlops.local_cdf import LocalCDF
from support import CLEARED, REPO, Repo, Run

PROJECT_SECRET = "project-Secret-4711"
MODEL_SECRET = "model-Secret-0815"

SETTINGS = '''
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(model_name="alpha", model_file="models/alpha/model.py", req_file="models/alpha/requirements.model",
                  test_file="models/alpha/test_model.py", artifact_folder="artifacts/alpha",
                  analytics=dict(enabled=False){alpha_extra}),
    ModelSettings(model_name="beta", model_file="models/beta/model.py", req_file="models/beta/requirements.model",
                  test_file="models/beta/test_model.py", artifact_folder="artifacts/beta",
                  analytics=dict(enabled=False)),  # as support.TEMPLATE_SETTINGS: workers without the SDK import
]
'''
MODEL = '''
import json
import os
from pathlib import Path

# The deploy's service test runs the built folder under .mlops/; a CDF function runs elsewhere.
IN_CDF = ".mlops" not in Path(__file__).resolve().parts


def initialization(folder, secrets):
    return json.loads((Path(folder) / "factor.json").read_text())["factor"]


def predict(data, factor, secrets):
    if os.environ.get("LEAK_SECRET_IN_CDF") and IN_CDF:
        print("calling the scoring API with key", secrets["api-key"])
        raise SystemExit("the scoring API refused key " + secrets["api-key"])
    return [x * factor for x in data["x"]]


def train(data, folder, secrets):
    Path(folder, "factor.json").write_text("{\\"factor\\": 2}")
    return {}
'''
TESTS = '''
from models.{name} import model


class ServiceTest:
    prediction_input = {{"x": [1, 2]}}
    training_input = {{}}

    @staticmethod
    def prediction_check(output):
        return output["status"] == "ok" and output["prediction"] == [2, 4]

    @staticmethod
    def training_check(output):
        return output["status"] == "ok"


def test_predict():
    assert model.predict({{"x": [1]}}, 2, {{}}) == [2]
'''


def write_repo(root: Path, alpha_extra: str = "") -> Path:
    files = {"mlops_settings.py": SETTINGS.format(alpha_extra=alpha_extra), "models/__init__.py": ""}
    for name in ("alpha", "beta"):
        files.update({f"models/{name}/__init__.py": "", f"models/{name}/model.py": MODEL,
                      f"models/{name}/test_model.py": TESTS.format(name=name),
                      f"models/{name}/requirements.model": "# none\n", f"artifacts/{name}/factor.json": '{"factor": 2}'})
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(text))
    (root / ".git").mkdir()  # the repo root marker, as in a real checkout
    (root / "deploy_prediction_service.sh").write_text((REPO / "deploy_prediction_service.sh").read_text())
    return root


@pytest.fixture
def repo(tmp_path):
    repo = Repo(write_repo(tmp_path / "repo"))
    yield repo
    repo.close()


@pytest.fixture
def project(tmp_path):
    """A 'real' CDF project: accepts only its own client credentials."""
    with LocalCDF(tmp_path / "project", clients={"ci-client": PROJECT_SECRET}) as cdf:
        yield cdf


def project_env(cdf: LocalCDF, token_url: str | None = None) -> dict:
    return {"COGNITE_PROJECT": "remote", "COGNITE_BASE_URL": cdf.base_url, "COGNITE_CLIENT_ID": "ci-client",
            "COGNITE_CLIENT_SECRET": PROJECT_SECRET, "COGNITE_TOKEN_URL": token_url or cdf.token_url,
            "NO_PROXY": "127.0.0.1,localhost"}


def holds_nothing(cdf: LocalCDF) -> bool:
    client = cdf.client(project="remote")
    return not client.functions.list(limit=10) and not client.files.list(limit=10) and not client.events.list(limit=10)


def cli(repo: Repo, *args: str, **env: str) -> Run:
    """`mlops ARGS` in this process, with the environment a subprocess of repo.run would get."""
    cleared = {name: None for name in (*CLEARED, *cdf_client.CONFIG_VARS, *cdf_client.RETIRED_API_KEY_VARS)}
    cdf_client.reset_clients()
    try:
        result = CliRunner(env={**cleared, "MLOPS_LOCAL_CDF_DIR": str(repo.cdf.data_dir), **env}).invoke(main, args)
    finally:
        cdf_client.reset_clients()
    return Run(result.exit_code, result.stdout, result.stderr)


def one_line(stderr: str) -> str:
    """The error: one line, whatever notes (which local CDF is used) come before it."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("Using the local CDF")]
    assert len(lines) == 1, stderr
    return lines[0]


# --- finding 2: a dev deploy and the commands that read it back use the same CDF -----------------------------------

def test_a_dev_deploy_with_a_project_configured_is_found_by_call_status_and_history(repo, project):
    env = project_env(project)
    run = repo.deploy("--model", "beta", "--json", **env)
    assert run.code == 0, run.stderr
    assert "beta-prediction-dev" in repo.functions()  # ENV=dev goes to the local CDF...

    called = cli(repo, "call", "beta", "--data", '{"x": [3]}', **env)
    assert called.code == 0, called.stderr
    assert json.loads(called.stdout)["prediction"] == [6]
    for args in (["status", "--json"], ["status", "--env", "dev", "--json"]):  # all environments, and dev alone
        status = cli(repo, *args, **env)
        assert status.code == 0, status.stderr
        assert [(r["function"], r["status"]) for r in json.loads(status.stdout)] == [("beta-prediction-dev", "Ready")]
    logs = cli(repo, "logs", "beta", **env)
    assert logs.code == 0 and "beta-prediction-dev" in logs.stderr
    history = cli(repo, "history", "beta", "--json", **env)
    assert history.code == 0, history.stderr
    assert [(r["action"], r["env"], r["outcome"]) for r in json.loads(history.stdout)] == [("deploy", "dev", "success")]
    assert holds_nothing(project)  # ...and so do call, status, logs and history: the project was never touched
    assert PROJECT_SECRET not in "".join(r.stdout + r.stderr for r in (run, called, status, logs, history))


# --- finding 3: CI does not deploy dev into a throwaway local CDF ---------------------------------------------------

def test_ci_refuses_a_dev_deploy_to_the_local_cdf_unless_asked(repo):
    refused = repo.deploy(CI="true")
    assert refused.code == 2, refused.stderr
    message = one_line(refused.stderr)
    assert "ENV=test" in message and "MLOPS_LOCAL_CDF=1" in message and "Traceback" not in refused.stderr
    assert "model tests" not in refused.stderr  # refused before minutes of tests
    assert repo.functions() == {}

    dry = repo.deploy("--model", "beta", "--dry-run", CI="true")
    assert dry.code == 0, dry.stderr
    assert "beta-prediction-dev" in dry.stdout and repo.functions() == {}


# --- finding 4: network failures are one line, and one model's failure does not stop the others -------------------

# Port 9 (discard) is closed here: the token request fails at once, so no retry makes these tests slow.
UNREACHABLE = {"COGNITE_PROJECT": "remote", "COGNITE_BASE_URL": "http://127.0.0.1:9", "COGNITE_CLIENT_ID": "ci-client",
               "COGNITE_CLIENT_SECRET": PROJECT_SECRET, "COGNITE_TOKEN_URL": "http://127.0.0.1:9/oauth2/token",
               "NO_PROXY": "127.0.0.1,localhost"}


@pytest.mark.parametrize("command", [["status"], ["models", "list"], ["history", "beta", "--env", "test"]])
def test_an_unreachable_cdf_is_one_line_and_exit_1(repo, command):
    run = cli(repo, *command, **UNREACHABLE)
    assert run.code == 1, run.stderr
    line = one_line(run.stderr)
    assert line.startswith("Error: cannot reach CDF at http://127.0.0.1:9") and "COGNITE_BASE_URL" in line
    assert "Traceback" not in run.stderr and PROJECT_SECRET not in run.stderr


def test_a_registry_error_caused_by_the_network_names_the_url(repo):
    # The token endpoint answers, the API does not: the registry wraps the SDK's error; the URL still shows.
    env = {**UNREACHABLE, "COGNITE_TOKEN_URL": repo.cdf.token_url}
    run = repo.run("mlops", "models", "list", MLOPS_CDF_MAX_RETRIES="0", **env)
    assert run.code == 1, run.stderr
    assert one_line(run.stderr).startswith("Error: cannot reach CDF at http://127.0.0.1:9/")


def test_mlops_log_level_debug_shows_the_traceback(repo):
    # A base URL that refuses connections behind a working token endpoint: the SDK retries, unless told not to.
    env = {**UNREACHABLE, "COGNITE_TOKEN_URL": repo.cdf.token_url, "MLOPS_CDF_MAX_RETRIES": "0"}
    run = repo.run("mlops", "status", "--env", "test", MLOPS_LOG_LEVEL="DEBUG", **env)
    assert run.code == 1
    assert "Traceback" in run.stderr and "CogniteConnectionRefused" in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].startswith("Error: cannot reach CDF at http://127.0.0.1:9/")
    assert PROJECT_SECRET not in run.stderr


class DropsFirstTokenRequest:
    """A token endpoint in front of a real one that drops the first connection without answering (a network
    failure the SDK does not wrap in a CogniteException), then forwards."""

    def __init__(self, token_url: str):
        state = {"seen": 0}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                state["seen"] += 1
                if state["seen"] == 1:
                    self.close_connection = True
                    return
                answer = requests.post(token_url, data=body, headers={"Content-Type": self.headers["Content-Type"]})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

        self.state = state
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/oauth2/token"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_unexpected_error_in_one_model_does_not_stop_the_next(repo, project):
    flaky = DropsFirstTokenRequest(project.token_url)
    try:
        # --jobs 1: one model after the other, so the first token request (the one dropped) is alpha's
        run = repo.deploy("--json", "--jobs", "1", LOCAL_DEPLOYMENT="True", **project_env(project, flaky.url))
    finally:
        flaky.close()
    assert run.code == 1, run.stderr
    alpha, beta = run.result("alpha"), run.result("beta")
    assert alpha["result"] == "failed" and "RemoteProtocolError" in alpha["message"]
    assert alpha["message"].startswith(f"cannot reach CDF at {flaky.url}")
    assert beta["result"] == "deployed", beta["message"]
    fn = project.client(project="remote").functions.retrieve(external_id="beta-prediction-dev")
    assert fn is not None and fn.status == "Ready"
    assert "Traceback" not in run.stderr and PROJECT_SECRET not in run.stdout + run.stderr


# --- finding 13: what a model prints never carries a secret into the output ----------------------------------------

def test_a_secret_printed_during_a_failing_smoke_call_stays_masked(tmp_path):
    root = write_repo(tmp_path / "repo", alpha_extra=', secrets=["api-key"], env_vars={"LEAK_SECRET_IN_CDF": "1"}')
    repo = Repo(root)
    try:
        run = repo.deploy("--model", "alpha", "--json", MLOPS_SECRET_API_KEY=MODEL_SECRET)
        assert run.code == 1, run.stderr
        message = run.result()["message"]
        assert "the smoke call of alpha-prediction-dev ended Failed" in message
        assert "calling the scoring API with key ***" in message  # the logs are there, the secret is not
        assert MODEL_SECRET not in run.stdout + run.stderr
    finally:
        repo.close()


# --- finding 24: the advice for a missing artifact, once ------------------------------------------------------------

def test_a_missing_artifact_is_explained_once(repo):
    run = repo.deploy("--model", "beta", ENV="test")
    assert run.code == 1
    both = run.stdout + run.stderr
    assert "no artifact to deploy for model beta in test" in run.stdout
    assert both.count("mlops models upload beta --env test") == 1, both
    assert both.count("mlops models promote beta") == 1 and both.count("deploy_training_service.sh") == 1, both


# --- findings 1 and 5/6 live in test_pipeline.py and test_local_cdf_cli.py ------------------------------------------

def test_the_registry_commands_keep_the_configured_project(repo, project, tmp_path):
    """`mlops models` is per project: with a project configured, dev versions go there (not to the local CDF)."""
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "factor.json").write_text('{"factor": 2}')
    run = cli(repo, "models", "upload", "beta", "--folder", str(folder), "--json", **project_env(project))
    assert run.code == 0, run.stderr
    assert model_manager.get_model_version("beta", "dev", client=project.client(project="remote"))["version"] == 1
    assert repo.client.files.list(limit=5) == []
