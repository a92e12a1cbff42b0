"""conditions: the one meaning of each threshold direction, for the settings, the training service and the gate."""
from typing import get_args

import pytest

from akerbp.mlops import conditions
from akerbp.mlops.conditions import DYNAMIC_THRESHOLD, ThresholdDirection as D
from akerbp.mlops.services import training
from akerbp.mlops.settings_schema import DeploymentCondition


@pytest.mark.parametrize("direction, value, bound, expected", [
    (D.ABOVE, 0.9, 0.8, True), (D.ABOVE, 0.7, 0.8, False), (D.ABOVE, 0.8, 0.8, False),
    (D.BELOW, 0.7, 0.8, True), (D.BELOW, 0.9, 0.8, False), (D.BELOW, 0.8, 0.8, False),
    (D.ABOVE_OR_EQUALS, 0.9, 0.8, True), (D.ABOVE_OR_EQUALS, 0.7, 0.8, False), (D.ABOVE_OR_EQUALS, 0.8, 0.8, True),
    (D.BELOW_OR_EQUALS, 0.7, 0.8, True), (D.BELOW_OR_EQUALS, 0.9, 0.8, False), (D.BELOW_OR_EQUALS, 0.8, 0.8, True),
    (D.EQUALS, 0.8, 0.8, True), (D.EQUALS, 0.9, 0.8, False), (D.EQUALS, 0.7, 0.8, False),
])
def test_each_direction_both_ways_and_at_equality(direction, value, bound, expected):
    assert conditions.holds(value, direction, bound) is expected
    assert conditions.holds(value, direction.value, bound) is expected  # as a file writes it


def test_the_settings_accept_exactly_the_five_directions():
    assert get_args(DeploymentCondition.model_fields["direction"].annotation) == conditions.DIRECTIONS
    assert [d.value for d in D] == ["above", "below", "above_or_equals", "below_or_equals", "equals"]


@pytest.mark.parametrize("given, number", [("0.65", 0.65), (" 0.8 ", 0.8), ("1e-3", 0.001), (2, 2.0), (0.5, 0.5)])
def test_thresholds_are_numbers_or_strings_holding_one(given, number):
    assert conditions.threshold(given) == number


@pytest.mark.parametrize("given, message", [
    ("SELECT avg(r2) FROM model_analytics", f"'SELECT avg(r2) FROM model_analytics': {DYNAMIC_THRESHOLD}"),
    ("", "is empty; give a number, e.g. '0.8'"),
    (True, "true is a boolean, not a number"),
    ("nan", "'nan' is not a finite number"),
    (None, "None is not a number; give one, e.g. 0.8 or '0.8'"),
])
def test_other_thresholds_are_refused_saying_why(given, message):
    with pytest.raises(ValueError) as refused:
        conditions.threshold(given)
    assert str(refused.value) == message


def test_a_direction_in_upper_case_gets_a_hint():
    with pytest.raises(ValueError, match="write it in lowercase, 'above'"):
        conditions.direction("ABOVE")
    with pytest.raises(ValueError, match="use one of above, below, above_or_equals, below_or_equals, equals"):
        conditions.direction("over")


def test_a_build_metric_verdict_says_what_was_compared():
    verdict = conditions.build_metric("r2", D.ABOVE, "0.8", {"metrics": {"r2": 0.91}, "r2": 0.1}, env="test")
    assert verdict.as_dict() == {
        "kind": "build_metric", "metric": "r2", "direction": "above", "threshold": 0.8, "value": 0.91,
        "live_value": None, "live_model_id": None, "env": "test", "threshold_sql": None, "met": True,
        "detail": "r2 = 0.91 > 0.8: met"}
    missing = conditions.build_metric("mae", "below", 1, {"metrics": {"r2": 0.9}})
    assert not missing.met and missing.value is None and "'mae' is not in the training metadata" in missing.detail


@pytest.mark.parametrize("direction, new, live, margin, met", [
    ("above", 0.9, 0.8, 0, True), ("above", 0.8, 0.8, 0, False), ("above", 0.85, 0.8, 0.1, False),
    ("above_or_equals", 0.8, 0.8, 0, True), ("above_or_equals", 0.9, 0.8, 0.1, True),
    ("below", 0.1, 0.2, 0, True), ("below", 0.2, 0.2, 0, False), ("below", 0.15, 0.2, 0.1, False),
    ("below_or_equals", 0.2, 0.2, 0, True), ("below_or_equals", 0.1, 0.2, 0.1, True),
    ("equals", 0.8, 0.8, 0, True), ("equals", 0.85, 0.8, 0.1, True), ("equals", 0.95, 0.8, 0.1, False),
])
def test_the_champion_comparison_with_a_live_version_and_margin(direction, new, live, margin, met):
    verdict = conditions.deployed_model_metric("m", direction, margin, {"metrics": {"m": new}}, {"metrics": {"m": live}},
                                               live_model_id="well/test/3", env="test")
    assert verdict.met is met
    assert (verdict.value, verdict.live_value, verdict.live_model_id) == (new, live, "well/test/3")
    assert "(well/test/3 in test)" in verdict.detail and verdict.detail.endswith("met")


def test_the_champion_comparison_without_a_live_version_passes_and_says_why():
    verdict = conditions.deployed_model_metric("rmse", "below", 0, {"rmse": 0.3}, None, env="prod")
    assert verdict.met and verdict.detail == "rmse = 0.3; no version is live in prod: nothing to beat, met"
    lacking = conditions.deployed_model_metric("rmse", "below", 0, {"rmse": 0.3}, {"r2": 1}, live_model_id="w/test/2",
                                               env="test")
    assert lacking.met and "w/test/2 in test has no usable rmse" in lacking.detail


def test_the_champion_comparison_detail_shows_the_margin():
    verdict = conditions.deployed_model_metric("rmse", "below", "0.05", {"rmse": 0.1}, {"rmse": 0.2},
                                               live_model_id="w/test/1", env="test")
    assert verdict.detail == "rmse = 0.1 < live 0.2 - margin 0.05 (w/test/1 in test): met"
    assert verdict.threshold == pytest.approx(0.15)
    with pytest.raises(ValueError, match="negative"):
        conditions.deployed_model_metric("rmse", "below", -1, {"rmse": 0.1}, None)


def test_check_reads_the_definitions_condition_dicts():
    metadata = {"metrics": {"r2": 0.9, "rmse": 0.1}}
    assert conditions.check({"type": "build_metric", "metric_name": "r2", "direction": "above", "threshold": 0.8},
                            metadata).met
    assert not conditions.check({"type": "deployed_model_metric", "metric_name": "rmse", "direction": "below",
                                 "margin": 0.0}, metadata, live_metadata={"rmse": 0.05}, env="test").met


def test_the_training_service_uses_the_same_meaning():
    """Its old "above" was >=: now it is conditions' strict >."""
    assert training.condition_met({"r2": 0.8}, {"metric": "r2", "direction": "above", "threshold": 0.8}) == \
        (False, "r2 = 0.8 not > 0.8: not met")
    assert training.condition_met({"r2": 0.8}, {"metric": "r2", "direction": "equals", "threshold": "0.8"}) == \
        (True, "r2 = 0.8 == 0.8: met")
