"""Record shapes of the streams inside the job, written down once.

``VALID``      a transaction that met the contract (after parsing)
``CARD_OUT``   what the terminal operator takes: a transaction (``VALID``,
               the late flag, the card rules' hits, the ``CARD_COLUMNS``
               features; ``known_at_ms`` null) or a feedback label (only
               ``transaction_id``, ``event_time_ms``, ``terminal_id`` and
               ``known_at_ms`` set)
``RULE_HIT``   one rule that fired on one transaction
``FEATURED``   ``VALID`` plus the late flag, every feature and the rule hits

An operator whose output is keyed next emits it routed: ``(key, record)``,
the shape Flink's Java key selector partitions on (see ``routed``), so that
no Python function runs only to compute a key.

The scored table adds ``score``, ``risk``, ``is_alert``, ``model_version`` and
``reasons`` to ``FEATURED``, then the challenger's shadow columns
``challenger_score``, ``challenger_version`` and ``challenger_alert`` (see
``jobs.scoring_udf``).
"""

from __future__ import annotations

from pyflink.common import Types

from udfs.features import CARD_FEATURES, FEATURE_NAMES

VALID_FIELDS = (
    ("transaction_id", Types.STRING()),
    ("event_time_ms", Types.LONG()),
    ("card_id", Types.STRING()),
    ("terminal_id", Types.STRING()),
    ("amount", Types.DOUBLE()),
    ("original_amount", Types.DOUBLE()),
    ("currency", Types.STRING()),
)
_VALID_NAMES = {name for name, _ in VALID_FIELDS}
# Features that are not already a field of the transaction (``amount`` is).
CARD_COLUMNS = tuple(name for name in CARD_FEATURES if name not in _VALID_NAMES)
FEATURE_COLUMNS = tuple(name for name in FEATURE_NAMES if name not in _VALID_NAMES)

CARD_OUT_FIELDS = (
    VALID_FIELDS
    + (("is_late", Types.BOOLEAN()), ("rule_hits", Types.STRING()))
    + tuple((name, Types.DOUBLE()) for name in CARD_COLUMNS)
    + (("known_at_ms", Types.LONG()),)
)
RULE_HIT_FIELDS = (
    ("transaction_id", Types.STRING()),
    ("event_time_ms", Types.LONG()),
    ("rule_id", Types.STRING()),
    ("rule_version", Types.INT()),
    ("mode", Types.STRING()),
    ("severity", Types.STRING()),
    ("reason", Types.STRING()),
    ("card_id", Types.STRING()),
    ("terminal_id", Types.STRING()),
)
FEATURED_FIELDS = (
    VALID_FIELDS
    + (("is_late", Types.BOOLEAN()), ("rule_hits", Types.STRING()))
    + tuple((name, Types.DOUBLE()) for name in FEATURE_COLUMNS)
)


def row_type(fields):
    return Types.ROW_NAMED([name for name, _ in fields], [kind for _, kind in fields])


VALID = row_type(VALID_FIELDS)
CARD_OUT = row_type(CARD_OUT_FIELDS)
RULE_HIT = row_type(RULE_HIT_FIELDS)
FEATURED = row_type(FEATURED_FIELDS)
FEATURED_NAMES = tuple(name for name, _ in FEATURED_FIELDS)


def routed(record_type):
    """``record_type`` behind the key it is partitioned on next."""
    return Types.ROW_NAMED(["route_key", "record"], [Types.STRING(), record_type])


ROUTED_VALID = routed(VALID)  # by card
ROUTED_CARD_OUT = routed(CARD_OUT)  # by terminal
