"""Tests of the rule model, rule commands and keyed rule evaluation."""

from __future__ import annotations

import copy
import logging
import pickle
from pathlib import Path

import pytest

from udfs.errors import RuleError, ValidationError
from udfs.rules import (
    BASE_FIELDS,
    MAX_EVENTS_PER_RULE,
    AggregateRule,
    ConditionRule,
    RuleEngine,
    RuleSet,
    SequenceRule,
    format_duration,
    parse_duration,
    parse_rule,
)

FEATURES = frozenset(
    {"c_count_1h", "c_count_30d", "c_mean_30d", "c_amount_ratio_30d", "c_new_terminal"}
)
NAMES = BASE_FIELDS | FEATURES
STARTER = Path(__file__).resolve().parents[2] / "conf" / "rules" / "starter.yaml"

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MINUTE = 60_000


def at(minutes: float) -> int:
    return T0 + int(minutes * MINUTE)


def tx(minutes: float, amount: float = 10.0, **fields) -> dict:
    event = {
        "transaction_id": f"tx-{minutes}",
        "event_time_ms": at(minutes),
        "card_id": "card-1",
        "terminal_id": "term-1",
        "amount": amount,
        "currency": "EUR",
    }
    event.update(fields)
    return event


def condition(**overrides) -> dict:
    rule = {
        "id": "large-amount",
        "version": 1,
        "kind": "condition",
        "description": "One large amount.",
        "severity": "high",
        "mode": "active",
        "key": "card",
        "when": "amount >= 220",
    }
    rule.update(overrides)
    return rule


def velocity(**overrides) -> dict:
    rule = {
        "id": "card-velocity",
        "version": 1,
        "kind": "aggregate",
        "description": "Five transactions within ten minutes.",
        "severity": "medium",
        "mode": "active",
        "key": "card",
        "aggregate": "count",
        "window": "10m",
        "op": ">=",
        "threshold": 5,
    }
    rule.update(overrides)
    return rule


def card_testing(**overrides) -> dict:
    rule = {
        "id": "card-testing",
        "version": 1,
        "kind": "sequence",
        "description": "Tiny amounts, then a large one.",
        "severity": "critical",
        "mode": "active",
        "key": "card",
        "first": {"when": "amount < 2.00", "count": 3},
        "then": {"when": "amount >= 100"},
        "within": "15m",
    }
    rule.update(overrides)
    return rule


def engine_for(*rules: dict) -> RuleEngine:
    return RuleEngine(RuleSet.from_dicts(rules, NAMES))


def run(engine: RuleEngine, events, key_kind: str = "card", state=None):
    """Evaluate ``events`` in order; return the final state and hits per event."""
    hits_per_event = []
    for event in events:
        state, hits = engine.evaluate(key_kind, state, event)
        hits_per_event.append(hits)
    return state, hits_per_event


# ---------------------------------------------------------------------------
# Rule model


@pytest.mark.parametrize(
    ("obj", "rule_type"),
    [
        (condition(), ConditionRule),
        (velocity(), AggregateRule),
        (
            velocity(aggregate="mean", of="amount", op=">", threshold=99.5),
            AggregateRule,
        ),
        (card_testing(), SequenceRule),
    ],
)
def test_each_rule_kind_parses_and_round_trips_through_to_dict(obj, rule_type):
    rule = parse_rule(obj, NAMES)

    assert isinstance(rule, rule_type)
    assert parse_rule(rule.to_dict(), NAMES) == rule
    assert pickle.loads(pickle.dumps(rule)) == rule


def test_optional_fields_take_their_defaults():
    obj = velocity()
    del obj["mode"], obj["op"]

    rule = parse_rule(obj, NAMES)

    assert rule.mode == "active"
    assert rule.op == ">="
    assert rule.when.text == "true"
    assert rule.window_ms == 10 * MINUTE


