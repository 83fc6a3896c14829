"""Tests of the detection metrics on tiny hand-made test sets with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.metrics import (
    alert_rate,
    auc_roc,
    average_precision,
    card_precision_at_k,
    card_precision_per_day,
    detection_summary,
    precision_at,
    recall_at,
)


def frame(rows: list[tuple[int, str, int, float]]) -> pd.DataFrame:
    """Transactions as (day, card, label, score)."""
    return pd.DataFrame(rows, columns=["day", "card", "label", "score"])


def per_day(test: pd.DataFrame, k: int) -> list[float]:
    return card_precision_per_day(
        test["day"], test["card"], test["label"], test["score"], k=k
    )


# Day 1: card a has a fraud and the top score, b is genuine, c has an
# unnoticed fraud. Day 2: a (found on day 1) scores highest again, then c.
TWO_DAYS = frame(
    [
        (1, "a", 0, 0.2),
        (1, "a", 1, 0.9),
        (1, "b", 0, 0.8),
        (1, "c", 1, 0.1),
        (2, "a", 1, 0.95),
        (2, "c", 1, 0.9),
        (2, "b", 0, 0.1),
    ]
)


def test_auc_roc_is_one_for_a_perfect_ranking_and_zero_for_a_reversed_one():
    labels = [0, 0, 1, 1]
    assert auc_roc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc_roc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_average_precision_averages_the_precision_at_each_fraud():
    # Frauds at ranks 1 and 3: precisions 1/1 and 2/3.
    value = average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert value == pytest.approx((1.0 + 2.0 / 3.0) / 2.0)


def test_card_precision_counts_compromised_cards_in_the_top_k_of_each_day():
    # Day 1: a and b are the top two, a is compromised: 1/2.
    assert per_day(TWO_DAYS, k=2)[0] == 0.5


def test_card_precision_leaves_cards_found_on_earlier_days_out_of_later_rankings():
    # Day 2 without a: c and b are the top two, c is compromised: 1/2. Were a
    # still ranked, a and c would give 2/2.
    assert per_day(TWO_DAYS, k=2) == [0.5, 0.5]
    assert (
        card_precision_at_k(
            TWO_DAYS["day"], TWO_DAYS["card"], TWO_DAYS["label"], TWO_DAYS["score"], k=2
        )
        == 0.5
    )


def test_card_precision_keeps_a_compromised_card_missed_outside_the_top_k():
    # k = 1: day 1 finds a only; c, missed, still counts on day 2.
    assert per_day(TWO_DAYS, k=1) == [1.0, 1.0]


def test_card_precision_keeps_a_genuine_card_ranked_in_the_top_k_for_later_days():
    test = frame([(1, "b", 0, 0.9), (2, "b", 1, 0.9), (2, "c", 0, 0.1)])
    assert per_day(test, k=1) == [0.0, 1.0]


def test_card_precision_ranks_a_card_by_its_highest_score_of_the_day():
    # b's mean (0.5) is below a's, its maximum (0.9) is above.
    test = frame(
        [(1, "a", 0, 0.6), (1, "a", 0, 0.6), (1, "b", 1, 0.1), (1, "b", 0, 0.9)]
    )
    assert per_day(test, k=1) == [1.0]


def test_card_precision_counts_a_card_with_any_fraud_that_day_as_compromised():
    test = frame([(1, "a", 0, 0.9), (1, "a", 1, 0.1), (1, "b", 0, 0.5)])
    assert per_day(test, k=1) == [1.0]


def test_card_precision_divides_by_k_even_when_fewer_cards_are_ranked():
    test = frame([(1, "a", 1, 0.9)])
    assert per_day(test, k=100) == [0.01]


def test_card_precision_breaks_score_ties_by_ascending_card_id():
    test = frame([(1, "b", 1, 0.5), (1, "a", 0, 0.5)])
    assert per_day(test, k=1) == [0.0]


def test_card_precision_averages_over_the_days_in_day_order():
    test = frame([(2, "a", 0, 0.9), (1, "a", 1, 0.9), (3, "b", 1, 0.9)])
    assert per_day(test, k=1) == [1.0, 0.0, 1.0]
    assert card_precision_at_k(
        test["day"], test["card"], test["label"], test["score"], k=1
    ) == pytest.approx(2.0 / 3.0)


def test_card_precision_of_an_empty_test_set_is_nan():
    assert math.isnan(card_precision_at_k([], [], [], [], k=1))


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_card_precision_rejects_a_k_that_is_not_a_positive_integer(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        card_precision_per_day([1], ["a"], [1], [0.5], k=k)


def test_alerts_include_scores_equal_to_the_threshold():
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.5, 0.5, 0.1]
    assert alert_rate(scores, 0.5) == 0.75
    assert precision_at(labels, scores, 0.5) == pytest.approx(2.0 / 3.0)
    assert recall_at(labels, scores, 0.5) == 1.0
    assert recall_at(labels, scores, 0.6) == 0.5


def test_precision_without_alerts_and_recall_without_frauds_are_nan():
    assert math.isnan(precision_at([1, 0], [0.1, 0.2], 0.5))
    assert math.isnan(recall_at([0, 0], [0.1, 0.9], 0.5))


def test_ranking_metrics_refuse_a_test_set_of_a_single_class():
    with pytest.raises(ValueError, match="single class"):
        auc_roc([0, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="single class"):
        average_precision([1, 1], [0.1, 0.2])


def test_metrics_refuse_labels_other_than_zero_and_one():
    with pytest.raises(ValueError, match=r"labels must be 0 .* got values \[2\]"):
        precision_at([0, 2], [0.1, 0.2], 0.5)


def test_metrics_refuse_nan_scores_and_say_how_many():
    with pytest.raises(ValueError, match="1 NaN values"):
        auc_roc([0, 1], [0.1, np.nan])


def test_metrics_refuse_labels_and_scores_of_different_lengths():
    with pytest.raises(ValueError, match="equal length"):
        recall_at([0, 1, 1], [0.1, 0.2], 0.5)


def test_detection_summary_reports_every_metric_with_k_in_its_name():
    summary = detection_summary(
        TWO_DAYS["label"],
        TWO_DAYS["score"],
        0.85,
        TWO_DAYS["day"],
        TWO_DAYS["card"],
        k=2,
    )
    assert summary == {
        "auc_roc": pytest.approx(auc_roc(TWO_DAYS["label"], TWO_DAYS["score"])),
        "average_precision": pytest.approx(
            average_precision(TWO_DAYS["label"], TWO_DAYS["score"])
        ),
        "card_precision_at_2": 0.5,
        "threshold": 0.85,
        "alert_rate": pytest.approx(3.0 / 7.0),
        "precision": 1.0,
        "recall": 0.75,
    }
