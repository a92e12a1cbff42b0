"""Plan, then apply: the plan `--dry-run` prints is the one the apply executes (compared on a change that replaces a
function and on an unchanged redeploy); an unchanged verified redeploy does not rerun the model tests (--retest
does); models deploy concurrently with each progress line naming its function (real CLI subprocesses, a real local
CDF)."""
from __future__ import annotations

import pytest

from support import Repo, change_code, copy_template, verified_live, write_two_model_repo

LIVE = "well_density-prediction-dev"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = Repo(copy_template(tmp_path_factory.mktemp("plan") / "repo"), isolation=None)
    yield repo
    repo.close()


def deployed(repo: Repo) -> dict:
    run = repo.deploy("--json")
    assert run.code == 0, run.stderr
    return run.result()


def test_the_dry_run_plan_is_what_the_apply_then_does(repo):
    deployed(repo)
    live = repo.functions()[LIVE]
    repo.client.functions.schedules.create(name="nightly", cron_expression="0 3 * * *", function_id=live.id)
    change_code(repo.root, "plan")

    dry = repo.deploy("--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    plan = dry.result()["plan"]
    standby = f"{LIVE}-{plan['hash'][:10]}"
    assert plan["action"] == "replace" and plan["run_tests"]
    assert plan["create"] == [standby, LIVE] and sorted(plan["remove"]) == sorted([LIVE, standby])
    assert plan["schedules_kept"] == ["nightly"] and plan["upload"] == f"mlops-code/{LIVE}/{plan['hash'][:16]}"

    run = repo.deploy("--json")
    assert run.code == 0, run.stderr
    result = run.result()
    assert result["result"] == "deployed" and result["plan"] == plan  # the apply executed the dry run's plan
    applied = result["applied"]
    assert applied["upload"] == plan["upload"] and applied["create"] == plan["create"]
    assert sorted(applied["remove"]) == sorted(plan["remove"])
    assert applied["delete_code_files"] == plan["delete_code_files"]
    assert applied["schedules_kept"] == plan["schedules_kept"] and applied["smoke"] == "passed"

    again = repo.deploy("--dry-run", "--json")
    assert again.code == 0, again.stderr
    unchanged = again.result()["plan"]
    assert unchanged["action"] == "unchanged" and not unchanged["changed"] and unchanged["create"] == []
    redeploy = repo.deploy("--json")
    assert redeploy.code == 0, redeploy.stderr
    assert redeploy.result()["result"] == "unchanged" and redeploy.result()["plan"] == unchanged
    assert redeploy.result()["applied"] is None  # nothing done in CDF


def test_an_unchanged_redeploy_does_not_rerun_the_model_tests_unless_retest(repo):
    verified_live(repo, LIVE) or deployed(repo)  # the repo's content live, verified
    run = repo.deploy("--json")
    assert run.code == 0, run.stderr
    assert run.result()["result"] == "unchanged"
    assert "model tests not rerun" in run.stderr and "model tests passed" not in run.stderr
    assert "service test passed" not in run.stderr

    retest = repo.deploy("--retest", "--json")
    assert retest.code == 0, retest.stderr
    assert retest.result()["result"] == "unchanged"
    assert "model tests passed" in retest.stderr and "service test passed" in retest.stderr


def test_a_test_file_outside_the_bundled_code_is_rerun_since_the_hash_does_not_cover_it(repo):
    verified_live(repo, LIVE) or deployed(repo)  # the repo's content live, verified
    (repo.root / "conftest.py").write_text("# read by pytest, not deployed\n")
    try:
        run = repo.deploy("--json")
    finally:
        (repo.root / "conftest.py").unlink()
    assert run.code == 0, run.stderr
    assert run.result()["result"] == "unchanged" and "model tests passed" in run.stderr
    assert "rerun: the content hash does not cover conftest.py" in run.result()["plan"]["tests"]


def test_models_deploy_concurrently_each_line_naming_its_function(tmp_path):
    repo = Repo(write_two_model_repo(tmp_path / "repo", model2_test=""), isolation=None)
    try:
        run = repo.deploy("--json", "--jobs", "2")
    finally:
        repo.close()
    assert run.code == 0, run.stderr
    assert [r["result"] for r in run.json["results"]] == ["deployed", "deployed"]  # in the settings' order
    lines = run.stderr.splitlines()
    assert "2 at a time" in lines[0] or any("2 at a time" in line for line in lines[:3]), run.stderr
    model_lines = [i for i, line in enumerate(lines) if line.startswith(("[model1-", "[model2-"))]
    first2 = next(i for i in model_lines if lines[i].startswith("[model2-"))
    done1 = next(i for i in model_lines if lines[i].startswith("[model1-") and "] deployed in" in lines[i])
    assert first2 < done1, run.stderr  # model2 started before model1 finished
