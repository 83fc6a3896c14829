"""Replay handbook transactions into Kafka in the JSON input contract.

Each CSV row becomes one message on the transactions topic, keyed by card so
that a card's transactions stay in order on one partition::

    {"transaction_id": 1234, "event_time": "2018-07-01T00:00:31Z",
     "card_id": 596, "terminal_id": 3156, "amount": 57.16, "currency": "EUR"}

With ``feedback=True`` every fraudulent row is also published on the feedback
topic right after it, as a label that becomes known ``label_delay_days``
later (``known_at_ms``); the job applies it from that time on. The replay
runs as fast as the broker takes it, or at ``rate`` messages a second.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pandas as pd

from udfs.features import MS_PER_DAY

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayReport:
    transactions: int
    feedback: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds if self.seconds > 0 else float("inf")


def to_messages(
    frame: pd.DataFrame, currency: str = "EUR"
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs in the input contract for a handbook frame."""
    times = pd.to_datetime(frame["event_time_ms"].to_numpy(), unit="ms", utc=True)
    stamps = times.strftime("%Y-%m-%dT%H:%M:%S.%f").str.slice(0, 23) + "Z"
    out = []
    for tx_id, stamp, card, terminal, amount in zip(
        frame["transaction_id"].to_numpy(),
        stamps,
        frame["card_id"].to_numpy(),
        frame["terminal_id"].to_numpy(),
        frame["amount"].to_numpy(),
        strict=True,
    ):
        value = (
            f'{{"transaction_id": {int(tx_id)}, "event_time": "{stamp}", '
            f'"card_id": {int(card)}, "terminal_id": {int(terminal)}, '
            f'"amount": {float(amount)!r}, "currency": "{currency}"}}'
        )
        out.append((str(int(card)).encode(), value.encode()))
    return out


def feedback_message(row, label_delay_days: int) -> bytes:
    return json.dumps(
        {
            "transaction_id": str(int(row.transaction_id)),
            "terminal_id": str(int(row.terminal_id)),
            "card_id": str(int(row.card_id)),
            "event_time_ms": int(row.event_time_ms),
            "known_at_ms": int(row.event_time_ms) + label_delay_days * MS_PER_DAY,
        }
    ).encode()


def replay(
    producer,
    frame: pd.DataFrame,
    transactions_topic: str,
    feedback_topic: str | None = None,
    label_delay_days: int = 7,
    rate: float | None = None,
    progress: bool = True,
    extra: list[bytes] | None = None,
) -> ReplayReport:
    """Send ``frame`` (sorted by event time) through ``producer``.

    ``extra`` messages (raw bytes, e.g. a bad-input corpus) are sent after the
    transactions, unkeyed. Returns the counts and the time it took.
    """
    messages = to_messages(frame)
    fraud_rows = (
        {int(r.transaction_id): r for r in frame[frame["label"] == 1].itertuples()}
        if feedback_topic
        else {}
    )
    ids = frame["transaction_id"].to_numpy()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(messages), unit="tx", desc="replay", mininterval=1.0)
    started = time.monotonic()
    sent_feedback = 0
    for i, (key, value) in enumerate(messages):
        producer.send(transactions_topic, key=key, value=value)
        row = fraud_rows.get(int(ids[i]))
        if row is not None:
            producer.send(
                feedback_topic, key=key, value=feedback_message(row, label_delay_days)
            )
            sent_feedback += 1
        if rate:
            ahead = (i + 1) / rate - (time.monotonic() - started)
            if ahead > 0.001:
                time.sleep(ahead)
        if bar is not None and i % 5_000 == 4_999:
            bar.update(5_000)
    for value in extra or []:
        producer.send(transactions_topic, value=value)
    producer.flush()
    if bar is not None:
        bar.update(len(messages) - bar.n)
        bar.close()
    seconds = time.monotonic() - started
    return ReplayReport(len(messages) + len(extra or []), sent_feedback, seconds)


def make_producer(bootstrap_servers: str):
    from kafka import KafkaProducer

    return KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        linger_ms=20,
        batch_size=256 * 1024,
        acks="all",
        compression_type=None,
        max_in_flight_requests_per_connection=1,
        retries=10,
    )
