"""Detection rules: the rule model, the rule set and keyed evaluation.

A rule is a declarative check on the transaction stream, written as a mapping
(YAML or JSON) so that analysts can add, tune, pause and retire rules while the
Flink job runs. Every rule has an ``id``, a ``version``, a ``description``, a
``severity``, a ``mode`` and a ``key`` (the entity whose history it looks at:
``card`` or ``terminal``), and is one of three kinds:

``condition``
    ``when`` is a condition on the current transaction and its features.
``aggregate``
    Counts, sums, averages or takes the maximum over the transactions of the
    same key within a ``window`` ending at the current transaction.
``sequence``
    At least ``first.count`` transactions matching ``first.when`` and then one
    matching ``then.when``, all within ``within``.

Conditions use the expression language of :mod:`udfs.expr`. Example, in YAML::

    - id: card-velocity
      version: 1
      kind: aggregate
      description: Five or more transactions on one card within ten minutes.
      severity: medium
      mode: active
      key: card
      aggregate: count
      window: 10m
      op: ">="
      threshold: 5

:class:`RuleSet` holds the rules in force and applies rule commands
(upsert, delete, pause, resume) without ever raising on a bad command;
:class:`RuleEngine` evaluates the rules of one key kind against one event and the
small, picklable state the caller keeps for that key.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import numbers
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml

from udfs.errors import RuleError, ValidationError
from udfs.expr import Expression, compile_expression

logger = logging.getLogger(__name__)

BASE_FIELDS = frozenset(
    {
        "amount",
        "event_time_ms",
        "hour",
        "currency",
        "card_id",
        "terminal_id",
        "transaction_id",
    }
)
"""Transaction fields every event carries; union it with the feature names."""

SEVERITIES = ("low", "medium", "high", "critical")
MODES = ("active", "shadow", "paused")
KEYS = ("card", "terminal")
KINDS = ("condition", "aggregate", "sequence")
AGGREGATES = ("count", "sum", "mean", "max")
THRESHOLD_OPS = (">=", ">")

MAX_RULE_ID_LENGTH = 64
MAX_VERSION = 2**31 - 1
MAX_DESCRIPTION_LENGTH = 1_000
MAX_SPAN_MS = 30 * 86_400_000
"""Longest ``window`` or ``within``: 30 days."""
MAX_COUNT = 1_000
"""Largest ``first.count``, and largest ``count`` threshold."""
MAX_EVENTS_PER_RULE = 1_000
"""Most transactions one rule remembers for one key; older ones are dropped."""
MAX_RULES = 500
"""Most rules in one rule set; each is evaluated for every transaction."""

_RULE_ID = re.compile(rf"[a-z0-9_-]{{1,{MAX_RULE_ID_LENGTH}}}")
_DURATION = re.compile(r"([1-9][0-9]{0,7})([smhd])")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_COMMON_FIELDS = ("id", "version", "kind", "description", "severity", "mode", "key")
_KIND_FIELDS = {
    "condition": ("when",),
    "aggregate": ("when", "window", "aggregate", "of", "threshold", "op"),
    "sequence": ("first", "then", "within"),
}
_KEY_FIELD = {"card": "card_id", "terminal": "terminal_id"}

State = dict[str, tuple[int, list[int], list[float] | None]]
"""Per-key rule state: rule id to (rule version, event times, values or None)."""


# ---------------------------------------------------------------------------
# Rule model


@dataclass(frozen=True)
class Rule:
    """Fields every rule has; see :class:`ConditionRule`, :class:`AggregateRule`
    and :class:`SequenceRule` for the kinds, and :func:`parse_rule` to build one.
    """

    id: str
    version: int
    description: str
    severity: str
    mode: str
    key: str

    kind: ClassVar[str] = ""

    @property
    def span_ms(self) -> int:
        """How far back the rule looks; 0 for rules without history."""
        return 0

    def with_mode(self, mode: str) -> Rule:
        """A copy of this rule in ``mode``, same version."""
        return dataclasses.replace(self, mode=mode)

    def to_dict(self) -> dict[str, Any]:
        """The rule as a plain mapping that :func:`parse_rule` accepts."""
        return {
            "id": self.id,
            "version": self.version,
            "kind": self.kind,
            "description": self.description,
            "severity": self.severity,
            "mode": self.mode,
            "key": self.key,
        }


@dataclass(frozen=True)
class ConditionRule(Rule):
    """Fires on a transaction for which ``when`` holds. Keeps no state."""

    when: Expression

    kind: ClassVar[str] = "condition"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "when": self.when.text}


@dataclass(frozen=True)
class AggregateRule(Rule):
    """Fires when an aggregate over a key's recent transactions passes a threshold.

    The aggregate runs over the transactions of the same key whose event time lies
    in ``[t - window, t]``, where ``t`` is the current transaction's event time,
    that satisfied ``when``, the current one included. The rule is evaluated only
    for transactions that satisfy ``when`` themselves, and fires on each of them
    for which ``aggregate op threshold`` holds: once the threshold is crossed it
    keeps firing until the window slides past enough transactions. ``sum``,
    ``mean`` and ``max`` read the numeric field ``of``; transactions where it is
    missing or not a finite number are skipped.
    """

    when: Expression
    window_ms: int
    aggregate: str
    of: str | None
    threshold: int | float
    op: str

    kind: ClassVar[str] = "aggregate"

    @property
    def span_ms(self) -> int:
        return self.window_ms

    def to_dict(self) -> dict[str, Any]:
        result = {
            **super().to_dict(),
            "when": self.when.text,
            "window": format_duration(self.window_ms),
            "aggregate": self.aggregate,
            "threshold": self.threshold,
            "op": self.op,
        }
        if self.of is not None:
            result["of"] = self.of
        return result


@dataclass(frozen=True)
class SequenceRule(Rule):
    """Fires on a transaction matching ``then_when`` that follows at least
    ``first_count`` transactions of the same key matching ``first_when``, all of
    them with event times in ``[t - within, t]``.

    Earlier matches are not consumed: a second transaction matching ``then_when``
    soon after the first fires again. The current transaction never counts towards
    its own ``first_count``.
    """

    first_when: Expression
    first_count: int
    then_when: Expression
    within_ms: int

    kind: ClassVar[str] = "sequence"

    @property
    def span_ms(self) -> int:
        return self.within_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "first": {"when": self.first_when.text, "count": self.first_count},
            "then": {"when": self.then_when.text},
            "within": format_duration(self.within_ms),
        }


def parse_duration(text: object, field: str, rule_id: str | None = None) -> int:
    """Milliseconds in a duration such as ``30s``, ``10m``, ``1h`` or ``2d``.

    Raises RuleError naming ``field`` unless ``text`` is a positive whole number
    followed by s, m, h or d, at most 30 days.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise RuleError(
            f"field {field!r}: expected a duration such as 30s, 10m, 1h or 2d, got "
            f"{_show(text)}; write a positive whole number followed by s, m, h or d",
            rule_id,
        )
    millis = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if millis > MAX_SPAN_MS:
        raise RuleError(
            f"field {field!r}: {text} is longer than the limit of 30d; rules keep "
            "history for at most 30 days, so use a feature for longer horizons",
            rule_id,
        )
    return millis


