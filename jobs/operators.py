"""The Python operators of the job: validation, card and terminal history, rules.

Each is a thin Flink wrapper around the pure-Python code in ``udfs``; the
wrappers own the Flink state and the side outputs, the ``udfs`` modules own
what is computed.
"""

from __future__ import annotations

import json
import logging
import time

from pyflink.common import Row, Types
from pyflink.common.time import Time
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    OutputTag,
    ProcessFunction,
)
from pyflink.datastream.state import (
    MapStateDescriptor,
    StateTtlConfig,
    ValueStateDescriptor,
)

from jobs.records import CARD_COLUMNS, RULE_HIT
from udfs.contract import ContractLimits, Rejection, parse
from udfs.errors import RuleError
from udfs.features import (
    FEATURE_NAMES,
    MS_PER_DAY,
    TERMINAL_FEATURES,
    CardFeatures,
    TerminalFeatures,
)
from udfs.rules import BASE_FIELDS, RuleEngine, RuleSet

logger = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
RULE_STATUS = OutputTag("rule-status", Types.STRING())
RULE_HITS = OutputTag("rule-hits", RULE_HIT)
RULES_STATE = MapStateDescriptor("rules", Types.STRING(), Types.STRING())
RULE_NAMES = BASE_FIELDS | frozenset(FEATURE_NAMES)
MAX_RAW_CHARS = 16_384


def dead_letter(
    reason: str, detail: str, stage: str, raw: str, transaction_id=None
) -> str:
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


def _ttl(ttl_ms: int) -> StateTtlConfig:
    """Processing-time TTL: a key untouched for ``ttl_ms`` is dropped.

    State therefore stops growing once the number of active keys does.
    Expired entries are removed incrementally as state is accessed and from
    full snapshots; PyFlink's default background clean-up is switched off
    because its configuration cannot be built inside a cluster's workers.
    """
    return (
        StateTtlConfig.new_builder(Time.milliseconds(ttl_ms))
        .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
        .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
        .disable_cleanup_in_background()
        .cleanup_incrementally(10, False)
        .cleanup_full_snapshot()
        .build()
    )


