"""Concurrent deploys and transient faults: two pipelines deploying one function at once are serialised by a lock
held in CDF and never undo each other; 503s on creates, deletes, uploads and calls neither fail a good deploy nor
leave anything half-done (real CLI subprocesses, a real local CDF with fault injection)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
from cognite.client.data_classes import EventWrite

from akerbp.mlops import audit
from akerbp.mlops.deployment.lock import EVENT_TYPE, DeployLock, LockTimeout, lock_xid
from support import Repo, Run, assert_clean, change_code, clear_faults, copy_template, fault_rules, inject_faults, live_state

LIVE = "well_density-prediction-dev"
DEPLOY = (sys.executable, "-m", "akerbp.mlops.cli", "deploy", "prediction", "--json")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = Repo(copy_template(tmp_path_factory.mktemp("concurrency") / "repo"), isolation=None)
    yield repo
    repo.close()




def inject(repo: Repo, *rules: dict) -> None:
    inject_faults(repo.cdf.base_url, rules)






def deploy_together(repo: Repo, *args: str) -> list[Run]:
    """Two deploys started at the same moment (as two pipelines of one branch)."""
    procs = [subprocess.Popen([*DEPLOY, *args], cwd=repo.root, env=repo.env(ENV="dev"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        runs.append(Run(proc.returncode, out, err))
    return runs


@pytest.mark.parametrize("force", [False, True], ids=["changed", "force"])
def test_two_concurrent_deploys_of_one_function_never_undo_each_other(repo, force):
    for round_ in range(1):
        change_code(repo.root, f"concurrent-{force}-{round_}")
        events_before = len(audit.history(repo.client, "well_density", "dev"))
        # the first deploy to create its standby holds the lock 3 s longer, so the other surely finds it held (on a
        # loaded machine it could otherwise start after the first ended, and wait for nothing)
        inject(repo, {"path": "re:/functions$", "method": "POST", "delay": 3.0, "count": 1})
        runs = deploy_together(repo, *(["--force"] if force else []))
        for run in runs:
            assert run.code == 0, run.stderr
        results = sorted(run.result()["result"] for run in runs)
        assert results == ["deployed", "unchanged"], [r.stderr for r in runs]
        waited = next(run for run in runs if run.result()["result"] == "unchanged")
        assert "waiting for another deploy of" in waited.stderr
        assert "while this one waited" in waited.stderr
        live_hash, verified = live_state(repo.client, LIVE)
        assert verified and {run.result()["hash"] for run in runs} == {live_hash}
        new = audit.history(repo.client, "well_density", "dev")[: len(audit.history(repo.client, "well_density",
                                                                                        "dev")) - events_before]
        assert sorted(e["outcome"] for e in new) == ["success", "unchanged"]  # one replacement, one record of it
        assert_clean(repo.client, LIVE)


def test_a_killed_deployers_lock_expires_and_is_taken_over(repo):
    change_code(repo.root, "stale-lock")
    repo.client.events.create(EventWrite(  # what a deployer killed with SIGKILL leaves: its lock, no heartbeat
        external_id=lock_xid(LIVE), type=EVENT_TYPE, start_time=int(time.time() * 1000) - 600_000,
        metadata={"owner": "ci on runner-7 (pid 4242)", "token": "dead", "expires_at": str(int(time.time() * 1000) - 1)}))
    run = repo.run(*DEPLOY, ENV="dev")
    assert run.code == 0, run.stderr
    assert "took over the lock of well_density-prediction-dev: its holder ci on runner-7 (pid 4242)" in run.stderr
    assert run.result()["result"] == "deployed"
    assert_clean(repo.client, LIVE)


def test_a_held_lock_makes_the_other_deployer_wait_with_progress_then_give_up_clearly(repo):
    messages: list[str] = []
    with DeployLock(repo.client, LIVE, time.monotonic() + 30, ttl=60):
        other = DeployLock(repo.client, LIVE, time.monotonic() + 1.5, messages.append)
        with pytest.raises(LockTimeout) as timed_out:
            other.acquire()
    assert f"{LIVE} is being deployed by" in str(timed_out.value) and "(--timeout)" in str(timed_out.value)
    assert messages and messages[0].startswith(f"waiting for another deploy of {LIVE} to finish")
    assert repo.client.events.retrieve(external_id=lock_xid(LIVE)) is None  # released on leaving the block
    with DeployLock(repo.client, LIVE, time.monotonic() + 5) as free:  # free again at once
        assert not free.waited


def test_the_lock_heartbeat_moves_its_expiry(repo):
    with DeployLock(repo.client, LIVE, time.monotonic() + 30, ttl=0.8):
        first = int(repo.client.events.retrieve(external_id=lock_xid(LIVE)).metadata["expires_at"])
        deadline = time.monotonic() + 10
        while int(repo.client.events.retrieve(external_id=lock_xid(LIVE)).metadata["expires_at"]) == first:
            assert time.monotonic() < deadline, "the heartbeat never moved the expiry"
            threading.Event().wait(0.05)
    assert repo.client.events.retrieve(external_id=lock_xid(LIVE)) is None


FUNCTION_CREATE = {"path": "re:/functions$", "method": "POST"}
STORMS = {
    # each rule fails the next matching requests (the SDK does not retry these: creates, deletes, calls, uploads)
    "503s on every create, delete, call and upload": [
        {**FUNCTION_CREATE, "status": 503, "count": 2},
        {"path": "re:/functions/delete$", "status": 503, "count": 2},
        {"path": r"re:/functions/\d+/call$", "status": 503, "count": 2},
        {"path": "re:/files$", "method": "POST", "status": 502, "count": 2},
        {"path": "re:/files/delete$", "status": 503, "count": 1},
        {"path": "re:/files/byids$", "status": 503, "count": 3},
        {"path": "re:/events$", "method": "POST", "status": 503, "count": 1},
        {"path": "re:/events/delete$", "status": 503, "count": 1}],
    # served, then the answer lost: the retry must find what CDF did instead of doing it twice
    "function create, answer lost": [{**FUNCTION_CREATE, "status": 503, "count": 1, "after": True}],
    "smoke call, answer lost": [{"path": r"re:/functions/\d+/call$", "status": 503, "count": 1, "after": True}],
    # the lock's create and then the audit record's: both served, both answers lost
    "events, answers lost": [{"path": "re:/events$", "method": "POST", "status": 503, "count": 2, "after": True}],
}


@pytest.mark.parametrize("storm", list(STORMS))
def test_a_503_storm_in_any_phase_neither_fails_nor_half_does_a_good_deploy(repo, storm):
    # A verified baseline with a previous deployment to replace: what the test before left, else a deploy's.
    if LIVE not in repo.functions() or not live_state(repo.client, LIVE)[1]:
        run = repo.run(*DEPLOY, ENV="dev")
        assert run.code == 0, run.stderr
    change_code(repo.root, f"storm-{storm}")
    before = {f.external_id for f in repo.client.functions.list(limit=None)}
    records = len(audit.history(repo.client, "well_density", "dev"))
    inject(repo, *STORMS[storm])
    run = repo.run(*DEPLOY, ENV="dev")
    assert run.code == 0, run.stderr
    assert run.result()["result"] == "deployed", run.stdout
    live_hash, verified = live_state(repo.client, LIVE)
    assert verified and live_hash == run.result()["hash"]
    assert {f.external_id for f in repo.client.functions.list(limit=None)} == before
    assert_clean(repo.client, LIVE)
    history = audit.history(repo.client, "well_density", "dev")
    assert len(history) == records + 1 and history[0]["outcome"] == "success"  # recorded once
    left = fault_rules(repo.cdf.base_url)
    assert all(rule["count"] == 0 for rule in left), left  # every injected fault was met
    clear_faults(repo.cdf.base_url)


def test_a_service_uses_one_function_between_deploys_and_status_says_how_many(repo):
    for tag in ("count-1", "count-2"):  # two replacements: each built a standby, and removed it
        change_code(repo.root, tag)
        run = repo.run(*DEPLOY, ENV="dev")
        assert run.code == 0 and run.result()["result"] == "deployed", run.stderr
    assert [f.external_id for f in repo.client.functions.list(limit=None)] == [LIVE]
    status = repo.run(sys.executable, "-m", "akerbp.mlops.cli", "status", "--env", "dev")
    assert status.code == 0, status.stderr
    assert "functions in the CDF of dev: 1 of 100 (1 of them mlops services" in status.stdout
