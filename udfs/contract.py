"""The input contract: one JSON transaction per Kafka message.

A message is a JSON object with these fields:

=================  ========  ==================================================
field              required  value
=================  ========  ==================================================
transaction_id     yes       string or integer, 1-64 characters once written
event_time         yes       ISO-8601 with a zone offset, or epoch milliseconds
card_id            one of    string or integer; the key of the card features
customer_id        the two   used as the card when there is no card_id
terminal_id        yes       string or integer
amount             yes       number, finite, 0 <= amount <= ``max_amount``
currency           yes       ISO 4217 code from the configured currencies
merchant_category  no        string, at most 64 characters
country            no        ISO 3166 alpha-2 code
latitude           no        number in [-90, 90]
longitude          no        number in [-180, 180]
=================  ========  ==================================================

``parse`` turns a message into a ``Transaction`` or a ``Rejection`` whose
``reason`` is a short machine-readable code (listed in ``REASONS``) and whose
``detail`` says, for a person, which field was wrong, what it held and what
was expected. Nothing here raises on bad input: the job dead-letters every
rejection with its reason, so every message read is accounted for.

Amounts are converted to the reporting currency with the configured rates;
features and rules see converted amounts, and the original amount and
currency travel with the transaction.

Time bounds: an event time before ``min_event_time_ms`` or more than
``max_future_ms`` ahead of the wall clock is rejected. Lateness relative to
the stream is not decided here: late events are scored and
marked late by the job.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

REASONS = {
    "invalid_utf8": "the message is not valid UTF-8",
    "oversized": "the message is larger than the configured limit",
    "malformed_json": "the message is not a JSON document",
    "not_an_object": "the JSON document is not an object",
    "missing_field": "a required field is absent or null",
    "unknown_field": "the object has a field the contract does not define",
    "wrong_type": "a field has the wrong JSON type",
    "invalid_id": "an id is empty or too long",
    "invalid_event_time": "event_time cannot be read as a time",
    "event_time_without_zone": "event_time has no zone offset",
    "event_time_too_old": "event_time is before the accepted range",
    "event_time_in_future": "event_time is too far ahead of the wall clock",
    "amount_not_finite": "amount is NaN or infinite",
    "amount_negative": "amount is below zero",
    "amount_too_large": "amount is above the configured maximum",
    "unknown_currency": "currency is not one of the configured currencies",
    "invalid_optional_field": "an optional field is out of its range",
    "duplicate_transaction_id": "the transaction id was already seen for this card",
}

REQUIRED = ("transaction_id", "event_time", "terminal_id", "amount", "currency")
OPTIONAL = (
    "card_id",
    "customer_id",
    "merchant_category",
    "country",
    "latitude",
    "longitude",
)
KNOWN_FIELDS = frozenset(REQUIRED + OPTIONAL)
MAX_ID_LENGTH = 64
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class ContractLimits:
    """Bounds applied by ``parse``; the defaults suit the bundled data."""

    currencies: dict[str, float] = field(default_factory=lambda: {"EUR": 1.0})
    max_amount: float = 1_000_000.0
    max_message_bytes: int = 16_384
    min_event_time_ms: int = 946_684_800_000  # 2000-01-01T00:00:00Z
    max_future_ms: int = 24 * 3_600_000

    def __post_init__(self):
        if not self.currencies:
            raise ValueError("currencies must name at least one currency and its rate")
        for code, rate in self.currencies.items():
            if not (isinstance(rate, int | float) and rate > 0 and math.isfinite(rate)):
                raise ValueError(
                    f"currencies[{code!r}] must be a positive conversion rate, "
                    f"got {rate!r}"
                )
        if self.max_amount <= 0 or self.max_message_bytes <= 0:
            raise ValueError("max_amount and max_message_bytes must be positive")


@dataclass(frozen=True)
class Transaction:
    """A transaction that met the contract. Times are epoch milliseconds UTC."""

    transaction_id: str
    event_time_ms: int
    card_id: str
    terminal_id: str
    amount: float  # in the reporting currency
    original_amount: float
    currency: str


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str


def parse(message: bytes | str, limits: ContractLimits, now_ms: int | None = None):
    """Return a ``Transaction`` or a ``Rejection`` for one raw message."""
    if isinstance(message, bytes):
        if len(message) > limits.max_message_bytes:
            return _reject(
                "oversized", f"{len(message)} bytes, limit {limits.max_message_bytes}"
            )
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _reject("invalid_utf8", f"undecodable byte at offset {exc.start}")
    elif "\ufffd" in message:
        # Kafka string deserializers replace undecodable bytes with U+FFFD.
        return _reject(
            "invalid_utf8", "the message holds U+FFFD replacement characters"
        )
    if len(message) > limits.max_message_bytes:
        return _reject(
            "oversized", f"{len(message)} characters, limit {limits.max_message_bytes}"
        )

    try:
        obj = json.loads(message, parse_constant=_json_constant)
    except (ValueError, RecursionError) as exc:
        return _reject("malformed_json", str(exc)[:200])
    if not isinstance(obj, dict):
        return _reject("not_an_object", f"got a JSON {type(obj).__name__}")
    return validate(obj, limits, now_ms)


def validate(obj: dict, limits: ContractLimits, now_ms: int | None = None):
    """Check a decoded message against the contract."""
    unknown = set(obj) - KNOWN_FIELDS
    if unknown:
        return _reject(
            "unknown_field", f"fields {sorted(unknown)[:5]} are not in the contract"
        )
    for name in REQUIRED:
        if obj.get(name) is None:
            return _reject("missing_field", f"{name} is required")
    card = obj.get("card_id")
    if card is None:
        card = obj.get("customer_id")
    if card is None:
        return _reject("missing_field", "card_id or customer_id is required")

    ids = {}
    for name, value in (
        ("transaction_id", obj["transaction_id"]),
        ("card_id", card),
        ("terminal_id", obj["terminal_id"]),
    ):
        if isinstance(value, bool) or not isinstance(value, str | int):
            return _reject(
                "wrong_type", f"{name} must be a string or integer, got {_kind(value)}"
            )
        text = str(value)
        if not text.strip() or len(text) > MAX_ID_LENGTH:
            return _reject(
                "invalid_id", f"{name} must have 1-{MAX_ID_LENGTH} characters"
            )
        ids[name] = text

    when = _event_time(obj["event_time"])
    if isinstance(when, Rejection):
        return when
    if when < limits.min_event_time_ms:
        return _reject(
            "event_time_too_old",
            f"event_time {obj['event_time']!r} is before the floor",
        )
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if when > now_ms + limits.max_future_ms:
        return _reject(
            "event_time_in_future",
            f"event_time {obj['event_time']!r} is more than "
            f"{limits.max_future_ms // 3_600_000} h ahead of the wall clock",
        )

    amount = obj["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return _reject("wrong_type", f"amount must be a number, got {_kind(amount)}")
    amount = float(amount)
    if not math.isfinite(amount):
        return _reject("amount_not_finite", f"amount is {amount}")
    if amount < 0:
        return _reject("amount_negative", f"amount is {amount}; refunds are not scored")
    if amount > limits.max_amount:
        return _reject(
            "amount_too_large", f"amount {amount} exceeds {limits.max_amount}"
        )

    currency = obj["currency"]
    if not isinstance(currency, str):
        return _reject(
            "wrong_type", f"currency must be a string, got {_kind(currency)}"
        )
    rate = limits.currencies.get(currency)
    if rate is None:
        return _reject(
            "unknown_currency",
            f"currency {currency[:8]!r} is not one of {sorted(limits.currencies)}",
        )

    problem = _optional_problem(obj)
    if problem:
        return _reject("invalid_optional_field", problem)
    return Transaction(
        transaction_id=ids["transaction_id"],
        event_time_ms=when,
        card_id=ids["card_id"],
        terminal_id=ids["terminal_id"],
        amount=round(amount * rate, 6),
        original_amount=amount,
        currency=currency,
    )


def _event_time(value):
    if isinstance(value, bool):
        return _reject(
            "wrong_type", "event_time must be a string or integer, got boolean"
        )
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return _reject(
            "wrong_type", "event_time in epoch milliseconds must be an integer"
        )
    if not isinstance(value, str):
        return _reject(
            "wrong_type", f"event_time must be a string or integer, got {_kind(value)}"
        )
    if len(value) > 40:
        return _reject(
            "invalid_event_time", "event_time is longer than any ISO-8601 time"
        )
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _reject("invalid_event_time", f"{value!r} is not an ISO-8601 time")
    if parsed.tzinfo is None:
        return _reject(
            "event_time_without_zone",
            f"{value!r} has no offset; send UTC as ...Z or +00:00",
        )
    try:
        return int(parsed.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        return _reject("invalid_event_time", f"{value!r} is out of range")


def _optional_problem(obj: dict) -> str | None:
    for name, low, high in (("latitude", -90.0, 90.0), ("longitude", -180.0, 180.0)):
        value = obj.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number, got {_kind(value)}"
        if not (math.isfinite(value) and low <= value <= high):
            return f"{name} {value} is outside [{low}, {high}]"
    country = obj.get("country")
    if country is not None and not (
        isinstance(country, str) and _COUNTRY.match(country)
    ):
        return f"country must be an ISO 3166 alpha-2 code, got {str(country)[:8]!r}"
    category = obj.get("merchant_category")
    if category is not None and not (isinstance(category, str) and len(category) <= 64):
        return "merchant_category must be a string of at most 64 characters"
    return None


def _json_constant(name: str):
    # json accepts NaN/Infinity literals, which are not JSON; keep them apart
    # so that they are reported as non-finite amounts, not malformed text.
    return float(name.replace("-Infinity", "-inf").replace("Infinity", "inf"))


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def _reject(reason: str, detail: str) -> Rejection:
    return Rejection(reason, detail)
