"""Reasons for an alert: the features that made the forest call it anomalous.

An Isolation Forest's score is ``2 ** (-E[h(x)] / c(n))`` where ``E[h(x)]``
is the mean path length of ``x`` over the trees: the shorter the path, the
more anomalous. SHAP's TreeExplainer splits ``E[h(x)]`` exactly into one
contribution per feature plus the expected path length over the training
sample::

    E[h(x)] = base_path_length + sum(contributions)

A negative contribution shortens the path, so it pushes the transaction
towards "anomalous"; the reasons are the three most negative ones, each
rendered as a sentence about the feature's value ("amount 5.2x this card's
30-day mean"). ``score_from_contributions`` turns a row's contributions back
into its score, which tests use to check that they add up.

When the model has a supervised stage, that stage decides alerts and is
what gets explained: TreeExplainer splits its fraud probability into one
contribution per input plus the mean probability over its training rows,
``probability = base + sum(contributions)``; a positive contribution pushes
towards fraud and the reasons are the three largest positive ones. The
forest's anomaly score is one of those inputs, so "unusual for this card"
appears as a reason when it weighed in.

Explanations are computed for alert rows only. On the Isolation Forest one
row costs well under a millisecond; on the supervised stage, whose trees are
fully grown, about 10-20 ms (exact SHAP is polynomial in the depth of the
trees).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from udfs.scoring import ANOMALY_SCORE, ModelMetadata, average_path_length

logger = logging.getLogger(__name__)

SKLEARN_FILE = "model.joblib"
SUPERVISED_SKLEARN_FILE = "supervised.joblib"
TOP_REASONS = 3

_TEMPLATES = {
    "amount": "amount {v:.2f}",
    "c_count_10m": "{v:.0f} transactions on this card in 10 minutes",
    "c_count_1h": "{v:.0f} transactions on this card in the last hour",
    "c_count_1d": "{v:.0f} transactions on this card in the last day",
    "c_count_7d": "{v:.0f} transactions on this card in 7 days",
    "c_count_30d": "{v:.0f} transactions on this card in 30 days",
    "c_sum_1h": "{v:.2f} spent on this card in the last hour",
    "c_mean_1d": "this card's mean amount over the last day is {v:.2f}",
    "c_mean_7d": "this card's 7-day mean amount is {v:.2f}",
    "c_mean_30d": "this card's 30-day mean amount is {v:.2f}",
    "c_std_30d": "this card's 30-day amount spread is {v:.2f}",
    "c_amount_ratio_30d": "amount {v:.1f}x this card's 30-day mean",
    "c_amount_zscore_30d": (
        "amount {v:.1f} standard deviations from this card's 30-day mean"
    ),
    "c_amount_median_ratio": "amount {v:.1f}x this card's median amount",
    "c_peak_median_ratio_7d": (
        "this card spent {v:.1f}x its median amount in the last 7 days"
    ),
    "c_secs_since_prev": "{m:.0f} minutes since this card's previous transaction",
    "is_night": "made at night",
    "is_weekend": "made at the weekend",
    "t_count_1d": "{v:.0f} transactions at this terminal today",
    "t_count_7d": "{v:.0f} transactions at this terminal in 7 days",
    "t_count_30d": "{v:.0f} transactions at this terminal in 30 days",
    "t_risk_1d": "{p:.0f}% of this terminal's transactions a week ago were fraud",
    "t_risk_7d": "{p:.0f}% of this terminal's known transactions (7 days) were fraud",
    "t_risk_30d": "{p:.0f}% of this terminal's known transactions (30 days) were fraud",
    "t_days_since_fraud": "{v:.0f} days since this terminal's last known fraud",
    "t_fraud_run": "this terminal's last {v:.0f} known transactions were all fraud",
    "c_new_terminal": "first use of this terminal by this card in 30 days",
    ANOMALY_SCORE: "unusual for this card and terminal (anomaly score {v:.2f})",
}


def _import_shap():
    """Import shap, also inside PyFlink's Python workers.

    Flink's Beam worker replaces ``print`` with a function of its own module;
    numba (imported by shap) then looks that function up in its module by
    name and fails. Making the lookup succeed changes nothing else.
    """
    import builtins
    import sys

    printer = builtins.print
    module = sys.modules.get(getattr(printer, "__module__", "builtins"))
    if module is not None and not hasattr(module, printer.__name__):
        setattr(module, printer.__name__, printer)
    import shap

    return shap


def render(name: str, value: float) -> str:
    """A sentence about one feature's value."""
    template = _TEMPLATES.get(name, name + " = {v:.3g}")
    return template.format(v=value, m=value / 60.0, p=100.0 * value)


