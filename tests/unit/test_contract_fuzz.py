"""Generated messages never crash the contract: each is a transaction or a reason."""

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.contract import (
    KNOWN_FIELDS,
    REASONS,
    ContractLimits,
    Rejection,
    Transaction,
    parse,
)

LIMITS = ContractLimits(currencies={"EUR": 1.0, "USD": 0.9})
NOW = 1_796_400_000_000

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=6,
)
times = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63),
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.datetimes().map(lambda d: d.isoformat() + "+05:30"),
    st.text(max_size=30),
)
field_values = {
    "transaction_id": st.one_of(st.integers(), st.text(max_size=80), values),
    "event_time": times,
    "card_id": st.one_of(st.integers(), st.text(max_size=70), values),
    "customer_id": st.one_of(st.integers(), st.text(max_size=10)),
    "terminal_id": st.one_of(st.integers(), st.text(max_size=70), values),
    "amount": st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**15), max_value=10**15),
        values,
    ),
    "currency": st.one_of(st.sampled_from(["EUR", "USD", "XXX", "eur", ""]), values),
    "country": st.one_of(st.sampled_from(["FR", "fr", "FRA"]), values),
    "latitude": st.one_of(st.floats(), values),
}
objects = st.fixed_dictionaries({}, optional={**field_values, "extra": values}).map(
    lambda d: {k: v for k, v in d.items()}
)


def encode(obj) -> str:
    return json.dumps(obj, allow_nan=True, default=str)


@settings(
    max_examples=6_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(objects)
def test_generated_objects_are_scored_or_rejected_with_a_known_reason(obj):
    result = parse(encode(obj), LIMITS, NOW)
    if isinstance(result, Rejection):
        assert result.reason in REASONS and result.detail
        return
    assert isinstance(result, Transaction)
    assert set(obj) <= KNOWN_FIELDS
    assert math.isfinite(result.amount) and 0 <= result.amount <= LIMITS.max_amount
    assert (
        LIMITS.min_event_time_ms <= result.event_time_ms <= NOW + LIMITS.max_future_ms
    )
    assert result.currency in LIMITS.currencies


@settings(max_examples=4_000, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_arbitrary_bytes_and_text_never_raise(raw):
    result = parse(raw, LIMITS, NOW)
    assert isinstance(result, Rejection | Transaction)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
