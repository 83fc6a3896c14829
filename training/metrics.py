"""Detection quality metrics, as the fraud-detection handbook defines them.

Scores point one way throughout: higher means more suspicious, and an alert
is raised when ``score >= threshold``.

Transaction-level metrics
    ``auc_roc`` and ``average_precision`` rank all test transactions by score
    (scikit-learn's definitions). ``alert_rate``, ``precision_at`` and
    ``recall_at`` describe the alerts at one threshold.

Card precision at k
    What a team of investigators who can check ``k`` cards a day would find.
    Per test day, among the cards not yet detected, cards are ranked by their
    highest score that day; of the ``k`` highest, those with a fraud that day
    are compromised cards found, and the day's value is their number divided
    by ``k`` (not by the number of cards ranked, so a day with fewer than
    ``k`` cards cannot score 1). Cards found this way count as detected on
    the later days and are left out of their rankings. The result is the mean
    over the test days.

Limitations: cards tied on score at the cut-off are taken in ascending card
order. The handbook leaves such ties to an unstable sort; a detector with few
distinct scores (the rules) depends on the tie-break, one with continuous
scores does not.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def auc_roc(labels, scores) -> float:
    """Area under the ROC curve of ``scores`` against 0/1 ``labels``."""
    labels, scores = _checked(labels, scores)
    _need_both_classes(labels, "auc_roc")
    return float(roc_auc_score(labels, scores))


def average_precision(labels, scores) -> float:
    """Average precision (area under the precision-recall curve, step-wise)."""
    labels, scores = _checked(labels, scores)
    _need_both_classes(labels, "average_precision")
    return float(average_precision_score(labels, scores))


def alert_rate(scores, threshold: float) -> float:
    """Share of transactions with ``score >= threshold``; NaN without any."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(np.mean(scores >= threshold)) if len(scores) else math.nan


def precision_at(labels, scores, threshold: float) -> float:
    """Share of alerts that are frauds; NaN when nothing alerts."""
    labels, scores = _checked(labels, scores)
    alerts = scores >= threshold
    return float(labels[alerts].mean()) if alerts.any() else math.nan


def recall_at(labels, scores, threshold: float) -> float:
    """Share of frauds that alert; NaN when there is no fraud."""
    labels, scores = _checked(labels, scores)
    frauds = labels == 1
    return float(np.mean(scores[frauds] >= threshold)) if frauds.any() else math.nan


def card_precision_per_day(days, cards, labels, scores, k: int = 100) -> list[float]:
    """Card precision at ``k`` of each test day, in day order.

    Parameters
    ----------
    days
        Day of each transaction (any sortable value, e.g. whole days since
        the epoch).
    cards
        Card (customer) id of each transaction.
    labels
        1 for a fraudulent transaction, 0 otherwise.
    scores
        Detector score of each transaction, higher is more suspicious.
    k
        How many cards can be checked per day, at least 1.
    """
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1:
        raise ValueError(
            f"k must be a positive integer (cards checked per day), got {k!r}"
        )
    labels, scores = _checked(labels, scores)
    days = np.asarray(days)
    cards = np.asarray(cards)
    if len(days) != len(labels) or len(cards) != len(labels):
        raise ValueError(
            f"days ({len(days)}), cards ({len(cards)}) and labels ({len(labels)}) "
            "must have one entry per transaction"
        )

    detected: set = set()
    per_day = []
    for day in np.unique(days):
        today = days == day
        ranked = _cards_by_max_score(cards[today], labels[today], scores[today])
        ranked = [(card, fraud) for card, fraud in ranked if card not in detected]
        found = [card for card, fraud in ranked[:k] if fraud]
        per_day.append(len(found) / k)
        detected.update(found)
    return per_day


def card_precision_at_k(days, cards, labels, scores, k: int = 100) -> float:
    """Mean over test days of :func:`card_precision_per_day`; NaN without days."""
    per_day = card_precision_per_day(days, cards, labels, scores, k)
    return float(np.mean(per_day)) if per_day else math.nan


def detection_summary(
    labels, scores, threshold: float, days, cards, k: int = 100
) -> dict[str, float]:
    """Every metric of this module for one detector on one test set."""
    return {
        "auc_roc": auc_roc(labels, scores),
        "average_precision": average_precision(labels, scores),
        f"card_precision_at_{k}": card_precision_at_k(days, cards, labels, scores, k),
        "threshold": float(threshold),
        "alert_rate": alert_rate(scores, threshold),
        "precision": precision_at(labels, scores, threshold),
        "recall": recall_at(labels, scores, threshold),
    }


def _cards_by_max_score(cards, labels, scores) -> list[tuple[object, bool]]:
    """``(card, had a fraud)`` pairs, highest max score first, ties by card."""
    order = np.argsort(cards, kind="stable")
    cards, labels, scores = cards[order], labels[order], scores[order]
    unique, first = np.unique(cards, return_index=True)
    best = np.maximum.reduceat(scores, first)
    fraud = np.maximum.reduceat(labels, first).astype(bool)
    # Sorting on the negated score keeps the ascending card order of ties.
    ranking = np.argsort(-best, kind="stable")
    return list(zip(unique[ranking].tolist(), fraud[ranking].tolist(), strict=True))


def _checked(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(
            f"labels and scores must be 1-D and of equal length, got shapes "
            f"{labels.shape} and {scores.shape}"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"labels must be 0 (genuine) or 1 (fraud), got values "
            f"{sorted(set(np.unique(labels).tolist()) - {0, 1})[:5]}"
        )
    if np.isnan(scores).any():
        raise ValueError(
            f"scores hold {int(np.isnan(scores).sum())} NaN values; score every "
            "transaction or drop the unscored ones before measuring"
        )
    return labels.astype(np.int8), scores


def _need_both_classes(labels: np.ndarray, metric: str) -> None:
    if len(np.unique(labels)) < 2:
        raise ValueError(
            f"{metric} needs both frauds and genuine transactions, got "
            f"{len(labels)} transactions of a single class; widen the test window"
        )