@pytest.mark.parametrize(
    ("text", "millis"),
    [("30s", 30_000), ("10m", 600_000), ("1h", 3_600_000), ("30d", 2_592_000_000)],
)
def test_durations_parse_and_format_back(text, millis):
    assert parse_duration(text, "window") == millis
    assert format_duration(millis) == text


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (["not", "a", "mapping"], "a rule must be a mapping"),
        (condition(id="Large Amount"), "field 'id'"),
        (condition(id="x" * 65), "field 'id'"),
        (condition(id=None), "field 'id'"),
        (condition(version=0), "field 'version': expected a value from 1"),
        (condition(version=True), "field 'version': expected a whole number"),
        (condition(version="2"), "field 'version': expected a whole number"),
        (condition(severity="urgent"), "field 'severity': expected one of low"),
        (condition(mode="on"), "field 'mode'"),
        (condition(key="customer"), "field 'key': expected one of card, terminal"),
        (condition(kind="magic"), "field 'kind'"),
        (condition(description=""), "field 'description'"),
        (condition(description="x" * 1_001), "field 'description'"),
        (condition(colour="red"), "unknown field(s) 'colour'"),
        (condition(window="10m"), "unknown field(s) 'window'"),
        (condition(when="amount > limit"), "field 'when': unknown field 'limit'"),
        (condition(when="__import__('os')"), "unknown function '__import__'"),
        (condition(when="amount.__class__"), "attribute access"),
        (condition(when="amount * 2"), "a condition must be true or false"),
        (condition(when=5), "field 'when': expression must be a string"),
        (velocity(window="10"), "field 'window': expected a duration"),
        (velocity(window="0m"), "field 'window': expected a duration"),
        (velocity(window="10 m"), "field 'window': expected a duration"),
        (velocity(window="1w"), "field 'window': expected a duration"),
        (velocity(window="-5m"), "field 'window': expected a duration"),
        (velocity(window=600), "field 'window': expected a duration"),
        (velocity(window="31d"), "field 'window': 31d is longer than the limit"),
        (velocity(window="745h"), "longer than the limit of 30d"),
        (velocity(aggregate="median"), "field 'aggregate'"),
        (velocity(aggregate="sum"), "field 'of': sum needs a numeric field"),
        (velocity(aggregate="max", of="colour"), "field 'of'"),
        (velocity(of="amount"), "field 'of': count takes no field"),
        (velocity(threshold="5"), "field 'threshold': expected a finite number"),
        (velocity(threshold=float("nan")), "field 'threshold'"),
        (velocity(threshold=1_001), "count threshold can be at most 1000"),
        (velocity(op="<"), "field 'op'"),
        (card_testing(first={"when": "amount < 2", "count": 0}), "'first.count'"),
        (card_testing(first={"when": "amount < 2", "count": 1_001}), "'first.count'"),
        (card_testing(first={"when": "amount < 2"}), "'first.count': is required"),
        (card_testing(first="amount < 2"), "field 'first': expected a mapping"),
        (
            card_testing(first={"when": "amount < 2", "count": 3, "n": 1}),
            "unknown field(s) 'n' in 'first'",
        ),
        (card_testing(then={}), "field 'then.when': is required"),
        (card_testing(then={"when": "amount >"}), "field 'then.when'"),
        (card_testing(within="45d"), "field 'within'"),
    ],
)
def test_invalid_rules_are_rejected_naming_the_field(obj, fragment):
    with pytest.raises(RuleError) as raised:
        parse_rule(obj, NAMES)

    assert fragment in str(raised.value)


def test_a_rule_error_names_the_rule_once_its_id_is_valid():
    with pytest.raises(RuleError) as raised:
        parse_rule(velocity(window="2y"), NAMES)

    assert raised.value.rule_id == "card-velocity"
    assert str(raised.value).startswith("rule 'card-velocity': field 'window'")


def test_a_rule_error_survives_pickling():
    error = RuleError("field 'window': bad", "card-velocity")

    restored = pickle.loads(pickle.dumps(error))

    assert (restored.reason, restored.rule_id) == (error.reason, error.rule_id)


# ---------------------------------------------------------------------------
# Rule set and commands


def test_the_starter_pack_loads_with_the_feature_names():
    ruleset = RuleSet.from_yaml(STARTER, NAMES)

    modes = {rule.id: rule.mode for rule in ruleset}
    assert len(ruleset) == 6
    assert modes["card-hourly-spend"] == "shadow"
    assert all(rule.description for rule in ruleset)
    assert {rule.key for rule in ruleset} == {"card", "terminal"}
    assert {rule.kind for rule in ruleset} == {"condition", "aggregate", "sequence"}


