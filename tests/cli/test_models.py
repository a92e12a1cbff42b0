"""`mlops models` end to end: the root CLI, get_client() starting the local CDF of MLOPS_LOCAL_CDF_DIR, real SDK."""
from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from akerbp.mlops.cdf import client as cdf_client
from akerbp.mlops.cli import main
from support import fault_rules, inject_faults


def make_folder(path):
    (path / "sub").mkdir(parents=True)
    (path / "model.pkl").write_bytes(b"weights")
    (path / "sub" / "config.json").write_text('{"layers": 3}')
    return path


@pytest.fixture
def mlops(tmp_path):
    env = {var: None for var in cdf_client.CONFIG_VARS + cdf_client.RETIRED_API_KEY_VARS}
    env.update({"MLOPS_LOCAL_CDF_DIR": str(tmp_path / "cdf"), "CI": None, "BITBUCKET_BUILD_NUMBER": None,
                "ENV": None})
    runner = CliRunner(env=env)
    cdf_client.reset_clients()

    def run(*args, code=0):
        result = runner.invoke(main, ["models", *map(str, args)])
        assert result.exit_code == code, (result.output, result.exception)
        return result

    yield run
    cdf_client.reset_clients()


def test_round_trip(mlops, tmp_path):
    folder = make_folder(tmp_path / "artifacts")
    (tmp_path / "meta.json").write_text(json.dumps({"accuracy": 0.9, "dataset": "wells-2024"}))
    first = json.loads(mlops("upload", "m", "--folder", folder, "--metadata", "owner=ds team",
                             "--metadata-file", tmp_path / "meta.json", "--json").stdout)
    assert first["model_id"] == "m/dev/1"
    assert first["metadata"]["owner"] == "ds team" and first["metadata"]["accuracy"] == "0.9"
    assert "uploaded m/dev/2" in mlops("upload", "m", "--env", "dev", "--folder", folder).stdout

    listed = json.loads(mlops("list", "--json").stdout)
    assert [v["model_id"] for v in listed] == ["m/dev/1", "m/dev/2"]
    table = mlops("list", "m", "--env", "dev").stdout
    assert table.splitlines()[0].split()[:3] == ["MODEL", "ENV", "VERSION"] and "m  " in table

    promoted = json.loads(mlops("promote", "m", "--version", 2, "--to", "test", "--json").stdout)
    assert promoted["model_id"] == "m/test/2" and promoted["promoted_from"] == "m/dev/2"
    assert "nothing to do" in mlops("promote", "m", "--version", 2, "--to", "test").stdout
    assert "promoted m/test/2 to m/prod/2" in mlops("promote", "m", "--version", 2).stdout

    downloaded = json.loads(mlops("download", "m", "--env", "prod", "--to", tmp_path / "out", "--json").stdout)
    assert downloaded["version"] == 2 and downloaded["sha256"] == first["sha256"]
    assert (tmp_path / "out" / "sub" / "config.json").read_text() == (folder / "sub" / "config.json").read_text()

    refused = mlops("delete", "m", "--env", "dev", "--version", 2, code=2)
    assert "add --yes" in refused.output
    assert "deleted m/dev/2" in mlops("delete", "m", "--env", "dev", "--version", 2, "--yes").stdout
    assert [v["model_id"] for v in json.loads(mlops("list", "m", "--json").stdout)] == ["m/dev/1", "m/test/2",
                                                                                       "m/prod/2"]
    assert "--force" in mlops("delete", "m", "--env", "prod", "--version", 2, "--yes", code=2).output
    assert json.loads(mlops("upload", "m", "--folder", folder, "--json").stdout)["version"] == 3


def test_errors_and_exit_codes(mlops, tmp_path):
    folder = make_folder(tmp_path / "artifacts")
    assert "prod accepts versions only by promotion" in mlops("upload", "m", "--env", "prod", "--folder", folder,
                                                              code=2).output
    assert "KEY=VALUE" in mlops("upload", "m", "--folder", folder, "--metadata", "novalue", code=2).output
    (tmp_path / "list.json").write_text("[1, 2]")
    assert "JSON object" in mlops("upload", "m", "--folder", folder, "--metadata-file", tmp_path / "list.json",
                                  code=2).output
    assert "model name" in mlops("upload", "bad-name", "--folder", folder, code=2).output
    missing = mlops("download", "m", "--env", "dev", "--to", tmp_path / "out", code=1)
    assert "no version in dev: upload one" in missing.output and "Traceback" not in missing.output
    assert "no model versions" in mlops("list").stdout
    assert mlops("list", "--json").stdout.strip() == "[]"


def test_model_names_follow_the_settings_rule(mlops, tmp_path):
    folder = make_folder(tmp_path / "artifacts")
    refused = mlops("upload", "MyModel", "--folder", folder, code=2).output
    assert "model name 'MyModel' is invalid: use lowercase letters" in refused and "^[a-z][a-z0-9_]*$" in refused
    assert "Traceback" not in refused


def test_slow_transfers_show_progress_on_stderr_and_fast_ones_do_not(mlops, tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "artifacts")
    fast = mlops("upload", "m", "--folder", folder, "--json")
    assert json.loads(fast.stdout)["model_id"] == "m/dev/1"
    assert "uploading" not in fast.stderr and "iB" not in fast.stderr

    monkeypatch.setenv("MLOPS_LOCAL_CDF_DIR", str(tmp_path / "cdf"))  # the local CDF the commands use
    base_url = cdf_client.get_client().config.base_url
    # The content PUT of the upload and the GET of the download each wait 1.2 s in the local CDF.
    rules = [{"path": "/content", "delay": 1.2, "count": 2}]
    inject_faults(base_url, rules)

    slow = mlops("upload", "m", "--folder", folder, "--json")
    assert json.loads(slow.stdout)["model_id"] == "m/dev/2", "stdout holds the JSON document only"
    assert re.search(r"^uploading m/dev/2 \(2 files\): [0-9.]+ KiB in [0-9.]+ s \([0-9.]+ MiB/s\)$", slow.stderr,
                     re.MULTILINE), slow.stderr
    assert "archiving" not in slow.stderr, "a fast step stays quiet"

    downloaded = mlops("download", "m", "--version", 2, "--to", tmp_path / "out")
    assert downloaded.stdout.startswith("extracted m/dev/2 into") and "iB" not in downloaded.stdout
    assert re.search(r"^downloading m/dev/2: [0-9.]+ KiB in [0-9.]+ s", downloaded.stderr, re.MULTILINE)
    assert fault_rules(base_url)[0]["count"] == 0
