"""The services inside a deployed function: built into a function folder as the deploy step does, then called
in a subprocess the way CDF calls them (local_call), or in-process where a warm worker's state matters."""
from __future__ import annotations

import ast
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from akerbp.mlops import function_folder
from akerbp.mlops.deployment import bundle
from akerbp.mlops.deployment.local_call import LocalCallError, call_handler, run_handler
from akerbp.mlops.services import runtime, training
from model_code import model as template_model
from model_code.test_model import ServiceTest

REPO = Path(__file__).resolve().parents[2]
MLOPS = REPO / "akerbp" / "mlops"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")

SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["GR", "NPHI", "DEPTH"],
                "properties": {"GR": {"type": "number"}, "NPHI": {"type": "number"}, "DEPTH": {"type": "number"}},
            },
        }
    },
}


def build_function_folder(dest: Path, *, service="prediction", settings=None, files=None, artifact=True) -> Path:
    """A function folder laid out as the deploy step builds it (see services/runtime.py)."""
    dest.mkdir(parents=True)
    shutil.copytree(REPO / "model_code", dest / "model_code", ignore=IGNORE)
    if artifact:
        shutil.copytree(REPO / "model_artifact", dest / "artifact", ignore=IGNORE)
    bundle.copy_runtime(dest)  # the bundled framework + handler.py, exactly as the deploy step bundles them
    (dest / "requirements.txt").write_text((REPO / "model_code" / "requirements.model").read_text())
    service_settings = {
        "model_name": "rhob",
        "service": service,
        "env": "test",
        "model_id": "rhob/test/3" if service == "prediction" else None,
        "model_module": "model_code.model",
        "artifact_folder": "artifact" if service == "prediction" else None,
        "input_schema": None,
        "deployment_condition": None,
        "dataset": "mlops",
        "secrets": [],
        **(settings or {}),
    }
    (dest / function_folder.SERVICE_SETTINGS_FILE).write_text(json.dumps(service_settings, indent=2))
    for relative, text in (files or {}).items():
        (dest / relative).parent.mkdir(parents=True, exist_ok=True)
        (dest / relative).write_text(textwrap.dedent(text))
    return dest


def model_package(name: str, body: str) -> dict:
    """Files of a one-off model package `name` (its own name, so in-process tests do not share modules)."""
    return {f"{name}/__init__.py": "", f"{name}/model.py": body}


@pytest.fixture
def in_process(tmp_path):
    """Undo what serving a folder in this process does to sys.path and sys.modules."""
    path, modules = list(sys.path), dict(sys.modules)
    yield
    sys.path[:] = path
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(tmp_path):
            del sys.modules[name]
    sys.modules.update(modules)


# --- prediction, called as CDF calls it -------------------------------------------------------------------------


def test_prediction_answers_with_the_model_id_and_passes_the_service_check(tmp_path):
    folder = build_function_folder(tmp_path / "fn")
    response = run_handler(folder, ServiceTest.prediction_input)
    assert response["status"] == "ok", response
    assert response["model_id"] == "rhob/test/3"
    assert ServiceTest.prediction_check(response)
    state = template_model.initialization(REPO / "model_artifact", {})
    assert response["prediction"] == pytest.approx(template_model.predict(ServiceTest.prediction_input, state, {}))


@pytest.mark.parametrize("ping", [{}, None])
def test_ping_initialises_and_answers_ok(tmp_path, ping):
    folder = build_function_folder(tmp_path / "fn")
    assert run_handler(folder, ping) == {"status": "ok", "model_id": "rhob/test/3", "warm": False}


def test_a_ping_reports_a_broken_initialisation(tmp_path):
    folder = build_function_folder(tmp_path / "fn", artifact=False)
    response = run_handler(folder, {})
    assert response["status"] == "error"
    assert response["message"].startswith("initialization failed: ModelException: no model.json in artifact folder")


