"""Settings: good files load; every broken file in tests/settings/corpus fails with exit 2 naming file, model, field."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from akerbp.mlops.cli import main
from akerbp.mlops.errors import UsageError
from akerbp.mlops.settings import (
    ModelSettings,
    SettingsError,
    find_settings_file,
    load_settings,
    secret_env_var,
    settings_json_schema,
)
from akerbp.mlops.utils.logger import mask
from support import scaffold

CORPUS = Path(__file__).parent / "corpus"
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".py", ".yaml"))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return scaffold(tmp_path)


def expectations(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} needs an '# expect: a | b' first line"
    return [part.strip() for part in first[len("# expect: "):].split(" | ")]


def test_corpus_is_large_enough():
    model_level = [p for p in CORPUS_FILES if any(e.startswith("field '") for e in expectations(p))]
    assert len(model_level) >= 15
    assert {p.suffix for p in model_level} == {".py", ".yaml"}


@pytest.mark.parametrize("case", CORPUS_FILES, ids=lambda p: p.name)
def test_broken_settings_fail_with_a_clear_message(case, repo):
    shutil.copy(case, repo / case.name)
    result = CliRunner().invoke(main, ["settings", "validate", "--file", case.name])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert case.name in result.stderr
    for expected in expectations(case):
        assert expected in result.stderr, f"{expected!r} missing from:\n{result.stderr}"


def test_the_real_command_exits_2_without_traceback(repo):
    shutil.copy(CORPUS / "python_version_retired.yaml", repo / "mlops_settings.yaml")
    proc = subprocess.run([sys.executable, "-c", "from akerbp.mlops.cli import main; main()", "settings", "validate"],
                          capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 2
    assert "mlops_settings.yaml: model 'churn': field 'python_version': 'py37' is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr


GOOD_YAML = """\
models:
  - model_name: churn
    human_friendly_model_name: Customer churn
    model_file: model_code/model.py
    python_version: py312
    secrets: [db-password]
    input_schema: model_code/input.schema.json
    info:
      prediction: {description: Predicts churn, owner: ds@example.com, metadata: {team: analytics}}
    deployment_condition: {metric: accuracy, direction: above, threshold: 0.8}
  - model_name: well_log
    model_file: models/churn/model.py
    req_file: model_code/requirements.model
    artifact_version: 4
    cpu: 0.5
    env_vars: {LOG_FORMAT: short}