def test_the_starter_pack_without_features_names_the_missing_feature():
    with pytest.raises(RuleError, match="unknown field 'c_new_terminal'"):
        RuleSet.from_yaml(STARTER, BASE_FIELDS)


def test_a_yaml_file_without_a_rules_list_is_rejected(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("- id: x\n", encoding="utf-8")

    with pytest.raises(RuleError, match="'rules' list"):
        RuleSet.from_yaml(path, NAMES)


def test_rules_round_trip_through_to_dicts():
    ruleset = RuleSet.from_yaml(STARTER, NAMES)

    again = RuleSet.from_dicts(ruleset.to_dicts(), NAMES)

    assert again.to_dicts() == ruleset.to_dicts()


def test_duplicate_rule_ids_are_rejected():
    with pytest.raises(RuleError, match="more than once"):
        RuleSet.from_dicts([condition(), condition(version=2)], NAMES)


def test_an_upsert_of_a_new_rule_is_accepted_and_leaves_the_old_set_alone():
    before = RuleSet.from_dicts([condition()], NAMES)

    after, status = before.apply({"op": "upsert", "rule": velocity()})

    assert status == {
        "rule_id": "card-velocity",
        "version": 1,
        "accepted": True,
        "reason": "created",
    }
    assert "card-velocity" in after
    assert "card-velocity" not in before


def test_an_upsert_with_a_higher_version_replaces_the_rule():
    ruleset = RuleSet.from_dicts([velocity()], NAMES)

    ruleset, status = ruleset.apply(
        {"op": "upsert", "rule": velocity(version=2, threshold=7)}
    )

    assert status["accepted"] is True
    assert status["reason"] == "replaced version 1 with 2"
    assert ruleset.get("card-velocity").threshold == 7


@pytest.mark.parametrize("version", [1, 2])
def test_an_upsert_that_does_not_raise_the_version_is_rejected(version, caplog):
    ruleset = RuleSet.from_dicts([velocity(version=2)], NAMES)

    with caplog.at_level(logging.WARNING, logger="udfs.rules"):
        after, status = ruleset.apply(
            {"op": "upsert", "rule": velocity(version=version, threshold=1)}
        )

    assert after is ruleset
    assert after.get("card-velocity").threshold == 5
    assert status["accepted"] is False
    assert status["rule_id"] == "card-velocity"
    assert status["version"] == version
    assert "not higher than version 2" in status["reason"]
    assert "rule command rejected" in caplog.text


def test_a_deleted_rule_cannot_come_back_with_an_old_version():
    ruleset = RuleSet.from_dicts([velocity(version=3)], NAMES)

    ruleset, deleted = ruleset.apply({"op": "delete", "id": "card-velocity"})
    same, replayed = ruleset.apply({"op": "upsert", "rule": velocity(version=3)})
    revived, upgraded = ruleset.apply({"op": "upsert", "rule": velocity(version=4)})

    assert deleted["accepted"] is True and "card-velocity" not in ruleset
    assert replayed["accepted"] is False and same is ruleset
    assert upgraded["accepted"] is True and "card-velocity" in revived


def test_pause_and_resume_restore_the_previous_mode():
    ruleset = RuleSet.from_dicts([velocity(mode="shadow")], NAMES)

    paused, pause_status = ruleset.apply({"op": "pause", "id": "card-velocity"})
    resumed, resume_status = paused.apply({"op": "resume", "id": "card-velocity"})

    assert paused.get("card-velocity").mode == "paused"
    assert pause_status == {
        "rule_id": "card-velocity",
        "version": 1,
        "accepted": True,
        "reason": "paused",
    }
    assert resumed.get("card-velocity").mode == "shadow"
    assert resume_status["reason"] == "resumed in mode shadow"


def test_pausing_a_paused_rule_is_accepted_and_changes_nothing():
    ruleset = RuleSet.from_dicts([velocity(mode="paused")], NAMES)

    after, status = ruleset.apply({"op": "pause", "id": "card-velocity"})

    assert after is ruleset
    assert status["accepted"] is True
    assert "already paused" in status["reason"]


@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        ("delete card-velocity", "must be a mapping"),
        ({"op": "drop", "id": "card-velocity"}, "unknown command op 'drop'"),
        ({"id": "card-velocity"}, "unknown command op None"),
        ({"op": "delete"}, "no rule with id None"),
        ({"op": "pause", "id": "nope"}, "no rule with id 'nope'"),
        ({"op": "delete", "id": "card-velocity", "force": True}, "'force'"),
        ({"op": "upsert"}, "'rule' must be a mapping"),
        ({"op": "upsert", "rule": velocity(window="99d")}, "field 'window'"),
        ({"op": "upsert", "rule": condition(when="exec('x')")}, "unknown function"),
    ],
)
def test_invalid_commands_are_rejected_and_the_set_stays_in_force(command, fragment):
    ruleset = RuleSet.from_dicts([velocity()], NAMES)

    after, status = ruleset.apply(command)

    assert after is ruleset
    assert status["accepted"] is False
    assert set(status) == {"rule_id", "version", "accepted", "reason"}
    assert fragment in status["reason"]