def score_from_contributions(base: float, contributions: np.ndarray, max_samples: int):
    """The anomaly score implied by a base path length and its contributions."""
    path = base + np.sum(contributions, axis=-1)
    return np.power(2.0, -path / average_path_length(max_samples))


class Explainer:
    """Exact per-feature contributions to the score that decides alerts.

    Parameters
    ----------
    model_dir:
        Directory holding ``model.joblib`` (the fitted scikit-learn forest)
        and, for a model with a supervised stage, ``supervised.joblib``, next
        to the ONNX files; both are trusted input, written by ``txwatch
        train``.
    metadata:
        The model's metadata, for the feature names and sample size.

    ``base`` and ``contributions`` are in path-length units for the
    Isolation Forest (negative: towards anomalous) and in fraud-probability
    units for a supervised stage (positive: towards fraud); ``direction`` is
    -1 or +1 accordingly.
    """

    def __init__(self, model_dir: str | Path, metadata: ModelMetadata):
        import joblib

        shap = _import_shap()
        self.metadata = metadata
        stage = metadata.supervised
        if stage is None:
            self.names = metadata.feature_names
            self.direction = -1.0
            self.model = joblib.load(Path(model_dir) / SKLEARN_FILE)
            self._column = None
        else:
            self.names = stage.feature_names
            self.direction = 1.0
            self.model = joblib.load(Path(model_dir) / SUPERVISED_SKLEARN_FILE)
            self._column = list(self.model.classes_).index(1)
        self.tree_explainer = shap.TreeExplainer(self.model)
        self.base = float(
            np.ravel(self.tree_explainer.expected_value)[self._column or 0]
        )

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per-feature contributions, shape ``(rows, features)``."""
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != len(self.names):
            # shap's tree walker would read past the rows' ends
            raise ValueError(
                f"the explainer takes rows of {len(self.names)} inputs "
                f"({', '.join(self.names[:3])}, ...), got shape {matrix.shape}"
            )
        values = self.tree_explainer.shap_values(matrix)
        if self._column is None:
            return np.asarray(values)
        if isinstance(values, list):  # one array per class (older shap)
            return np.asarray(values[self._column])
        return np.asarray(values)[:, :, self._column]

    def explain(self, matrix: np.ndarray, top: int = TOP_REASONS) -> list[list[dict]]:
        """The ``top`` reasons of each row, strongest first.

        Each reason is ``{"feature", "value", "contribution", "text"}``, for
        the features that pushed the row towards an alert; ``contribution``
        is in the units of ``contributions``.
        """
        if len(matrix) == 0:
            return []
        pushes = self.contributions(matrix) * self.direction
        explained = []
        for i in range(len(matrix)):
            reasons = []
            for j in np.argsort(-pushes[i])[:top]:
                if pushes[i, j] <= 0:
                    break  # only features that pushed towards an alert
                value = float(matrix[i, j])
                reasons.append(
                    {
                        "feature": self.names[j],
                        "value": round(value, 4),
                        "contribution": round(float(pushes[i, j] * self.direction), 4),
                        "text": render(self.names[j], value),
                    }
                )
            explained.append(reasons)
        return explained
