"""What every `mlops` command shares: a closed output pipe, the ENV variable, and help texts that say what is true."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from akerbp.mlops.cdf.client import get_environment
from akerbp.mlops.cli import main
from akerbp.mlops.errors import UsageError


def run_into_a_closed_pipe(*args, cwd) -> subprocess.CompletedProcess:
    """The command with its stdout a pipe whose reader is gone, as in `mlops ... | head -1` once head has exited."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the command starts: its first write meets EPIPE, whatever the timing
    try:
        return subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=cwd, timeout=120)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ["local-cdf", "status", "--data-dir", "cdf"],
    ["settings", "schema"],
    ["pipeline", "show", "--branch", "master", "--file", "PIPELINE"],
    ["--help"],
])
def test_a_closed_output_pipe_ends_the_command_quietly(tmp_path, args):
    pipeline = os.path.join(os.path.dirname(__file__), "..", "..", "bitbucket-pipelines.yml")
    args = [os.path.abspath(pipeline) if a == "PIPELINE" else a for a in args]
    done = run_into_a_closed_pipe(*args, cwd=tmp_path)
    assert done.stderr == "", done.stderr  # not "Error: cannot reach CDF ...", not a traceback
    assert done.returncode == 1


@pytest.mark.parametrize("value", ["TEST", " test", "test ", "Prod", "dev\n"])
def test_env_must_be_exactly_dev_test_or_prod(monkeypatch, value):
    monkeypatch.setenv("ENV", value)
    with pytest.raises(UsageError, match=r"exactly one of dev, test, prod"):
        get_environment()


def test_a_mistyped_env_stops_a_command_with_exit_2(monkeypatch, tmp_path):
    (tmp_path / "artifact").mkdir()
    result = CliRunner(env={"ENV": "TEST"}).invoke(main, ["models", "upload", "m", "--folder", str(tmp_path / "artifact")])
    assert result.exit_code == 2, result.output
    assert "ENV='TEST' is not an environment" in result.stderr


@pytest.mark.parametrize("value, env", [(None, "dev"), ("", "dev"), ("dev", "dev"), ("test", "test"),
                                        ("prod", "prod")])
def test_env_unset_or_empty_is_dev(monkeypatch, value, env):
    if value is not None:
        monkeypatch.setenv("ENV", value)
    assert get_environment() == env


def help_of(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_help_texts_say_what_the_options_are():
    upload = help_of("models", "upload")
    assert "Upload FOLDER" not in upload and "--folder" in upload.split("Options:")[0]
    rollback = help_of("rollback")
    timeout = rollback[rollback.index("--timeout"):]
    assert timeout.split("[default")[0].strip() != "--timeout FLOAT RANGE", "--timeout has no description"
    show = help_of("pipeline", "show")
    assert "run in" not in show[show.index("--file"):], "show runs nothing"
    assert "run in" in help_of("pipeline", "run")


SECRET = "s3cr3t-value-for-the-test"


def test_a_secret_in_the_json_of_invalid_settings_is_masked(tmp_path, monkeypatch):
    """--json documents pass through the printing module's masking, as every other line of the CLI does."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlops_settings.yaml").write_text(f"model_name: {SECRET}\nmodel_file: model_code/model.py\n")
    result = CliRunner(env={"MLOPS_SECRET_TOKEN": SECRET}).invoke(main, ["settings", "validate", "--json"])
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert document["valid"] is False and "field 'model_name': '***' is not a valid model name" in document["errors"][0]
    assert SECRET not in result.output


# The command modules whose owners adopt the printing module separately (issue 9: deploy, init, local CDF).
NOT_YET_PRINTING_THROUGH_OUTPUT: set[str] = set()


def test_only_the_printing_module_writes():
    """cli/output.py masks secrets in every line; a command writing on its own would bypass that."""
    import re
    from pathlib import Path

    import akerbp.mlops.cli as cli

    writes = re.compile(r"click\.echo|click\.secho|\bprint\(|sys\.stdout|sys\.stderr")
    found = []
    for module in sorted(Path(cli.__file__).parent.glob("*.py")):
        if module.name in NOT_YET_PRINTING_THROUGH_OUTPUT | {"output.py"}:
            continue
        found += [f"{module.name}:{n}: {line.strip()}" for n, line in enumerate(module.read_text().splitlines(), 1)
                  if writes.search(line)]
    assert found == []


def test_the_deploy_summary_and_plan_are_printed_by_the_cli(monkeypatch):
    from akerbp.mlops.cli.output import deploy_plan_text, deploy_summary_table
    from akerbp.mlops.deployment.plan import ModelPlan
    from akerbp.mlops.deployment.result import ModelResult

    monkeypatch.setenv("MLOPS_SECRET_TOKEN", SECRET)
    ok = ModelResult("m", "prediction", "dev", "m-prediction-dev", result="would deploy", model_id="m/dev/local-ab",
                     seconds=1.25, plan=ModelPlan("m-prediction-dev", "create", "c" * 64, "m/dev/local-ab",
                                                  upload="mlops-code/m-prediction-dev/cccc", create=["m-prediction-dev"]))
    failed = ModelResult("n", "prediction", "dev", "n-prediction-dev", version=4, seconds=0.5,
                         message=f"model tests failed: {SECRET}\nmore")
    assert deploy_summary_table([ok, failed]).splitlines() == [
        "model  service     env  version   result        seconds",
        "m      prediction  dev  local-ab  would deploy  1.2",
        "n      prediction  dev  4         failed        0.5",
        "n (prediction, dev): model tests failed: *** (details above)",
    ]
    plan = deploy_plan_text([ok, failed]).splitlines()
    assert plan[0] == "Plan (dry run: nothing in CDF was changed):"
    assert plan[1] == "  m-prediction-dev: artifact m/dev/local-ab; changed (hash cccccccccc, nothing live)"
    assert "    upload code file mlops-code/m-prediction-dev/cccc" in plan
    assert plan[-1] == "  n-prediction-dev: not deployable: model tests failed: ***"
