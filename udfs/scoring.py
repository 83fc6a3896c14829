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

The supervised stage
    A model directory may also hold ``supervised.onnx``, a random forest
    fitted on labelled transactions (``training.supervised``) whose inputs
    are the features its metadata names followed by the forest's anomaly
    score (``ANOMALY_SCORE``). When it is there it decides: a row alerts when
    its fraud probability reaches the stage's threshold, and the anomaly
    score is one of its inputs instead of an alert of its own. Without it
    the anomaly score decides, as above. ``Scorer.decide`` applies whichever
    holds; rules are the caller's to add.
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
SUPERVISED_FILE = "supervised.onnx"
ANOMALY_SCORE = "anomaly_score"  # the supervised stage's input from the forest
# ONNX forms of a forest: one tree-ensemble operator (training.compact_onnx),
# or skl2onnx's graph of the same forest.
GRAPHS = ("compact", "skl2onnx")  # the first is what training writes


class ModelError(RuntimeError):
    """A model directory cannot be loaded or fails its checks."""


@dataclass(frozen=True)
class SupervisedStage:
    """Metadata of a model directory's supervised stage.

    ``feature_names`` are its inputs in order, the last being
    ``ANOMALY_SCORE``; ``labelled_to`` is the ISO day (exclusive) up to
    which its training labels reach.
    """

    feature_names: tuple[str, ...]
    threshold: float
    trained_rows: int
    trained_frauds: int
    labelled_to: str

    @staticmethod
    def from_json(raw: dict) -> SupervisedStage:
        stage = SupervisedStage(
            feature_names=tuple(raw["feature_names"]),
            threshold=float(raw["threshold"]),
            trained_rows=int(raw["trained_rows"]),
            trained_frauds=int(raw["trained_frauds"]),
            labelled_to=str(raw["labelled_to"]),
        )
        if not stage.feature_names or stage.feature_names[-1] != ANOMALY_SCORE:
            raise ValueError(
                f"the supervised stage's last input must be {ANOMALY_SCORE!r}, "
                f"got {list(stage.feature_names)}"
            )
        return stage

    def to_json(self) -> dict:
        raw = dict(self.__dict__)
        raw["feature_names"] = list(self.feature_names)
        return raw


