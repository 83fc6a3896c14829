"""Tests of rule back-testing on small labelled streams with known answers."""

from __future__ import annotations

import pytest

from training.backtest import ANY_ACTIVE, backtest
from udfs.errors import ValidationError
from udfs.rules import BASE_FIELDS, RuleSet

T0 = 1_700_000_000_000
MINUTE = 60_000


def rule(rule_id: str, **fields) -> dict:
    base = {
        "id": rule_id,
        "version": 1,
        "description": f"Test rule {rule_id}.",
        "severity": "high",
        "mode": "active",
        "key": "card",
    }
    base.update(fields)
    return base


LARGE = rule("large", kind="condition", when="amount >= 100")
VELOCITY = rule(
    "velocity", kind="aggregate", aggregate="count", window="10m", threshold=3
)
BURST = rule(
    "burst",
    kind="aggregate",
    key="terminal",
    aggregate="count",
    window="10m",
    threshold=3,
)


def tx(tid: str, minutes: float, amount: float, card: str, terminal: str) -> dict:
    return {
        "transaction_id": tid,
        "event_time_ms": T0 + int(minutes * MINUTE),
        "card_id": card,
        "terminal_id": terminal,
        "amount": amount,
    }


# Card a: three quick transactions (the third is fraud and trips "velocity").
# Card b: one large genuine amount (a false positive of "large") and, at three
# different terminals, nothing terminal-keyed. Terminal t9 sees three cards within
# ten minutes, the third of which is fraud and also large.
EVENTS = [
    tx("1", 0, 10.0, "a", "t1"),
    tx("2", 1, 10.0, "a", "t2"),
    tx("3", 2, 10.0, "a", "t3"),
    tx("4", 3, 150.0, "b", "t4"),
    tx("5", 30, 10.0, "c", "t9"),
    tx("6", 31, 10.0, "d", "t9"),
    tx("7", 32, 500.0, "e", "t9"),
    tx("8", 90, 10.0, "f", "t5"),
]
LABELS = {"3": 1, "7": 1, "8": 1}


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {row["rule_id"]: row for row in rows}


def test_each_rule_is_scored_against_all_fraudulent_transactions():
    ruleset = RuleSet.from_dicts([LARGE, VELOCITY, BURST], BASE_FIELDS)

    rows = by_id(backtest(ruleset, EVENTS, LABELS))

    assert rows["large"] == {
        "rule_id": "large",
        "version": 1,
        "mode": "active",
        "hits": 2,
        "true_positives": 1,
        "precision": 0.5,
        "recall": pytest.approx(1 / 3),
    }
    assert (rows["velocity"]["hits"], rows["velocity"]["true_positives"]) == (1, 1)
    assert (rows["burst"]["hits"], rows["burst"]["true_positives"]) == (1, 1)


def test_the_summary_row_counts_each_transaction_once_and_skips_shadow_rules():
    shadow = rule("shadow-small", kind="condition", mode="shadow", when="amount < 50")
    ruleset = RuleSet.from_dicts([LARGE, VELOCITY, BURST, shadow], BASE_FIELDS)

    rows = backtest(ruleset, EVENTS, LABELS)

    summary = rows[-1]
    assert summary["rule_id"] == ANY_ACTIVE
    assert (summary["hits"], summary["true_positives"]) == (3, 2)
    assert summary["precision"] == pytest.approx(2 / 3)
    assert summary["recall"] == pytest.approx(2 / 3)
    assert by_id(rows)["shadow-small"]["hits"] == 6
    assert by_id(rows)["shadow-small"]["mode"] == "shadow"


def test_rows_come_in_rule_id_order_and_paused_rules_have_no_hits():
    paused = dict(LARGE, id="paused-large", mode="paused")
    ruleset = RuleSet.from_dicts([VELOCITY, paused, LARGE], BASE_FIELDS)

    rows = backtest(ruleset, EVENTS, LABELS)

    assert [row["rule_id"] for row in rows] == [
        "large",
        "paused-large",
        "velocity",
        ANY_ACTIVE,
    ]
    assert rows[1]["hits"] == 0
    assert rows[1]["precision"] is None


def test_labels_aligned_with_events_give_the_same_result_as_a_mapping():
    ruleset = RuleSet.from_dicts([LARGE, VELOCITY, BURST], BASE_FIELDS)
    aligned = [LABELS.get(event["transaction_id"], 0) for event in EVENTS]

    assert backtest(ruleset, iter(EVENTS), aligned) == backtest(ruleset, EVENTS, LABELS)


def test_history_expires_between_sparse_transactions():
    ruleset = RuleSet.from_dicts([VELOCITY], BASE_FIELDS)
    events = [tx(str(i), 6 * i, 10.0, "a", "t1") for i in range(10)]

    rows = backtest(ruleset, events, {})

    assert rows[0]["hits"] == 0
    assert rows[0]["recall"] is None


def test_events_out_of_time_order_are_refused():
    ruleset = RuleSet.from_dicts([LARGE], BASE_FIELDS)
    events = [EVENTS[1], EVENTS[0]]

    with pytest.raises(ValidationError) as raised:
        backtest(ruleset, events, {})

    assert raised.value.reason == "events_not_sorted"


@pytest.mark.parametrize(
    ("labels", "reason"),
    [([0] * 3, "labels_too_short"), ([0] * 9, "labels_too_long")],
)
def test_aligned_labels_must_match_the_events_one_to_one(labels, reason):
    ruleset = RuleSet.from_dicts([LARGE], BASE_FIELDS)

    with pytest.raises(ValidationError) as raised:
        backtest(ruleset, EVENTS, labels)

    assert raised.value.reason == reason


def test_an_event_without_the_key_of_a_rule_in_use_is_refused():
    ruleset = RuleSet.from_dicts([BURST], BASE_FIELDS)
    event = dict(EVENTS[0])
    del event["terminal_id"]

    with pytest.raises(ValidationError) as raised:
        backtest(ruleset, [event], {})

    assert raised.value.reason == "missing_key"
