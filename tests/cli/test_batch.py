"""`mlops batch` against a model repo whose prediction service is deployed to its local CDF: one batch run and one
usage error as a user's shell runs them (subprocesses), the other usage errors through click in this process."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from click.testing import CliRunner

from akerbp.mlops.cli import main
from akerbp.mlops.deployment.deploy import deploy_model
from akerbp.mlops.deployment.target import Target
from akerbp.mlops.settings import load_settings
from support import Repo, copy_template

MODEL = "well_density"
CSV = b"GR,NPHI,DEPTH\n80,0.25,2000\nx,0.3,2100\n90,0.3,2500\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    root = tmp_path_factory.mktemp("batch-cli")
    r = Repo(copy_template(root / "repo"), isolation="shared-no-install")
    try:
        (settings,) = load_settings(r.root / "mlops_settings.py")
        result = deploy_model(settings, "prediction", "dev", Target("dev", client=r.client), dry_run=False,
                              force=False, timeout=300, progress=lambda message: None)
        assert result.ok, result.message
        for xid in ("in/a.csv", "in/b.csv"):
            r.client.files.upload_bytes(CSV, external_id=xid, name=Path(xid).name)
        r.client.files.upload_bytes(b"x", external_id="odd/sheet.xlsx", name="sheet.xlsx")
        yield r
    finally:
        r.close()


def test_batch_predicts_a_prefix_and_prints_json(repo: Repo) -> None:
    run = repo.run("mlops", "batch", MODEL, "--input", "in/", "--output", "out/", "--batch-size", "2", "--json")

    assert run.code == 0, run.stderr
    result = run.json
    assert (result["rows_in"], result["rows_out"], result["bad_row_count"]) == (6, 4, 2)
    assert result["outputs"] == ["out/a.csv", "out/b.csv"] and result["ok"] is True
    assert [(b["file"], b["row"]) for b in result["bad_rows"]] == [("in/a.csv", 1), ("in/b.csv", 1)]
    assert "'GR' must be a number" in result["bad_rows"][0]["error"]
    assert f"{MODEL}-batch-dev created" in run.stderr  # progress on stderr, the JSON alone on stdout
    lines = repo.client.files.download_bytes(external_id="out/b.csv").decode().splitlines()
    assert lines[0] == "GR,NPHI,DEPTH,prediction" and len(lines) == 3


def test_an_unknown_format_is_a_usage_error_naming_the_file(repo: Repo) -> None:
    run = repo.cli("batch", MODEL, "--input", "odd/")

    assert run.code == 2
    assert "unknown format of 'odd/sheet.xlsx'" in run.stderr and ".parquet" in run.stderr


@pytest.mark.parametrize("args, message", [
    (["--input", "in/", "--env", "test"], "no live prediction service of model 'well_density' in test"),
    (["--input", "none/"], "no uploaded file has an external id starting with 'none/'"),
    (["--input", "in/", "--output", "one.csv"], "--output 'one.csv' names one file, but the input has several"),
])
def test_usage_errors_exit_2(repo: Repo, args: list[str], message: str) -> None:
    result = CliRunner(env=repo.env()).invoke(main, ["batch", MODEL, *args])

    assert result.exit_code == 2, result.output
    assert message in result.output