@dataclass(frozen=True)
class Decision:
    """What a model made of a batch: one entry per row.

    ``probability`` is the supervised stage's fraud probability (None when
    the model has no such stage); ``alerts`` is the model's alert decision;
    ``explained`` is the matrix its explainer takes for those rows.
    """

    scores: np.ndarray
    risk: np.ndarray
    probability: np.ndarray | None
    alerts: np.ndarray
    explained: np.ndarray


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
    supervised: SupervisedStage | None = None

    @staticmethod
    def read(path: Path) -> ModelMetadata:
        try:
            raw = json.loads(path.read_text())
            stage = raw.get("supervised")
            return ModelMetadata(
                version=str(raw["version"]),
                feature_names=tuple(raw["feature_names"]),
                threshold=float(raw["threshold"]),
                risk_quantiles=tuple(float(q) for q in raw["risk_quantiles"]),
                graph=str(raw["graph"]),
                offset=float(raw["offset"]),
                n_estimators=int(raw["n_estimators"]),
                max_samples=int(raw["max_samples"]),
                supervised=None if stage is None else SupervisedStage.from_json(stage),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"model metadata {path} is unreadable: {exc}") from exc

    def write(self, path: Path) -> None:
        raw = dict(self.__dict__)
        raw["feature_names"] = list(self.feature_names)
        raw["risk_quantiles"] = list(self.risk_quantiles)
        raw["supervised"] = (
            None if self.supervised is None else self.supervised.to_json()
        )
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
        model_dir = Path(model_dir)
        self.metadata = ModelMetadata.read(model_dir / METADATA_FILE)
        _check_inputs(self.metadata)
        self.session = _session(
            model_dir / MODEL_FILE, threads, len(self.metadata.feature_names)
        )
        self._input = self.session.get_inputs()[0].name
        self._supervised = None
        stage = self.metadata.supervised
        if stage is not None:
            self._supervised = _session(
                model_dir / SUPERVISED_FILE, threads, len(stage.feature_names)
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
        x = _checked(matrix, len(self.metadata.feature_names), "the forest")
        if x is None:
            return np.empty(0, dtype=np.float64)
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

    def fraud_probability(self, inputs: np.ndarray) -> np.ndarray:
        """The supervised stage's fraud probability of each row of ``inputs``.

        ``inputs`` has the stage's columns in order, the anomaly score last.
        """
        stage = self.metadata.supervised
        if stage is None:
            raise ModelError(f"model {self.version} has no supervised stage")
        x = _checked(inputs, len(stage.feature_names), "the supervised stage")
        if x is None:
            return np.empty(0, dtype=np.float64)
        out = self._supervised.run([SUPERVISED_OUTPUT], {SUPERVISED_INPUT: x})[0]
        return out[:, FRAUD_COLUMN].astype(np.float64)

    def decide(self, frame) -> Decision:
        """Scores, risk, fraud probability and alerts of a batch of rows.

        ``frame`` maps every feature name to a column (a pandas DataFrame).
        With a supervised stage, a row alerts when its fraud probability
        reaches the stage's threshold; without one, when its anomaly score
        reaches the model's.
        """
        matrix = frame[list(self.metadata.feature_names)].to_numpy(dtype=np.float32)
        scores = self.score(matrix)
        risk = self.risk(scores)
        stage = self.metadata.supervised
        if stage is None:
            return Decision(scores, risk, None, scores >= self.threshold, matrix)
        inputs = stage_inputs(frame[list(stage.feature_names[:-1])].to_numpy(), scores)
        probability = self.fraud_probability(inputs)
        return Decision(
            scores, risk, probability, probability >= stage.threshold, inputs
        )


def stage_inputs(features: np.ndarray, anomaly_scores: np.ndarray) -> np.ndarray:
    """The supervised stage's input matrix: the features, then the anomaly
    score, float32."""
    inputs = np.empty((len(features), features.shape[1] + 1), dtype=np.float32)
    inputs[:, :-1] = features
    inputs[:, -1] = anomaly_scores
    return inputs


# skl2onnx's names for a classifier's graph without ZipMap (training.supervised)
SUPERVISED_INPUT = "X"
SUPERVISED_OUTPUT = "probabilities"
FRAUD_COLUMN = 1


def _check_inputs(metadata: ModelMetadata) -> None:
    """Refuse a model whose inputs are not all features the job computes.

    Caught here, a model is refused when it loads (and a running job keeps
    its current one) instead of failing on its first batch.
    """
    from udfs.features import FEATURE_NAMES

    names = list(metadata.feature_names)
    if metadata.supervised is not None:
        names += metadata.supervised.feature_names[:-1]  # the last: ANOMALY_SCORE
    unknown = sorted(set(names) - set(FEATURE_NAMES))
    if unknown:
        raise ModelError(
            f"model {metadata.version} takes inputs that udfs.features does not "
            f"compute: {', '.join(unknown)}"
        )


def _checked(matrix: np.ndarray, width: int, model: str) -> np.ndarray | None:
    """``matrix`` as contiguous float32, None when it has no rows.

    Raises ModelError unless it is 2-D with ``width`` columns.
    """
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise ModelError(
            f"{model} takes a matrix of {width} columns, got shape {matrix.shape}"
        )
    if matrix.shape[0] == 0:
        return None
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _session(path: Path, threads: int, width: int):
    """An onnxruntime session of the graph at ``path``, taking ``width`` columns."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises several unrelated types
        raise ModelError(f"ONNX model {path} does not load: {exc}") from exc
    got = session.get_inputs()[0].shape[-1]
    if isinstance(got, int) and got != width:
        raise ModelError(
            f"ONNX model {path} takes {got} columns but its metadata names {width}"
        )
    return session
