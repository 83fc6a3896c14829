"""ONNX export of a fitted Isolation Forest with skl2onnx."""

from __future__ import annotations

from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import IsolationForest

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
