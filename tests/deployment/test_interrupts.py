"""Interrupted deploys: SIGINT, SIGTERM or SIGKILL at each phase of `mlops deploy` leave either the old verified
deployment live or the new one verified, and the next deploy recovers from a SIGKILL (real CLI subprocesses, a real
local CDF, signals sent when the deploy says it reached the phase)."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from akerbp.mlops import audit
from akerbp.mlops.deployment import functions, release
from support import Repo, assert_clean, change_code, copy_template, live_state

LIVE = "well_density-prediction-dev"
# The line of the deploy's progress (stderr) at which each phase is under way.
PHASES = {
    "tests": "] artifact ",  # printed as the model tests start
    "build": "] model tests passed",  # the folder is built and the service test runs/ends
    "standby": "] building standby ",
    "replace": "] replacing ",
    "smoke": "] smoke call",
}
OLD_STAYS = ("tests", "build", "standby")  # stopped before the live function was touched
NEW_VERIFIED = ("replace", "smoke")  # the step in progress is finished: the new code is live and verified
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = Repo(copy_template(tmp_path_factory.mktemp("interrupts") / "repo"), isolation=None)  # the default
    yield repo
    repo.close()




def deploy_signalled(repo: Repo, phase: str, signum: int) -> tuple[int, str]:
    """Run the deploy, send `signum` when it reaches `phase`; (exit code, stderr)."""
    env = repo.env(ENV="dev", MLOPS_DEPLOY_LOCK_TTL="4")
    proc = subprocess.Popen([sys.executable, "-m", "akerbp.mlops.cli", "deploy", "prediction", "--json"],
                            cwd=repo.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=120)
            assert line is not None, f"the deploy ended before {phase!r}:\n{''.join(seen)}"
            seen.append(line)
            if PHASES[phase] in line:
                os.kill(proc.pid, signum)
                break
        proc.stdout.read()
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    reader.join(timeout=30)
    while not lines.empty():
        line = lines.get_nowait()
        if line:
            seen.append(line)
    return code, "".join(seen)






def deployed_hash(repo: Repo) -> str:
    """Deploy whatever the repo holds now (verified), and return its hash."""
    run = repo.run(sys.executable, "-m", "akerbp.mlops.cli", "deploy", "prediction", "--json", ENV="dev")
    assert run.code == 0, run.stderr
    return run.result()["hash"]


def verified_hash(repo: Repo) -> str:
    """The hash of a verified live deployment: the one live now (each test leaves one), else a deploy's. What the
    repo holds may differ from it: the tests change the code before the deploy they interrupt anyway."""
    if LIVE in repo.functions():
        live_hash, verified = live_state(repo.client, LIVE)
        if verified:
            return live_hash
    return deployed_hash(repo)


# SIGINT at every phase; SIGTERM (the same handler, another exit code) where the step in progress is finished.
STOPS = [(phase, signal.SIGINT) for phase in PHASES] + [("replace", signal.SIGTERM)]


@pytest.mark.parametrize("phase,signum", STOPS, ids=[f"{p}-{signal.Signals(s).name}" for p, s in STOPS])
def test_a_stop_leaves_the_old_verified_deployment_or_the_new_one_verified(repo, phase, signum):
    old = verified_hash(repo)
    change_code(repo.root, f"{phase}-{signum}")
    code, stderr = deploy_signalled(repo, phase, signum)
    assert code == EXIT[signum], stderr
    live_hash, verified = live_state(repo.client, LIVE)
    assert verified, stderr
    newest = audit.history(repo.client, "well_density", "dev")[0]
    if phase in OLD_STAYS:
        assert live_hash == old, stderr
        assert newest["outcome"] == "interrupted" and newest["action"] == "deploy"
    else:
        assert live_hash != old, stderr
        assert "finishing the step in progress" in stderr
        assert newest["outcome"] == "success" and newest["hash"] == live_hash
    assert_clean(repo.client, LIVE)
    if phase in NEW_VERIFIED:  # what the stopped deploy finished counts as verified: the next one has nothing to do
        after = repo.run(sys.executable, "-m", "akerbp.mlops.cli", "deploy", "prediction", "--json", ENV="dev")
        assert after.code == 0 and after.result()["result"] == "unchanged"


@pytest.mark.parametrize("phase", ["standby", "replace", "smoke"])  # before them nothing in CDF has changed
def test_after_a_sigkill_the_next_deploy_verifies_or_replaces_what_is_live(repo, phase):
    old = verified_hash(repo)
    change_code(repo.root, f"kill-{phase}")
    code, stderr = deploy_signalled(repo, phase, signal.SIGKILL)
    assert code == -signal.SIGKILL
    live_hash, verified = live_state(repo.client, LIVE)
    if live_hash != old:  # killed after the replacement: that code never passed its smoke check (or only just)
        assert phase in NEW_VERIFIED
    else:
        assert verified  # untouched
    recovered = repo.run(sys.executable, "-m", "akerbp.mlops.cli", "deploy", "prediction", "--json", ENV="dev",
                         MLOPS_DEPLOY_LOCK_TTL="4")
    assert recovered.code == 0, recovered.stderr
    result = recovered.result()
    live_hash, verified = live_state(repo.client, LIVE)
    assert verified and live_hash == result["hash"] != old
    if result["result"] == "verified":
        assert "never passed its smoke check" in recovered.stderr
    else:
        assert result["result"] in ("deployed", "unchanged"), result
    assert_clean(repo.client, LIVE)


def test_an_unverified_live_deployment_whose_check_fails_is_rolled_back(repo, tmp_path):
    """A live function that runs this content by its metadata but never passed a smoke check (what a kill between
    the replacement and the check leaves, here with code that fails it): the next deploy checks it and rolls back
    to the last verified deployment instead of calling it unchanged."""
    old = verified_hash(repo)
    change_code(repo.root, "unverified")
    new = deployed_hash(repo)
    fn = repo.client.functions.retrieve(external_id=LIVE)
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "handler.py").write_text("def handle(data):\n    return {'status': 'error', 'message': 'broken'}\n")
    repo.client.functions.delete(external_id=LIVE)
    broken = repo.client.functions.create(name=LIVE, external_id=LIVE, folder=str(folder), metadata=dict(fn.metadata))
    functions.wait_ready(repo.client, LIVE, time.monotonic() + 60)
    assert broken.metadata["mlops_hash"] == new and not release.is_verified(repo.client, broken)

    run = repo.run(sys.executable, "-m", "akerbp.mlops.cli", "deploy", "prediction", "--json", ENV="dev")
    assert run.code == 1, run.stderr
    assert run.result()["result"] == "rolled_back", run.stdout
    assert "never passed its smoke check" in run.stderr
    assert live_state(repo.client, LIVE) == (old, True)
    code_file = repo.client.files.retrieve(id=int(fn.metadata["mlops_code_file"]))
    assert code_file.metadata["mlops_status"] == "deployed"  # it passed once: still a rollback target
    assert_clean(repo.client, LIVE)
