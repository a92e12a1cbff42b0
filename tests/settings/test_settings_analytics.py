"""The analytics field: its default, good values from YAML and Python, and each bad value named (the corpus has the
CLI's exit 2 for the same mistakes)."""
from __future__ import annotations

import pytest

from akerbp.mlops.settings import ModelSettings, SettingsError, load_settings
from support import scaffold


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return scaffold(tmp_path)


def test_analytics_is_on_without_samples_by_default():
    settings = ModelSettings(model_name="a", model_file="model_code/model.py")
    assert settings.analytics.model_dump() == {"enabled": True, "sample_inputs": 0.0}


def test_analytics_from_yaml_keeps_the_default_of_a_key_left_out(repo):
    (repo / "mlops_settings.yaml").write_text("model_name: a\nmodel_file: model_code/model.py\n"
                                              "analytics: {sample_inputs: 0.25}\n")
    assert load_settings()[0].analytics.model_dump() == {"enabled": True, "sample_inputs": 0.25}


def test_analytics_from_python_can_be_turned_off(repo):
    (repo / "mlops_settings.py").write_text(
        "from akerbp.mlops import ModelSettings\n"
        "models = [ModelSettings(model_name='a', model_file='model_code/model.py', analytics={'enabled': False})]\n")
    assert load_settings()[0].analytics.enabled is False


@pytest.mark.parametrize("value, problem", [
    ("{sample_inputs: 1.5}", "field 'analytics.sample_inputs': 1.5: input should be less than or equal to 1"),
    ("{sample_inputs: .nan}", "field 'analytics.sample_inputs'"),
    ("{sample_inputs: true}", "field 'analytics.sample_inputs': true is a boolean, not a number"),
    ("{enabled: 1}", "field 'analytics.enabled'"),
    ("{enable: false}", "field 'analytics.enable' is not a known field; did you mean 'enabled'?"),
    ("[true]", "field 'analytics': must be a mapping of fields, not list"),
])
def test_a_bad_analytics_value_names_the_file_model_field_and_line(repo, value, problem):
    (repo / "mlops_settings.yaml").write_text(f"model_name: a\nmodel_file: model_code/model.py\nanalytics: {value}\n")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    message = str(raised.value)
    assert "mlops_settings.yaml: model 'a': " + problem in message, message
    assert "(line 3)" in message
