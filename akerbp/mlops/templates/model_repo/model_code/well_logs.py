"""Well-log data for the template model: synthetic logs, input checks and a ridge regression in numpy.

Kept apart from model.py to show the import rule: code imports relative to the repo root
(`from model_code import well_logs`), because the deployed function runs from the folder that holds model_code/.
"""
from __future__ import annotations

import math

import numpy as np

FEATURES = ("GR", "NPHI", "DEPTH")
TARGET = "RHOB"


def synthetic_logs(n_samples: int, seed: int) -> dict[str, np.ndarray]:
    """Logs whose physics is simple but honest: shale raises GR and NPHI, porosity falls with depth, and density
    mixes matrix and water by porosity; so RHOB is close to, not exactly, linear in the features."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1500.0, 3500.0, n_samples)
    shale = rng.beta(2.0, 3.0, n_samples)
    porosity = np.clip(0.32 - 0.00007 * (depth - 1500.0) + rng.normal(0.0, 0.03, n_samples), 0.02, 0.40)
    gr = 20.0 + 130.0 * shale + rng.normal(0.0, 5.0, n_samples)
    nphi = porosity + 0.25 * shale + rng.normal(0.0, 0.015, n_samples)
    matrix_density = 2.65 + 0.05 * shale
    rhob = (1.0 - porosity) * matrix_density + porosity * 1.0 + rng.normal(0.0, 0.02, n_samples)
    return {"GR": gr, "NPHI": nphi, "DEPTH": depth, "RHOB": rhob}


def to_matrix(records, columns) -> np.ndarray:
    """Records (a list of objects) as a float matrix; ValueError names the first bad record and field."""
    if not isinstance(records, list):
        raise ValueError(f"expected a list of records, got {type(records).__name__}")
    rows = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"record {i} must be an object with {', '.join(columns)}, got {type(record).__name__}")
        row = []
        for column in columns:
            if column not in record:
                raise ValueError(f"record {i} has no field {column!r} (needs {', '.join(columns)})")
            value = record[column]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"record {i} field {column!r} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"record {i} field {column!r} must be finite, got {value!r}")
            row.append(float(value))
        rows.append(row)
    return np.asarray(rows, dtype=float).reshape(len(rows), len(columns))


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> dict:
    """Ridge regression on standardised features, so alpha means the same whatever the units of each log."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0.0] = 1.0  # a constant column carries no information; keep it harmless
    xs = (x - mean) / scale
    intercept = float(y.mean())
    coef = np.linalg.solve(xs.T @ xs + alpha * np.eye(x.shape[1]), xs.T @ (y - intercept))
    return {"mean": mean.tolist(), "scale": scale.tolist(), "coef": coef.tolist(), "intercept": intercept}


def apply_ridge(params: dict, x: np.ndarray) -> np.ndarray:
    return ((x - np.asarray(params["mean"])) / np.asarray(params["scale"])) @ np.asarray(params["coef"]) + float(
        params["intercept"]
    )


def regression_metrics(y: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    residual = y - predicted
    total = float(((y - y.mean()) ** 2).sum())
    return {
        "rmse": float(np.sqrt((residual**2).mean())),
        "mae": float(np.abs(residual).mean()),
        "r2": float(1.0 - (residual**2).sum() / total) if total > 0 else 0.0,
    }


def feature_stats(x: np.ndarray, names) -> dict[str, dict[str, float]]:
    """Per feature (column) of the training inputs: mean, std (population, as the analytics rows of the calls have
    it), min, max and count, so the dashboard can draw the calls' feature drift against what the model learned from."""
    return {
        name: {
            "mean": float(column.mean()), "std": float(column.std()), "min": float(column.min()),
            "max": float(column.max()), "count": int(len(column)),
        }
        for name, column in zip(names, np.asarray(x, dtype=float).T)
    }
