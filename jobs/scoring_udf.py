"""The vectorized scoring step: a pandas map function over Arrow batches.

Flink hands the function one Arrow batch of ``FEATURED`` rows at a time
(``python.fn-execution.arrow.batch.size`` rows at most). The function builds
one float32 matrix of the model's features, scores it with a single
onnxruntime call (two when the model has a supervised stage: the forest's
anomaly score is one of that stage's inputs), and explains only the rows
that alert.

Which score drives an alert
    With a supervised stage, a row alerts when its fraud probability reaches
    the stage's threshold or an active rule fired; without one, when the
    anomaly score reaches the forest's threshold or an active rule fired
    (``udfs.scoring.Scorer.decide``).

Output columns: every ``FEATURED`` column, then ``score``, ``risk``,
``is_alert``, ``model_version`` and ``reasons`` (JSON list, empty unless the
row alerts), then ``challenger_score``, ``challenger_version`` and
``challenger_alert``, then ``fraud_probability`` (null without a supervised
stage).

Shadow scoring
    When the registry has a challenger, the same batch is also scored by it:
    its anomaly score, its version and the alert it would have raised in the
    champion's place (its own decision, or an active rule fired) are
    recorded beside the champion's, and nothing else. The challenger never
    decides an alert, never explains one and never reaches
    the alert sinks; without a challenger the three columns are null. A
    challenger that fails on a batch is refused for good with a logged
    reason, and the champion's scoring of that batch goes on.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import ScalarFunction, udf

from jobs import records

logger = logging.getLogger(__name__)

_TABLE_TYPES = {
    "transaction_id": DataTypes.STRING(),
    "event_time_ms": DataTypes.BIGINT(),
    "card_id": DataTypes.STRING(),
    "terminal_id": DataTypes.STRING(),
    "currency": DataTypes.STRING(),
    "is_late": DataTypes.BOOLEAN(),
    "rule_hits": DataTypes.STRING(),
}
SCORE_COLUMNS = (
    ("score", DataTypes.DOUBLE()),
    ("risk", DataTypes.DOUBLE()),
    ("is_alert", DataTypes.BOOLEAN()),
    ("model_version", DataTypes.STRING()),
    ("reasons", DataTypes.STRING()),
    ("challenger_score", DataTypes.DOUBLE()),
    ("challenger_version", DataTypes.STRING()),
    ("challenger_alert", DataTypes.BOOLEAN()),
    ("fraud_probability", DataTypes.DOUBLE()),
)


def scored_row_type():
    fields = [
        DataTypes.FIELD(name, _TABLE_TYPES.get(name, DataTypes.DOUBLE()))
        for name in records.FEATURED_NAMES
    ]
    fields += [DataTypes.FIELD(name, kind) for name, kind in SCORE_COLUMNS]
    return DataTypes.ROW(fields)


class ScoreBatch(ScalarFunction):
    """Scores one Arrow batch of featured transactions."""

    def __init__(self, model_dir: str, check_interval_s: float = 2.0):
        self.model_dir = model_dir  # a model directory, or a registry to follow
        self.check_interval_s = check_interval_s  # between looks at the pointers

    def open(self, function_context):
        from udfs.registry import ModelWatcher

        self.watcher = ModelWatcher(
            self.model_dir, self.check_interval_s, loader=_load_model
        )
        logger.info(
            "scoring with model %s from %s",
            self.watcher.get()[0].version,
            self.model_dir,
        )

    def eval(self, *columns):
        # The champion is checked between batches: a batch is scored by one
        # model version, and every row records which.
        scorer, explainer = self.watcher.get()
        frame = pd.concat(columns, axis=1)
        frame.columns = list(records.FEATURED_NAMES)
        decision = scorer.decide(frame)
        rule_alerts = _active_rule_hits(frame["rule_hits"])
        alerts = decision.alerts | rule_alerts

        reasons = np.full(len(frame), "[]", dtype=object)
        if alerts.any():
            rows = np.flatnonzero(alerts)
            explained = explainer.explain(decision.explained[rows])
            reasons[rows] = [json.dumps(r) for r in explained]
        frame["score"] = decision.scores
        frame["risk"] = decision.risk
        frame["is_alert"] = alerts
        frame["model_version"] = scorer.version
        frame["reasons"] = reasons
        self._shadow_score(frame, rule_alerts)
        frame["fraud_probability"] = decision.probability
        return frame

    def _shadow_score(self, frame: pd.DataFrame, rule_alerts: np.ndarray) -> None:
        """The challenger's columns of ``frame``; null without a challenger."""
        challenger = self.watcher.challenger()
        frame["challenger_score"] = None
        frame["challenger_version"] = None
        frame["challenger_alert"] = None
        if challenger is None:
            return
        try:
            decision = challenger.decide(frame)
        except Exception as exc:  # the champion's results must still go out
            self.watcher.refuse_challenger(exc)
            return
        frame["challenger_score"] = decision.scores
        frame["challenger_version"] = challenger.version
        frame["challenger_alert"] = decision.alerts | rule_alerts


def _load_model(directory):
    from udfs.explain import Explainer
    from udfs.scoring import Scorer

    scorer = Scorer(directory)
    return scorer, Explainer(directory, scorer.metadata)


def _active_rule_hits(hits: pd.Series) -> np.ndarray:
    """Rows where an active (not shadow) rule fired."""
    return np.fromiter(
        (h != "[]" and '"mode": "active"' in h for h in hits),
        dtype=bool,
        count=len(hits),
    )


def score_function(model_dir: str):
    return udf(ScoreBatch(model_dir), result_type=scored_row_type(), func_type="pandas")
