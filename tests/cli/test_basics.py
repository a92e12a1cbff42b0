"""What every `mlops` command shares: a closed output pipe, the ENV variable, and help texts that say what is true."""
from __future__ import annotations

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