def test_input_schema_violations_are_all_listed_with_their_paths(tmp_path):
    folder = build_function_folder(
        tmp_path / "fn",
        settings={"input_schema": "input_schema.json"},
        files={"input_schema.json": json.dumps(SCHEMA)},
    )
    bad = {"data": [{"GR": "high", "NPHI": 0.2, "DEPTH": 2000.0}, {"GR": 80.0, "NPHI": 0.2}]}
    response = run_handler(folder, bad)
    assert response["status"] == "error"
    assert response["model_id"] == "rhob/test/3"
    message = response["message"]
    assert message.startswith("input does not match input_schema.json: ")
    assert "$.data[0].GR: 'high' is not of type 'number'" in message
    assert "$.data[1]: 'DEPTH' is a required property" in message
    assert ServiceTest.prediction_check(run_handler(folder, ServiceTest.prediction_input))


def test_an_invalid_input_schema_is_reported_as_such(tmp_path):
    folder = build_function_folder(
        tmp_path / "fn",
        settings={"input_schema": "input_schema.json"},
        files={"input_schema.json": json.dumps({"type": "no-such-type"})},
    )
    response = run_handler(folder, ServiceTest.prediction_input)
    assert response["status"] == "error"
    assert "input schema input_schema.json is not a valid JSON Schema" in response["message"]


def test_model_exception_is_an_error_answer_with_the_traceback_in_the_logs(tmp_path):
    folder = build_function_folder(tmp_path / "fn")
    call = call_handler(folder, {"data": [{"GR": 80.0, "DEPTH": 2000.0}]})
    assert call.response == {
        "status": "error",
        "message": "ModelException: data: record 0 has no field 'NPHI' (needs GR, NPHI, DEPTH)",
        "model_id": "rhob/test/3",
    }
    assert "Traceback (most recent call last)" in call.stderr
    assert 'model_code/model.py", line' in call.stderr


def test_a_model_that_fails_to_import_is_an_error_answer(tmp_path):
    folder = build_function_folder(
        tmp_path / "fn",
        settings={"model_module": "broken.model"},
        files=model_package("broken", "import not_installed_lib_xyz\n"),
    )
    response = run_handler(folder, ServiceTest.prediction_input)
    assert response["status"] == "error"
    assert response["message"] == (
        "could not import the model module 'broken.model': ModuleNotFoundError: "
        "No module named 'not_installed_lib_xyz' (is it listed in requirements.model?)"
    )


def test_secrets_reach_the_model_but_not_the_answer_or_the_logs(tmp_path):
    folder = build_function_folder(
        tmp_path / "fn",
        settings={"model_module": "leaky.model", "secrets": ["api-key"]},
        files=model_package(
            "leaky",
            """
            class ModelException(Exception):
                pass

            def initialization(folder, secrets):
                return None

            def predict(data, state, secrets):
                print("the key is", secrets["api-key"])
                raise ModelException(f"upstream refused key {secrets['api-key']}")
            """,
        ),
    )
    call = call_handler(folder, {"x": 1}, secrets={"api-key": "s3cr3t-t0ken"})
    assert call.response["message"] == "ModelException: upstream refused key ***"
    assert "s3cr3t-t0ken" not in call.stdout + call.stderr
    assert "the key is ***" in call.stdout


def test_only_the_bundled_runtime_is_importable_in_the_function(tmp_path):
    """The subprocess sees the folder's copy of akerbp.mlops, never the installed one, as in CDF."""
    folder = build_function_folder(
        tmp_path / "fn",
        settings={"model_module": "probe.model"},
        files=model_package(
            "probe",
            """
            import akerbp.mlops.services.runtime

            def initialization(folder, secrets):
                return None

            def predict(data, state, secrets):
                if data.get("import"):
                    __import__(data["import"])
                return akerbp.mlops.services.runtime.__file__
            """,
        ),
    )
    response = run_handler(folder, {"import": None})
    assert Path(response["prediction"]).resolve() == (folder / "akerbp/mlops/services/runtime.py").resolve()
    unbundled = run_handler(folder, {"import": "akerbp.mlops.cli"})
    assert unbundled["status"] == "error"
    assert "ModuleNotFoundError: No module named 'akerbp.mlops.cli' in the function folder" in unbundled["message"]


