"""The card-precision ceilings ``txwatch evaluate`` reports beside its detectors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.evaluate import card_precision_ceilings
from udfs.features import MS_PER_DAY

DELAY = 7
TEST_DAY = 100


def _frame(rows):
    """Rows of (day, card, terminal, label, scenario) as a loaded handbook frame."""
    columns = (np.array(column) for column in zip(*rows, strict=True))
    day, card, terminal, label, scenario = columns
    return pd.DataFrame(
        {
            "event_time_ms": day * MS_PER_DAY + 3_600_000,
            "card_id": card,
            "terminal_id": terminal,
            "label": label.astype(np.int8),
            "scenario": scenario.astype(np.int8),
        }
    )


@pytest.fixture
def frame():
    # Genuine cards have the lowest ids: among equal scores the ceilings rank
    # cards by id, so a fraud wrongly left out loses its place to them.
    return _frame(
        [
            # Known frauds of terminals 1 (in the risk window) and 3 (too old).
            (TEST_DAY - DELAY - 5, 90, 1, 1, 2),
            (TEST_DAY - DELAY - 31, 91, 3, 1, 2),
            # A fraud at terminal 2 inside the label delay: not known yet.
            (TEST_DAY - 3, 92, 2, 1, 2),
            # The test day: two genuine cards and four compromised ones.
            (TEST_DAY, 1, 5, 0, 0),
            (TEST_DAY, 2, 6, 0, 0),
            (TEST_DAY, 11, 2, 1, 2),  # its terminal's fraud is inside the delay
            (TEST_DAY, 12, 3, 1, 2),  # its terminal's fraud left every window
            (TEST_DAY, 30, 1, 1, 2),  # its terminal has a known fraud
            (TEST_DAY, 31, 4, 1, 3),  # a compromised card: its amounts tell
        ]
    )


def _ceilings(frame, k):
    days = frame["event_time_ms"].to_numpy() // MS_PER_DAY
    return card_precision_ceilings(frame, days == TEST_DAY, days, DELAY, k=k)


def test_every_fraud_first_counts_every_compromised_card(frame):
    assert _ceilings(frame, k=4)["every_fraud_first"] == pytest.approx(4 / 4)
    assert _ceilings(frame, k=6)["every_fraud_first"] == pytest.approx(4 / 6)


def test_a_terminal_fraud_counts_once_a_label_of_its_terminal_is_known(frame):
    # Cards 30 and 31 lead; a third place goes to genuine card 1.
    assert _ceilings(frame, k=2)["knowable_frauds_first"] == pytest.approx(2 / 2)
    assert _ceilings(frame, k=3)["knowable_frauds_first"] == pytest.approx(2 / 3)


def test_terminal_frauds_no_known_label_reveals_are_left_out(frame):
    # Cards 11 and 12 rank with the genuine cards, after cards 1 and 2.
    assert _ceilings(frame, k=4)["knowable_frauds_first"] == pytest.approx(2 / 4)
    assert _ceilings(frame, k=6)["knowable_frauds_first"] == pytest.approx(4 / 6)


def test_labels_reveal_nothing_without_a_delay_window_in_the_data():
    frame = _frame([(TEST_DAY, 1, 5, 0, 0), (TEST_DAY, 7, 2, 1, 2)])
    ceilings = _ceilings(frame, k=1)
    assert ceilings == {"every_fraud_first": 1.0, "knowable_frauds_first": 0.0}
