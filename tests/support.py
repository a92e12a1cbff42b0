"""Helpers the tests share, in one module (no test imports another test module): model repo copies with their own
local CDF, fault injection on a local CDF, function folders for the local CDF's own tests, and what the deploy tests
check about a live function."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import requests

from akerbp.mlops import model_repo
from akerbp.mlops.deployment import functions, release
from akerbp.mlops.deployment.lock import lock_xid
from akerbp.mlops.local_cdf import Limits, LocalCDF

REPO = Path(__file__).resolve().parents[1]  # the repo root, a working model repo


CLEARED = ("CI", "BITBUCKET_BUILD_NUMBER", "MLOPS_LOCAL_CDF", "MLOPS_LOCAL_CDF_DIR", "ENV", "LOCAL_DEPLOYMENT")


TEMPLATE_SETTINGS = '''
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(
        model_name="well_density",
        model_file="model_code/model.py",
        req_file="model_code/requirements.model",
        test_file="model_code/test_model.py",
        artifact_folder="model_artifact",
        info={"prediction": {"description": "RHOB from logs", "owner": "ds@example.com", "metadata": {"team": "ds"}}},
        analytics={"enabled": False},  # deploy tests test no analytics; a client-naming handler costs ~1.4 s per worker
    ),
]
'''


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)

    def result(self, model: str | None = None) -> dict:
        results = self.json["results"]
        return results[0] if model is None else next(r for r in results if r["model"] == model)


class Repo:
    """A model repo copy with its own local CDF, served here so the CLI subprocesses find it."""

    def __init__(self, root: Path, isolation: str | None = None):  # None: the local CDF's default (venv)
        self.root = root
        self.cdf = LocalCDF(root.parent / "cdf", limits=Limits(call_timeout_s=60), isolation=isolation).start()
        self.cdf.announce()
        self.client = self.cdf.client(project="local")  # the project get_client() uses for the local CDF

    def close(self) -> None:
        self.cdf.withdraw()
        self.cdf.stop()

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items()
               if k not in CLEARED and not k.startswith(("COGNITE_", "MLOPS_SECRET_"))}
        env.update(MLOPS_LOCAL_CDF_DIR=str(self.cdf.data_dir), PYTHONDONTWRITEBYTECODE="1")
        env.update(extra)
        return env

    def run(self, *args: str, **env) -> Run:
        """Run a command in the repo; `mlops ...` runs as this interpreter's `-m akerbp.mlops.cli` (no venv needed on
        PATH for it; the deploy scripts find `mlops` through the PATH conftest.py sets)."""
        done = subprocess.run(mlops_command(list(args)), cwd=self.root, env=self.env(**env), capture_output=True, text=True,
                              timeout=300)
        return Run(done.returncode, done.stdout, done.stderr)

    def cli(self, *args: str, **env) -> Run:
        """`mlops *args` in this process (click's CliRunner) with the environment run() gives, in the repo: for checks
        of a command's output and exit code only. It saves run()'s ~1.3 s of CPU (an interpreter, the SDK's import);
        what needs a process of its own (signals, deploy scripts, what a process imports or leaves) stays in run()."""
        import contextlib

        from click.testing import CliRunner

        from akerbp.mlops.cli import main

        wanted = self.env(**env)
        overrides: dict[str, str | None] = {name: None for name in os.environ if name not in wanted}
        overrides.update(wanted)
        with contextlib.chdir(self.root):
            result = CliRunner(env=overrides).invoke(main, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a bug in the test or the CLI, not an exit code to assert on
        return Run(result.exit_code, result.stdout, result.stderr)

    def deploy(self, *args: str, service: str = "prediction", **env) -> Run:
        return self.run("bash", f"deploy_{service}_service.sh", *args, **env)

    def call(self, xid: str, data):
        call = self.client.functions.call(external_id=xid, data=data)
        assert call.status == "Completed", call.error
        return call.get_response()

    def functions(self) -> dict[str, object]:
        return {f.external_id: f for f in self.client.functions.list(limit=1000)}

    def code_files(self, xid: str) -> list:
        return list(self.client.files.list(external_id_prefix=f"mlops-code/{xid}/", limit=None))

    def snapshot(self) -> tuple:
        """Everything a deploy could change in CDF."""
        functions = sorted((f.external_id, f.id, f.file_id, f.status) for f in self.functions().values())
        files = sorted((f.id, f.external_id, json.dumps(f.metadata, sort_keys=True))
                       for f in self.client.files.list(limit=None))
        events = sorted(e.id for e in self.client.events.list(limit=None))
        return functions, files, events


def mlops_command(args: list[str]) -> list[str]:
    """`["mlops", ...]` as this interpreter runs it, whatever PATH holds."""
    return [sys.executable, "-m", "akerbp.mlops.cli", *args[1:]] if args[:1] == ["mlops"] else args


def copy_template(root: Path) -> Path:
    """A model repo of the one template (akerbp.mlops.model_repo) with TEMPLATE_SETTINGS."""
    root.mkdir(parents=True)
    model_repo.copy_template(root)
    (root / "mlops_settings.py").write_text(TEMPLATE_SETTINGS)
    return root


TWO_MODEL_SETTINGS = '''
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(model_name="model1", model_file="models/model1/model.py", req_file="models/model1/requirements.model",
                  test_file="models/model1/test_model.py", artifact_folder="artifacts/model1",
                  analytics=dict(enabled=False){model1_extra}),  # as in TEMPLATE_SETTINGS: no SDK import per worker
    ModelSettings(model_name="model2", model_file="models/model2/model.py", req_file="models/model2/requirements.model",
                  test_file="models/model2/test_model.py", artifact_folder="artifacts/model2",
                  analytics=dict(enabled=False)),
]
'''


MODEL = '''
import json
import os
from pathlib import Path

from models.common_code.scale import scale

# The deploy's own service test runs the built folder under .mlops/build/; a CDF function runs elsewhere. This
# switch (set through the settings' env_vars, which reach both) makes the model work locally and fail in CDF.
IN_CDF = ".mlops" not in Path(__file__).resolve().parts


class ModelException(Exception):
    pass


def initialization(folder, secrets):
    return json.loads((Path(folder) / "factor.json").read_text())["factor"]


def predict(data, factor, secrets):
    if os.environ.get("MODEL_BROKEN_IN_CDF") and IN_CDF:
        return [0 for _ in data["x"]]
    return [scale(x, factor) for x in data["x"]]


def train(data, folder, secrets):
    Path(folder, "factor.json").write_text(json.dumps({"factor": data.get("factor", 2)}))
    return {"factor": data.get("factor", 2)}
'''


TESTS = '''
from models.{name} import model


class ServiceTest:
    prediction_input = {{"x": [1, 2, 3]}}
    training_input = {{"factor": 2}}

    @staticmethod
    def prediction_check(output):
        return output["status"] == "ok" and output["prediction"] == [2, 4, 6]

    @staticmethod
    def training_check(output):
        return output["status"] == "ok"


def test_predict_scales():
    assert model.predict({{"x": [1]}}, 2, {{}}) == [2]
{extra}
'''


def write_two_model_repo(root: Path, model2_test: str = "\ndef test_model2_is_broken():\n    assert 1 == 2\n") -> Path:
    files = {
        "mlops_settings.py": TWO_MODEL_SETTINGS.format(model1_extra=""),
        "models/__init__.py": "",
        "models/common_code/__init__.py": "",
        "models/common_code/scale.py": "def scale(x, factor):\n    return x * factor\n",
        "artifacts/model1/factor.json": '{"factor": 2}',
        "artifacts/model2/factor.json": '{"factor": 2}',
    }
    for name, extra in (("model1", ""), ("model2", model2_test)):
        files[f"models/{name}/__init__.py"] = ""
        files[f"models/{name}/model.py"] = MODEL
        files[f"models/{name}/test_model.py"] = TESTS.format(name=name, extra=extra)
        files[f"models/{name}/requirements.model"] = "# no requirements\n"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(textwrap.dedent(text))
    for script in ("deploy_prediction_service.sh", "deploy_training_service.sh"):
        shutil.copy(REPO / script, root / script)
    return root


def scaffold(root: Path) -> Path:
    """A model repo's files, so only what a settings file gets wrong can fail."""
    for rel in ("model_code/model.py", "model_code/requirements.model", "model_code/test_model.py",
                "models/churn/model.py", "models/common_code/__init__.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("# scaffold\n")
    (root / "model_artifact").mkdir()
    (root / "model_code/input.schema.json").write_text(json.dumps({"type": "object", "required": ["data"]}))
    return root


def make_index(root: Path, name="localcdf_probe", version="1.0") -> str:
    """A PEP 503 index on disk with one hand-made wheel: installs offline and exists nowhere else."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VALUE = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    project = root / "index" / name.replace("_", "-")
    project.mkdir(parents=True)
    wheel = f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(project / wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    (project / "index.html").write_text(f'<html><body><a href="{wheel}">{wheel}</a></body></html>')
    return (root / "index").as_uri() + "/"


def make_folder(tmp_path, source: str, name: str = "fn", extra: dict | None = None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "handler.py").write_text(textwrap.dedent(source))
    for rel, text in (extra or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


def wait_built(client, external_id: str, timeout: float = 120):
    """Poll like a deployer does: CDF offers no push notification for Ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fn = client.functions.retrieve(external_id=external_id)
        if fn.status in ("Ready", "Failed"):
            return fn
        time.sleep(0.05)
    raise AssertionError(f"{external_id} still {fn.status} after {timeout}s")


def deploy_function(client, tmp_path, source, xid="fn", **kw):
    folder = make_folder(tmp_path, source, xid, kw.pop("extra", None))
    client.functions.create(name=xid, external_id=xid, folder=str(folder), **kw)
    return wait_built(client, xid)


def zipped(entries: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in entries.items():
            z.writestr(name, text)
    return buffer.getvalue()


ECHO = """
    import os
    COUNT = 0

    def handle(data, client, secrets, function_call_info):
        global COUNT
        COUNT += 1
        print("got", data)
        if data.get("write"):
            client.files.upload_bytes(b"from the function", name="w.txt", external_id=data["write"])
        return {"count": COUNT, "data": data, "secrets": secrets, "info": function_call_info,
                "runtime": os.environ.get("COGNITE_FUNCTION_RUNTIME"), "var": os.environ.get("MY_VAR")}
"""


# --- fault injection: /_local/faults needs a bearer token like the API, sent as the SDK does -------------------------

TOKEN = "local-token"  # what LocalCDF.client() and the open-mode server accept


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def inject_faults(base_url: str, rules: list, token: str = TOKEN) -> list[dict]:
    """Add fault rules; the server's rules after the change."""
    response = requests.post(f"{base_url}/_local/faults", json={"rules": list(rules)}, headers=_auth(token),
                             timeout=10)
    response.raise_for_status()
    return response.json()["rules"]


def fault_rules(base_url: str, token: str = TOKEN) -> list[dict]:
    response = requests.get(f"{base_url}/_local/faults", headers=_auth(token), timeout=10)
    response.raise_for_status()
    return response.json()["rules"]


def clear_faults(base_url: str, token: str = TOKEN) -> None:
    requests.delete(f"{base_url}/_local/faults", headers=_auth(token), timeout=10).raise_for_status()


# --- what the deploy tests check about a live function ----------------------------------------------------------------

def change_code(root, tag: str) -> None:
    """A change of the template model's code (a new content hash) without changing what it does."""
    model = root / "model_code" / "model.py"
    model.write_text(model.read_text() + f"\n# change {tag}\n")


def live_state(client, live: str) -> tuple[str, bool]:
    """(the live function's content hash, whether it passed its smoke check)."""
    fn = client.functions.retrieve(external_id=live)
    return fn.metadata["mlops_hash"], release.is_verified(client, fn)


def verified_live(repo: "Repo", live: str, env: str = "dev") -> str | None:
    """The live prediction function's content hash when it runs what the repo holds now (the folder a deploy would
    build from its local artifact, hashed) and passed its smoke check, with the local hint of that verified deploy
    matching the repo's inputs; else None. Lets a test that needs "the repo's content live and verified" skip a
    redeploy that would only say `unchanged`."""
    import tempfile

    from akerbp.mlops.deployment import artifacts, build, verified_hint
    from akerbp.mlops.settings import load_settings

    if live not in repo.functions():
        return None
    settings = next(m for m in load_settings(repo.root / "mlops_settings.py") if live.startswith(f"{m.model_name}-"))
    hint = verified_hint.read(verified_hint.path(settings, live))
    if hint is None or hint.inputs != verified_hint.inputs_digest(settings, "prediction", env):
        return None
    live_hash, verified = live_state(repo.client, live)
    with tempfile.TemporaryDirectory() as tmp:
        built = build.build_folder(settings, "prediction", env, artifact=settings.artifact_path, secrets={},
                                   model_id=artifacts.local_model_id(settings.model_name, settings.artifact_path),
                                   build_root=Path(tmp))
        content_hash = built.content_hash
        del built
    return live_hash if verified and live_hash == hint.content_hash == content_hash else None


def assert_clean(client, live: str) -> None:
    """Nothing half-done: no standby, no unproven code file, no deploy lock."""
    assert functions.standbys(client, live) == []
    statuses = {f.metadata.get("mlops_status") for f in functions.code_files(client, live)}
    assert statuses <= {"deployed", "failed"}, statuses
    assert client.events.retrieve(external_id=lock_xid(live)) is None


# --- a notification receiver: a real HTTP server on loopback that records what it is sent ----------------------------

@dataclass
class Received:
    """One request a Receiver got."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


class Receiver:
    """An HTTP server on 127.0.0.1 (a thread) standing in for Slack or a custom webhook: answers the i-th request
    with `statuses[i]` (`default` after them), or never answers while `hang` is set (until close), or with `dribble`
    sends an endless header a byte every `dribble` seconds (a receiver no socket timeout catches); records every
    request. `with Receiver() as r: ... r.url ... r.wait_for(1)`."""

    def __init__(self, statuses: tuple[int, ...] | list[int] = (), *, default: int = 200, hang: bool = False,
                 dribble: float | None = None, answer: bytes = b"ok", headers: dict[str, str] | None = None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qsl, urlsplit

        self.requests: list[Received] = []
        self._changed = threading.Condition()
        self._released = threading.Event()
        receiver, scripted = self, list(statuses)

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                seen = Received(self.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                                {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with receiver._changed:
                    receiver.requests.append(seen)
                    status = scripted[len(receiver.requests) - 1] if len(receiver.requests) <= len(scripted) \
                        else default
                    receiver._changed.notify_all()
                if hang:
                    receiver._released.wait(timeout=60)
                    return
                if dribble:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    deadline = time.monotonic() + 60
                    while not receiver._released.wait(timeout=dribble) and time.monotonic() < deadline:
                        self.wfile.write(b"x")  # pacing the answer, not a synchronisation
                        self.wfile.flush()
                    return
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True,
                                       name="receiver")  # a short poll: close() returns at once
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The requests once there are at least `count`; AssertionError after `timeout` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout=timeout):
                raise AssertionError(f"the receiver got {len(self.requests)} requests in {timeout} s, not {count}")
            return list(self.requests)

    def close(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released), for an unreachable receiver."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a template model that fails its smoke check only inside CDF (an automation's deploy then rolls back) -------------

BREAKABLE = '''

import os as _os

_predict = predict


def predict(data, state, secrets):
    if _os.environ.get("BREAK_IN_CDF") and "mlops-automation-" not in str(Path(__file__).resolve()):
        return [0.0 for _ in data["data"]]
    return _predict(data, state, secrets)
'''


def make_breakable(root: Path) -> None:
    """Append BREAKABLE to the template model of the repo at `root`: with the env var BREAK_IN_CDF (an automation's
    DeploymentSpecifications.env_vars) it answers nonsense in CDF, but not in the deploy's own service test (its build
    folder is under the automation's mlops-automation-* work folder), so the smoke check after the replacement
    fails."""
    with (root / "model_code" / "model.py").open("a") as model:
        model.write(BREAKABLE)
