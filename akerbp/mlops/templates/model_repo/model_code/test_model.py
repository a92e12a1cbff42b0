"""Tests of the template model, and ServiceTest: the payloads and checks the deploy step uses on the service.

Run from the repo root: `python -m pytest model_code`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from model_code import model, well_logs

RHOB_RANGE = (1.5, 3.2)  # g/cm3: lighter than any rock with water, heavier than any common mineral mix


class ServiceTest:
    """Used by akerbp.mlops to test the service before deploying it and to smoke-test it afterwards."""

    prediction_input = {
        "data": [
            {"GR": 35.0, "NPHI": 0.18, "DEPTH": 1800.0},
            {"GR": 90.0, "NPHI": 0.32, "DEPTH": 2500.0},
            {"GR": 140.0, "NPHI": 0.42, "DEPTH": 3300.0},
        ]
    }
    training_input = {"n_samples": 500, "seed": 1}

    @staticmethod
    def prediction_check(output) -> bool:
        """A service answer {"status": "ok", "prediction": [...]}: one plausible density per input record."""
        if not isinstance(output, dict) or output.get("status") != "ok":
            return False
        prediction = output.get("prediction")
        if not isinstance(prediction, list) or len(prediction) != len(ServiceTest.prediction_input["data"]):
            return False
        return all(
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
            and RHOB_RANGE[0] <= v <= RHOB_RANGE[1]
            for v in prediction
        )

    @staticmethod
    def training_check(output) -> bool:
        """A service answer {"status": "ok", "training": {"metadata": {"metrics": ...}}}: a model worth keeping."""
        if not isinstance(output, dict) or output.get("status") != "ok":
            return False
        metadata = (output.get("training") or {}).get("metadata") or {}
        metrics = metadata.get("metrics") or {}
        rmse, r2 = metrics.get("rmse"), metrics.get("r2")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (rmse, r2)):
            return False
        return r2 > 0.7 and rmse < 0.06


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifact")
    metadata = model.train(ServiceTest.training_input, folder, secrets={})
    return folder, metadata


def test_train_writes_an_artifact_and_good_metrics(trained):
    folder, metadata = trained
    assert (folder / model.ARTIFACT_FILE).is_file()
    assert metadata["metrics"]["r2"] > 0.7
    assert 0 < metadata["metrics"]["rmse"] < 0.06
    assert metadata["n_train"] + metadata["n_test"] == ServiceTest.training_input["n_samples"]
    stats = metadata["training_features"]
    assert sorted(stats) == sorted(well_logs.FEATURES) and stats["GR"]["count"] == metadata["n_train"]
    assert stats["GR"]["min"] < stats["GR"]["mean"] < stats["GR"]["max"] and stats["GR"]["std"] > 0
    json.dumps(metadata, allow_nan=False)  # the registry stores it as JSON


def test_predict_returns_one_plausible_density_per_record(trained):
    state = model.initialization(trained[0], secrets={})
    prediction = model.predict(ServiceTest.prediction_input, state, secrets={})
    assert ServiceTest.prediction_check({"status": "ok", "prediction": prediction})
    # More porosity (NPHI) at the same GR and depth means a lighter rock.
    low, high = model.predict(
        {"data": [{"GR": 80.0, "NPHI": 0.15, "DEPTH": 2500.0}, {"GR": 80.0, "NPHI": 0.40, "DEPTH": 2500.0}]},
        state,
        secrets={},
    )
    assert high < low
    assert model.predict({"data": []}, state, secrets={}) == []


def test_train_on_records_given_in_the_call(tmp_path):
    logs = well_logs.synthetic_logs(300, seed=7)
    records = [{name: float(logs[name][i]) for name in logs} for i in range(300)]
    metadata = model.train({"data": records, "alpha": 0.1}, tmp_path, secrets={})
    assert metadata["n_train"] + metadata["n_test"] == 300
    assert metadata["training_data"] == "call data, 300 records"
    assert metadata["metrics"]["r2"] > 0.7


@pytest.mark.parametrize(
    "data, expected",
    [
        ([{"GR": 1.0, "NPHI": 0.2, "DEPTH": 2000.0}], "input must be an object"),
        ({"rows": []}, "input must be an object"),
        ({"data": {"GR": 1.0}}, "expected a list of records"),
        ({"data": [{"GR": 60.0, "NPHI": 0.2}]}, "record 0 has no field 'DEPTH'"),
        ({"data": [{"GR": 60.0, "NPHI": 0.2, "DEPTH": 1.0}, {"GR": "high", "NPHI": 0.2, "DEPTH": 1.0}]},
         "record 1 field 'GR' must be a number"),
        ({"data": [{"GR": 60.0, "NPHI": float("nan"), "DEPTH": 1.0}]}, "record 0 field 'NPHI' must be finite"),
        ({"data": [{"GR": True, "NPHI": 0.2, "DEPTH": 1.0}]}, "record 0 field 'GR' must be a number"),
        ({"data": [17]}, "record 0 must be an object"),
    ],
)
def test_bad_prediction_input_raises_model_exception(trained, data, expected):
    state = model.initialization(trained[0], secrets={})
    with pytest.raises(model.ModelException, match=expected):
        model.predict(data, state, secrets={})


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"n_samples": 5}, "n_samples must be between 20"),
        ({"n_samples": "500"}, "n_samples must be an integer"),
        ({"n_sample": 500}, r"unknown training option\(s\) \['n_sample'\]"),
        ({"alpha": -1}, "alpha must be a number >= 0"),
        ({"data": [], "n_samples": 100}, "not both"),
        ({"data": [{"GR": 1.0, "NPHI": 0.2, "DEPTH": 1.0}]}, "record 0 has no field 'RHOB'"),
        ({"data": [{"GR": 1.0, "NPHI": 0.2, "DEPTH": 1.0, "RHOB": 2.3}] * 4}, "too few records"),
        ([1, 2], "training input must be an object"),
    ],
)
def test_bad_training_input_raises_model_exception(tmp_path, data, expected):
    with pytest.raises(model.ModelException, match=expected):
        model.train(data, tmp_path, secrets={})
    assert not (tmp_path / model.ARTIFACT_FILE).exists()


def test_initialization_without_an_artifact_says_what_to_do(tmp_path):
    with pytest.raises(model.ModelException, match="no model.json in artifact folder .*run train"):
        model.initialization(tmp_path, secrets={})


def test_committed_artifact_is_what_train_produces(tmp_path):
    committed = Path(__file__).resolve().parents[1] / "model_artifact" / model.ARTIFACT_FILE
    if not committed.is_file():
        pytest.skip("no model_artifact/ next to model_code/ (e.g. inside a built function folder)")
    model.train({}, tmp_path, secrets={})
    fresh = json.loads((tmp_path / model.ARTIFACT_FILE).read_text())
    old = json.loads(committed.read_text())
    assert old["format"] == fresh["format"] and old["features"] == fresh["features"]
    for key in ("mean", "scale", "coef"):
        assert old[key] == pytest.approx(fresh[key], rel=1e-9)
    assert old["intercept"] == pytest.approx(fresh["intercept"], rel=1e-9)


def test_service_checks_reject_bad_answers():
    good = {"status": "ok", "prediction": [2.3, 2.4, 2.5]}
    assert ServiceTest.prediction_check(good)
    assert not ServiceTest.prediction_check({"status": "error", "message": "x"})
    assert not ServiceTest.prediction_check({"status": "ok", "prediction": [2.3, 2.4]})
    assert not ServiceTest.prediction_check({"status": "ok", "prediction": [2.3, 2.4, float("nan")]})
    assert not ServiceTest.prediction_check({"status": "ok", "prediction": [2.3, 2.4, 9.0]})
    assert not ServiceTest.prediction_check({"status": "ok", "prediction": [2.3, 2.4, "2.5"]})

    training = {"status": "ok", "training": {"version": 1, "metadata": {"metrics": {"rmse": 0.03, "r2": 0.85}}}}
    assert ServiceTest.training_check(training)
    assert not ServiceTest.training_check({**training, "status": "error"})
    assert not ServiceTest.training_check({"status": "ok", "training": {"metadata": {"metrics": {"rmse": 0.03}}}})
    assert not ServiceTest.training_check(
        {"status": "ok", "training": {"metadata": {"metrics": {"rmse": 0.2, "r2": 0.1}}}}
    )
