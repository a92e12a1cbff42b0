"""Hostile settings files: whatever one does (exit, hang, eat memory, nest, repeat keys), `mlops settings validate`
and `mlops deploy` exit 2 naming the file and why, within a time and memory budget. Never a green CI by accident.

Every case runs the real CLI in a subprocess with its own address-space limit and a timeout, so a regression shows
as a failed test, not a hung or exhausted CI (or, for os._exit(0) in-process, a test run that silently ends green).
The settings corpus (tests/settings/corpus, test_settings.py) holds the broken files that are safe to read
in-process; these are the ones that are not.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import scaffold


CLI_MEMORY_MB = 3000  # the CLI under test; the settings file's own budget is lower (MLOPS_SETTINGS_MEMORY_MB)
CLI_TIMEOUT_S = 60
SHIM = (  # the CLI under an address-space limit: a YAML bomb read unbounded fails with MemoryError, not the machine
    "import resource, runpy, sys\n"
    f"resource.setrlimit(resource.RLIMIT_AS, ({CLI_MEMORY_MB} << 20, {CLI_MEMORY_MB} << 20))\n"
    "sys.argv = ['mlops', *sys.argv[1:]]\n"
    "runpy.run_module('akerbp.mlops.cli', run_name='__main__')\n"
)
MODELS = 'models = [{"model_name": "churn", "model_file": "model_code/model.py"}]\n'


@pytest.fixture
def repo(tmp_path):
    return scaffold(tmp_path)


def mlops(repo: Path, *args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT_S):
    """Run `mlops ARGS` in `repo`; (exit code, stdout, stderr, seconds). The whole process group goes on timeout."""
    full_env = {**os.environ, "MLOPS_LOCAL_CDF_DIR": str(repo / ".cdf"), **(env or {})}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", SHIM, *args], cwd=repo, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        pytest.fail(f"mlops {' '.join(args)} did not end within {timeout} s")
    return proc.returncode, out, err, time.monotonic() - started


def validate(repo: Path, text: str | bytes, name: str = "mlops_settings.py", env: dict | None = None, *extra: str):
    path = repo / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return mlops(repo, "settings", "validate", "--file", name, *extra, env=env)


def assert_refused(result, *expected: str, name: str = "mlops_settings.py"):
    code, out, err, _ = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and out == ""
    assert f"{name} is invalid" in err
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"


# --- a .py settings file cannot end, hang or exhaust the command -----------------------------------------------------

ENDINGS = {
    "sys.exit(0)": ("import sys\nsys.exit(0)\n" + MODELS, ["line 2: called sys.exit(0)", "never exit"]),
    "exit(0) builtin": ("exit(0)\n" + MODELS, ["line 1: called sys.exit(0)"]),
    "SystemExit(3)": ("raise SystemExit(3)\n", ["line 1: called sys.exit(3)"]),
    "os._exit(0)": ("import os\nprint('bye')\nos._exit(0)\n" + MODELS,
                    ["ended its process (exit code 0) before its models were read", "bye"]),
    "KeyboardInterrupt": ("raise KeyboardInterrupt\n", ["line 1: interrupted (KeyboardInterrupt)"]),
    "SIGKILL itself": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", ["was killed by SIGKILL"]),
}


@pytest.mark.parametrize("case", ENDINGS, ids=list(ENDINGS))
def test_a_settings_file_that_ends_its_process_fails_validate_with_exit_2(repo, case):
    source, expected = ENDINGS[case]
    assert_refused(validate(repo, source), *expected)


def test_a_settings_file_that_exits_0_fails_the_deploy_with_exit_2(repo):
    (repo / "mlops_settings.py").write_text("import sys\nsys.exit(0)\n" + MODELS)
    code, out, err, _ = mlops(repo, "deploy", "prediction", "--dry-run")
    assert code == 2, (code, out, err)
    assert "mlops_settings.py, line 2: called sys.exit(0)" in err and "Traceback" not in err


def test_a_settings_file_that_loops_forever_fails_past_its_time_budget(repo):
    result = validate(repo, "while True:\n    pass\n", env={"MLOPS_SETTINGS_TIMEOUT": "2"})
    assert_refused(result, "did not finish loading within 2 s (MLOPS_SETTINGS_TIMEOUT)")
    assert result[3] < 20


def test_a_settings_file_that_eats_memory_fails_past_its_memory_budget(repo):
    result = validate(repo, "hoard = []\nwhile True:\n    hoard.append(bytearray(10**6))\n",
                      env={"MLOPS_SETTINGS_MEMORY_MB": "300"})
    assert_refused(result, "line 3: ran out of memory (MemoryError)", "300 MB (MLOPS_SETTINGS_MEMORY_MB)")


def test_threads_and_atexit_handlers_left_behind_neither_hang_nor_change_the_result(repo):
    source = ("import atexit, os, threading\n"
              "threading.Thread(target=threading.Event().wait).start()\n"  # never ends, not a daemon
              "atexit.register(lambda: os._exit(7))\n" + MODELS)
    code, out, err, seconds = validate(repo, source)
    assert code == 0, (out, err)
    assert "1 model: settings are valid." in out and seconds < 20


def test_what_a_settings_file_prints_goes_to_stderr_and_json_stays_json(repo):
    source = ("import sys\nprint('loading', 'cognite' in sys.modules, 'pydantic' in sys.modules)\n" + MODELS)
    code, out, err, _ = validate(repo, source, "mlops_settings.py", None, "--json")
    assert code == 0, err
    assert json.loads(out)["models"][0]["model_name"] == "churn"
    # Reading a settings file imports neither cognite-sdk nor pydantic in its process: a Python start-up, no more.
    assert "loading False False" in err


def test_a_budget_that_is_not_a_number_is_a_usage_error(repo):
    code, _, err, _ = validate(repo, MODELS, env={"MLOPS_SETTINGS_TIMEOUT": "soon"})
    assert code == 2 and "MLOPS_SETTINGS_TIMEOUT='soon' is not a positive number" in err


# --- files Python cannot read ----------------------------------------------------------------------------------------

UNREADABLE = {
    "not UTF-8": (b"x = 1\nname = '\xff\xfe'\n", ["mlops_settings.py, line 2: not UTF-8 text (byte 0xff)"]),
    "a null byte": (b"x = 1\n\x00\n", ["mlops_settings.py, line 2: contains a null byte"]),
}


@pytest.mark.parametrize("case", UNREADABLE, ids=list(UNREADABLE))
def test_a_settings_file_python_cannot_read_names_the_line(repo, case):
    source, expected = UNREADABLE[case]
    assert_refused(validate(repo, source), *expected)
    assert "line None" not in validate(repo, source)[2]


def test_a_coding_declaration_is_honoured(repo):
    source = b"# -*- coding: latin-1 -*-\nowner = '\xe6\xf8\xe5'\n" + MODELS.encode()
    code, out, err, _ = validate(repo, source)
    assert code == 0, err


# --- YAML bounded: size, aliases, depth, repeated keys ---------------------------------------------------------------

LAUGHS = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
          + "".join(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")))
assert len(LAUGHS.encode()) < 600  # the size of the file that ran 150 s at 11.6 GB before it was killed
YAML_BOMBS = {
    "nested aliases (589 bytes)": (LAUGHS + "model_name: churn\nmodel_file: model_code/model.py\n",
                                   "expands to 597,871 values through aliases"),
    "model_name: *alias": (LAUGHS.replace("i: &i", "model_name: &i") + "model_file: model_code/model.py\n",
                           "expands to 597,871 values through aliases"),
    "an alias inside its anchor": ("x: &a [*a]\nmodel_name: *a\nmodel_file: model_code/model.py\n",
                                   "line 1: an alias used inside its own anchor"),
    "nested 50,000 deep": ("x: " + "[" * 50_000 + "]" * 50_000 + "\n", "line 1: nested more than 50 levels deep"),
    "over 1 MB": ("model_name: churn\nmodel_file: model_code/model.py\n# " + "x" * 1_000_000 + "\n",
                  "a settings file may have at most 1,000,000"),
}


@pytest.mark.parametrize("case", YAML_BOMBS, ids=list(YAML_BOMBS))
def test_yaml_is_read_within_bounds(repo, case):
    text, expected = YAML_BOMBS[case]
    result = validate(repo, text, "mlops_settings.yaml")
    assert_refused(result, expected, name="mlops_settings.yaml")
    assert result[3] < 20


def test_yaml_keys_written_twice_are_refused_naming_both_lines(repo):
    text = ("models:\n"
            "  - model_name: churn\n"
            "    model_file: model_code/model.py\n"
            "    info: {prediction: {owner: a@example.com, owner: b@example.com}}\n"
            "    model_name: churn_v2\n")
    assert_refused(validate(repo, text, "mlops_settings.yaml"),
                   "line 5: key 'model_name' is written twice in one mapping (lines 2 and 5)",
                   "line 4: key 'owner' is written twice in one mapping (both on this line)",
                   name="mlops_settings.yaml")


# --- values accepted that should not be --------------------------------------------------------------------------


def test_a_model_folder_linking_outside_the_repo_is_refused_and_inside_is_fine(repo, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "model.py").write_text("# not in the repo\n")
    (repo / "linked_code").symlink_to(outside, target_is_directory=True)
    (repo / "model_code" / "schema.json").symlink_to(outside / "model.py")
    text = ("model_name: churn\nmodel_file: linked_code/model.py\ninput_schema: model_code/schema.json\n")
    assert_refused(validate(repo, text, "mlops_settings.yaml"),
                   f"field 'model_file': linked_code leads outside the repo (to {outside.resolve()})",
                   "field 'input_schema': model_code/schema.json leads outside the repo", name="mlops_settings.yaml")
    (repo / "code_link").symlink_to(repo / "model_code", target_is_directory=True)
    code, out, err, _ = validate(repo, "model_name: churn\nmodel_file: code_link/model.py\n", "mlops_settings.yaml")
    assert code == 0, err
