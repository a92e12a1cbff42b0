"""The deploy path runs where click, pytest and the CLI do not exist, as inside a CDF Function (the automations that
retrain and redeploy from CDF need exactly this): a fresh interpreter with them made unimportable builds the
template model's function folder, releases it against the local CDF (first deploy, then a replacement through a
standby, then a change whose smoke check fails and is rolled back) and records each outcome in the audit trail."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from akerbp.mlops import audit
from akerbp.mlops.deployment import records
from akerbp.mlops.local_cdf import Limits, LocalCDF
from support import copy_template

LIVE = "well_density-prediction-dev"

# Put first on the child's path: makes the CLI's and the test tools' packages unimportable, as in a CDF Function.
BLOCKER = '''
import sys

BLOCKED = ("click", "pytest", "_pytest", "akerbp.mlops.cli")


class Unavailable:
    """What a CDF Function does not have: the CLI and the test tools."""

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ImportError(f"{name} is not available here (as in a CDF Function)", name=name)
        return None


sys.meta_path.insert(0, Unavailable())
'''

# The deploy path, driven the way an automation inside a function would (apply.py's three steps, with its own smoke
# check since a function has no pytest to run ServiceTest): build and zip, then under the deploy lock switch live,
# smoke, confirm or roll back; an audit record. Each step of argv[2] appends a line to the model code (a new hash).
DEPLOYER = '''
import json, sys, time
from pathlib import Path

for name in ("click", "pytest", "akerbp.mlops.cli"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} could be imported: the blocker is not in place")

from cognite.client import ClientConfig, CogniteClient
from cognite.client.credentials import Token

from akerbp.mlops import audit
from akerbp.mlops.deployment import artifacts, build, functions, interrupts, records, release
from akerbp.mlops.deployment.lock import DeployLock
from akerbp.mlops.deployment.options import FunctionOptions
from akerbp.mlops.settings import load_settings
from akerbp.mlops.utils import provenance

repo, steps, (base_url, project, token) = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3:6]
client = CogniteClient(ClientConfig(client_name="in-a-function", project=project, base_url=base_url,
                                    credentials=Token(token)))
DATA = {"data": [{"GR": 80.0, "NPHI": 0.25, "DEPTH": 2000.0}]}
outcomes = []
for step in steps:
    with (repo / "model_code" / "model.py").open("a") as model:
        model.write("\\n" + step["code"] + "\\n")
    (settings,) = load_settings(repo / "mlops_settings.py")
    started, deadline = time.time(), time.monotonic() + 120
    live = settings.function_external_id("prediction", "dev")
    artifact = artifacts.resolve(settings, "dev", lambda: client, repo / ".mlops" / "cache")
    built = build.build_folder(settings, "prediction", "dev", artifact=artifact.path, model_id=artifact.model_id,
                               secrets={})
    assert isinstance(built.options, FunctionOptions)  # one options class from build to release, no conversion
    by = provenance.who()
    mlops_md = records.mlops_metadata(
        model=settings.model_name, service="prediction", env="dev", version=None, model_id=artifact.model_id,
        content_hash=built.content_hash, commit="", deployed_at=records.now_iso(), by=by)
    new = release.NewCode(built.content_hash, build.zip_folder(built.path), built.options,
                          {}, mlops_md, functions.data_set_id(client, settings.dataset))
    ctx = release.ReleaseContext(client, live, deadline, by, None, settings.models_to_keep)
    outcome = {"hash": built.content_hash}
    try:
        with DeployLock(client, live, deadline):
            out = release.put_live(ctx, new)  # 1. switch live
            with interrupts.shielded():
                call = functions.call(client, live, DATA, deadline)  # 2. smoke
                answer = call.response or {}
                if call.status != "Completed" or answer.get("status") != "ok":
                    release.roll_back(ctx, out, f"the smoke call answered {call.status} {answer}")  # 3. roll back
                release.confirm(ctx, out)  # ... or confirm
        outcome.update(result="success", gap=out.switch.gap, standby=out.switch.standby, phases=out.phases)
    except release.SmokeFailed as e:
        outcome.update(result="rolled_back", message=str(e))
    audit.write(client, audit.AuditEntry("deploy", settings.model_name, "dev", outcome["result"], started,
                                         "prediction", None, artifact.model_id, built.content_hash,
                                         outcome.get("message", ""), settings.dataset))
    outcome["seconds"] = time.time() - started
    outcomes.append(outcome)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("click", "pytest", "_pytest")
                or m.startswith("akerbp.mlops.cli"))
print(json.dumps({"outcomes": outcomes, "loaded": loaded}))
'''


def run_deployer(tmp_path: Path, repo: Path, local_cdf, steps: list[dict]) -> dict:
    """The deploy path in a fresh interpreter that cannot import click, pytest or the CLI."""
    blocker = tmp_path / "no_cli"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    script = tmp_path / "deployer.py"
    script.write_text(DEPLOYER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGNITE_", "MLOPS_SECRET_", "PYTHON"))}
    framework = Path(audit.__file__).resolve().parents[2]  # the akerbp.mlops this test runs, not another copy
    env.update(PYTHONPATH=os.pathsep.join([str(blocker), str(framework)]), PYTHONDONTWRITEBYTECODE="1",
               NO_PROXY="127.0.0.1,localhost")
    done = subprocess.run(
        [sys.executable, str(script), str(repo), json.dumps(steps), local_cdf.base_url, "test", "local-token"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture
def local_cdf(tmp_path):
    """Functions share the server's environment: what is tested here is the deployer's process, not theirs."""
    with LocalCDF(tmp_path / "cdf", isolation="shared-no-install", limits=Limits(call_timeout_s=60)) as cdf:
        yield cdf


def test_a_fresh_interpreter_without_click_or_pytest_releases_a_new_version(tmp_path, local_cdf):
    client = local_cdf.client(project="test")
    repo = copy_template(tmp_path / "repo")
    steps = [{"code": "# first"}, {"code": "# second"},
             {"code": "def predict(data, state, secrets):\n    raise ModelException('broken on purpose')"}]

    report = run_deployer(tmp_path, repo, local_cdf, steps)

    first, second, broken = report["outcomes"]
    assert report["loaded"] == []
    assert first["result"] == "success" and first["gap"] is None  # nothing was live: created, no standby
    assert second["result"] == "success" and second["standby"] == f"{LIVE}-{second['hash'][:10]}"
    assert second["gap"] is not None  # replaced: the standby answered meanwhile
    assert broken["result"] == "rolled_back" and "rolled back to the previous deployment" in broken["message"]
    live = client.functions.retrieve(external_id=LIVE)
    assert live.metadata["mlops_hash"] == second["hash"]  # the rollback put the second release back
    assert live.status == "Ready" and records.is_verified(client, live)
    assert [f.external_id for f in client.functions.list(limit=None)] == [LIVE]  # no standby left behind
    trail = [(r["action"], r["hash"], r["outcome"]) for r in audit.history(client, "well_density", "dev")]
    assert trail == [("deploy", broken["hash"], "rolled_back"), ("deploy", second["hash"], "success"),
                     ("deploy", first["hash"], "success")]
