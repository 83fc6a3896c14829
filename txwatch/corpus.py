"""A corpus of bad input messages, each with the reason it must be rejected for.

Used by the demo (to show dead-lettering) and by the tests (to check that
each message reaches the dead-letter topic with exactly that reason).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

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


def mutated_messages(
    base: list[tuple[bytes, bytes]], count: int, seed: int
) -> list[tuple[bytes | None, bytes]]:
    """``count`` (key, value) messages made by breaking valid ``base`` messages.

    Each message starts from a valid transaction of ``base`` (as written by
    ``txwatch.replay.to_messages``), gets a fresh ``transaction_id`` and then
    one mutation drawn with ``seed``: a field dropped, added or given a wrong
    type; a non-finite, negative, zero or absurd amount; an unknown currency;
    a timestamp with an offset, without a zone, unparseable, in the far future
    or past, or a few hours late; truncated JSON, invalid UTF-8, an oversized
    body; a repeat of an earlier message; or no change at all. Repeats keep
    their card's key, so they reach the same partition as their original.

    The expected outcome of each message is whatever the contract says
    (``udfs.contract.parse``) plus the job's duplicate check; the messages
    themselves carry no expectation.
    """
    import random

    rng = random.Random(seed)
    out: list[tuple[bytes | None, bytes]] = []
    for i in range(count):
        key, value = base[rng.randrange(len(base))]
        obj = json.loads(value)
        obj["transaction_id"] = f"fz-{seed}-{i}"
        mutation = rng.choice(_MUTATIONS)
        if mutation == "repeat" and out:
            out.append(out[rng.randrange(len(out))])
            continue
        message = _mutate(obj, mutation, rng)
        out.append((key if isinstance(message, bytes) else None, message))
    return out


_MUTATIONS = (
    "none",
    "none",
    "repeat",
    "drop_field",
    "extra_field",
    "wrong_type",
    "amount",
    "currency",
    "event_time",
    "late",
    "truncate",
    "invalid_utf8",
    "oversized",
)
_REQUIRED = ("transaction_id", "event_time", "card_id", "terminal_id", "amount")
_ODD_VALUES = (None, True, [], {}, "12.5", [1], {"a": 1}, "", -1)
_ODD_AMOUNTS = (
    float("nan"),
    float("inf"),
    float("-inf"),
    -0.01,
    -1e6,
    0.0,
    1e-9,
    1e12,
    7,
    10**30,
)
_ODD_CURRENCIES = ("XYZ", "eur", "", "EURO", "USD", "GBP")
_ODD_TIMES = (
    "2018-07-15T12:00:00",
    "2018-07-15T12:00:00+05:30",
    "2018-07-15 12:00:00Z",
    "2999-01-01T00:00:00Z",
    "1990-01-01T00:00:00Z",
    "not a time",
    "2018-13-45T99:00:00Z",
    1531656000000,
    "",
)


def _mutate(obj: dict, mutation: str, rng) -> bytes:
    if mutation == "drop_field":
        obj.pop(rng.choice(_REQUIRED), None)
    elif mutation == "extra_field":
        obj[rng.choice(("shoe_size", "note", "AMOUNT"))] = rng.choice(_ODD_VALUES)
    elif mutation == "wrong_type":
        obj[rng.choice((*_REQUIRED, "currency"))] = rng.choice(_ODD_VALUES)
    elif mutation == "amount":
        obj["amount"] = rng.choice(_ODD_AMOUNTS)
    elif mutation == "currency":
        obj["currency"] = rng.choice(_ODD_CURRENCIES)
    elif mutation == "event_time":
        obj["event_time"] = rng.choice(_ODD_TIMES)
    elif mutation == "late":
        # Hours behind its own time: late for its card, inside every window.
        stamp = obj["event_time"].replace("Z", "+00:00")
        when = datetime.fromisoformat(stamp) - timedelta(hours=rng.randint(1, 48))
        obj["event_time"] = when.isoformat().replace("+00:00", "Z")
    text = json.dumps(obj, allow_nan=True).encode()
    if mutation == "truncate":
        return text[: rng.randrange(1, len(text) - 1)]
    if mutation == "invalid_utf8":
        cut = rng.randrange(1, len(text) - 1)
        return text[:cut] + b"\xff\xfe" + text[cut:]
    if mutation == "oversized":
        return text[:-1] + b', "pad": "' + b"x" * 20_000 + b'"}'
    return text
