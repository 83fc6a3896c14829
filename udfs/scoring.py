"""Batch scoring of feature rows with an ONNX Isolation Forest.

A model directory holds ``model.onnx`` and ``model.json`` (its metadata: the
version, the feature names in input order, the alert threshold and the
reference quantiles of training scores). ``Scorer`` loads both, checks them
against each other, and scores a float32 matrix in one onnxruntime call.

Score convention
    ``score`` is the Isolation Forest's anomaly score, ``-score_samples`` in
    scikit-learn's terms: it lies in (0, 1] and higher means more anomalous.
    ``risk`` maps the score through the empirical distribution of training
    scores, so a risk of 0.99 means "more anomalous than 99 % of the
    training transactions". An alert is raised when ``score >= threshold``.

The ONNX graph may be scikit-learn's own export (skl2onnx: outputs ``label``
and ``scores``, the latter equal to ``decision_function``) or the compact
form written by ``training.compact_onnx`` (output ``path_length_sum``); the
metadata's ``graph`` field says which.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
METADATA_FILE = "model.json"
# ONNX forms of a forest: one tree-ensemble operator (training.compact_onnx),
# or skl2onnx's graph of the same forest.
GRAPHS = ("compact", "skl2onnx")  # the first is what training writes


class ModelError(RuntimeError):
    """A model directory cannot be loaded or fails its checks."""


@dataclass(frozen=True)
class ModelMetadata:
    version: str
    feature_names: tuple[str, ...]
    threshold: float
    risk_quantiles: tuple[float, ...]
    graph: str  # "skl2onnx" or "compact"
    offset: float  # scikit-learn's offset_, to turn decision_function into a score
    n_estimators: int
    max_samples: int

    @staticmethod
    def read(path: Path) -> ModelMetadata:
        try:
            raw = json.loads(path.read_text())
            return ModelMetadata(
                version=str(raw["version"]),
                feature_names=tuple(raw["feature_names"]),
                threshold=float(raw["threshold"]),
                risk_quantiles=tuple(float(q) for q in raw["risk_quantiles"]),
                graph=str(raw["graph"]),
                offset=float(raw["offset"]),
                n_estimators=int(raw["n_estimators"]),
                max_samples=int(raw["max_samples"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model metadata {path} is unreadable: {exc}") from exc

    def write(self, path: Path) -> None:
        raw = dict(self.__dict__)
        raw["feature_names"] = list(self.feature_names)
        raw["risk_quantiles"] = list(self.risk_quantiles)
        path.write_text(json.dumps(raw, indent=2))


def average_path_length(n: float) -> float:
    """Expected path length of an unsuccessful search in a binary tree of n."""
    if n <= 1:
        return 0.0
    if n == 2:
        return 1.0
    return 2.0 * (np.log(n - 1.0) + np.euler_gamma) - 2.0 * (n - 1.0) / n


class Scorer:
    """Scores feature matrices with one loaded model version.

    Parameters
    ----------
    model_dir:
        Directory with ``model.onnx`` and ``model.json``.
    threads:
        onnxruntime intra-op threads; 1 keeps one scorer to one core, which is
        what a Flink slot should use.
    """

    def __init__(self, model_dir: str | Path, threads: int = 1):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        self.metadata = ModelMetadata.read(model_dir / METADATA_FILE)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelError(f"ONNX model in {model_dir} does not load: {exc}") from exc
        self._input = self.session.get_inputs()[0].name
        width = self.session.get_inputs()[0].shape[-1]
        if isinstance(width, int) and width != len(self.metadata.feature_names):
            raise ModelError(
                f"model in {model_dir} takes {width} features but its metadata "
                f"names {len(self.metadata.feature_names)}"
            )
        self._quantiles = np.asarray(self.metadata.risk_quantiles, dtype=np.float64)
        if self.metadata.graph == "compact":
            self._normaliser = average_path_length(self.metadata.max_samples)
            self._output = "path_length_sum"
        elif self.metadata.graph == "skl2onnx":
            self._output = "scores"
        else:
            raise ModelError(
                f"model.json graph must be one of {GRAPHS}, got {self.metadata.graph!r}"
            )

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def threshold(self) -> float:
        return self.metadata.threshold

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """Anomaly scores (higher is more anomalous) of a 2-D feature matrix."""
        if matrix.ndim != 2 or matrix.shape[1] != len(self.metadata.feature_names):
            raise ModelError(
                f"expected a matrix of {len(self.metadata.feature_names)} columns, "
                f"got shape {matrix.shape}"
            )
        if matrix.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        out = self.session.run([self._output], {self._input: x})[0].reshape(-1)
        out = out.astype(np.float64)
        if self.metadata.graph == "compact":
            mean_depth = out / self.metadata.n_estimators
            return np.power(2.0, -mean_depth / self._normaliser)
        return -(out + self.metadata.offset)

    def risk(self, scores: np.ndarray) -> np.ndarray:
        """Share of training scores below each score, in [0, 1]."""
        q = self._quantiles
        return np.interp(scores, q, np.linspace(0.0, 1.0, len(q)))
