"""The job's Python work per transaction, each piece timed on its own.

The pieces run in this process on real messages, one core, in the order the
job runs them:

``parse``                 ``udfs.contract.parse`` of the JSON message
``Row(VALID)``            building the row the validation emits
``features``              card then terminal features with pickled state
                          (``bench.featurepath``)
``Validate``, ``CardHistory``, ``TerminalHistory``
                          the job's operator functions themselves
                          (``jobs.operators``), called with stand-ins for
                          Flink's context and state: features, rules, dead
                          letters, rows, JSON, pickled state
``ScoreBatch.eval``       the pandas scoring function on a batch of
                          ``FEATURED`` columns, per graph (skl2onnx, compact)
``Arrow round trip``      a scored batch to an Arrow record batch and back,
                          what the pandas function's worker adds per batch

What the pieces cannot show is Flink's side: moving each row between the
JVM and Python (thread mode converts every field), the network between
operator chains, the Beam runner of the pandas function, the JDBC and Kafka
sinks, checkpoints. The difference between the job's CPU time per row and
the sum of the pieces is that side.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import pandas as pd

from bench.featurepath import FeaturePath
from txwatch.config import PROJECT_ROOT, ContractLimits

logger = logging.getLogger(__name__)

RULES_FILE = PROJECT_ROOT / "conf" / "rules" / "starter.yaml"


def run(
    messages: list[bytes],
    limits: ContractLimits,
    model_dirs: dict[str, Path],
    batch_size: int,
    progress,
) -> dict:
    texts = [m.decode() for m in messages]
    micros: dict[str, float | None] = {}
    notes: dict[str, str] = {}

    micros["parse"] = _per_item(lambda: [_parse(t, limits) for t in texts], len(texts))
    parsed = [_parse(t, limits) for t in texts]
    micros["Row(VALID)"] = _per_item(
        lambda: [_valid_row(tx) for tx in parsed], len(parsed)
    )
    micros["features (pickled state)"] = _per_item(
        lambda: _features(parsed), len(parsed), repeats=1
    )

    featured = None
    try:
        operator_micros, featured = _operators(texts, limits)
        micros.update(operator_micros)
    except Exception as exc:  # the operators' Flink API may change under us
        notes["operators"] = f"not measured: {type(exc).__name__}: {exc}"
        logger.warning("operator functions not timed: %s", exc)

    if featured is not None:
        for graph, model_dir in model_dirs.items():
            try:
                batch = _score_batch(featured, model_dir, batch_size)
                micros[f"ScoreBatch.eval, {graph} graph"] = batch["eval"]
                micros[f"  of which scoring, {graph}"] = batch["score"]
                micros[f"  of which explanations, {graph}"] = batch["explain"]
                if "arrow" in batch:
                    micros["Arrow round trip"] = batch["arrow"]
            except Exception as exc:
                notes[f"score {graph}"] = f"not measured: {type(exc).__name__}: {exc}"
                logger.warning("scoring function not timed: %s", exc)

    for name, value in micros.items():
        shown = f"{value:8.1f} us" if value is not None else "        -"
        progress(f"pieces  {name:<40} {shown} per transaction")
    for name, note in notes.items():
        progress(f"pieces  {name}: {note}")
    return {"micros_per_transaction": micros, "notes": notes, "messages": len(texts)}


def _per_item(call, items: int, repeats: int = 3) -> float:
    """Median microseconds per item of ``call()`` over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / items * 1e6


def _parse(text: str, limits: ContractLimits):
    from udfs.contract import Rejection, parse

    tx = parse(text, limits)
    if isinstance(tx, Rejection):
        raise ValueError(f"a handbook message was rejected: {tx.reason} ({tx.detail})")
    return tx


def _valid_row(tx):
    from pyflink.common import Row

    return Row(
        tx.transaction_id,
        tx.event_time_ms,
        tx.card_id,
        tx.terminal_id,
        tx.amount,
        tx.original_amount,
        tx.currency,
    )


def _features(parsed) -> None:
    path = FeaturePath(pickled=True)
    for tx in parsed:
        path.update(
            tx.transaction_id, tx.event_time_ms, tx.card_id, tx.terminal_id, tx.amount
        )


# -- the operator functions with stand-ins for Flink -------------------------------


class _Counter:
    def inc(self, n: int = 1) -> None:
        pass


class _Metrics:
    def counter(self, name: str) -> _Counter:
        return _Counter()


