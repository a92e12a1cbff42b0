"""summary.summarize: the three input shapes, nulls, NaN, non-numeric values, empty inputs, prediction shapes, and its
speed on the call path (a 1,000-record input well under 2 ms)."""
from __future__ import annotations

import json
import math
import random
import statistics
import time

import pytest

from akerbp.mlops.analytics.summary import summarize

GR = [10.0, 20.5, None, 31.0, float("nan")]
NPHI = [0.1, 0.2, 0.3, 0.25, 0.15]


def expected(numbers: list[float], nulls: int) -> dict:
    return {"count": len(numbers), "nulls": nulls, "mean": statistics.fmean(numbers),
            "std": statistics.pstdev(numbers), "min": min(numbers), "max": max(numbers)}


def close(found: dict, wanted: dict) -> bool:
    return found.keys() == wanted.keys() and all(
        found[k] == wanted[k] if not isinstance(wanted[k], float) else math.isclose(found[k], wanted[k], rel_tol=1e-12)
        for k in wanted)


@pytest.mark.parametrize("shape", ["records under data", "columns under data", "bare records"])
def test_each_input_shape_gives_the_same_rows_and_feature_stats(shape):
    records = [{"GR": g, "NPHI": n, "well": "A"} for g, n in zip(GR, NPHI)]
    data = {"records under data": {"data": records},
            "columns under data": {"data": {"GR": GR, "NPHI": NPHI, "well": ["A"] * 5}},
            "bare records": records}[shape]
    found = summarize(data)
    assert found["rows"] == 5
    assert set(found["features"]) == {"GR", "NPHI"}, "the text column is not a numeric feature"
    assert close(found["features"]["GR"], expected([10.0, 20.5, 31.0], nulls=2)), found["features"]["GR"]
    assert close(found["features"]["NPHI"], expected(NPHI, nulls=0))


def test_bools_and_text_are_neither_counted_nor_nulls_and_ints_are_numbers():
    found = summarize({"data": {"x": [1, True, "2", 3, None, {"a": 1}, 2**2000]}})["features"]["x"]
    assert found["count"] == 2 and found["nulls"] == 2, "None and an int beyond float's range are nulls"
    assert found["mean"] == 2.0 and found["std"] == 1.0 and (found["min"], found["max"]) == (1, 3)


def test_a_feature_of_only_nulls_shows_up_with_no_stats_but_text_with_nulls_does_not():
    found = summarize({"data": [{"dead": None, "label": "a"}, {"dead": float("inf"), "label": None}]})
    assert found["features"] == {"dead": {"count": 0, "nulls": 2, "mean": None, "std": None, "min": None,
                                          "max": None}}


def test_records_with_different_keys_count_a_missing_key_as_null_and_skip_what_is_no_record():
    found = summarize({"data": [{"a": 1.0}, {"a": 3.0, "b": 2.0}, "not a record", [1, 2]]})
    assert found["rows"] == 4
    assert found["features"]["a"]["count"] == 2 and found["features"]["a"]["nulls"] == 0
    assert found["features"]["b"] == {"count": 1, "nulls": 1, "mean": 2.0, "std": 0.0, "min": 2.0, "max": 2.0}


@pytest.mark.parametrize("data, rows", [
    ({"data": []}, 0), ([], 0), ({"data": {}}, None), ({}, None), (None, None), ("text", None), (42, None),
    ({"data": "text"}, None), ({"other": [1, 2]}, None), ({"data": [[1, 2], [3, 4]]}, 2),
])
def test_empty_and_unrecognised_inputs_have_no_features(data, rows):
    assert summarize(data) == {"rows": rows, "features": {}, "prediction": {}}


@pytest.mark.parametrize("prediction, names", [
    ([1.0, 2.0, 3.0], {"prediction"}),
    ([{"rhob": 1.0, "flag": "x"}, {"rhob": 3.0, "flag": "y"}], {"rhob"}),
    ({"rhob": [1.0, 3.0], "p10": [0.5, 2.5], "model": "m"}, {"rhob", "p10"}),
    ("a text answer", set()),
    (None, set()),
])
def test_prediction_shapes(prediction, names):
    found = summarize({"data": []}, prediction)["prediction"]
    assert set(found) == names
    for stats in found.values():
        assert stats["count"] == 2 or stats["count"] == 3


def test_a_summary_is_json_without_nan_even_for_extreme_values():
    found = summarize({"data": {"x": [1e308, 1e308, -1e308, float("-inf")]}})
    json.dumps(found, allow_nan=False)
    assert found["features"]["x"]["count"] == 3 and found["features"]["x"]["nulls"] == 1
    assert math.isclose(found["features"]["x"]["mean"], 1e308 / 3)


def test_a_thousand_records_summarise_in_well_under_two_ms():
    random.seed(1)
    data = {"data": [{"GR": random.uniform(0, 150), "NPHI": random.uniform(0, 0.5), "DEPTH": 1000 + i * 0.5,
                      "well": "A"} for i in range(1000)]}
    prediction = [random.uniform(2, 3) for _ in range(1000)]
    times = []
    for _ in range(50):
        started = time.perf_counter()
        summarize(data, prediction)
        times.append(time.perf_counter() - started)
    # the median, on a shared CI machine: 4 ms would mean something is quadratic or converting every value
    assert statistics.median(times) < 0.004, f"median {statistics.median(times) * 1e3:.2f} ms"