def test_a_rejected_upsert_reports_the_rule_id_and_version_it_carried():
    ruleset = RuleSet()

    _, status = ruleset.apply({"op": "upsert", "rule": velocity(version=9, op="<")})

    assert (status["rule_id"], status["version"]) == ("card-velocity", 9)


# ---------------------------------------------------------------------------
# Keyed evaluation


def test_velocity_fires_on_the_fifth_transaction_within_ten_minutes():
    engine = engine_for(velocity())

    _, hits = run(engine, [tx(m) for m in (0, 1, 2, 3, 4)])

    assert hits[:4] == [[], [], [], []]
    assert hits[4] == [
        {
            "rule_id": "card-velocity",
            "version": 1,
            "severity": "medium",
            "mode": "active",
            "reason": "5 transactions within 10m on this card (limit 5)",
        }
    ]


def test_velocity_window_includes_both_ends():
    engine = engine_for(velocity())

    _, hits = run(engine, [tx(m) for m in (0, 2.5, 5, 7.5, 10)])

    assert [h["rule_id"] for h in hits[4]] == ["card-velocity"]


def test_velocity_does_not_fire_when_transactions_are_spread_out():
    engine = engine_for(velocity())

    _, hits = run(engine, [tx(3 * i) for i in range(20)])

    assert all(not h for h in hits)


def test_a_strict_threshold_needs_more_than_the_limit():
    engine = engine_for(velocity(op=">"))

    _, hits = run(engine, [tx(m) for m in range(6)])

    assert [bool(h) for h in hits] == [False] * 5 + [True]
    assert hits[5][0]["reason"].endswith("(limit above 5)")


def test_an_aggregate_over_a_field_reads_only_filtered_transactions():
    rule = velocity(
        id="card-hourly-spend",
        aggregate="sum",
        of="amount",
        window="1h",
        threshold=1_000,
        when="currency == 'EUR'",
    )
    engine = engine_for(rule)
    events = [tx(0, 600.0), tx(10, 900.0, currency="USD"), tx(20, 400.0)]

    _, hits = run(engine, events)

    assert hits[:2] == [[], []]
    assert hits[2][0]["reason"] == (
        "total amount 1000.00 over 2 transactions within 1h on this card (limit 1000)"
    )


def test_card_testing_fires_on_tiny_amounts_followed_by_a_large_one():
    engine = engine_for(card_testing())
    events = [tx(0, 1.0), tx(1, 0.5), tx(2, 1.99), tx(9, 180.0)]

    _, hits = run(engine, events)

    assert hits[:3] == [[], [], []]
    assert hits[3][0]["severity"] == "critical"
    assert hits[3][0]["reason"] == (
        "3 transactions with amount < 2.00 then one with amount >= 100 "
        "(amount=180.00) within 15m on this card"
    )


def test_card_testing_does_not_fire_when_the_large_amount_comes_too_late():
    engine = engine_for(card_testing())
    events = [tx(0, 1.0), tx(1, 0.5), tx(2, 1.99), tx(16, 180.0)]

    _, hits = run(engine, events)

    assert all(not h for h in hits)