class _ValueState:
    """Keyed value state that pickles, like ``Types.PICKLED_BYTE_ARRAY``."""

    def __init__(self):
        self.values: dict = {}
        self.key = None

    def value(self):
        import pickle

        blob = self.values.get(self.key)
        return None if blob is None else pickle.loads(blob)

    def update(self, value) -> None:
        import pickle

        self.values[self.key] = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


class _RuntimeContext:
    def __init__(self):
        self.states: list[_ValueState] = []

    def get_metrics_group(self):
        return _Metrics()

    def get_state(self, descriptor):
        state = _ValueState()
        self.states.append(state)
        return state

    def get_index_of_this_subtask(self) -> int:
        return 0


class _BroadcastState:
    def get(self, key):
        return None


class _TimerService:
    def current_watermark(self) -> int:
        return -(2**63)


class _Context:
    def __init__(self):
        self.time = 0

    def timestamp(self) -> int:
        return self.time

    def timer_service(self):
        return _TimerService()

    def get_broadcast_state(self, descriptor):
        return _BroadcastState()


def _operators(texts: list[str], limits: ContractLimits):
    """Per-transaction microseconds of each operator function; FEATURED rows."""
    from jobs.operators import RULE_NAMES, CardHistory, TerminalHistory, Validate
    from udfs.rules import RuleSet

    rules = RuleSet.from_yaml(RULES_FILE, RULE_NAMES).to_dicts()
    validate = Validate(limits, 30 * 24 * 3_600_000)
    card = CardHistory(rules)
    terminal = TerminalHistory(rules, 7)
    contexts = {}
    for name, function in (
        ("validate", validate),
        ("card", card),
        ("terminal", terminal),
    ):
        contexts[name] = _RuntimeContext()
        function.open(contexts[name])
    ctx = _Context()

    def step(function, runtime, key, value):
        for state in runtime.states:
            state.key = key
        ctx.time = value[1]
        return [out for out in function.process_element(value, ctx) if not _side(out)]

    valid, timings = [], {}
    started = time.perf_counter()
    for text in texts:
        valid += [
            routed[1] for routed in step(validate, contexts["validate"], None, text)
        ]
    timings["Validate (operator function)"] = time.perf_counter() - started

    carded = []
    started = time.perf_counter()
    for row in valid:
        carded += [routed[1] for routed in step(card, contexts["card"], row[2], row)]
    timings["CardHistory (operator function)"] = time.perf_counter() - started

    featured = []
    started = time.perf_counter()
    for row in carded:
        featured += step(terminal, contexts["terminal"], row[3], row)
    timings["TerminalHistory (operator function)"] = time.perf_counter() - started
    return {
        name: seconds / len(texts) * 1e6 for name, seconds in timings.items()
    }, featured


def _side(out) -> bool:
    """Side outputs are ``(tag, value)`` pairs; the main output is a Row."""
    return isinstance(out, tuple) and len(out) == 2 and not hasattr(out, "_fields")


def _score_batch(featured: list, model_dir: Path, batch_size: int) -> dict:
    from jobs import records
    from jobs.scoring_udf import ScoreBatch

    function = ScoreBatch(str(model_dir))
    function.open(None)
    scorer, explainer = function.watcher.get()
    names = list(records.FEATURED_NAMES)
    batches = []
    for start in range(0, len(featured) - batch_size + 1, batch_size):
        frame = pd.DataFrame(
            [list(row) for row in featured[start : start + batch_size]], columns=names
        )
        batches.append([frame[name] for name in names])
    if not batches:
        raise ValueError(
            f"{len(featured):,} featured rows do not fill one batch of {batch_size:,}"
        )
    rows = len(batches) * batch_size

    started = time.perf_counter()
    outputs = [function.eval(*columns) for columns in batches]
    eval_seconds = time.perf_counter() - started

    frames = [pd.concat(columns, axis=1).set_axis(names, axis=1) for columns in batches]
    started = time.perf_counter()
    decisions = [scorer.decide(frame) for frame in frames]
    score_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for decision in decisions:
        explainer.explain(decision.explained[decision.alerts])
    explain_seconds = time.perf_counter() - started

    result = {
        "eval": eval_seconds / rows * 1e6,
        "score": score_seconds / rows * 1e6,
        "explain": explain_seconds / rows * 1e6,
    }
    try:
        import pyarrow as pa

        started = time.perf_counter()
        for output in outputs:
            pa.RecordBatch.from_pandas(output, preserve_index=False).to_pandas()
        result["arrow"] = (time.perf_counter() - started) / rows * 1e6
    except ImportError:
        pass
    return result
