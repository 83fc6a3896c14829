"""The supervised fraud model: a random forest fitted on labelled transactions.

Unlike the Isolation Forest, this model learns from fraud labels, so it can
only be fitted on transactions whose labels are known: a training window
that ended at least one label delay ago.

How it works
    A random forest of trees grown on bootstrap samples (leaves of at least
    ``min_samples_leaf`` rows; optionally at most ``max_leaf_nodes`` leaves,
    each tree on at most ``max_samples`` rows); a transaction's score is
    the mean over the trees of the fraud share in its leaf, in [0, 1], higher
    meaning more likely fraudulent. Trees split on raw values, so a rare
    signal in the tail of a feature (an amount far above the card's usual
    spending) keeps full resolution, which histogram-binned boosting loses.
    Each training row is out of bag for about a third of the trees;
    ``out_of_bag_scores`` gives its score from those trees alone, an honest
    estimate of the scores of unseen transactions, used to set the alert
    threshold without a held-out week.

Export
    ``export_onnx`` writes skl2onnx's graph with a float32 input ``X`` and
    outputs ``label`` and ``probabilities`` (genuine, fraud). scikit-learn
    also casts features to float32 before walking its trees, and skl2onnx
    rounds every split threshold down to the nearest float32, so both take
    the same branch for every finite input; ``check_parity`` verifies it on
    the rows given and refuses an export whose fraud probabilities differ by
    more than ``PARITY_TOLERANCE``.

The stage of a served model
    ``fit_stage`` fits the forest that a model directory serves beside its
    Isolation Forest (``udfs.scoring``'s supervised stage): inputs are the
    features plus the exported forest's anomaly score of each row, as the
    job computes it, the threshold leaves ``alert_rate`` of the out-of-bag
    training scores at or above it, and the export must pass
    ``check_parity`` on the training rows before it is written.

Limitations: NaN features are routed differently by scikit-learn and by
onnxruntime; the features of ``udfs.features`` are always finite. Without
``max_samples`` and ``max_leaf_nodes`` the trees grow with the training
rows: about 20 kB per tree for a week of handbook data, 120 kB for two
months, and their exact SHAP values cost some 15 and 120 ms per row for 100
trees; the bounds ``fit_stage`` applies keep both to a week's size or less.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier

from udfs.scoring import (
    ANOMALY_SCORE,
    FRAUD_COLUMN,
    SUPERVISED_INPUT,
    SUPERVISED_OUTPUT,
    SupervisedStage,
    stage_inputs,
)

from .export import PARITY_TOLERANCE, TARGET_OPSET, compare_scores

logger = logging.getLogger(__name__)


def fit_supervised(
    x: np.ndarray,
    y: np.ndarray,
    seed: int = 7,
    n_estimators: int = 200,
    min_samples_leaf: int = 5,
    max_samples: int | None = None,
    max_leaf_nodes: int | None = None,
) -> RandomForestClassifier:
    """A random forest fitted on ``x`` and 0/1 labels ``y``, on one core.

    ``max_samples`` bounds the rows of each tree's bootstrap sample (all rows
    when there are fewer), ``max_leaf_nodes`` its leaves; None leaves either
    unbounded.

    Raises ValueError when ``y`` holds a single class: there is nothing to
    learn from a window without fraud (or without genuine transactions).
    """
    y = np.asarray(y)
    classes = np.unique(y)
    if not np.array_equal(classes, [0, 1]):
        raise ValueError(
            f"labels must hold both 0 (genuine) and 1 (fraud), got classes "
            f"{classes.tolist()}; widen the training window"
        )
    model = RandomForestClassifier(
        n_estimators=n_estimators,
        min_samples_leaf=min_samples_leaf,
        max_samples=None
        if max_samples is None or max_samples >= len(y)
        else max_samples,
        max_leaf_nodes=max_leaf_nodes,
        oob_score=True,
        random_state=seed,
        n_jobs=1,
    )
    return model.fit(x, y)


def fraud_probability(model: RandomForestClassifier, x: np.ndarray) -> np.ndarray:
    """scikit-learn's fraud probability of each row of ``x``."""
    return model.predict_proba(x)[:, FRAUD_COLUMN]


def out_of_bag_scores(model: RandomForestClassifier) -> np.ndarray:
    """Fraud probability of each training row from the trees that did not see it.

    A row that was in every bootstrap sample (possible with few trees) has no
    such estimate; it gets the median of the others, and a warning says how
    many there were.
    """
    scores = model.oob_decision_function_[:, FRAUD_COLUMN].copy()
    missing = np.isnan(scores)
    if missing.any():
        logger.warning(
            "%d training rows were never out of bag; using the median out-of-bag "
            "score for them (raise n_estimators to avoid this)",
            int(missing.sum()),
        )
        scores[missing] = np.median(scores[~missing])
    return scores