def test_card_testing_does_not_fire_on_too_few_tiny_amounts():
    engine = engine_for(card_testing())

    _, hits = run(engine, [tx(0, 1.0), tx(1, 0.5), tx(2, 180.0)])

    assert all(not h for h in hits)


def test_terminal_burst_fires_on_the_twentieth_transaction_at_one_terminal():
    burst = velocity(id="terminal-burst", key="terminal", threshold=20)
    engine = engine_for(burst, velocity())
    events = [tx(i * 0.4, card_id=f"card-{i}") for i in range(20)]

    _, terminal_hits = run(engine, events, key_kind="terminal")

    assert all(not h for h in terminal_hits[:19])
    assert [h["rule_id"] for h in terminal_hits[19]] == ["terminal-burst"]
    assert terminal_hits[19][0]["reason"] == (
        "20 transactions within 10m on this terminal (limit 20)"
    )


def test_only_rules_of_the_requested_key_kind_are_evaluated():
    engine = engine_for(condition(key="terminal"))

    _, card_hits = run(engine, [tx(0, 500.0)], key_kind="card")
    _, terminal_hits = run(engine, [tx(0, 500.0)], key_kind="terminal")

    assert card_hits == [[]]
    assert [h["rule_id"] for h in terminal_hits[0]] == ["large-amount"]


def test_a_shadow_rule_yields_hits_marked_shadow():
    engine = engine_for(condition(mode="shadow"))

    _, hits = run(engine, [tx(0, 250.0)])

    assert hits[0][0]["mode"] == "shadow"
    assert hits[0][0]["reason"] == "amount >= 220 (amount=250.00)"


def test_a_paused_rule_yields_nothing_and_keeps_no_state():
    engine = engine_for(velocity(mode="paused"), condition(mode="paused"))

    state, hits = run(engine, [tx(m, 500.0) for m in range(6)])

    assert all(not h for h in hits)
    assert state is None


def test_a_condition_on_features_reports_the_values_it_read():
    rule = condition(
        id="large-amount-new-terminal",
        when="c_new_terminal == 1 and amount > 3 * c_mean_30d and c_count_30d >= 5",
    )
    engine = engine_for(rule)
    known = tx(0, 400.0, c_new_terminal=0.0, c_mean_30d=50.0, c_count_30d=9.0)
    new = tx(1, 400.0, c_new_terminal=1.0, c_mean_30d=50.0, c_count_30d=9.0)
    missing = tx(2, 400.0, c_new_terminal=1.0)

    _, hits = run(engine, [known, new, missing])

    assert hits[0] == [] and hits[2] == []
    assert hits[1][0]["reason"].endswith(
        "(amount=400.00, c_count_30d=9.00, c_mean_30d=50.00, c_new_terminal=1.00)"
    )


def test_hour_is_derived_from_event_time_in_utc_when_absent():
    engine = engine_for(condition(when="hour == 22"))

    _, hits = run(engine, [tx(0), tx(60)])

    assert [bool(h) for h in hits] == [True, False]


def test_deleting_a_rule_drops_its_state():
    ruleset = RuleSet.from_dicts([velocity(), card_testing()], NAMES)
    state, _ = run(RuleEngine(ruleset), [tx(0, 1.0), tx(1, 1.0)])
    assert set(state) == {"card-velocity", "card-testing"}

    ruleset, _ = ruleset.apply({"op": "delete", "id": "card-velocity"})
    engine = RuleEngine(ruleset)
    expired = engine.expire(state, at(1))
    state, _ = engine.evaluate("card", state, tx(2, 50.0))

    assert set(state) == {"card-testing"}
    assert set(expired) == {"card-testing"}


def test_a_new_rule_version_starts_from_empty_state():
    ruleset = RuleSet.from_dicts([velocity()], NAMES)
    state, _ = run(RuleEngine(ruleset), [tx(m) for m in range(4)])

    ruleset, _ = ruleset.apply({"op": "upsert", "rule": velocity(version=2)})
    state, hits = run(RuleEngine(ruleset), [tx(4)], state=state)

    assert hits == [[]]
    assert state["card-velocity"][0] == 2
    assert len(state["card-velocity"][1]) == 1