def test_a_folder_without_service_settings_is_an_error_answer(tmp_path):
    folder = build_function_folder(tmp_path / "fn")
    (folder / function_folder.SERVICE_SETTINGS_FILE).unlink()
    response = run_handler(folder, ServiceTest.prediction_input)
    assert response["status"] == "error"
    assert "mlops_service_settings.json is missing" in response["message"]


# --- local_call: crashes and timeouts -----------------------------------------------------------------------------


def handler_folder(tmp_path: Path, source: str) -> Path:
    """A minimal function folder: just a handler.py."""
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "handler.py").write_text(source)
    return folder


def test_a_crashing_handler_raises_with_the_end_of_its_stderr(tmp_path):
    folder = handler_folder(
        tmp_path,
        "import os, sys\n"
        "def handle(data):\n"
        "    print('out of memory, pretend', file=sys.stderr, flush=True)\n"
        "    os._exit(3)\n"
    )
    with pytest.raises(LocalCallError, match=r"crashed \(exit code 3\)(.|\n)*out of memory, pretend"):
        run_handler(folder, {})


def test_a_response_cdf_could_not_send_raises(tmp_path):
    folder = handler_folder(tmp_path, "def handle(data, secrets):\n    return {'values': {1, 2}}\n")
    with pytest.raises(LocalCallError, match="Object of type set is not JSON serializable"):
        run_handler(folder, {})


def test_the_function_env_vars_reach_the_handler_as_in_cdf(tmp_path):
    folder = handler_folder(
        tmp_path,
        "import os\n"
        "def handle(data):\n"
        "    return [os.environ.get('WELL_FIELD'), os.environ.get('COGNITE_FUNCTION_RUNTIME')]\n"
    )
    assert run_handler(folder, {}, env_vars={"WELL_FIELD": "north"}) == ["north", "true"]


def test_the_deployers_credentials_and_secrets_do_not_reach_the_handler(tmp_path, monkeypatch):
    monkeypatch.setenv("COGNITE_CLIENT_SECRET", "deployer-client-secret")
    monkeypatch.setenv("COGNITE_PROJECT", "prod-project")
    monkeypatch.setenv("MLOPS_SECRET_OTHER_MODEL_KEY", "other-models-secret")
    monkeypatch.setenv("WELL_REGION", "kept: not a credential")
    folder = handler_folder(
        tmp_path,
        "import os\n"
        "def handle(data):\n"
        "    return sorted(k for k in os.environ if k.startswith(('COGNITE_', 'MLOPS_SECRET_', 'WELL_')))\n"
    )
    # Env vars the function is given explicitly reach it, whatever their names (CDF sets them all).
    given = {"COGNITE_EXTRA": "given", "MLOPS_SECRET_STYLE_NAME": "given"}
    assert run_handler(folder, {}, env_vars=given) == ["COGNITE_EXTRA", "COGNITE_FUNCTION_RUNTIME",
                                                       "MLOPS_SECRET_STYLE_NAME", "WELL_REGION"]


def test_a_handler_that_never_answers_times_out(tmp_path):
    folder = handler_folder(
        tmp_path,
        "import sys, threading\n"
        "def handle(data):\n"
        "    print('waiting for nothing', file=sys.stderr, flush=True)\n"
        "    threading.Event().wait()\n"
    )
    with pytest.raises(LocalCallError, match=r"did not answer within 1 s(.|\n)*waiting for nothing"):
        run_handler(folder, {}, timeout=1)


def test_a_folder_without_a_handler_is_refused(tmp_path):
    with pytest.raises(LocalCallError, match="no handler.py in"):
        run_handler(tmp_path, {})


# --- prediction, in-process: what a warm worker keeps --------------------------------------------------------------

COUNTING_MODEL = """
    from pathlib import Path

    INITIALISED = []

    class ModelException(Exception):
        pass

    def initialization(folder, secrets):
        if not (Path(folder) / "ready").exists():
            raise ModelException("artifact not ready")
        INITIALISED.append(folder)
        return {"offset": 1}

    def predict(data, state, secrets):
        if data.get("answer") == "nan":
            return [float("nan")]
        if data.get("answer") == "object":
            return {"state": object()}
        return [x + state["offset"] for x in data["x"]]
"""


