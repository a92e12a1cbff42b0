"""deployment/live.py, the queries behind `mlops call/status/logs`: typed answers, and importable without click, so
code without the CLI (a notebook, an automation inside a CDF Function) can ask them too."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

HANDLER = """
def handle(data):
    print("seen", data.get("x"))
    return {"status": "ok", "x": data.get("x")}
"""

# Runs in a fresh interpreter where click and pytest cannot be imported.
QUERIES = """
import json, sys
for name in ("click", "pytest", "_pytest"):
    sys.modules[name] = None
from cognite.client import ClientConfig, CogniteClient, global_config
from cognite.client.credentials import Token
from akerbp.mlops.deployment import live

global_config.disable_pypi_version_check = True
client = CogniteClient(ClientConfig(client_name="t", project="test", base_url=sys.argv[1], credentials=Token("t")))
services = live.deployed_services(client)
answering = live.callable_function(client, "m", "prediction", "dev")
started = live.start_call(client, "m", "prediction", "dev", {"x": 7})
done = live.wait_call(client, started.call, 60)
logs = live.call_logs(client, "m", "prediction", "dev")
count = live.function_count(client)
print(json.dumps({
    "services": [s.as_dict() for s in services], "types": [type(s).__name__ for s in services],
    "answering": answering.function.external_id, "fallback": answering.fallback,
    "status": done.status, "response": done.get_response(), "logs": logs.as_dict(),
    "count": [count.total, count.ours], "click": "click" in sys.modules and sys.modules["click"] is not None,
}))
"""


def _meta(env: str, hash_: str) -> dict:
    return {"mlops_model": "m", "mlops_service": "prediction", "mlops_env": env, "mlops_version": "3",
            "mlops_model_id": f"m/{env}/3", "mlops_hash": hash_, "mlops_deployed_at": "2024-06-01T10:00:00Z",
            "mlops_deployed_by": "tester"}


def test_the_live_queries_answer_typed_results_without_click(client, local_cdf, tmp_path):
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text(textwrap.dedent(HANDLER))
    for xid, env, hash_ in [("m-prediction-dev", "dev", "a" * 64), ("m-prediction-test-bbbbbbbbbb", "test", "b" * 64)]:
        client.functions.create(name=xid, external_id=xid, folder=str(folder), metadata=_meta(env, hash_),
                                skip_folder_validation=True)
    deadline = time.monotonic() + 120
    while {f.status for f in client.functions.list(limit=10)} != {"Ready"}:  # CDF has no push for Ready: poll
        assert time.monotonic() < deadline, "the functions did not build in 120 s"
        time.sleep(0.05)

    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    done = subprocess.run([sys.executable, "-c", QUERIES, local_cdf.base_url], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert not answer["click"]
    assert answer["types"] == ["DeployedService", "DeployedService"]
    dev, test = answer["services"]
    assert (dev["env"], dev["function"], dev["standby"], dev["model_id"], dev["hash"]) == \
        ("dev", "m-prediction-dev", False, "m/dev/3", "a" * 64)
    assert (test["env"], test["function"], test["standby"]) == ("test", "m-prediction-test-bbbbbbbbbb", True)
    assert dev["last_call"] is None and dev["status"] == "Ready"
    assert answer["answering"] == "m-prediction-dev" and answer["fallback"] is None
    assert answer["status"] == "Completed" and answer["response"] == {"status": "ok", "x": 7}
    logs = answer["logs"]
    assert logs["function"] == "m-prediction-dev" and logs["status"] == "Completed" and logs["error"] is None
    assert any("seen 7" in line for line in logs["logs"])
    assert answer["count"] == [2, 2]
