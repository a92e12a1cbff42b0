"""`mlops local-cdf serve|tick|status|reset` as a user runs them (subprocesses, real SDK)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from cognite.client import ClientConfig, CogniteClient
from cognite.client.credentials import Token

from akerbp.mlops.local_cdf import LocalCDF
from support import ECHO, TOKEN, deploy_function, make_folder


def mlops(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_serve_announces_itself_serves_the_sdk_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "cdf"
    proc = subprocess.Popen([sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "serve", "--port", "0",
                             "--data-dir", str(data_dir), "--client", "app:secret-1", "--project", "toolkit"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        base_url = line.split(" at ")[1].split()[0]
        assert LocalCDF.running(data_dir) == base_url
        token = requests.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials",
                                                                "client_id": "app", "client_secret": "secret-1"})
        assert token.status_code == 200
        inspect = requests.get(f"{base_url}/api/v1/token/inspect",
                               headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=30)
        assert [p["projectUrlName"] for p in inspect.json()["projects"]] == ["toolkit"]  # declared, holds nothing
        refused = requests.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials",
                                                                  "client_id": "app", "client_secret": "wrong"})
        assert refused.status_code == 401
        status = json.loads(mlops("local-cdf", "status", "--data-dir", str(data_dir), "--json").stdout)
        assert status["server"] == base_url
        busy = mlops("local-cdf", "reset", "--data-dir", str(data_dir), "--yes")
        assert busy.returncode == 2 and "running" in busy.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert LocalCDF.running(data_dir) is None
    assert json.loads(mlops("local-cdf", "status", "--data-dir", str(data_dir), "--json").stdout)["server"] is None


def test_tick_fires_due_schedules_once(tmp_path):
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir) as cdf:
        client = cdf.client(project="p")
        fn = deploy_function(client, tmp_path, ECHO)
        schedule = client.functions.schedules.create(name="daily", cron_expression="0 6 * * *", function_id=fn.id,
                                                     data={"tick": True})
    created = datetime.fromtimestamp(schedule.created_time / 1000, timezone.utc)
    due = (created + timedelta(days=1)).replace(hour=6, minute=30, second=0, microsecond=0)
    first = mlops("local-cdf", "tick", "--data-dir", str(data_dir), "--now", due.isoformat(), "--json")
    assert first.returncode == 0, first.stderr
    [call] = json.loads(first.stdout)
    assert call["status"] == "Completed" and call["scheduleId"] == schedule.id
    again = mlops("local-cdf", "tick", "--data-dir", str(data_dir), "--now", due.isoformat())
    assert again.returncode == 0 and "No schedule was due" in again.stdout
    with LocalCDF(data_dir) as cdf:
        response = cdf.client(project="p").functions.calls.get_response(call_id=call["id"], function_id=fn.id)
        assert response["data"] == {"tick": True}


def test_status_reset_and_usage_errors(tmp_path):
    data_dir = tmp_path / "cdf"
    with LocalCDF(data_dir) as cdf:
        cdf.client(project="p").files.upload_bytes(b"x", name="x", external_id="x")
    status = mlops("local-cdf", "status", "--data-dir", str(data_dir))
    assert "p/files" in status.stdout and "not running" in status.stdout
    refused = mlops("local-cdf", "reset", "--data-dir", str(data_dir))
    assert refused.returncode == 2 and "--yes" in refused.stderr and data_dir.exists()
    assert mlops("local-cdf", "reset", "--data-dir", str(data_dir), "--yes").returncode == 0
    assert not data_dir.exists()
    bad_time = mlops("local-cdf", "tick", "--data-dir", str(data_dir), "--now", "tomorrow")
    assert bad_time.returncode == 2 and "--now" in bad_time.stderr and "Traceback" not in bad_time.stderr
    bad_client = mlops("local-cdf", "serve", "--data-dir", str(data_dir), "--client", "no-colon")
    assert bad_client.returncode == 2 and "ID:SECRET" in bad_client.stderr


def test_other_commands_explain_a_server_restricted_to_some_clients(tmp_path):
    data_dir = tmp_path / "cdf"
    proc = subprocess.Popen([sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "serve", "--port", "0",
                             "--data-dir", str(data_dir), "--client", "app:secret-1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        base_url = proc.stderr.readline().split(" at ")[1].split()[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COGNITE_")}
        refused = subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", "models", "list"], capture_output=True,
                                 text=True, timeout=120, env={**env, "MLOPS_LOCAL_CDF_DIR": str(data_dir)})
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr and "--client" in refused.stderr
        for hint in (f"COGNITE_BASE_URL={base_url}", f"COGNITE_TOKEN_URL={base_url}/oauth2/token",
                     "COGNITE_CLIENT_ID", "COGNITE_CLIENT_SECRET"):
            assert hint in refused.stderr
        configured = {**env, "MLOPS_LOCAL_CDF_DIR": str(data_dir), "COGNITE_PROJECT": "p",
                      "COGNITE_BASE_URL": base_url, "COGNITE_TOKEN_URL": f"{base_url}/oauth2/token",
                      "COGNITE_CLIENT_ID": "app", "COGNITE_CLIENT_SECRET": "secret-1"}
        for args in (["models", "list"], ["status", "--env", "dev"]):  # dev services: the local CDF, as configured
            done = subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", *args], capture_output=True, text=True,
                                  timeout=120, env=configured)
            assert done.returncode == 0, done.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_status_and_reset_from_a_subfolder_use_the_repo_data_dir(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "model_code").mkdir()
    data_dir = repo / ".mlops" / "local-cdf"
    with LocalCDF(data_dir) as cdf:
        cdf.client(project="local").files.upload_bytes(b"x", name="x", external_id="x")
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_LOCAL_CDF_DIR"}

    def here(*args):
        return subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", *args], capture_output=True,
                              text=True, timeout=120, cwd=repo / "model_code", env=env)

    status = json.loads(here("status", "--json").stdout)
    assert Path(status["dataDir"]) == data_dir and status["exists"] and status["resources"]["local/files"] == 1
    assert here("reset", "--yes").returncode == 0
    assert not data_dir.exists() and not (repo / "model_code" / ".mlops").exists()


def test_serve_build_delay_holds_builds_and_stop_cuts_it_short(tmp_path):
    """`serve --build-delay` reaches the server (a function stays Deploying), and SIGTERM during the delay stops
    the server at once, handing the build back rather than waiting the delay out."""
    data_dir = tmp_path / "cdf"
    assert "--build-delay" in mlops("local-cdf", "serve", "--help").stdout
    refused = mlops("local-cdf", "serve", "--build-delay", "-1", "--data-dir", str(data_dir))
    assert refused.returncode == 2 and "--build-delay" in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "serve", "--port", "0",
                             "--data-dir", str(data_dir), "--isolation", "shared-no-install", "--build-delay", "600"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "builds take at least 600 s" in line, line
        client = CogniteClient(ClientConfig(client_name="t", project="p", base_url=line.split(" at ")[1].split()[0],
                                            credentials=Token(TOKEN)))
        client.functions.create(name="fn", external_id="fn", folder=str(make_folder(tmp_path, ECHO)))
        deadline = time.monotonic() + 60
        while client.functions.retrieve(external_id="fn").status != "Deploying":
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)  # polling interval; the loop ends on the status
    finally:
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert proc.wait(timeout=30) == 0
    assert time.monotonic() - stopped < 30
