"""Small Isolation Forests written the way training writes a model directory."""

from __future__ import annotations

import joblib
import numpy as np
from sklearn.ensemble import IsolationForest

from training.export import export_onnx
from training.train import choose_threshold
from udfs.explain import SKLEARN_FILE
from udfs.scoring import ModelMetadata

FEATURES = ("amount", "c_amount_ratio_30d", "t_risk_7d")


def training_rows(seed: int, n: int = 3_000) -> np.ndarray:
    """Rows like the handbook's: amounts, card amount ratios, terminal risk."""
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [rng.gamma(2.0, 30.0, n), rng.lognormal(0, 0.3, n), rng.random(n)]
    )


def write_model(
    directory,
    forest: IsolationForest,
    x: np.ndarray,
    version: str,
    feature_names,
    alert_rate: float,
    quantiles: int = 11,
):
    """Write ``forest``, fitted on ``x``, as a model directory of training's."""
    scores = -forest.score_samples(x)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.onnx").write_bytes(export_onnx(forest, x.shape[1]))
    joblib.dump(forest, directory / SKLEARN_FILE)
    ModelMetadata(
        version=version,
        feature_names=tuple(feature_names),
        threshold=choose_threshold(scores, alert_rate),
        risk_quantiles=tuple(np.quantile(scores, np.linspace(0, 1, quantiles))),
        graph="skl2onnx",
        offset=float(forest.offset_),
        n_estimators=len(forest.estimators_),
        max_samples=int(forest.max_samples_),
    ).write(directory / "model.json")
    return directory


def make_model(directory, seed: int, features=FEATURES, alert_rate=0.02):
    """A model directory for ``features`` (up to three), version ``m<seed>``."""
    x = training_rows(seed)[:, : len(features)]
    forest = IsolationForest(n_estimators=25, random_state=seed).fit(x)
    directory.mkdir(parents=True)
    return write_model(directory, forest, x, f"m{seed}", features, alert_rate)