def format_duration(millis: int) -> str:
    """The shortest duration text for ``millis`` that :func:`parse_duration` reads."""
    for unit in ("d", "h", "m"):
        if millis % _UNIT_MS[unit] == 0:
            return f"{millis // _UNIT_MS[unit]}{unit}"
    return f"{millis // 1_000}s"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _RuleReader:
    """Reads the fields of one rule mapping, naming the field in every error."""

    def __init__(self, rule_id: str | None) -> None:
        self.rule_id = rule_id

    def fail(self, field: str, problem: str) -> RuleError:
        return RuleError(f"field {field!r}: {problem}", self.rule_id)

    def get(self, mapping: Mapping[str, Any], field: str, path: str) -> Any:
        if field not in mapping:
            raise self.fail(path, "is required; add it to the rule")
        return mapping[field]

    def choice(self, value: Any, path: str, options: tuple[str, ...]) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.fail(
                path, f"expected one of {', '.join(options)}, got {_show(value)}"
            )
        return value

    def integer(self, value: Any, path: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(path, f"expected a whole number, got {_show(value)}")
        if not low <= value <= high:
            raise self.fail(path, f"expected a value from {low} to {high}, got {value}")
        return value

    def expression(self, value: Any, path: str, names: frozenset[str]) -> Expression:
        try:
            return compile_expression(value, names, boolean=True)
        except RuleError as error:
            raise self.fail(path, error.reason) from None

    def only(
        self, mapping: Mapping[str, Any], path: str, allowed: tuple[str, ...]
    ) -> None:
        unknown = [key for key in mapping if key not in allowed]
        if unknown:
            where = f" in {path!r}" if path else ""
            raise RuleError(
                f"unknown field(s) {', '.join(map(_show, unknown))}{where}; "
                f"allowed here: {', '.join(allowed)}",
                self.rule_id,
            )

    def mapping(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(path, f"expected a mapping, got {_show(value)}")
        return value


def parse_rule(
    obj: Mapping[str, Any], allowed_names: frozenset[str] = BASE_FIELDS
) -> Rule:
    """Validate a rule mapping and build the :class:`Rule` it describes.

    Parameters
    ----------
    obj
        The rule as loaded from YAML or JSON.
    allowed_names
        Field names the rule's conditions and ``of`` may use: :data:`BASE_FIELDS`
        plus the names of the features the job computes.

    Raises
    ------
    RuleError
        Naming the rule (when its id is valid), the field, the value received and
        what is expected: missing or unknown fields, wrong types, values out of
        range, durations over 30 days, counts over 1,000, invalid conditions.
    """
    if not isinstance(obj, Mapping):
        raise RuleError(
            f"a rule must be a mapping of fields, got {_show(obj)}; see the "
            "schema in udfs/rules.py"
        )
    reader = _RuleReader(None)
    rule_id = reader.get(obj, "id", "id")
    if not isinstance(rule_id, str) or not _RULE_ID.fullmatch(rule_id):
        raise reader.fail(
            "id",
            f"expected 1 to {MAX_RULE_ID_LENGTH} characters from a-z, 0-9, _ and -, "
            f"got {_show(rule_id)}",
        )
    reader.rule_id = rule_id

    kind = reader.choice(reader.get(obj, "kind", "kind"), "kind", KINDS)
    reader.only(obj, "", _COMMON_FIELDS + _KIND_FIELDS[kind])
    description = reader.get(obj, "description", "description")
    if not isinstance(description, str) or not description.strip():
        raise reader.fail("description", "expected a non-empty string")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise reader.fail(
            "description",
            f"has {len(description)} characters; use at most {MAX_DESCRIPTION_LENGTH}",
        )
    common = {
        "id": rule_id,
        "version": reader.integer(
            reader.get(obj, "version", "version"), "version", 1, MAX_VERSION
        ),
        "description": description.strip(),
        "severity": reader.choice(
            reader.get(obj, "severity", "severity"), "severity", SEVERITIES
        ),
        "mode": reader.choice(obj.get("mode", "active"), "mode", MODES),
        "key": reader.choice(reader.get(obj, "key", "key"), "key", KEYS),
    }
    names = frozenset(allowed_names)

    if kind == "condition":
        when = reader.expression(reader.get(obj, "when", "when"), "when", names)
        return ConditionRule(**common, when=when)
    if kind == "aggregate":
        return _parse_aggregate(reader, obj, common, names)
    return _parse_sequence(reader, obj, common, names)


def _parse_aggregate(
    reader: _RuleReader,
    obj: Mapping[str, Any],
    common: dict[str, Any],
    names: frozenset[str],
) -> AggregateRule:
    when = reader.expression(obj.get("when", "true"), "when", names)
    window_ms = parse_duration(
        reader.get(obj, "window", "window"), "window", reader.rule_id
    )
    aggregate = reader.choice(
        reader.get(obj, "aggregate", "aggregate"), "aggregate", AGGREGATES
    )
    op = reader.choice(obj.get("op", ">="), "op", THRESHOLD_OPS)

    of = obj.get("of")
    if aggregate == "count":
        if of is not None:
            raise reader.fail("of", "count takes no field; remove 'of'")
    elif not isinstance(of, str) or of not in names:
        raise reader.fail(
            "of",
            f"{aggregate} needs a numeric field, got {_show(of)}; use one of "
            f"{', '.join(sorted(names))}",
        )

    threshold = reader.get(obj, "threshold", "threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise reader.fail(
            "threshold", f"expected a finite number, got {_show(threshold)}"
        )
    if aggregate == "count" and threshold > MAX_COUNT:
        raise reader.fail(
            "threshold",
            f"a count threshold can be at most {MAX_COUNT} because a rule "
            f"remembers at most {MAX_EVENTS_PER_RULE} transactions, got {threshold}",
        )
    return AggregateRule(
        **common,
        when=when,
        window_ms=window_ms,
        aggregate=aggregate,
        of=of,
        threshold=threshold,
        op=op,
    )


def _parse_sequence(
    reader: _RuleReader,
    obj: Mapping[str, Any],
    common: dict[str, Any],
    names: frozenset[str],
) -> SequenceRule:
    first = reader.mapping(reader.get(obj, "first", "first"), "first")
    reader.only(first, "first", ("when", "count"))
    then = reader.mapping(reader.get(obj, "then", "then"), "then")
    reader.only(then, "then", ("when",))
    return SequenceRule(
        **common,
        first_when=reader.expression(
            reader.get(first, "when", "first.when"), "first.when", names
        ),
        first_count=reader.integer(
            reader.get(first, "count", "first.count"), "first.count", 1, MAX_COUNT
        ),
        then_when=reader.expression(
            reader.get(then, "when", "then.when"), "then.when", names
        ),
        within_ms=parse_duration(
            reader.get(obj, "within", "within"), "within", reader.rule_id
        ),
    )


# ---------------------------------------------------------------------------
# Rule set


class RuleSet:
    """The rules in force, and the commands that change them.

    A rule set never changes in place: :meth:`apply` returns a new set for an
    accepted command and the same set for a rejected one, so a bad command read
    from the rule topic can never disturb the rules in force.

    Commands
    --------
    ``{"op": "upsert", "rule": {...}}``
        Add a rule or replace it with a higher ``version``. A version equal to or
        lower than the current one, or than that of a deleted rule with the same
        id, is rejected, so replaying old commands changes nothing.
    ``{"op": "delete", "id": ...}``
        Remove a rule; its state is dropped by the engine on the next call.
    ``{"op": "pause", "id": ...}`` / ``{"op": "resume", "id": ...}``
        Stop evaluating a rule, or start again in the mode it had before the pause
        (``active`` for a rule that was loaded paused). The version is unchanged;
        state is dropped while paused and starts empty on resume.

    Parameters
    ----------
    rules
        The rules, with distinct ids, at most :data:`MAX_RULES`.
    allowed_names
        Field names that rule conditions may use; upserts are checked against
        them.
    """

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        allowed_names: frozenset[str] = BASE_FIELDS,
        *,
        _retired: Mapping[str, int] | None = None,
        _resume_modes: Mapping[str, str] | None = None,
    ) -> None:
        by_id: dict[str, Rule] = {}
        for rule in rules:
            if rule.id in by_id:
                raise RuleError(
                    "appears more than once in the rule set; give each rule its own id",
                    rule.id,
                )
            by_id[rule.id] = rule
        if len(by_id) > MAX_RULES:
            raise RuleError(
                f"rule set has {len(by_id)} rules, more than the limit of "
                f"{MAX_RULES}; retire unused rules first"
            )
        self._rules = dict(sorted(by_id.items()))
        self._allowed_names = frozenset(allowed_names)
        self._retired = dict(_retired or {})
        self._resume_modes = dict(_resume_modes or {})

    @classmethod
    def from_dicts(
        cls,
        objs: Iterable[Mapping[str, Any]],
        allowed_names: frozenset[str] = BASE_FIELDS,
    ) -> RuleSet:
        """A rule set from rule mappings; raises RuleError on the first bad one."""
        return cls([parse_rule(obj, allowed_names) for obj in objs], allowed_names)

    @classmethod
    def from_yaml(
        cls,
        path: str | os.PathLike[str],
        allowed_names: frozenset[str] = BASE_FIELDS,
    ) -> RuleSet:
        """A rule set from a YAML file holding a mapping with a ``rules`` list."""
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
        if not isinstance(document, Mapping) or not isinstance(
            document.get("rules"), list
        ):
            raise RuleError(
                f"{os.fspath(path)}: expected a mapping with a 'rules' list at the "
                "top level"
            )
        extra = [key for key in document if key != "rules"]
        if extra:
            raise RuleError(
                f"{os.fspath(path)}: unknown top-level field(s) "
                f"{', '.join(map(_show, extra))}; only 'rules' is allowed"
            )
        ruleset = cls.from_dicts(document["rules"], allowed_names)
        logger.info("loaded %d rules from %s", len(ruleset), os.fspath(path))
        return ruleset

    @property
    def allowed_names(self) -> frozenset[str]:
        return self._allowed_names

    def __len__(self) -> int:
        return len(self._rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self._rules.values())

    def __contains__(self, rule_id: object) -> bool:
        return rule_id in self._rules

    def get(self, rule_id: str) -> Rule | None:
        return self._rules.get(rule_id)

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rules as mappings, ordered by id; ``from_dicts`` reads them back."""
        return [rule.to_dict() for rule in self._rules.values()]

    def apply(self, command: object) -> tuple[RuleSet, dict[str, Any]]:
        """Apply one rule command; never raises on a bad command.

        Returns the rule set now in force and a status mapping with ``rule_id``,
        ``version``, ``accepted`` and ``reason``. A rejected command returns this
        very set, unchanged.
        """
        try:
            ruleset, status = self._apply(command)
        except RuleError as error:
            rule_id, version = _command_identity(command)
            status = {
                "rule_id": error.rule_id or rule_id,
                "version": version,
                "accepted": False,
                "reason": str(error),
            }
            logger.warning("rule command rejected: %s", status["reason"])
            return self, status
        logger.info(
            "rule command accepted: %s (version %s): %s",
            status["rule_id"],
            status["version"],
            status["reason"],
        )
        return ruleset, status

    def _apply(self, command: object) -> tuple[RuleSet, dict[str, Any]]:
        if not isinstance(command, Mapping):
            raise RuleError(
                f"a rule command must be a mapping with an 'op', got {_show(command)}"
            )
        op = command.get("op")
        if op == "upsert":
            _only_command_fields(command, ("op", "rule"))
            return self._upsert(command.get("rule"))
        if op in ("delete", "pause", "resume"):
            _only_command_fields(command, ("op", "id"))
            rule_id = command.get("id")
            rule = self._rules.get(rule_id) if isinstance(rule_id, str) else None
            if rule is None:
                raise RuleError(
                    f"{op}: no rule with id {_show(rule_id)} is in force; check the "
                    "id against the rule set"
                )
            if op == "delete":
                return self._delete(rule)
            return self._set_paused(rule, op == "pause")
        raise RuleError(
            f"unknown command op {_show(op)}; use upsert, delete, pause or resume"
        )

    def _upsert(self, obj: object) -> tuple[RuleSet, dict[str, Any]]:
        if not isinstance(obj, Mapping):
            raise RuleError(f"upsert: 'rule' must be a mapping, got {_show(obj)}")
        rule = parse_rule(obj, self._allowed_names)
        current = self._rules.get(rule.id)
        floor = current.version if current is not None else self._retired.get(rule.id)
        if floor is not None and rule.version <= floor:
            raise RuleError(
                f"upsert: version {rule.version} is not higher than version {floor} "
                "already seen for this rule; raise the version to change the rule",
                rule.id,
            )
        if len(self._rules) >= MAX_RULES and current is None:
            raise RuleError(
                f"upsert: the rule set already holds {MAX_RULES} rules; delete one "
                "first",
                rule.id,
            )
        rules = {**self._rules, rule.id: rule}
        resume_modes = {k: v for k, v in self._resume_modes.items() if k != rule.id}
        reason = (
            "created"
            if current is None
            else f"replaced version {current.version} with {rule.version}"
        )
        return self._evolve(rules, resume_modes=resume_modes), _status(rule, reason)

    def _delete(self, rule: Rule) -> tuple[RuleSet, dict[str, Any]]:
        rules = {k: v for k, v in self._rules.items() if k != rule.id}
        retired = {**self._retired, rule.id: rule.version}
        resume_modes = {k: v for k, v in self._resume_modes.items() if k != rule.id}
        ruleset = self._evolve(rules, retired=retired, resume_modes=resume_modes)
        return ruleset, _status(rule, "deleted")

    def _set_paused(self, rule: Rule, pause: bool) -> tuple[RuleSet, dict[str, Any]]:
        if pause == (rule.mode == "paused"):
            state = "paused" if pause else "not paused"
            return self, _status(rule, f"already {state}; nothing changed")
        if pause:
            changed = rule.with_mode("paused")
            resume_modes = {**self._resume_modes, rule.id: rule.mode}
            reason = "paused"
        else:
            changed = rule.with_mode(self._resume_modes.get(rule.id, "active"))
            resume_modes = {k: v for k, v in self._resume_modes.items() if k != rule.id}
            reason = f"resumed in mode {changed.mode}"
        rules = {**self._rules, rule.id: changed}
        return self._evolve(rules, resume_modes=resume_modes), _status(changed, reason)

    def _evolve(
        self,
        rules: Mapping[str, Rule],
        *,
        retired: Mapping[str, int] | None = None,
        resume_modes: Mapping[str, str] | None = None,
    ) -> RuleSet:
        return RuleSet(
            rules.values(),
            self._allowed_names,
            _retired=self._retired if retired is None else retired,
            _resume_modes=(
                self._resume_modes if resume_modes is None else resume_modes
            ),
        )


def _only_command_fields(command: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = [key for key in command if key not in allowed]
    if unknown:
        raise RuleError(
            f"{command.get('op')}: unknown command field(s) "
            f"{', '.join(map(_show, unknown))}; allowed: {', '.join(allowed)}"
        )


def _command_identity(command: object) -> tuple[str | None, int | None]:
    """Best-effort rule id and version of a command, for its status."""
    if not isinstance(command, Mapping):
        return None, None
    rule = command.get("rule")
    source = rule if isinstance(rule, Mapping) else command
    rule_id = source.get("id")
    version = source.get("version")
    return (
        rule_id if isinstance(rule_id, str) else None,
        version if isinstance(version, int) and not isinstance(version, bool) else None,
    )


def _status(rule: Rule, reason: str) -> dict[str, Any]:
    return {
        "rule_id": rule.id,
        "version": rule.version,
        "accepted": True,
        "reason": reason,
    }


# ---------------------------------------------------------------------------
# Keyed evaluation


class RuleEngine:
    """Evaluates the rules of a :class:`RuleSet` for one key at a time.

    The caller keeps one state per key (the Flink job: keyed state per card and
    per terminal) and passes it in with each event; :meth:`evaluate` returns the
    new state and the rule hits. The engine itself holds no per-key data.

    State layout
    ------------
    None, or a dict from rule id to ``(version, times, values)``: the rule's
    version when the entries were stored, the event times (epoch ms, ascending)
    of the transactions it remembers, and for ``sum``/``mean``/``max`` their
    values (else None). Condition rules keep nothing. Only ints, floats, lists,
    tuples and dicts appear, so the state pickles small and fast.

    Bounds
    ------
    Entries older than the rule's ``window``/``within`` before the newest event
    time seen for the key are dropped on every call, each rule keeps at most
    :data:`MAX_EVENTS_PER_RULE` entries (the oldest go first, so counts saturate
    there), and the state of rules that were deleted, paused, changed version or
    belong to the other key kind is dropped. :meth:`next_expiry_ms` and
    :meth:`expire` let a timer clear the state of keys that went quiet.

    Event time and late events
    --------------------------
    Windows are ``[t - span, t]`` in event time, both ends included. Events may
    arrive out of order: each is inserted at its event time and evaluated over
    the window ending at its own time. An event older than ``span`` before the
    newest one seen sees only what is still retained and is not stored.

    Parameters
    ----------
    ruleset
        The rules in force. Build a new engine when the rule set changes; state
        from the previous engine carries over for rules whose version is
        unchanged.

    Example
    -------
    >>> ruleset = RuleSet.from_dicts([{
    ...     "id": "card-velocity", "version": 1, "kind": "aggregate",
    ...     "description": "Three payments within a minute.", "severity": "low",
    ...     "key": "card", "aggregate": "count", "window": "1m", "threshold": 3,
    ... }])
    >>> engine = RuleEngine(ruleset)
    >>> state = None
    >>> for second in (0, 20, 40):
    ...     event = {"event_time_ms": 1_700_000_000_000 + second * 1_000}
    ...     state, hits = engine.evaluate("card", state, event)
    >>> hits[0]["reason"]
    '3 transactions within 1m on this card (limit 3)'
    >>> engine.next_expiry_ms(state)
    1700000060001
    """

    def __init__(self, ruleset: RuleSet) -> None:
        self._ruleset = ruleset
        self._by_key: dict[str, tuple[Rule, ...]] = {
            key: tuple(
                rule for rule in ruleset if rule.key == key and rule.mode != "paused"
            )
            for key in KEYS
        }
        self._stateful: dict[str, Rule] = {
            rule.id: rule
            for rules in self._by_key.values()
            for rule in rules
            if rule.span_ms
        }

    @property
    def ruleset(self) -> RuleSet:
        return self._ruleset

    def evaluate(
        self, key_kind: str, state: State | None, event: Mapping[str, Any]
    ) -> tuple[State | None, list[dict[str, Any]]]:
        """Evaluate the active and shadow rules keyed by ``key_kind`` on ``event``.

        Parameters
        ----------
        key_kind
            ``"card"`` or ``"terminal"``: which rules to run, and which entity
            ``state`` belongs to.
        state
            What this method returned for the previous event of the same key, or
            None. It is not modified.
        event
            The transaction and its feature values; must have an integer
            ``event_time_ms``. ``hour`` (UTC) is derived from it if absent.

        Returns
        -------
        The new state (None when nothing needs keeping) and the rule hits, each a
        dict with ``rule_id``, ``version``, ``severity``, ``mode`` and
        ``reason``, ordered by rule id. Shadow hits have mode ``"shadow"``; they
        are for recording, never for alerting.

        Raises
        ------
        ValidationError
            If ``key_kind`` is unknown or ``event_time_ms`` is missing or not an
            integer.
        """
        if key_kind not in _KEY_FIELD:
            raise ValidationError(
                "unknown_key_kind",
                f"key_kind must be 'card' or 'terminal', got {_show(key_kind)}",
            )
        now = _event_time(event)
        env = event if "hour" in event else {**event, "hour": now // 3_600_000 % 24}
        previous = state or {}
        new_state: State = {}
        hits: list[dict[str, Any]] = []

        for rule in self._by_key[key_kind]:
            if isinstance(rule, ConditionRule):
                if rule.when.holds(env):
                    hits.append(_hit(rule, _condition_reason(rule, env)))
                continue
            entry = previous.get(rule.id)
            if entry is None or entry[0] != rule.version:
                times, values = [], None
            else:
                times, values = list(entry[1]), entry[2]
                values = None if values is None else list(values)
            if isinstance(rule, AggregateRule):
                times, values, reason = _aggregate_step(
                    rule, key_kind, env, now, times, values
                )
            else:
                times, reason = _sequence_step(rule, key_kind, env, now, times)
            if reason is not None:
                hits.append(_hit(rule, reason))
            if times:
                new_state[rule.id] = (rule.version, times, values)

        return (new_state or None), hits

    def expire(self, state: State | None, now_ms: int) -> State | None:
        """Drop what no rule can use once event time has reached ``now_ms``.

        Removes entries older than each rule's span before ``now_ms`` and the
        state of rules no longer evaluated (or at another version). Returns None
        when nothing is left. ``state`` is not modified.
        """
        if not state:
            return None
        kept: State = {}
        for rule_id, (version, times, values) in state.items():
            rule = self._stateful.get(rule_id)
            if rule is None or rule.version != version:
                continue
            start = bisect.bisect_left(times, now_ms - rule.span_ms)
            if start < len(times):
                kept[rule_id] = (
                    version,
                    times[start:],
                    None if values is None else values[start:],
                )
        return kept or None

    def next_expiry_ms(self, state: State | None) -> int | None:
        """The earliest event time at which :meth:`expire` would drop something.

        None when the state is empty. State of rules no longer evaluated is due
        at once (its oldest entry's time), so one timer cleans it up.
        """
        if not state:
            return None
        due: list[int] = []
        for rule_id, (version, times, _values) in state.items():
            if not times:
                continue
            rule = self._stateful.get(rule_id)
            if rule is None or rule.version != version:
                due.append(times[0])
            else:
                due.append(times[0] + rule.span_ms + 1)
        return min(due) if due else None


def _event_time(event: Mapping[str, Any]) -> int:
    value = event.get("event_time_ms") if isinstance(event, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(
            "missing_event_time",
            "event field 'event_time_ms' must be an integer (epoch milliseconds, "
            f"UTC), got {_show(value)}; set it from the transaction's event time",
        )
    return int(value)


def _aggregate_step(
    rule: AggregateRule,
    key_kind: str,
    env: Mapping[str, Any],
    now: int,
    times: list[int],
    values: list[float] | None,
) -> tuple[list[int], list[float] | None, str | None]:
    """Insert the event if it passes, evaluate the window, then trim the history."""
    reason = None
    value = None
    passes = rule.when.holds(env)
    if passes and rule.of is not None:
        value = env.get(rule.of)
        passes = (
            not isinstance(value, bool)
            and isinstance(value, numbers.Real)
            and math.isfinite(value)
        )

    if passes:
        at = bisect.bisect_right(times, now)
        times.insert(at, now)
        if rule.of is not None:
            values = values if values is not None else []
            values.insert(at, float(value))
        low = bisect.bisect_left(times, now - rule.window_ms)
        high = at + 1
        result = _aggregate(rule.aggregate, high - low, values, low, high)
        if rule.op == ">=":
            fires = result >= rule.threshold
        else:
            fires = result > rule.threshold
        if fires:
            reason = _aggregate_reason(rule, key_kind, high - low, result)

    times, values = _trim(times, values, rule.window_ms)
    return times, values, reason


def _aggregate(
    aggregate: str, count: int, values: list[float] | None, low: int, high: int
) -> float:
    if aggregate == "count":
        return count
    window = values[low:high]
    if aggregate == "sum":
        return math.fsum(window)
    if aggregate == "mean":
        return math.fsum(window) / len(window)
    return max(window)


def _sequence_step(
    rule: SequenceRule,
    key_kind: str,
    env: Mapping[str, Any],
    now: int,
    times: list[int],
) -> tuple[list[int], str | None]:
    """Check ``then`` against the earlier matches, then record a ``first`` match."""
    reason = None
    if rule.then_when.holds(env):
        low = bisect.bisect_left(times, now - rule.within_ms)
        high = bisect.bisect_right(times, now)
        if high - low >= rule.first_count:
            reason = _sequence_reason(rule, key_kind, high - low, env)
    if rule.first_when.holds(env):
        bisect.insort_right(times, now)
    times, _ = _trim(times, None, rule.within_ms)
    return times, reason


def _trim(
    times: list[int], values: list[float] | None, span_ms: int
) -> tuple[list[int], list[float] | None]:
    """Keep entries within ``span_ms`` of the newest, at most the per-rule cap."""
    if not times:
        return times, values
    start = bisect.bisect_left(times, times[-1] - span_ms)
    start = max(start, len(times) - MAX_EVENTS_PER_RULE)
    if start:
        times = times[start:]
        values = None if values is None else values[start:]
    return times, values


def _hit(rule: Rule, reason: str) -> dict[str, Any]:
    return {
        "rule_id": rule.id,
        "version": rule.version,
        "severity": rule.severity,
        "mode": rule.mode,
        "reason": reason,
    }


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.4g}"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _values_of(expression: Expression, env: Mapping[str, Any], limit: int = 5) -> str:
    shown = sorted(expression.names)[:limit]
    return ", ".join(f"{name}={_format_value(env.get(name))}" for name in shown)


def _condition_reason(rule: ConditionRule, env: Mapping[str, Any]) -> str:
    values = _values_of(rule.when, env)
    return f"{rule.when.text.strip()}" + (f" ({values})" if values else "")


def _aggregate_reason(
    rule: AggregateRule, key_kind: str, count: int, result: float
) -> str:
    window = format_duration(rule.window_ms)
    limit = _format_value(rule.threshold)
    limit = limit if rule.op == ">=" else f"above {limit}"
    noun = "transaction" if count == 1 else "transactions"
    if rule.aggregate == "count":
        return f"{count} {noun} within {window} on this {key_kind} (limit {limit})"
    label = {"sum": "total", "mean": "mean", "max": "largest"}[rule.aggregate]
    return (
        f"{label} {rule.of} {_format_value(float(result))} over {count} {noun} "
        f"within {window} on this {key_kind} (limit {limit})"
    )


def _sequence_reason(
    rule: SequenceRule, key_kind: str, count: int, env: Mapping[str, Any]
) -> str:
    values = _values_of(rule.then_when, env)
    return (
        f"{count} transactions with {rule.first_when.text.strip()} then one with "
        f"{rule.then_when.text.strip()}"
        + (f" ({values})" if values else "")
        + f" within {format_duration(rule.within_ms)} on this {key_kind}"
    )
