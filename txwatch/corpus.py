"""A corpus of bad input messages, each with the reason it must be rejected for.

Used by the demo (to show dead-lettering) and by the tests (to check that
each message reaches the dead-letter topic with exactly that reason).
"""

from __future__ import annotations

import json

_GOOD = {
    "transaction_id": "bad-0",
    "event_time": "2018-07-15T12:00:00Z",
    "card_id": 42,
    "terminal_id": 7,
    "amount": 12.5,
    "currency": "EUR",
}


def _with(tx_id: str, **changes) -> bytes:
    obj = {**_GOOD, "transaction_id": tx_id}
    for key, value in changes.items():
        if value is _DROP:
            obj.pop(key, None)
        else:
            obj[key] = value
    return json.dumps(obj, allow_nan=True).encode()


_DROP = object()


def bad_messages() -> list[tuple[bytes, str]]:
    """(message, expected dead-letter reason) pairs."""
    return [
        (b"this is not json", "malformed_json"),
        (b'{"transaction_id": "bad-1", "amount": 1', "malformed_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (b"\xff\xfe\x00garbage", "invalid_utf8"),
        (_with("bad-2", amount=_DROP), "missing_field"),
        (_with("bad-3", card_id=_DROP), "missing_field"),
        (_with("bad-4", shoe_size=44), "unknown_field"),
        (_with("bad-5", amount="12.50"), "wrong_type"),
        (_with("bad-6", amount=float("nan")), "amount_not_finite"),
        (_with("bad-7", amount=float("inf")), "amount_not_finite"),
        (_with("bad-8", amount=-5.0), "amount_negative"),
        (_with("bad-9", amount=1e12), "amount_too_large"),
        (_with("bad-10", currency="XYZ"), "unknown_currency"),
        (_with("bad-11", event_time="2018-07-15T12:00:00"), "event_time_without_zone"),
        (_with("bad-12", event_time="yesterday"), "invalid_event_time"),
        (_with("bad-13", event_time="2999-01-01T00:00:00Z"), "event_time_in_future"),
        (_with("bad-14", event_time="1970-01-02T00:00:00Z"), "event_time_too_old"),
        (_with("bad-15", terminal_id=""), "invalid_id"),
        (_with("bad-16", terminal_id=[1]), "wrong_type"),
        (_with("bad-17", latitude=123.0), "invalid_optional_field"),
        (b"{" + b'"pad": "' + b"x" * 20_000 + b'"}', "oversized"),
    ]
