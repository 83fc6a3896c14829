"""Back-testing of detection rules against labelled historical transactions.

Runs :class:`udfs.rules.RuleEngine` over events in event-time order exactly as the
Flink job does (card-keyed rules keyed by ``card_id``, terminal-keyed rules by
``terminal_id``, state expired by event-time timers) and counts, per rule, how many
transactions it flagged and how many of those were labelled fraudulent.
"""

from __future__ import annotations

import heapq
import numbers
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from udfs.errors import ValidationError
from udfs.rules import RuleEngine, RuleSet

ANY_ACTIVE = "(any active rule)"
"""``rule_id`` of the summary row; it cannot clash with a real rule id."""

_KEY_FIELD = {"card": "card_id", "terminal": "terminal_id"}
_END = object()


def backtest(
    ruleset: RuleSet,
    events: Iterable[Mapping[str, Any]],
    labels: Mapping[str, object] | Iterable[object],
) -> list[dict[str, Any]]:
    """Evaluate every rule of ``ruleset`` on ``events`` and score it on ``labels``.

    Parameters
    ----------
    ruleset
        The rules to test, in any mode. Paused rules get a row with no hits.
    events
        Event mappings as :meth:`RuleEngine.evaluate` takes them (with
        ``card_id`` and ``terminal_id`` for the key kinds in use), in
        non-decreasing ``event_time_ms`` order. Consumed once, in one pass.
    labels
        Either a mapping from ``transaction_id`` to a truthy value for fraud
        (absent ids count as genuine), or an iterable of truthy values aligned
        with ``events``.

    Returns
    -------
    One row per rule, ordered by rule id, then a row with ``rule_id``
    :data:`ANY_ACTIVE` counting transactions flagged by at least one active rule
    (shadow hits are left out of it, as they never alert). Each row has
    ``rule_id``, ``version``, ``mode``, ``hits``, ``true_positives``,
    ``precision`` (true positives over hits, None without hits) and ``recall``
    (true positives over all fraudulent events, None without any).

    Raises
    ------
    ValidationError
        If events go back in time, lack a key field, or the aligned labels run out
        or outlast the events.

    Time is linear in the number of events for a fixed rule set, apart from a
    logarithmic factor for the expiry timers; memory grows with the number of
    distinct keys active within the longest rule span.
    """
    engine = RuleEngine(ruleset)
    rules = list(ruleset)
    kinds = [
        k for k in _KEY_FIELD if any(r.key == k and r.mode != "paused" for r in rules)
    ]
    hits = {rule.id: 0 for rule in rules}
    true_positives = {rule.id: 0 for rule in rules}
    any_hits = any_true_positives = positives = 0

    states: dict[tuple[str, object], Any] = {}
    timers = _Timers()
    label_of = _Labels(labels)
    last_time: int | None = None

    for index, event in enumerate(events):
        now = _event_time(event, index, last_time)
        last_time = now
        for slot, due in timers.pop_due(now):
            state = engine.expire(states.get(slot), due)
            _store(states, timers, engine, slot, state)

        fraud = label_of(index, event)
        positives += fraud
        flagged_active = False
        for kind in kinds:
            slot = (kind, _key_of(event, kind, index))
            state, rule_hits = engine.evaluate(kind, states.get(slot), event)
            _store(states, timers, engine, slot, state)
            for hit in rule_hits:
                hits[hit["rule_id"]] += 1
                true_positives[hit["rule_id"]] += fraud
                flagged_active = flagged_active or hit["mode"] == "active"
        if flagged_active:
            any_hits += 1
            any_true_positives += fraud

    label_of.finish()
    rows = [
        _row(r.id, r.version, r.mode, hits[r.id], true_positives[r.id], positives)
        for r in rules
    ]
    rows.append(
        _row(ANY_ACTIVE, None, "active", any_hits, any_true_positives, positives)
    )
    return rows


def _row(
    rule_id: str,
    version: int | None,
    mode: str,
    hits: int,
    true_positives: int,
    positives: int,
) -> dict[str, Any]:
    return {
        "rule_id": rule_id,
        "version": version,
        "mode": mode,
        "hits": hits,
        "true_positives": true_positives,
        "precision": true_positives / hits if hits else None,
        "recall": true_positives / positives if positives else None,
    }


def _event_time(event: Mapping[str, Any], index: int, last_time: int | None) -> int:
    now = event.get("event_time_ms")
    if isinstance(now, bool) or not isinstance(now, numbers.Integral):
        raise ValidationError(
            "missing_event_time",
            f"event {index} has event_time_ms {now!r}; every event needs an integer "
            "event time in epoch milliseconds",
        )
    if last_time is not None and now < last_time:
        raise ValidationError(
            "events_not_sorted",
            f"event {index} has event_time_ms {now}, earlier than the {last_time} "
            "before it; sort the events by event time before back-testing",
        )
    return int(now)