def test_initialization_runs_once_per_worker_and_failures_are_retried(tmp_path, in_process):
    folder = build_function_folder(
        tmp_path / "fn", settings={"model_module": "counting.model"}, files=model_package("counting", COUNTING_MODEL)
    )
    failed = runtime.handle({}, None, {}, {"call_id": 1}, root=folder)
    assert failed["status"] == "error"
    assert failed["message"] == "initialization failed: ModelException: artifact not ready"
    (folder / "artifact" / "ready").touch()
    assert runtime.handle({}, None, {}, {"call_id": 2}, root=folder)["warm"] is False
    first = runtime.handle({"x": [1, 2]}, None, {}, {"call_id": 3}, root=folder)
    second = runtime.handle({"x": [5]}, None, None, None, root=folder)
    assert (first["prediction"], second["prediction"]) == ([2, 3], [6])
    assert runtime.handle({}, None, {}, {"call_id": 4}, root=folder)["warm"] is True
    assert sys.modules["counting.model"].INITIALISED == [str(folder / "artifact")]


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("nan", "the prediction contains NaN or Infinity, which JSON cannot carry"),
        ("object", "the prediction is not JSON-serialisable (Object of type object is not JSON serializable)"),
    ],
)
def test_a_prediction_json_cannot_carry_is_an_error_answer(tmp_path, in_process, answer, expected):
    folder = build_function_folder(
        tmp_path / "fn", settings={"model_module": "counting.model"}, files=model_package("counting", COUNTING_MODEL)
    )
    (folder / "artifact" / "ready").touch()
    response = runtime.handle({"answer": answer}, None, {}, None, root=folder)
    assert response["status"] == "error"
    assert response["message"].startswith(expected)


# --- training -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata, condition, met, detail",
    [
        ({"metrics": {"r2": 0.9}}, {"metric": "r2", "direction": "above", "threshold": 0.8}, True,
         "r2 = 0.9 > 0.8: met"),
        ({"metrics": {"r2": 0.8}}, {"metric": "r2", "direction": "above", "threshold": 0.8}, False,
         "r2 = 0.8 not > 0.8: not met"),  # "above" is strict: above_or_equals is >=
        ({"metrics": {"r2": 0.8}}, {"metric": "r2", "direction": "above_or_equals", "threshold": 0.8}, True,
         "r2 = 0.8 >= 0.8: met"),
        ({"metrics": {"r2": 0.7}}, {"metric": "r2", "direction": "above", "threshold": 0.8}, False,
         "r2 = 0.7 not > 0.8: not met"),
        ({"metrics": {"rmse": 0.03}}, {"metric": "rmse", "direction": "below", "threshold": 0.05}, True,
         "rmse = 0.03 < 0.05: met"),
        ({"rmse": 0.07}, {"metric": "rmse", "direction": "below", "threshold": 0.05}, False,
         "rmse = 0.07 not < 0.05: not met"),
        ({"metrics": {"rmse": 0.01}, "rmse": 0.9}, {"metric": "rmse", "direction": "below", "threshold": 0.05}, True,
         "rmse = 0.01 < 0.05: met"),
        ({"metrics": {"r2": 0.9}}, {"metric": "mae", "direction": "below", "threshold": 1}, False,
         "metric 'mae' is not in the training metadata (looked in metadata['metrics'] and metadata): not met"),
        ({"metrics": {"r2": float("nan")}}, {"metric": "r2", "direction": "above", "threshold": 0.5}, False,
         "metric metrics['r2'] is nan, not a finite number: not met"),
        ({"metrics": {"r2": "0.9"}}, {"metric": "r2", "direction": "above", "threshold": 0.5}, False,
         "metric metrics['r2'] is '0.9', not a finite number: not met"),
        ({"metrics": {"r2": 0.9}}, {"metric": "r2", "direction": "over", "threshold": 0.5}, False,
         "deployment_condition.direction: 'over' is not a direction; use one of above, below, above_or_equals, "
         "below_or_equals, equals"),
        ({"metrics": {"r2": 0.9}}, {"metric": "r2", "direction": "above"}, False,
         "deployment_condition.threshold: None is not a number; give one, e.g. 0.8 or '0.8'"),
    ],
)
def test_condition_met(metadata, condition, met, detail):
    assert training.condition_met(metadata, condition) == (met, detail)