"""


def test_valid_yaml_loads_with_defaults_and_derived_values(repo):
    (repo / "mlops_settings.yaml").write_text(GOOD_YAML)
    churn, well_log = load_settings()
    assert churn.root == repo.resolve()
    assert churn.human_friendly_model_name == "Customer churn"
    assert churn.req_file == "model_code/requirements.model" and churn.test_file == "model_code/test_model.py"
    assert churn.dataset == "mlops" and churn.models_to_keep == 3 and churn.artifact_version is None
    assert churn.info.prediction.metadata == {"team": "analytics"} and churn.info.training is None
    assert churn.deployment_condition.direction == "above"
    assert churn.module == "model_code.model" and churn.code_folder == "model_code"
    assert churn.model_path == repo.resolve() / "model_code/model.py" and churn.has_local_artifacts
    assert churn.function_external_id("prediction", "test") == "churn-prediction-test"
    # The seed's top-folder rule: models/churn/model.py deploys models/ (with models/common_code).
    assert well_log.code_folder == "models" and well_log.module == "models.churn.model"
    assert well_log.human_friendly_model_name == "well_log" and well_log.python_version == "py311"
    assert well_log.artifact_version == 4 and well_log.cpu == 0.5 and well_log.env_vars == {"LOG_FORMAT": "short"}
    assert "root" not in churn.model_dump()


def test_multi_document_yaml_is_one_model_per_document(repo):
    (repo / "mlops_settings.yaml").write_text(
        "model_name: first\nmodel_file: model_code/model.py\n---\nmodel_name: second\nmodel_file: models/churn/model.py\n---\n"
    )
    assert [m.model_name for m in load_settings()] == ["first", "second"]


def test_valid_python_settings_mix_model_settings_and_dicts(repo):
    (repo / "mlops_settings.py").write_text(
        "from akerbp.mlops import ModelSettings\n\n"
        "common = dict(python_version='py313', dataset='ml-models')\n"
        "models = [\n"
        "    ModelSettings(model_name='churn', model_file='model_code/model.py', **common),\n"
        "    {'model_name': 'other', 'model_file': 'models/churn/model.py', 'secrets': ['api-key']},\n"
        "]\n"
    )
    churn, other = load_settings()
    assert isinstance(churn, ModelSettings) and isinstance(other, ModelSettings)
    assert churn.python_version == "py313" and churn.dataset == "ml-models" and churn.root == repo.resolve()
    assert other.secrets == ["api-key"] and other.code_folder == "models"


def test_validate_prints_a_summary_and_json(repo):
    (repo / "mlops_settings.yaml").write_text(GOOD_YAML)
    result = CliRunner().invoke(main, ["settings", "validate"])
    assert result.exit_code == 0, result.output
    assert "churn" in result.stdout and "pinned v4" in result.stdout and "2 models" in result.stdout
    result = CliRunner().invoke(main, ["settings", "validate", "--json"])
    data = json.loads(result.stdout)
    assert data["valid"] and [m["model_name"] for m in data["models"]] == ["churn", "well_log"]
    assert data["models"][1]["code_folder"] == "models"


def test_every_error_is_reported_at_once(repo):
    (repo / "mlops_settings.py").write_text(
        "from akerbp.mlops import ModelSettings\n"
        "models = [\n"
        "    ModelSettings(model_name='first', model_file='model_code/model.py', python_version='py39'),\n"
        "    ModelSettings(model_name='second', model_file='model_code/missing.py', req_fle='x'),\n"
        "    {'model_name': 'Third', 'model_file': 'model_code/model.py', 'cpu': 0},\n"
        "    {'model_name': 'first', 'model_file': 'model_code/model.py'},\n"
        "]\n"
    )
    with pytest.raises(SettingsError) as caught:
        load_settings()
    errors = caught.value.errors
    expected = [
        "model 'first': field 'python_version': 'py39' is not allowed",
        "model 'second': field 'req_fle' is not a known field; did you mean 'req_file'?",
        "model 'second': field 'model_file': model_code/missing.py was not found",
        "model 'Third': field 'model_name'",
        "model 'Third': field 'cpu'",
        "model 'first': field 'model_name': defined twice (models #1 and #4)",
    ]
    for text in expected:
        assert sum(text in e for e in errors) == 1, (text, errors)
    assert len(errors) == len(expected)
    assert all(e.startswith("mlops_settings.py: model ") for e in errors)
    assert "(line 3)" in errors[0]
    assert f"({len(expected)} errors)" in str(caught.value)


def test_a_missing_default_path_says_it_is_the_default(repo):
    (repo / "model_code/test_model.py").unlink()
    (repo / "mlops_settings.yaml").write_text("model_name: churn\nmodel_file: model_code/model.py\n")
    with pytest.raises(SettingsError, match=r"field 'test_file': model_code/test_model.py was not found \(the default"):
        load_settings()


def test_dev_needs_the_local_artifact_folder_unless_pinned(repo):
    (repo / "model_artifact").rmdir()
    (repo / "mlops_settings.yaml").write_text(
        "models:\n- {model_name: a, model_file: model_code/model.py}\n"
        "- {model_name: b, model_file: model_code/model.py, artifact_version: 2}\n"
    )
    assert len(load_settings(env="test")) == 2
    with pytest.raises(SettingsError) as caught:
        load_settings(env="dev")
    assert len(caught.value.errors) == 1
    assert "model 'a': field 'artifact_folder': folder model_artifact was not found" in caught.value.errors[0]
    result = CliRunner().invoke(main, ["settings", "validate", "--env", "dev"])
    assert result.exit_code == 2 and "artifact_folder" in result.stderr


def test_finding_the_settings_file(repo):
    with pytest.raises(UsageError, match="mlops init"):
        find_settings_file()
    (repo / "mlops_settings.yml").write_text("")
    with pytest.raises(UsageError, match="rename it to mlops_settings.yaml"):
        load_settings()
    (repo / "mlops_settings.yaml").write_text("")
    (repo / "mlops_settings.py").write_text("")
    with pytest.raises(UsageError, match="both mlops_settings.py and mlops_settings.yaml"):
        load_settings()
    result = CliRunner().invoke(main, ["settings", "validate", "--file", "nope.yaml"])
    assert result.exit_code == 2 and "nope.yaml" in result.stderr


def test_model_settings_alone_validate_as_usual():
    with pytest.raises(ValidationError):
        ModelSettings(model_name="x", model_file="model_code/model.py", python_version="py37")
    model = ModelSettings(model_name="x", model_file="model_code/model.py")
    assert model.root == Path.cwd() and model.human_friendly_model_name == "x"


def test_secret_values_come_from_mlops_secret_variables_and_are_masked(monkeypatch):
    model = ModelSettings(model_name="x", model_file="model_code/model.py", secrets=["db-password", "api-key"])
    assert secret_env_var("db-password") == "MLOPS_SECRET_DB_PASSWORD"
    monkeypatch.setenv("MLOPS_SECRET_DB_PASSWORD", "hunter2-hunter2")
    monkeypatch.delenv("MLOPS_SECRET_API_KEY", raising=False)
    with pytest.raises(UsageError) as caught:
        model.secret_values()
    assert "MLOPS_SECRET_API_KEY" in str(caught.value) and "hunter2" not in str(caught.value)
    monkeypatch.setenv("MLOPS_SECRET_API_KEY", "k3y-value-123")
    assert model.secret_values() == {"db-password": "hunter2-hunter2", "api-key": "k3y-value-123"}
    assert mask("password is hunter2-hunter2") == "password is ***"


def test_model_settings_is_exported_lazily():
    code = "import sys, akerbp.mlops as m; assert 'pydantic' not in sys.modules; m.ModelSettings; " \
           "assert 'pydantic' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the JSON Schema -----------------------------------------------------------------------------------------------


def test_json_schema_accepts_good_yaml_and_rejects_bad():
    schema = settings_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(yaml.safe_load(GOOD_YAML))
    for document in yaml.safe_load_all("model_name: a\nmodel_file: m/model.py\n---\nmodel_name: b\nmodel_file: m/x.py\n"):
        validator.validate(document)
    bad = yaml.safe_load(GOOD_YAML)
    bad["models"][0]["python_version"] = "py37"
    bad["models"][1]["reqfile"] = "x"
    messages = [e.message for e in validator.iter_errors(bad)]
    assert any("py37" in m for m in messages) and any("reqfile" in m for m in messages)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"models": []})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"model_name": "a"})  # model_file missing


def test_schema_command_prints_the_schema():
    result = CliRunner().invoke(main, ["settings", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema == settings_json_schema()
    fields = schema["$defs"]["ModelSettings"]["properties"]
    assert "root" not in fields
    assert "MLOPS_SECRET_MY_KEY" in fields["secrets"]["description"]
    assert fields["python_version"]["enum"] == ["py310", "py311", "py312", "py313"]


def test_an_invalid_value_in_python_settings_prints_only_the_error(repo):
    (repo / "mlops_settings.py").write_text(
        "from akerbp.mlops import ModelSettings\n"
        "models = [ModelSettings(model_name='m', model_file='model_code/model.py', cpu='lots')]\n"
    )
    proc = subprocess.run([sys.executable, "-m", "akerbp.mlops.cli", "settings", "validate"],
                          capture_output=True, text=True, cwd=repo)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "Error: mlops_settings.py is invalid (1 error):",
        "  mlops_settings.py: model 'm': field 'cpu': 'lots': input should be a valid number, unable to parse string "
        "as a number (line 2)",
    ], proc.stderr  # no pydantic serializer warnings around it


def test_prod_training_needs_a_deployment_condition_and_validate_says_so(repo):
    (repo / "mlops_settings.yaml").write_text(
        "models:\n- {model_name: a, model_file: model_code/model.py}\n"
        "- {model_name: b, model_file: model_code/model.py,\n"
        "   deployment_condition: {metric: r2, direction: above, threshold: 0.7}}\n"
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(env="prod")
    assert len(caught.value.errors) == 1
    assert "model 'a': field 'deployment_condition': not set: a training deploy to prod is refused without it" \
        in caught.value.errors[0]
    assert len(load_settings(env="prod", services=("prediction",))) == 2
    assert len(load_settings(env="test")) == 2

    refused = CliRunner().invoke(main, ["settings", "validate", "--env", "prod"])
    assert refused.exit_code == 2 and "field 'deployment_condition': not set" in refused.stderr
    assert CliRunner().invoke(main, ["settings", "validate", "--env", "prod", "--service", "prediction"]).exit_code == 0
    plain = CliRunner().invoke(main, ["settings", "validate"])
    assert plain.exit_code == 0
    assert "note: ENV=prod deploys would refuse model 'a': field 'deployment_condition'" in plain.stderr
    assert "model 'b'" not in plain.stderr


def test_plain_validate_names_the_artifact_folder_a_dev_deploy_needs(repo):
    (repo / "model_artifact").rmdir()
    (repo / "mlops_settings.yaml").write_text("model_name: a\nmodel_file: model_code/model.py\n"
                                               "deployment_condition: {metric: r2, direction: above, threshold: 1}\n")
    plain = CliRunner().invoke(main, ["settings", "validate", "--json"])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["refused_deploys"] == [{"env": "dev", "problem": (
        "model 'a': field 'artifact_folder': folder model_artifact was not found: an ENV=dev prediction deploy "
        "serves the local artifact folder; create it, or pin artifact_version to deploy a version from the registry "
        "(e.g. one a dev training run uploaded)")}]
    assert "ENV=dev deploys would refuse model 'a': field 'artifact_folder'" in plain.stderr
    # A training deploy does not need the folder.
    assert len(load_settings(env="dev", services=("training",))) == 1


@pytest.mark.parametrize("value, ok", [("true", True), ("false", True), ("'yes'", False), ("1", False)])
def test_allow_no_tests_is_a_plain_boolean(repo, value, ok):
    (repo / "mlops_settings.yaml").write_text(f"model_name: a\nmodel_file: model_code/model.py\nallow_no_tests: {value}\n")
    if ok:
        assert load_settings()[0].allow_no_tests is (value == "true")
        return
    with pytest.raises(SettingsError, match=r"model 'a': field 'allow_no_tests': .*valid boolean \(line 3\)"):
        load_settings()
    assert ModelSettings(model_name="a", model_file="model_code/model.py").allow_no_tests is False
