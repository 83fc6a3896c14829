import json

import pytest

from txwatch.corpus import bad_messages
from udfs.contract import REASONS, ContractLimits, Rejection, Transaction, parse

LIMITS = ContractLimits(currencies={"EUR": 1.0, "USD": 0.5})
NOW = 1_796_400_000_000  # 2026-12-04
GOOD = {
    "transaction_id": 17,
    "event_time": "2018-07-01T10:00:00+02:00",
    "card_id": "c-1",
    "terminal_id": 9,
    "amount": 12.5,
    "currency": "USD",
}


def test_a_valid_message_becomes_a_transaction_in_utc_and_reporting_currency():
    tx = parse(json.dumps(GOOD), LIMITS, NOW)
    assert isinstance(tx, Transaction)
    assert tx.transaction_id == "17" and tx.card_id == "c-1" and tx.terminal_id == "9"
    assert tx.event_time_ms == 1_530_432_000_000  # 08:00 UTC
    assert tx.amount == 6.25 and tx.original_amount == 12.5 and tx.currency == "USD"


def test_epoch_milliseconds_and_customer_id_are_accepted():
    obj = {**GOOD, "event_time": 1_530_432_000_000, "customer_id": 5}
    del obj["card_id"]
    tx = parse(json.dumps(obj), LIMITS, NOW)
    assert tx.event_time_ms == 1_530_432_000_000 and tx.card_id == "5"


@pytest.mark.parametrize("message, reason", bad_messages())
def test_every_corpus_message_is_rejected_with_its_reason(message, reason):
    limits = ContractLimits(currencies={"EUR": 1.0})
    # The job reads Kafka values as text: undecodable bytes become U+FFFD.
    text = message.decode("utf-8", errors="replace")
    result = parse(text, limits, NOW)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result.detail
    assert result.reason in REASONS
    assert result.detail


def test_raw_bytes_that_are_not_utf8_are_rejected():
    assert parse(b"\xff{}", LIMITS, NOW).reason == "invalid_utf8"


def test_booleans_are_not_numbers_or_ids():
    assert (
        parse(json.dumps({**GOOD, "amount": True}), LIMITS, NOW).reason == "wrong_type"
    )
    assert (
        parse(json.dumps({**GOOD, "card_id": False}), LIMITS, NOW).reason
        == "wrong_type"
    )


def test_zero_amount_is_valid_and_zone_offsets_are_honoured():
    tx = parse(
        json.dumps({**GOOD, "amount": 0, "event_time": "2018-07-01T08:00:00Z"}),
        LIMITS,
        NOW,
    )
    assert tx.amount == 0.0 and tx.event_time_ms == 1_530_432_000_000


def test_limits_refuse_nonsense_configuration():
    with pytest.raises(ValueError, match="conversion rate"):
        ContractLimits(currencies={"EUR": -1.0})
    with pytest.raises(ValueError, match="at least one currency"):
        ContractLimits(currencies={})