def test_training_without_a_client_trains_and_checks_but_does_not_upload(tmp_path):
    """The pre-deploy service test of a training service: a real subprocess, no CDF."""
    folder = build_function_folder(tmp_path / "fn", service="training")
    response = run_handler(folder, ServiceTest.training_input)
    assert response["status"] == "ok", response
    assert response["training"]["uploaded"] is False
    assert ServiceTest.training_check(response)


def test_training_in_prod_needs_a_deployment_condition(tmp_path, in_process):
    folder = build_function_folder(tmp_path / "fn", service="training", settings={"env": "prod"})
    response = runtime.handle(ServiceTest.training_input, None, {}, None, root=folder)
    assert response["status"] == "error"
    assert response["message"] == training.NO_PROD_CONDITION


def test_training_in_prod_refuses_a_model_below_the_condition(tmp_path, in_process):
    condition = {"metric": "r2", "direction": "above", "threshold": 0.99}
    folder = build_function_folder(
        tmp_path / "fn", service="training", settings={"env": "prod", "deployment_condition": condition}
    )
    response = runtime.handle(ServiceTest.training_input, None, {}, None, root=folder)
    assert response["status"] == "error"
    assert response["message"].startswith("deployment condition not met: r2 = 0.8")
    assert response["message"].endswith(" not > 0.99; the new version was not uploaded")


def test_training_in_test_reports_the_condition_without_blocking(tmp_path, in_process):
    condition = {"metric": "r2", "direction": "above", "threshold": 0.99}
    folder = build_function_folder(tmp_path / "fn", service="training", settings={"deployment_condition": condition})
    response = runtime.handle(ServiceTest.training_input, None, {}, None, root=folder)
    assert response["status"] == "ok"
    assert response["training"]["deployment_condition"]["met"] is False


@pytest.mark.parametrize(
    "body, expected",
    [
        ("def train(data, folder_path, secrets):\n    open(folder_path + '/a', 'w').close()\n",
         "train() returned NoneType; it must return a dict of metadata"),
        ("def train(data, folder_path, secrets):\n    return {'metrics': {'r2': 1.0}}\n",
         "train() wrote nothing into folder_path"),
        ("def train(data, folder_path, secrets):\n    return 1 / 0\n",
         "train() failed: ZeroDivisionError: division by zero"),
        ("def predict(data, state, secrets):\n    return 1\n", "model module 'faulty.model' has no train()"),
        ("def train(data, folder_path, secrets):\n    open(folder_path + '/a', 'w').close()\n"
         "    return {'version': 3, 'metrics': {}}\n",
         "train() returned metadata key(s) ['version'] that the model registry reserves: rename them"),
    ],
)
def test_a_faulty_train_is_an_error_answer(tmp_path, in_process, body, expected):
    folder = build_function_folder(
        tmp_path / "fn", service="training", settings={"model_module": "faulty.model"},
        files=model_package("faulty", body),
    )
    response = runtime.handle({}, None, {}, None, root=folder)
    assert response["status"] == "error"
    assert response["message"].startswith(expected)


def test_a_folder_without_the_registry_fails_before_training(tmp_path):
    folder = build_function_folder(tmp_path / "fn", service="training")
    shutil.rmtree(folder / "akerbp/mlops/registry")
    response = run_handler(folder, ServiceTest.training_input)
    assert response["status"] == "error"
    assert response["message"].startswith(
        "the bundled model registry cannot be imported: ImportError: cannot import name 'registry'"
    )


# --- training end to end: the real registry on the local CDF, through the real cognite-sdk -----------------------