def export_onnx(model: RandomForestClassifier, n_features: int) -> bytes:
    """The forest as an ONNX graph: input ``X`` float32 of ``n_features`` columns.

    Outputs ``label`` (int64) and ``probabilities`` (float32, columns genuine
    and fraud); no ZipMap, so the output is a plain tensor.
    """
    graph = to_onnx(
        model,
        initial_types=[(SUPERVISED_INPUT, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET,
        options={id(model): {"zipmap": False}},
    )
    return graph.SerializeToString()


def onnx_fraud_probability(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """Fraud probability of each row of ``x`` from an exported graph, in float64."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        onnx_bytes, options, providers=["CPUExecutionProvider"]
    )
    features = np.ascontiguousarray(x, dtype=np.float32)
    probabilities = session.run([SUPERVISED_OUTPUT], {SUPERVISED_INPUT: features})[0]
    return probabilities[:, FRAUD_COLUMN].astype(np.float64)


def check_parity(
    model: RandomForestClassifier,
    onnx_bytes: bytes,
    x: np.ndarray,
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Largest fraud-probability difference between ONNX and scikit-learn on ``x``.

    Raises ValueError when it exceeds ``tolerance``: the export must not be
    deployed, since the streaming job would score differently from the
    evaluated model.
    """
    if len(x) == 0:
        raise ValueError(
            "check_parity got no rows; pass the training rows (or any real rows) "
            "to compare the export on"
        )
    expected = fraud_probability(model, x)
    got = onnx_fraud_probability(onnx_bytes, x)
    worst = float(np.max(np.abs(expected - got)))
    if worst > tolerance:
        raise ValueError(
            f"ONNX fraud probabilities differ from scikit-learn by up to "
            f"{worst:.3g} on {int(np.sum(np.abs(expected - got) > tolerance))} of "
            f"{len(x)} rows (tolerance {tolerance}); do not deploy this export"
        )
    return worst


@dataclass(frozen=True)
class FittedStage:
    """A supervised stage ready to be written into a model directory."""

    model: RandomForestClassifier
    onnx_bytes: bytes
    metadata: SupervisedStage
    oob_scores: np.ndarray
    parity: float


def fit_stage(
    features: np.ndarray,
    anomaly_scores: np.ndarray,
    y: np.ndarray,
    feature_names: tuple[str, ...],
    labelled_to: str,
    alert_rate: float,
    *,
    seed: int,
    n_estimators: int,
    min_samples_leaf: int,
    max_samples: int | None,
    max_leaf_nodes: int | None,
) -> FittedStage:
    """Fit, export and check the supervised stage on labelled rows.

    ``features`` has the ``feature_names`` columns, ``anomaly_scores`` the
    forest's score of each row as the served model computes it, ``y`` the
    0/1 labels, all known by ``labelled_to``. Each tree is grown on at most
    ``max_samples`` rows with at most ``max_leaf_nodes`` leaves, which keeps
    the model's size, scoring time and SHAP cost the same however long the
    training window; ``training.train.TrainingConfig`` holds the settings
    served models use.
    """
    from .train import choose_threshold

    inputs = stage_inputs(features, anomaly_scores)
    model = fit_supervised(
        inputs,
        y,
        seed=seed,
        n_estimators=n_estimators,
        min_samples_leaf=min_samples_leaf,
        max_samples=max_samples,
        max_leaf_nodes=max_leaf_nodes,
    )
    oob = out_of_bag_scores(model)
    threshold = choose_threshold(oob, alert_rate)
    onnx_bytes = export_onnx(model, inputs.shape[1])
    parity = compare_scores(
        fraud_probability(model, inputs),
        onnx_fraud_probability(onnx_bytes, inputs),
        threshold,
        "ONNX fraud probabilities",
        "the supervised export is not usable",
    )
    metadata = SupervisedStage(
        feature_names=(*feature_names, ANOMALY_SCORE),
        threshold=threshold,
        trained_rows=len(y),
        trained_frauds=int(np.sum(y)),
        labelled_to=labelled_to,
    )
    logger.info(
        "supervised stage: %d rows (%d frauds), threshold %.4f, parity %.2g",
        len(y),
        metadata.trained_frauds,
        threshold,
        parity,
    )
    return FittedStage(model, onnx_bytes, metadata, oob, parity)
