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

Explanations are computed for alert rows only; on a 100-tree forest one row
costs well under a millisecond.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from udfs.scoring import ModelMetadata, average_path_length

logger = logging.getLogger(__name__)

SKLEARN_FILE = "model.joblib"
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
    """Exact per-feature contributions to the forest's path length.

    Parameters
    ----------
    model_dir:
        Directory holding ``model.joblib`` (the fitted scikit-learn forest)
        next to the ONNX file; the forest is trusted input, written by
        ``txwatch train``.
    metadata:
        The model's metadata, for the feature names and sample size.
    """

    def __init__(self, model_dir: str | Path, metadata: ModelMetadata):
        import joblib

        shap = _import_shap()
        self.metadata = metadata
        self.forest = joblib.load(Path(model_dir) / SKLEARN_FILE)
        self.tree_explainer = shap.TreeExplainer(self.forest)
        self.base = float(np.ravel(self.tree_explainer.expected_value)[0])

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per-feature path-length contributions, shape ``(rows, features)``."""
        return np.asarray(
            self.tree_explainer.shap_values(np.asarray(matrix, dtype=np.float64))
        )

    def explain(self, matrix: np.ndarray, top: int = TOP_REASONS) -> list[list[dict]]:
        """The ``top`` reasons of each row, most anomalous first.

        Each reason is ``{"feature", "value", "contribution", "text"}``;
        ``contribution`` is in path-length units (negative: towards anomalous).
        """
        if len(matrix) == 0:
            return []
        values = self.contributions(matrix)
        names = self.metadata.feature_names
        explained = []
        for i in range(len(matrix)):
            order = np.argsort(values[i])[:top]
            reasons = []
            for j in order:
                if values[i, j] >= 0:
                    break  # only features that pushed towards "anomalous"
                value = float(matrix[i, j])
                reasons.append(
                    {
                        "feature": names[j],
                        "value": round(value, 4),
                        "contribution": round(float(values[i, j]), 4),
                        "text": render(names[j], value),
                    }
                )
            explained.append(reasons)
        return explained
