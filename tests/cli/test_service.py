"""`mlops call/status/logs/history` through the root CLI against functions built by hand in a local CDF.

The functions are created with the real SDK in one LocalCDF, which is then stopped; the CLI starts its own embedded
local CDF on the same data dir, as a user's `mlops call` after a deploy does.
"""
from __future__ import annotations

import json
import textwrap
import time

import pytest
from click.testing import CliRunner

from akerbp.mlops import audit
from akerbp.mlops.cdf import client as cdf_client
from akerbp.mlops.cli import main
from akerbp.mlops.local_cdf import LocalCDF

HANDLER = """
    import os

    def handle(data, client, secrets, function_call_info):
        print("handling", sorted(data))
        if data.get("error"):
            return {"status": "error", "message": "bad input: " + data["error"], "model_id": None}
        if data.get("crash"):
            print("about to crash")
            raise RuntimeError("the model crashed")
        return {"status": "ok", "prediction": [2.5] * len(data.get("data", [])), "model_id": "m/dev/1",
                "who": os.environ["WHO"]}
"""
BROKEN = "import not_a_module\n\ndef handle(data):\n    return {}\n"


def _meta(model, env, hash_, deployed_at, service="prediction"):
    return {"mlops_model": model, "mlops_service": service, "mlops_env": env, "mlops_version": "1",
            "mlops_model_id": f"{model}/{env}/1", "mlops_hash": hash_, "mlops_git_commit": "c0ffee",
            "mlops_deployed_at": deployed_at, "mlops_deployed_by": "tester", "mlops_code_file": "model_code/model.py"}


