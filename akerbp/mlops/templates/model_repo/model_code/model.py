"""The model interface akerbp.mlops deploys: initialization, predict, train and ModelException.

Prediction input:  {"data": [{"GR": 85.0, "NPHI": 0.25, "DEPTH": 2400.0}, ...]}  ->  [RHOB, ...] in g/cm3
Training input:    {"n_samples": 500, "seed": 1}  (synthetic logs)  or  {"data": [{"GR", "NPHI", "DEPTH", "RHOB"}, ...]}
                   optional: "alpha" (ridge penalty, default 1.0), "test_fraction" (default 0.2)

Regenerate the committed artifact from the repo root with `python -m model_code.model model_artifact`.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from model_code import well_logs

ARTIFACT_FILE = "model.json"
ARTIFACT_FORMAT = "template-ridge/1"
TRAINING_KEYS = {"n_samples", "seed", "data", "alpha", "test_fraction"}
DEFAULT_TRAINING = {"n_samples": 2000, "seed": 0, "alpha": 1.0, "test_fraction": 0.2}


class ModelException(Exception):
    """Bad input or a missing artifact: the service returns its message to the caller as status "error"."""


def initialization(artifact_folder, secrets):
    """Load the coefficients once per worker; predict() receives the returned state."""
    path = Path(artifact_folder) / ARTIFACT_FILE
    try:
        artifact = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelException(f"no {ARTIFACT_FILE} in artifact folder {artifact_folder}: run train() first") from None
    except json.JSONDecodeError as e:
        raise ModelException(f"{path} is not valid JSON: {e}") from None
    if artifact.get("format") != ARTIFACT_FORMAT:
        raise ModelException(f"{path} has format {artifact.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
    n = len(artifact["features"])
    if not all(len(artifact[key]) == n for key in ("mean", "scale", "coef")):
        raise ModelException(f"{path} is inconsistent: mean, scale and coef must each have {n} values")
    return {"features": tuple(artifact["features"]), "params": artifact}


def predict(data, state, secrets):
    """One RHOB prediction per record, as plain floats so the service can return them as JSON."""
    if not isinstance(data, dict) or "data" not in data:
        raise ModelException('input must be an object {"data": [{"GR": .., "NPHI": .., "DEPTH": ..}, ...]}')
    try:
        x = well_logs.to_matrix(data["data"], state["features"])
    except ValueError as e:
        raise ModelException(f"data: {e}") from None
    if len(x) == 0:
        return []
    return well_logs.apply_ridge(state["params"], x).tolist()


def train(data, folder_path, secrets):
    """Fit a ridge regression, write model.json into folder_path, and return metadata with held-out metrics and the
    training inputs' statistics per feature (training_features)."""
    options = _training_options(data)
    x, y, source = _training_data(options)
    rng = np.random.default_rng(options["seed"])
    order = rng.permutation(len(y))
    n_test = max(1, int(round(len(y) * options["test_fraction"])))
    test, fit = order[:n_test], order[n_test:]
    if len(fit) < len(well_logs.FEATURES) + 2:
        raise ModelException(f"too few records to train: {len(y)} (need at least {len(well_logs.FEATURES) + 3})")
    params = well_logs.fit_ridge(x[fit], y[fit], options["alpha"])
    metrics = well_logs.regression_metrics(y[test], well_logs.apply_ridge(params, x[test]))
    artifact = {
        "format": ARTIFACT_FORMAT,
        "target": well_logs.TARGET,
        "features": list(well_logs.FEATURES),
        "alpha": options["alpha"],
        **params,
    }
    folder = Path(folder_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARTIFACT_FILE).write_text(json.dumps(artifact, indent=2) + "\n")
    return {
        "metrics": metrics,
        "target": well_logs.TARGET,
        "features": list(well_logs.FEATURES),
        "alpha": options["alpha"],
        "n_train": int(len(fit)),
        "n_test": int(len(test)),
        "training_data": source,
        # Statistics of the inputs it was fit on: `mlops ui` charts the calls' features against them (drift).
        "training_features": well_logs.feature_stats(x[fit], well_logs.FEATURES),
    }


def _training_options(data) -> dict:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ModelException(f"training input must be an object, got {type(data).__name__}")
    unknown = sorted(set(data) - TRAINING_KEYS)
    if unknown:
        raise ModelException(f"unknown training option(s) {unknown}; allowed: {sorted(TRAINING_KEYS)}")
    if "data" in data and "n_samples" in data:
        raise ModelException("give either 'data' (records) or 'n_samples' (synthetic logs), not both")
    options = {**DEFAULT_TRAINING, **data}
    for key in ("n_samples", "seed"):
        if isinstance(options[key], bool) or not isinstance(options[key], int):
            raise ModelException(f"{key} must be an integer, got {options[key]!r}")
    if not 20 <= options["n_samples"] <= 1_000_000:
        raise ModelException(f"n_samples must be between 20 and 1000000, got {options['n_samples']}")
    alpha, fraction = options["alpha"], options["test_fraction"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha >= 0):
        raise ModelException(f"alpha must be a number >= 0, got {alpha!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ModelException(f"test_fraction must be a number between 0 and 1, got {fraction!r}")
    options["alpha"] = float(alpha)
    return options


def _training_data(options):
    if "data" in options:
        columns = (*well_logs.FEATURES, well_logs.TARGET)
        try:
            table = well_logs.to_matrix(options["data"], columns)
        except ValueError as e:
            raise ModelException(f"data: {e}") from None
        return table[:, :-1], table[:, -1], f"call data, {len(table)} records"
    logs = well_logs.synthetic_logs(options["n_samples"], options["seed"])
    x = np.column_stack([logs[name] for name in well_logs.FEATURES])
    return x, logs[well_logs.TARGET], f"synthetic, n_samples={options['n_samples']}, seed={options['seed']}"


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "model_artifact"
    print(json.dumps(train({}, target, {}), indent=2))
