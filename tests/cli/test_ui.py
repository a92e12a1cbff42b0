"""`mlops ui` as a user runs it, a subprocess over a repo's local CDF: it prints the URL, serves the dashboard, stops on
SIGINT or SIGTERM with exit 0; beyond loopback it needs a token (generated, or $MLOPS_UI_TOKEN); a port in use and a
short token are usage errors (exit 2)."""
from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading

import pytest
import requests

from akerbp.mlops.registry.versions import upload_new_model_version
from support import Repo, mlops_command

STARTUP_S = 90  # the SDK's import and the snapshot's first read, on a loaded 2-core machine
TOKEN = "cli-test-token-0123456789"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui-cli") / "repo"
    root.mkdir()
    repo = Repo(root, isolation="shared-no-install")
    artifact = root / "artifact"
    artifact.mkdir()
    (artifact / "model.txt").write_text("weights")
    upload_new_model_version("gauge", "dev", artifact, {"metrics": {"r2": 0.8}}, client=repo.client)
    yield repo
    repo.close()


class Dashboard:
    """`mlops ui ...` running; its stdout lines through a queue, so every wait has a timeout."""

    def __init__(self, repo: Repo, *args: str, **env: str):
        self.proc = subprocess.Popen(mlops_command(["mlops", "ui", "--port", "0", "--no-browser", *args]),
                                     cwd=repo.root, env=repo.env(**env), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def first_line(self) -> str:
        try:
            return self.lines.get(timeout=STARTUP_S).strip()
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no URL within {STARTUP_S} s; stderr: {self.proc.communicate(timeout=30)[1]}") from None

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            _, stderr = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, stderr


def test_prints_the_url_serves_and_stops_on_ctrl_c(repo):
    dashboard = Dashboard(repo, "--json")
    try:
        url = json.loads(dashboard.first_line())["url"]
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        page = requests.get(url + "models", timeout=30)
        assert page.status_code == 200 and 'data-testid="live-gauge-dev"' in page.text
        assert requests.get(url + "api/models.json", timeout=30).json()["models"][0]["name"] == "gauge"
    finally:
        code, stderr = dashboard.stop(signal.SIGINT)
    assert code == 0, stderr
    assert "Serving the dashboard at" in stderr and "Dashboard stopped." in stderr
    assert "Traceback" not in stderr


def test_beyond_loopback_a_token_is_generated_and_required(repo):
    dashboard = Dashboard(repo, "--host", "0.0.0.0")
    try:
        url = dashboard.first_line()
        assert "?token=" in url
        port = url.split(":")[2].split("/")[0]
        token = url.split("?token=")[1]
        local = f"http://127.0.0.1:{port}/models"
        assert requests.get(local, timeout=30).status_code == 401
        assert requests.get(local, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code == 200
    finally:
        code, stderr = dashboard.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert token not in stderr  # printed once, in the URL on stdout; the request log redacts it


def test_the_token_from_the_environment_guards_loopback_too(repo):
    dashboard = Dashboard(repo, MLOPS_UI_TOKEN=TOKEN)
    try:
        url = dashboard.first_line()
        assert url.endswith(f"?token={TOKEN}")
        base = url.split("?")[0]
        assert requests.get(base + "api/models.json", timeout=30).status_code == 401
        with requests.Session() as browser:  # the printed URL sets the cookie, then every page opens
            assert browser.get(url, timeout=30).status_code == 200
            assert browser.get(base + "history", timeout=30).status_code == 200
    finally:
        code, stderr = dashboard.stop()
    assert code == 0, stderr


def test_usage_errors_exit_2(repo):
    short = repo.run("mlops", "ui", "--host", "0.0.0.0", "--no-browser", MLOPS_UI_TOKEN="short")
    assert short.code == 2 and "MLOPS_UI_TOKEN must be at least 16 characters" in short.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = repo.run("mlops", "ui", "--port", port, "--no-browser")
    assert busy.code == 2 and f"Cannot listen on 127.0.0.1:{port}" in busy.stderr, busy.stderr
    assert "Traceback" not in busy.stderr


def test_help_explains_the_command(repo):
    run = repo.run("mlops", "ui", "--help")
    assert run.code == 0
    for text in ("read-only", "--no-browser", "MLOPS_UI_TOKEN", "/api/models.json", "mlops ui --env prod"):
        assert text in run.stdout
    assert "ui" in repo.run("mlops", "--help").stdout