FUNCTIONS = [  # external id, handler source, WHO, metadata (None: not an mlops function)
    ("m-prediction-dev", HANDLER, "live", _meta("m", "dev", "f" * 64, "2024-06-02T10:00:00Z")),
    ("m-prediction-dev-0123456789", HANDLER, "old standby", _meta("m", "dev", "0123456789" + "0" * 54,
                                                                 "2024-01-01T10:00:00Z")),
    ("m-prediction-dev-abcdef0123", HANDLER, "new standby", _meta("m", "dev", "abcdef0123" + "0" * 54,
                                                                 "2024-06-01T10:00:00Z")),
    ("m-prediction-test-abcdef0123", HANDLER, "test standby", _meta("m", "test", "abcdef0123" + "1" * 54,
                                                                   "2024-06-01T10:00:00Z")),
    ("f-prediction-dev", BROKEN, "broken", _meta("f", "dev", "b" * 64, "2024-06-03T10:00:00Z")),
    ("f-prediction-dev-abcdef0123", HANDLER, "f standby", _meta("f", "dev", "abcdef0123" + "2" * 54,
                                                               "2024-06-02T10:00:00Z")),
    # created after the newer standby, so choosing by creation instead of deployment time would pick it
    ("f-prediction-dev-0123456789", HANDLER, "f old standby", _meta("f", "dev", "0123456789" + "2" * 54,
                                                                   "2024-05-02T10:00:00Z")),
    ("someone-elses-function", HANDLER, "other", None),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("service-cli")
    data_dir = root / "cdf"
    with LocalCDF(data_dir) as cdf:
        client = cdf.client(project=cdf_client.LOCAL_PROJECT)
        for xid, source, who, metadata in FUNCTIONS:
            folder = root / xid
            folder.mkdir()
            (folder / "handler.py").write_text(textwrap.dedent(source))
            client.functions.create(name=xid, external_id=xid, folder=str(folder), env_vars={"WHO": who},
                                    metadata=metadata, skip_folder_validation=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # CDF offers no push notification for Ready: poll as deployers do
            states = {f.external_id: f.status for f in client.functions.list(limit=1000)}
            if all(s in ("Ready", "Failed") for s in states.values()):
                break
            time.sleep(0.05)
        assert states["f-prediction-dev"] == "Failed"
        assert all(s == "Ready" for x, s in states.items() if x != "f-prediction-dev"), states
        started = time.time()
        audit.record(client, "deploy", model="m", env="dev", service="prediction", outcome="success",
                     started=started - 5, version=1, model_id="m/dev/1", code_hash="f" * 64, message="first deploy")
        audit.record(client, "promotion", model="m", env="test", outcome="success", started=started,
                     version=1, model_id="m/test/1", message="promoted m/dev/1")
    return data_dir


@pytest.fixture(scope="module")
def mlops(data_dir):
    env = {var: None for var in cdf_client.CONFIG_VARS + cdf_client.RETIRED_API_KEY_VARS}
    env.update({"MLOPS_LOCAL_CDF_DIR": str(data_dir), "CI": None, "BITBUCKET_BUILD_NUMBER": None, "ENV": None})
    runner = CliRunner(env=env)
    cdf_client.reset_clients()

    def run(*args, code=0):
        result = runner.invoke(main, [str(a) for a in args])
        assert result.exit_code == code, (result.output, result.exception)
        assert "Traceback" not in result.output
        return result

    yield run
    cdf_client.reset_clients()


def test_call_prints_the_response(mlops):
    result = mlops("call", "m", "--data", '{"data": [{"GR": 1}, {"GR": 2}]}')
    response = json.loads(result.stdout)
    assert response == {"status": "ok", "prediction": [2.5, 2.5], "model_id": "m/dev/1", "who": "live"}
    assert "standby" not in result.stderr
    compact = mlops("call", "m", "--env", "dev", "--data", "{}", "--compact").stdout
    assert compact.strip() == '{"status":"ok","prediction":[],"model_id":"m/dev/1","who":"live"}'


def test_call_data_from_a_file(mlops, tmp_path):
    (tmp_path / "input.json").write_text('{"data": [{"GR": 3}]}')
    assert json.loads(mlops("call", "m", "--data", f"@{tmp_path / 'input.json'}").stdout)["prediction"] == [2.5]
    missing = mlops("call", "m", "--data", f"@{tmp_path / 'nope.json'}", code=2)
    assert "option --data: cannot read" in missing.stderr and "nope.json" in missing.stderr


def test_bad_data_is_a_usage_error(mlops):
    result = mlops("call", "m", "--data", '{"data": [1, 2,]}', code=2)
    assert "option --data: not valid JSON" in result.stderr and "line 1 column 16" in result.stderr
    assert result.stdout == ""
    assert "must be a JSON object" in mlops("call", "m", "--data", "[1, 2]", code=2).stderr
    assert "not a model name" in mlops("call", "Bad-Name", code=2).stderr


def test_error_status_is_printed_and_exits_1(mlops):
    result = mlops("call", "m", "--data", '{"error": "no GR"}', code=1)
    assert json.loads(result.stdout) == {"status": "error", "message": "bad input: no GR", "model_id": None}
    assert 'answered status "error": bad input: no GR' in result.stderr


def test_failed_call_shows_the_error_and_the_log_tail(mlops):
    result = mlops("call", "m", "--data", '{"crash": true}', code=1)
    assert result.stdout == ""
    assert "Failed" in result.stderr and "the model crashed" in result.stderr
    assert "about to crash" in result.stderr  # the tail of the call's logs
    assert "mlops logs m --service prediction --env dev --call " in result.stderr


@pytest.fixture
def settings_here(tmp_path, monkeypatch):
    """A repo whose settings define 'planned', which is not deployed anywhere."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlops_settings.yaml").write_text("model_name: planned\nmodel_file: model_code/model.py\n")


def test_not_deployed_names_the_deploy_command(mlops, settings_here):
    result = mlops("call", "planned", "--data", "{}", code=1)
    assert "no prediction service deployed for planned in dev: run `ENV=dev bash deploy_prediction_service.sh`" \
        in result.stderr
    training = mlops("call", "m", "--service", "training", "--env", "prod", code=1)
    assert "no training service deployed for m in prod: run `ENV=prod bash deploy_training_service.sh`" \
        in training.stderr


def test_falls_back_to_the_newest_ready_standby(mlops):
    missing = mlops("call", "m", "--env", "test", "--data", "{}")
    assert json.loads(missing.stdout)["who"] == "test standby"
    assert "m-prediction-test is missing; calling its standby m-prediction-test-abcdef0123" in missing.stderr

    failed = mlops("call", "f", "--data", "{}")
    assert json.loads(failed.stdout)["who"] == "f standby"
    assert "f-prediction-dev is Failed; calling its standby f-prediction-dev-abcdef0123" in failed.stderr


def test_status_lists_live_services_with_their_last_call(mlops):
    mlops("call", "m", "--data", "{}")
    rows = json.loads(mlops("status", "--json").stdout)
    by_key = {(r["model"], r["service"], r["env"]): r for r in rows}
    assert set(by_key) == {("f", "prediction", "dev"), ("m", "prediction", "dev"), ("m", "prediction", "test")}
    live = by_key["m", "prediction", "dev"]
    assert live["function"] == "m-prediction-dev" and not live["standby"] and live["standbys"] == 2
    assert live["model_id"] == "m/dev/1" and live["hash"] == "f" * 64 and live["deployed_by"] == "tester"
    assert live["status"] == "Ready" and live["last_call"]["status"] == "Completed"
    assert by_key["f", "prediction", "dev"]["status"] == "Failed"
    assert by_key["m", "prediction", "test"]["standby"] and by_key["m", "prediction", "test"]["last_call"]

    table = mlops("status", "--env", "dev").stdout.splitlines()
    assert table[0].split()[:5] == ["MODEL", "SERVICE", "ENV", "VERSION", "HASH"]
    assert len(table) == 4 and any(line.startswith("m ") and "ffffffffff " in line for line in table)
    assert table[-1].startswith("functions in the CDF of dev: ")  # the header, two services, then the count
    assert "no mlops services deployed in prod" in mlops("status", "--env", "prod").stdout


def test_logs_show_what_the_call_printed(mlops):
    called = mlops("call", "m", "--data", '{"data": [], "probe": 1}')
    assert json.loads(called.stdout)["status"] == "ok"
    newest = mlops("logs", "m")
    assert "handling ['data', 'probe']" in newest.stdout
    assert "of m-prediction-dev: Completed" in newest.stderr

    crashed = mlops("call", "m", "--data", '{"crash": 1}', code=1)
    call_id = int(crashed.stderr.split("--call ")[1].split("`")[0])
    shown = json.loads(mlops("logs", "m", "--call", call_id, "--json").stdout)
    assert shown["call_id"] == call_id and shown["status"] == "Failed"
    assert any("about to crash" in line for line in shown["logs"]) and "the model crashed" in shown["error"]
    assert "no call 999999" in mlops("logs", "m", "--call", 999999, code=1).stderr


def test_logs_find_calls_of_standbys(mlops):
    mlops("call", "m", "--env", "test", "--data", '{"from": "standby"}')
    result = mlops("logs", "m", "--env", "test")
    assert "handling ['from']" in result.stdout and "m-prediction-test-abcdef0123" in result.stderr


def test_history_shows_the_audit_records(mlops):
    records = json.loads(mlops("history", "m", "--json").stdout)
    assert [(r["action"], r["env"]) for r in records] == [("promotion", "test"), ("deploy", "dev")]
    assert records[1]["message"] == "first deploy" and records[1]["model_id"] == "m/dev/1"
    only_dev = json.loads(mlops("history", "m", "--env", "dev", "--json").stdout)
    assert [r["action"] for r in only_dev] == ["deploy"]
    table = mlops("history", "m").stdout.splitlines()
    assert table[0].split()[:3] == ["TIME", "(UTC)", "ACTION"]
    assert "promotion" in table[1] and "deploy" in table[2] and "ffffffffff" in table[2]
    assert "no audit records for f" in mlops("history", "f").stdout


UNKNOWN = "Error: unknown model 'nothing': the known models are f, m, planned (in mlops_settings.yaml and CDF)\n"


def test_an_unknown_model_is_one_message_and_exit_2_for_every_command(mlops, settings_here):
    """Neither in the settings nor in CDF: a typo, told apart from a model with nothing deployed or recorded yet."""
    for command in (["call", "nothing"], ["logs", "nothing"], ["history", "nothing"], ["history", "nothing", "--json"],
                    ["models", "list", "nothing"], ["models", "list", "nothing", "--json"]):
        assert mlops(*command, code=2).stderr == UNKNOWN, command
    # Known from the settings, or from CDF: the command's own answer.
    assert "no audit records for planned" in mlops("history", "planned").stdout
    assert mlops("models", "list", "planned", "--json").stdout.strip() == "[]"
    assert "no audit records for f" in mlops("history", "f").stdout  # f is deployed, not in these settings
    assert "no model versions of f" in mlops("models", "list", "f").stdout
