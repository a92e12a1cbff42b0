"""`mlops local-cdf serve|tick|status|reset` as a user runs them (subprocesses, real SDK)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import requests

from akerbp.mlops.local_cdf import LocalCDF
from test_local_cdf_functions import ECHO, deploy


def mlops(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_serve_announces_itself_serves_the_sdk_and_stops_cleanly(tmp_path):
    data_dir = tmp_path / "cdf"
    proc = subprocess.Popen([sys.executable, "-m", "akerbp.mlops.cli", "local-cdf", "serve", "--port", "0",
                             "--data-dir", str(data_dir), "--client", "app:secret-1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        base_url = line.split(" at ")[1].split()[0]
        assert LocalCDF.running(data_dir) == base_url
        token = requests.post(f"{base_url}/oauth2/token", data={"grant_type": "client_credentials",
                                                                "client_id": "app", "client_secret": "secret-1"})
        assert token.status_code == 200
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
        fn = deploy(client, tmp_path, ECHO)
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
