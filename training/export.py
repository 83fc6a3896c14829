"""ONNX export of a fitted Isolation Forest with skl2onnx."""

from __future__ import annotations

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import IsolationForest

PARITY_TOLERANCE = 1e-5
"""Largest score difference between an ONNX graph and scikit-learn we accept."""

# ai.onnx.ml 3 is the opset whose TreeEnsemble operators onnxruntime runs fastest.
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def export_onnx(forest: IsolationForest, n_features: int) -> bytes:
    """skl2onnx's graph of the forest: input ``X`` (float32), outputs ``label``
    and ``scores``."""
    model = to_onnx(
        forest,
        initial_types=[("X", FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
    )
    return model.SerializeToString()


def compare_scores(expected, got, threshold: float, graph: str, remedy: str) -> float:
    """Largest difference between scikit-learn's and a graph's anomaly scores.

    Raises ``ValueError`` naming ``graph`` and ``remedy`` when a score differs
    by more than ``PARITY_TOLERANCE`` or when the two flag different rows at
    ``threshold``.
    """
    expected = np.asarray(expected)
    got = np.asarray(got)
    worst = float(np.max(np.abs(expected - got))) if len(expected) else 0.0
    if worst > PARITY_TOLERANCE:
        raise ValueError(
            f"{graph} scores differ from scikit-learn by up to {worst:.3g} "
            f"(tolerance {PARITY_TOLERANCE}); {remedy}"
        )
    disagreements = int(np.sum((expected >= threshold) != (got >= threshold)))
    if disagreements:
        raise ValueError(
            f"{graph} and scikit-learn flag {disagreements} rows differently at "
            f"threshold {threshold:.6f}; move the threshold off a score tie"
        )
    return worst