@pytest.fixture
def cdf_client(tmp_path):
    local_cdf = pytest.importorskip("akerbp.mlops.local_cdf")
    with local_cdf.LocalCDF(tmp_path / "cdf") as cdf:
        yield cdf.client(project="t")


def test_training_uploads_new_versions_that_a_prediction_service_can_serve(tmp_path, cdf_client, in_process):
    from akerbp.mlops import registry

    folder = build_function_folder(tmp_path / "train", service="training")
    first = runtime.handle(ServiceTest.training_input, cdf_client, {}, {"call_id": 1}, root=folder)
    second = runtime.handle({"n_samples": 300, "seed": 2}, cdf_client, {}, {"call_id": 2}, root=folder)
    assert first["status"] == "ok", first
    assert ServiceTest.training_check(first)
    assert (first["training"]["model_id"], second["training"]["model_id"]) == ("rhob/test/1", "rhob/test/2")
    assert first["training"]["uploaded"] is True and len(first["training"]["sha256"]) == 64
    stored = cdf_client.files.list(external_id_prefix="rhob/test/", limit=None)
    assert sorted(f.external_id for f in stored) == ["rhob/test/1", "rhob/test/2"]
    assert json.loads(stored.get(external_id="rhob/test/2").metadata["metrics"]) == second["training"]["metadata"][
        "metrics"
    ]

    from akerbp.mlops import audit

    runs = audit.history(cdf_client, "rhob", env="test")
    assert [(r["action"], r["outcome"], r["model_id"]) for r in runs] == [
        ("training", "success", "rhob/test/2"), ("training", "success", "rhob/test/1")]

    # The uploaded artifact is a working model: serve version 2 from a prediction folder.
    serving = build_function_folder(tmp_path / "serve", artifact=False, settings={"model_id": "rhob/test/2"})
    registry.download_model_version("rhob", "test", serving / "artifact", client=cdf_client)
    response = run_handler(serving, ServiceTest.prediction_input)
    assert response["model_id"] == "rhob/test/2"
    assert ServiceTest.prediction_check(response)


def test_training_in_prod_uploads_when_the_condition_is_met(tmp_path, cdf_client, in_process):
    condition = {"metric": "rmse", "direction": "below", "threshold": 0.06}
    folder = build_function_folder(
        tmp_path / "fn", service="training", settings={"env": "prod", "deployment_condition": condition}
    )
    response = runtime.handle(ServiceTest.training_input, cdf_client, {}, None, root=folder)
    assert response["status"] == "ok", response
    assert response["training"]["model_id"] == "rhob/prod/1"
    assert response["training"]["deployment_condition"]["met"] is True
    assert [f.external_id for f in cdf_client.files.list(external_id_prefix="rhob/prod/")] == ["rhob/prod/1"]


# --- what the services may import ---------------------------------------------------------------------------------

ALLOWED_FRAMEWORK = ("akerbp.mlops.services", "akerbp.mlops.utils", "akerbp.mlops.errors", "akerbp.mlops.registry",
                     "akerbp.mlops.audit", "akerbp.mlops.vocabulary", "akerbp.mlops.function_folder", "akerbp.mlops.conditions",
                     "akerbp.mlops.analytics.summary", "akerbp.mlops.analytics.recorder")  # analytics' recording half


def test_services_import_only_the_stdlib_and_the_bundled_runtime():
    """The function folder bundles services/, utils/, errors.py, registry/, audit.py and conditions.py: nothing else of the
    framework, and no numpy or pydantic; cognite-sdk and jsonschema are installed by the requirements."""
    offending = []
    for path in sorted((MLOPS / "services").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("jsonschema", "cognite", "__future__"):
                    continue
                if name == "akerbp.mlops" or name.startswith(ALLOWED_FRAMEWORK):
                    continue
                offending.append(f"{path.name}: {name}")
    # runtime.py hands an automation folder's calls to its steps: imported only there, where bundle.py bundles them
    assert offending == ["runtime.py: akerbp.mlops.automations.steps"]