class Validate(ProcessFunction):
    """Raw message -> ``VALID`` row routed by card, or a dead letter with its reason.

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
            yield (
                DEAD_LETTERS,
                dead_letter(parsed.reason, parsed.detail, "contract", value),
            )
            return
        t = parsed.event_time_ms
        if self.newest is not None and t < self.newest - self.max_lateness_ms:
            self.rejected.inc()
            yield (
                DEAD_LETTERS,
                dead_letter(
                    "event_time_too_old",
                    f"event_time is {(self.newest - t) // 3_600_000} h behind "
                    "the stream",
                    "contract",
                    value,
                    parsed.transaction_id,
                ),
            )
            return
        if self.newest is None or t > self.newest:
            self.newest = t
        self.valid.inc()
        yield Row(
            parsed.card_id,
            Row(
                parsed.transaction_id,
                t,
                parsed.card_id,
                parsed.terminal_id,
                parsed.amount,
                parsed.original_amount,
                parsed.currency,
            ),
        )


class _RuleBearer:
    """The rule set in force, shared by the two keyed operators.

    Rule commands arrive on the broadcast input. Every parallel instance
    applies each command to its copy of the set; the set is also kept in
    broadcast state so that it survives restarts. An invalid command leaves
    the set unchanged and is answered with its reason on the status output
    (by subtask 0 of the card operator only, so each command is answered
    once).
    """

    initial_rules: list

    def _open_rules(self, runtime_context) -> None:
        self.ruleset = None
        self.engine = None
        self.answers = self.reports_status and _subtask_index(runtime_context) == 0

    def _rules(self, ctx) -> RuleEngine:
        if self.engine is None:
            stored = ctx.get_broadcast_state(RULES_STATE).get("ruleset")
            dicts = json.loads(stored) if stored else self.initial_rules
            self.ruleset = RuleSet.from_dicts(dicts, RULE_NAMES)
            self.engine = RuleEngine(self.ruleset)
        return self.engine

    def process_broadcast_element(self, value, ctx):
        self._rules(ctx)
        try:
            command = json.loads(value)
        except ValueError as exc:
            status = {
                "rule_id": None,
                "version": None,
                "accepted": False,
                "reason": f"the command is not JSON: {exc}",
            }
        else:
            try:
                ruleset, status = self.ruleset.apply(command)
            except RuleError as exc:  # apply reports, but never trust a caller
                ruleset, status = self.ruleset, {"accepted": False, "reason": str(exc)}
            if status.get("accepted"):
                self.ruleset, self.engine = ruleset, RuleEngine(ruleset)
                ctx.get_broadcast_state(RULES_STATE).put(
                    "ruleset", json.dumps(ruleset.to_dicts())
                )
                logger.info("rule command applied: %s", status)
            else:
                logger.warning("rule command rejected: %s", status)
        if self.answers:
            yield RULE_STATUS, json.dumps({**status, "at": int(time.time() * 1000)})

    def _evaluate(self, ctx, key_kind: str, rule_state, event: dict):
        return self._rules(ctx).evaluate(key_kind, rule_state, event)


class CardHistory(_RuleBearer, KeyedBroadcastProcessFunction):
    """Keyed by card: card features, card rules, the late flag, duplicate ids.

    Emits ``CARD_OUT`` rows routed by terminal. A transaction id seen before
    on the same card (see ``CardFeatures``) goes to the dead letters as
    ``duplicate_transaction_id``. Keyed state: ``(feature state, rule
    state)`` in one value.

    A transaction is late when its event time is more than
    ``max_out_of_orderness_ms`` behind the newest event already seen on its
    card. It is a bounded out-of-orderness rule applied per card: it does
    not depend on how fast each Kafka partition is read, and it marks exactly
    the transactions whose card features were computed out of order. Late
    transactions are scored like the others.
    """

    reports_status = True

    def __init__(
        self,
        initial_rules: list,
        ttl_ms: int = 31 * MS_PER_DAY,
        max_out_of_orderness_ms: int = 5_000,
    ):
        self.initial_rules = initial_rules
        self.ttl_ms = ttl_ms
        self.max_out_of_orderness_ms = max_out_of_orderness_ms

    def open(self, runtime_context):
        descriptor = ValueStateDescriptor("card", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(_ttl(self.ttl_ms))
        self.state = runtime_context.get_state(descriptor)
        self.duplicates = runtime_context.get_metrics_group().counter(
            "txwatch_duplicates"
        )
        self._open_rules(runtime_context)

    def process_element(self, value, ctx):
        features_state, rule_state = self.state.value() or (None, None)
        newest = CardFeatures.newest_event_time(features_state)
        update, features_state = CardFeatures.update(
            features_state, value[0], value[1], value[4], value[3]
        )
        if update.duplicate:
            self.duplicates.inc()
            yield (
                DEAD_LETTERS,
                dead_letter(
                    "duplicate_transaction_id",
                    f"transaction {value[0]} was already scored for this card",
                    "card_features",
                    json.dumps(_valid_as_dict(value)),
                    value[0],
                ),
            )
            return
        features = update.features
        rule_state, hits = self._evaluate(
            ctx, "card", rule_state, {**_valid_as_dict(value), **features}
        )
        self.state.update((features_state, rule_state))
        is_late = (
            newest is not None and value[1] < newest - self.max_out_of_orderness_ms
        )
        yield Row(
            value[3],
            Row(
                *value,
                is_late,
                json.dumps(hits) if hits else "[]",
                *[features[name] for name in CARD_COLUMNS],
                None,
            ),
        )


class TerminalHistory(_RuleBearer, KeyedBroadcastProcessFunction):
    """Keyed by terminal: terminal features, terminal rules, feedback labels.

    Takes ``CARD_OUT`` rows (transactions and feedback labels in one
    stream) and emits ``FEATURED`` rows, with the hits of the card and the
    terminal rules together; every hit also goes to the ``RULE_HITS`` side
    output, one row each.
    """

    reports_status = False

    def __init__(
        self, initial_rules: list, label_delay_days: int, ttl_ms: int = 31 * MS_PER_DAY
    ):
        self.initial_rules = initial_rules
        self.label_delay_days = label_delay_days
        # A terminal's risk looks back its windows behind the label delay.
        self.ttl_ms = ttl_ms + label_delay_days * MS_PER_DAY

    def open(self, runtime_context):
        descriptor = ValueStateDescriptor("terminal", Types.PICKLED_BYTE_ARRAY())
        descriptor.enable_time_to_live(_ttl(self.ttl_ms))
        self.state = runtime_context.get_state(descriptor)
        self.terminals = TerminalFeatures(self.label_delay_days)
        self._open_rules(runtime_context)

    def process_element(self, value, ctx):
        features_state, rule_state = self.state.value() or (None, None)
        if value[-1] is not None:
            # A label may overtake its own transaction (they come from
            # different topics), so it can be the first thing a terminal sees.
            features_state = self.terminals.add_feedback(
                features_state, value[1], value[-1]
            )
            self.state.update((features_state, rule_state))
            return

        t_features, features_state = self.terminals.update(features_state, value[1])
        card_values = value[9:-1]
        event = {
            **_valid_as_dict(value),
            **t_features,
            **dict(zip(CARD_COLUMNS, card_values, strict=True)),
        }
        rule_state, terminal_hits = self._evaluate(ctx, "terminal", rule_state, event)
        self.state.update((features_state, rule_state))

        hits = json.loads(value[8]) + terminal_hits if terminal_hits else None
        for hit in hits if hits is not None else json.loads(value[8]):
            yield (
                RULE_HITS,
                Row(
                    value[0],
                    value[1],
                    hit["rule_id"],
                    int(hit["version"]),
                    hit["mode"],
                    hit["severity"],
                    hit["reason"],
                    value[2],
                    value[3],
                ),
            )
        rule_hits = json.dumps(hits) if hits is not None else value[8]
        yield Row(
            *value[:8],
            rule_hits,
            *card_values,
            *[t_features[name] for name in TERMINAL_FEATURES],
        )


class ParseFeedback(ProcessFunction):
    """Feedback JSON -> a label row in the ``CARD_OUT`` shape, routed by terminal.

    Unreadable feedback is dead-lettered with the stage ``feedback``.
    """

    def process_element(self, value, ctx):
        try:
            obj = json.loads(value)
            terminal_id = str(obj["terminal_id"])
            row = _feedback_row(
                str(obj["transaction_id"]),
                int(obj["event_time_ms"]),
                terminal_id,
                int(obj["known_at_ms"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            yield (
                DEAD_LETTERS,
                dead_letter("malformed_feedback", str(exc)[:200], "feedback", value),
            )
            return
        yield Row(terminal_id, row)


def _subtask_index(runtime_context) -> int:
    try:
        return runtime_context.get_index_of_this_subtask()
    except AttributeError:
        # Thread mode on Flink 2.0 hands over a Java context whose index
        # moved to its task info.
        return runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask()


_CARD_OUT_WIDTH = 10 + len(CARD_COLUMNS)


def _feedback_row(transaction_id, event_time_ms, terminal_id, known_at_ms) -> Row:
    """A feedback label in the ``CARD_OUT`` shape (other fields null)."""
    values = [None] * _CARD_OUT_WIDTH
    values[0], values[1], values[3], values[-1] = (
        transaction_id,
        event_time_ms,
        terminal_id,
        known_at_ms,
    )
    return Row(*values)


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
