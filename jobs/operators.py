"""The Python operators of the job: validation, card features, terminal features.

Each is a thin Flink wrapper around the pure-Python code in ``udfs``; the
wrappers own the Flink state and the side outputs, the ``udfs`` modules own
what is computed.
"""

from __future__ import annotations

import json
import logging
import time

from pyflink.common import Row, Types
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import (
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
)
from pyflink.common.time import Time
from pyflink.datastream.state import StateTtlConfig, ValueStateDescriptor

from udfs.contract import ContractLimits, Rejection, parse
from jobs.records import CARD_COLUMNS
from udfs.features import TERMINAL_FEATURES, CardFeatures, TerminalFeatures

logger = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
MAX_RAW_CHARS = 16_384


def dead_letter(reason: str, detail: str, stage: str, raw: str, transaction_id=None) -> str:
    """The JSON written to the dead-letter topic: the reason and the message."""
    return json.dumps(
        {
            "reason": reason,
            "detail": detail,
            "stage": stage,
            "transaction_id": transaction_id,
            "raw": raw if len(raw) <= MAX_RAW_CHARS else raw[:MAX_RAW_CHARS],
            "raw_truncated": len(raw) > MAX_RAW_CHARS,
            "dead_lettered_at": int(time.time() * 1000),
        }
    )


def _ttl(days: int) -> StateTtlConfig:
    """Processing-time TTL: a key untouched this long is dropped.

    State therefore stops growing once the number of active keys does.
    Expired entries are removed incrementally as state is accessed and from
    full snapshots; PyFlink's default background clean-up is switched off
    because its configuration cannot be built inside a cluster's workers.
    """
    return (
        StateTtlConfig.new_builder(Time.days(days))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .disable_cleanup_in_background()
        .cleanup_incrementally(10, False)
        .cleanup_full_snapshot()
        .build()
    )


class Validate(ProcessFunction):
    """Raw message -> ``VALID`` row, or a dead letter with its reason.

    Events more than ``max_lateness_ms`` behind the newest event time this
    subtask has seen are dead-lettered as ``event_time_too_old``: they would
    fall outside every feature window.
    """

    def __init__(self, limits: ContractLimits, max_lateness_ms: int):
        self.limits = limits
        self.max_lateness_ms = max_lateness_ms
        self.newest = None

    def open(self, runtime_context):
        metrics = runtime_context.get_metrics_group()
        self.valid = metrics.counter("txwatch_valid")
        self.rejected = metrics.counter("txwatch_dead_lettered")

    def process_element(self, value, ctx):
        parsed = parse(value, self.limits)
        if isinstance(parsed, Rejection):
            self.rejected.inc()
            yield DEAD_LETTERS, dead_letter(parsed.reason, parsed.detail, "contract", value)
            return
        t = parsed.event_time_ms
        if self.newest is not None and t < self.newest - self.max_lateness_ms:
            self.rejected.inc()
            yield DEAD_LETTERS, dead_letter(
                "event_time_too_old",
                f"event_time is {(self.newest - t) // 3_600_000} h behind the stream",
                "contract",
                value,
                parsed.transaction_id,
            )
            return
        if self.newest is None or t > self.newest:
            self.newest = t
        self.valid.inc()
        yield Row(
            parsed.transaction_id,
            t,
            parsed.card_id,
            parsed.terminal_id,
            parsed.amount,
            parsed.original_amount,
            parsed.currency,
        )


class EventTime(TimestampAssigner):
    """Event time of a ``VALID`` row, in epoch milliseconds."""

    def extract_timestamp(self, value, record_timestamp):
        return value[1]


class FeedbackTime(TimestampAssigner):
    """Event time of a ``FEEDBACK`` row: that of the transaction it labels."""

    def extract_timestamp(self, value, record_timestamp):
        return value[2]


class CardHistory(KeyedProcessFunction):
    """Keyed by card: card features, the late flag, and duplicate ids.

    Emits ``CARD_OUT`` rows: ``VALID`` fields, ``is_late`` and the card
    features in ``CARD_COLUMNS`` order. A transaction id seen before on the same
    card within a day goes to the dead letters as
    ``duplicate_transaction_id``.
    """

    def __init__(self, ttl_days: int = 31):
        self.ttl_days = ttl_days

    def open(self, runtime_context):
        descriptor = ValueStateDescriptor("card", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(_ttl(self.ttl_days))
        self.state = runtime_context.get_state(descriptor)
        self.duplicates = runtime_context.get_metrics_group().counter("txwatch_duplicates")

    def process_element(self, value, ctx):
        state = self.state.value()
        update, new_state = CardFeatures.update(state, value[0], value[1], value[4])
        if update.duplicate:
            self.duplicates.inc()
            yield DEAD_LETTERS, dead_letter(
                "duplicate_transaction_id",
                f"transaction {value[0]} was already scored for this card",
                "card_features",
                json.dumps(_valid_as_dict(value)),
                value[0],
            )
            return
        self.state.update(new_state)
        is_late = ctx.timestamp() < ctx.timer_service().current_watermark()
        features = update.features
        yield Row(*value, is_late, *[features[name] for name in CARD_COLUMNS])


class TerminalHistory(KeyedCoProcessFunction):
    """Keyed by terminal: terminal features from transactions and feedback.

    Input 1 is the card operator's output, input 2 ``FEEDBACK`` rows. Emits
    ``FEATURED`` rows. Rule hits are filled in by the rules operator; here
    they start as an empty JSON list.
    """

    def __init__(self, label_delay_days: int):
        self.label_delay_days = label_delay_days
        # A terminal's risk looks back 30 days behind the label delay.
        self.ttl_days = 31 + label_delay_days

    def open(self, runtime_context):
        descriptor = ValueStateDescriptor("terminal", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(_ttl(self.ttl_days))
        self.state = runtime_context.get_state(descriptor)
        self.terminals = TerminalFeatures(self.label_delay_days)

    def process_element1(self, value, ctx):
        state = self.state.value()
        t_features, new_state = self.terminals.update(state, value[2], value[1])
        self.state.update(new_state)
        terminal = [t_features[name] for name in TERMINAL_FEATURES]
        yield Row(*value[:8], "[]", *value[8:], *terminal)

    def process_element2(self, value, ctx):
        # A label may overtake its own transaction (the two come from
        # different topics), so it can be the first thing a terminal sees.
        self.state.update(self.terminals.add_feedback(self.state.value(), value[2], value[3]))


class ParseFeedback(ProcessFunction):
    """Feedback JSON -> ``FEEDBACK`` row; unreadable feedback is dead-lettered."""

    def process_element(self, value, ctx):
        try:
            obj = json.loads(value)
            row = Row(
                str(obj["transaction_id"]),
                str(obj["terminal_id"]),
                int(obj["event_time_ms"]),
                int(obj["known_at_ms"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            yield DEAD_LETTERS, dead_letter("malformed_feedback", str(exc)[:200], "feedback", value)
            return
        yield row


def _valid_as_dict(value) -> dict:
    names = (
        "transaction_id",
        "event_time_ms",
        "card_id",
        "terminal_id",
        "amount",
        "original_amount",
        "currency",
    )
    return {name: value[i] for i, name in enumerate(names)}