def test_a_rule_added_later_starts_with_empty_state():
    ruleset = RuleSet.from_dicts([condition()], NAMES)
    state, _ = run(RuleEngine(ruleset), [tx(m) for m in range(4)])
    assert state is None

    ruleset, _ = ruleset.apply({"op": "upsert", "rule": velocity()})
    state, hits = run(RuleEngine(ruleset), [tx(4)], state=state)

    assert hits == [[]]
    assert state == {"card-velocity": (1, [at(4)], None)}


def test_out_of_order_events_are_inserted_by_event_time():
    engine = engine_for(velocity())
    events = [tx(0), tx(2), tx(4), tx(6), tx(5), tx(7)]

    state, hits = run(engine, events)

    assert [bool(h) for h in hits] == [False] * 5 + [True]
    assert hits[5][0]["reason"].startswith("6 transactions")
    assert state["card-velocity"][1] == [at(m) for m in (0, 2, 4, 5, 6, 7)]


def test_an_event_later_than_the_window_is_evaluated_but_not_kept():
    engine = engine_for(velocity(threshold=1))

    state, hits = run(engine, [tx(30), tx(5)])

    assert [bool(h) for h in hits] == [True, True]
    assert state["card-velocity"][1] == [at(30)]


def test_evaluate_does_not_modify_the_state_it_is_given():
    engine = engine_for(velocity(aggregate="max", of="amount", threshold=1e9))
    state, _ = run(engine, [tx(0, 5.0), tx(1, 6.0)])
    snapshot = copy.deepcopy(state)

    engine.evaluate("card", state, tx(2, 7.0))

    assert state == snapshot


def test_next_expiry_and_expire_drop_history_once_the_window_has_passed():
    engine = engine_for(velocity())
    state, _ = run(engine, [tx(0), tx(3)])

    first_due = engine.next_expiry_ms(state)
    after_first = engine.expire(state, first_due)
    second_due = engine.next_expiry_ms(after_first)

    assert first_due == at(10) + 1
    assert engine.expire(state, first_due - 1) == state
    assert after_first["card-velocity"][1] == [at(3)]
    assert second_due == at(13) + 1
    assert engine.expire(after_first, second_due) is None
    assert engine.next_expiry_ms(None) is None


def test_state_of_a_rule_that_is_gone_is_due_at_once():
    state, _ = run(engine_for(velocity()), [tx(0)])

    assert engine_for(condition()).next_expiry_ms(state) == at(0)


def test_an_event_without_an_integer_event_time_is_refused():
    engine = engine_for(velocity())

    for bad in (None, "2024-01-01", 1.5, True):
        with pytest.raises(ValidationError) as raised:
            engine.evaluate("card", None, {"amount": 1.0, "event_time_ms": bad})
        assert raised.value.reason == "missing_event_time"


def test_an_unknown_key_kind_is_refused():
    with pytest.raises(ValidationError) as raised:
        engine_for(velocity()).evaluate("customer", None, tx(0))

    assert raised.value.reason == "unknown_key_kind"


def test_state_stays_bounded_over_a_hundred_thousand_events_on_one_key():
    month_sum = velocity(
        id="card-month-spend",
        aggregate="sum",
        of="amount",
        window="30d",
        threshold=1e12,
    )
    engine = engine_for(velocity(), month_sum, card_testing())
    state = None
    largest = 0

    # One transaction a minute for about 69 days, every fourth one tiny.
    for i in range(100_000):
        amount = 1.0 if i % 4 == 0 else 150.0
        event = {"event_time_ms": T0 + i * MINUTE, "amount": amount}
        state, _ = engine.evaluate("card", state, event)
        if i % 5_000 == 0:
            largest = max(largest, len(pickle.dumps(state)))

    largest = max(largest, len(pickle.dumps(state)))
    assert all(len(times) <= MAX_EVENTS_PER_RULE for _, times, _ in state.values())
    assert len(state["card-velocity"][1]) == 11
    assert len(state["card-testing"][1]) == 4
    assert largest < 32_000