def _key_of(event: Mapping[str, Any], kind: str, index: int) -> object:
    key = event.get(_KEY_FIELD[kind])
    if key is None:
        raise ValidationError(
            "missing_key",
            f"event {index} has no {_KEY_FIELD[kind]!r}, which {kind}-keyed rules "
            "need; fill it in or drop those rules from the back-test",
        )
    return key


def _store(
    states: dict[tuple[str, object], Any],
    timers: _Timers,
    engine: RuleEngine,
    slot: tuple[str, object],
    state: Any,
) -> None:
    if state is None:
        states.pop(slot, None)
        timers.cancel(slot)
        return
    states[slot] = state
    timers.register(slot, engine.next_expiry_ms(state))


class _Timers:
    """One event-time timer per key, like the Flink operator registers."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, tuple[str, object]]] = []
        self._due: dict[tuple[str, object], int] = {}
        self._sequence = 0  # breaks ties so keys of mixed types never compare

    def register(self, slot: tuple[str, object], due: int | None) -> None:
        if due is None:
            self.cancel(slot)
        elif self._due.get(slot) != due:
            self._due[slot] = due
            self._sequence += 1
            heapq.heappush(self._heap, (due, self._sequence, slot))

    def cancel(self, slot: tuple[str, object]) -> None:
        self._due.pop(slot, None)

    def pop_due(self, now: int) -> Iterator[tuple[tuple[str, object], int]]:
        """Timers due at or before ``now``; stale entries are skipped."""
        while self._heap and self._heap[0][0] <= now:
            due, _, slot = heapq.heappop(self._heap)
            if self._due.get(slot) == due:
                del self._due[slot]
                yield slot, due


class _Labels:
    """Gives 1 for a fraudulent event and 0 otherwise, from either label form."""

    def __init__(self, labels: Mapping[str, object] | Iterable[object]) -> None:
        self._mapping = labels if isinstance(labels, Mapping) else None
        self._iterator = None if self._mapping is not None else iter(labels)
        self._count = 0

    def __call__(self, index: int, event: Mapping[str, Any]) -> int:
        if self._mapping is not None:
            return int(bool(self._mapping.get(event.get("transaction_id"))))
        try:
            label = next(self._iterator)
        except StopIteration:
            raise ValidationError(
                "labels_too_short",
                f"labels ran out at event {index}; pass one label per event, or a "
                "mapping from transaction_id to label",
            ) from None
        self._count += 1
        return int(bool(label))

    def finish(self) -> None:
        if self._iterator is not None and next(self._iterator, _END) is not _END:
            raise ValidationError(
                "labels_too_long",
                f"there are more labels than the {self._count} events; pass one "
                "label per event",
            )


def _events(frame, matrix, names) -> Iterator[dict[str, Any]]:
    columns = zip(
        frame["transaction_id"].to_numpy(),
        frame["event_time_ms"].to_numpy(),
        frame["card_id"].to_numpy(),
        frame["terminal_id"].to_numpy(),
        strict=True,
    )
    for row, (tx, t, card, terminal) in zip(matrix, columns, strict=True):
        event = dict(zip(names, row.tolist(), strict=True))
        event.update(
            transaction_id=str(tx),
            event_time_ms=int(t),
            card_id=str(card),
            terminal_id=str(terminal),
            currency="EUR",
        )
        yield event


def main(argv: list[str] | None = None) -> int:
    """``txwatch rules backtest --rules FILE --data FILE... [--from D --to D]``."""
    import argparse

    from udfs.features import FEATURE_NAMES
    from udfs.rules import BASE_FIELDS

    from .dataset import compute_features, load_handbook

    parser = argparse.ArgumentParser(prog="txwatch rules")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("backtest", help="hits, precision and recall of each rule")
    p.add_argument("--rules", required=True, help="rule pack (YAML)")
    p.add_argument("--data", required=True, nargs="+", help="handbook CSV files")
    p.add_argument("--from", dest="start", help="first day, inclusive (YYYY-MM-DD)")
    p.add_argument("--to", dest="end", help="last day, exclusive (YYYY-MM-DD)")
    p.add_argument("--label-delay-days", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    ruleset = RuleSet.from_yaml(args.rules, BASE_FIELDS | frozenset(FEATURE_NAMES))
    frame = load_handbook(args.data, args.start, args.end)
    matrix, duplicates, _ = compute_features(
        frame, args.label_delay_days, progress=True
    )
    keep = ~duplicates
    frame, matrix = frame[keep], matrix[keep]
    rows = backtest(
        ruleset,
        _events(frame, matrix, FEATURE_NAMES),
        frame["label"].to_numpy().tolist(),
    )
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(frame):,} transactions, {int(frame['label'].sum()):,} fraudulent")
    print(
        f"{'rule':<28}{'ver':>4} {'mode':<7}{'hits':>9}{'true pos':>10}"
        f"{'precision':>11}{'recall':>9}"
    )
    for row in rows:
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        version = "" if row["version"] is None else row["version"]
        print(
            f"{row['rule_id']:<28}{version:>4} {row['mode']:<7}{row['hits']:>9,}"
            f"{row['true_positives']:>10,}{precision:>11}{recall:>9}"
        )
    return 0
