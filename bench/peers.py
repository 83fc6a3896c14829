"""Two plain Kafka consumers that do the job's work record by record.

Both read the same transactions topic from the same broker as the job,
validate each message with ``udfs.contract.parse``, update the card and
terminal features with ``udfs.features`` (state in a dict, no pickling),
score the record on its own, and produce an alert to a Kafka topic when the
score reaches the threshold:

``sklearn``  the job's forest, ``score_samples`` on a one-row matrix;
``river``    River's ``HalfSpaceTrees`` (its defaults: 10 trees of height 8,
             window 250) on the feature dict scaled by ``MinMaxScaler``,
             ``score_one`` then ``learn_one`` for every record, alerting above
             the running 99.5 % quantile of its scores (``QuantileFilter``),
             the job's target alert rate.

Neither reads the feedback topic (labels are under 1 % of the messages) nor
writes PostgreSQL, and alerts are produced at-least-once, not in Kafka
transactions: the peers do less than the job, which favours them.

Throughput is measured over a fixed number of records chosen before the run
from a short calibration so that the run lasts at least ``min_seconds`` (at
most every record of the input topic): from the first record received to the
last alert acknowledged by the broker.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.featurepath import FeaturePath
from txwatch.replay import make_producer
from udfs.contract import ContractLimits, Rejection, parse

logger = logging.getLogger(__name__)

CALIBRATION_RECORDS = {"sklearn": 300, "river": 3_000}
ALERT_QUANTILE = 0.995


@dataclass(frozen=True)
class PeerResult:
    name: str
    records: int
    seconds: float
    alerts: int
    duplicates: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds


class SklearnScorer:
    """The job's forest, one record at a time."""

    def __init__(self, forest, threshold: float):
        self.forest = forest
        self.threshold = threshold

    def __call__(self, features: dict[str, float], names) -> tuple[float, bool]:
        row = np.array([[features[name] for name in names]])
        score = float(-self.forest.score_samples(row)[0])
        return score, score >= self.threshold


class RiverScorer:
    """Half-space trees on min-max scaled features, learning as they score."""

    def __init__(self, seed: int = 7):
        from river import anomaly, compose, preprocessing

        detector = compose.Pipeline(
            preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed)
        )
        self.model = anomaly.QuantileFilter(detector, q=ALERT_QUANTILE)

    def __call__(self, features: dict[str, float], names) -> tuple[float, bool]:
        x = {name: features[name] for name in names}
        score = self.model.score_one(x)
        alert = bool(self.model.classify(score))
        self.model.learn_one(x)
        return float(score), alert


def make_scorer(name: str, forest, threshold: float):
    if name == "sklearn":
        return SklearnScorer(forest, threshold)
    if name == "river":
        return RiverScorer()
    raise ValueError(f"peer must be 'sklearn' or 'river', got {name!r}")


def calibrate(name: str, forest, threshold, messages, names, limits) -> float:
    """Records a second of the peer's per-record work, without Kafka."""
    scorer = make_scorer(name, forest, threshold)
    process = _processor(scorer, names, limits)
    sample = messages[: CALIBRATION_RECORDS[name]]
    started = time.perf_counter()
    for value in sample:
        process(value)
    return len(sample) / (time.perf_counter() - started)


def records_for(rate: float, min_seconds: float, available: int) -> int:
    """A record count that keeps a peer busy ``min_seconds`` at ``rate``.

    Capped at what the input topic holds; the run's seconds then say whether
    the minimum was reached.
    """
    wanted = math.ceil(rate * min_seconds * 1.25 / 1_000) * 1_000
    if wanted > available:
        logger.warning(
            "a %.0f s run needs %d records, the input topic holds %d; using them all",
            min_seconds,
            wanted,
            available,
        )
    return min(wanted, available)


def run_peer(
    name: str,
    forest,
    threshold: float,
    names,
    limits: ContractLimits,
    bootstrap_servers: str,
    transactions_topic: str,
    alerts_topic: str,
    records: int,
) -> PeerResult:
    """Consume ``records`` transactions, score each, produce alerts; time it."""
    from kafka import KafkaConsumer, TopicPartition

    scorer = make_scorer(name, forest, threshold)
    process = _processor(scorer, names, limits)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_poll_records=2_000,
    )
    producer = make_producer(bootstrap_servers)
    partitions = [
        TopicPartition(transactions_topic, p)
        for p in sorted(consumer.partitions_for_topic(transactions_topic) or [])
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)

    seen = alerts = duplicates = 0
    started = None
    try:
        while seen < records:
            batches = consumer.poll(timeout_ms=1_000)
            if started is None and batches:
                started = time.perf_counter()
            for batch in batches.values():
                for message in batch:
                    if seen >= records:
                        break
                    seen += 1
                    outcome = process(message.value)
                    if outcome is None:
                        duplicates += 1
                    elif outcome[1] is not None:
                        producer.send(alerts_topic, key=outcome[0], value=outcome[1])
                        alerts += 1
            if started is not None and not batches:
                raise RuntimeError(
                    f"the {name} peer ran out of input after {seen:,} of "
                    f"{records:,} records"
                )
        producer.flush()
        seconds = time.perf_counter() - started
    finally:
        producer.close()
        consumer.close()
    return PeerResult(name, seen, seconds, alerts, duplicates)


def _processor(scorer, names, limits: ContractLimits) -> Callable:
    """Per message: ``None`` for a duplicate or rejection, else (key, alert or None)."""
    path = FeaturePath()

    def process(value: bytes):
        tx = parse(value, limits)
        if isinstance(tx, Rejection):
            return None
        features = path.update(
            tx.transaction_id, tx.event_time_ms, tx.card_id, tx.terminal_id, tx.amount
        )
        if features is None:
            return None
        score, alert = scorer(features, names)
        if not alert:
            return tx.card_id.encode(), None
        body = {
            "transaction_id": tx.transaction_id,
            "event_time_ms": tx.event_time_ms,
            "card_id": tx.card_id,
            "terminal_id": tx.terminal_id,
            "amount": tx.amount,
            "score": score,
        }
        return tx.card_id.encode(), json.dumps(body).encode()

    return process
