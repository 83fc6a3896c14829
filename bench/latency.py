"""Latency from a transaction's arrival in Kafka to its alert and its row.

The job runs unbounded on its own topics. A warm-up (10,000 transactions at
1,000 a second) proves that it consumes and scores and lets the JVM compile
its hot paths; then transactions are
produced at a fixed rate with ``txwatch.replay.replay(rate=...)`` for a fixed
time. The arrival of a transaction is its Kafka record timestamp (CreateTime,
set by the producer when it sends).

Three latencies are reported, as p50/p95/p99 over the transactions of the
timed window:

``alert record``   the alert's Kafka record timestamp minus the arrival: when
                   the sink handed the alert to Kafka, inside a transaction
                   that is not yet committed;
``alert visible``  when a ``read_committed`` consumer received the alert,
                   minus the arrival. The alerts topic is written exactly
                   once, so an alert becomes visible when the checkpoint after
                   it completes: this latency carries up to one checkpoint
                   interval (``job.checkpoint_interval_ms``) plus the time the
                   checkpoint takes;
``row``            ``scored_at`` of the row in PostgreSQL minus the arrival,
                   over every scored transaction; the JDBC sink flushes every
                   ``job.jdbc_flush_interval_ms`` or ``job.jdbc_batch_rows``.

All clocks are this machine's. When the job cannot keep up with the rate,
the backlog grows for the whole window and the latencies grow with it; the
run then says so: ``kept_up`` is false when more than two seconds of input
were still unscored as the producer stopped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pandas as pd

from bench.timing import percentiles
from bench.workspace import Workspace
from txwatch.replay import make_producer, replay
from txwatch.runner import wait_until

logger = logging.getLogger(__name__)

WARMUP_ROWS = 10_000
WARMUP_RATE = 1_000.0
# Kept up: at most this much input still unscored when the producer stops.
KEPT_UP_BACKLOG_S = 2.0


class AlertListener:
    """Receives committed alerts in a background thread, with receipt times."""

    def __init__(self, bootstrap_servers: str, topic: str):
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        partitions = [
            TopicPartition(topic, p)
            for p in sorted(self.consumer.partitions_for_topic(topic))
        ]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.received: list[tuple[str, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> AlertListener:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            batches = self.consumer.poll(timeout_ms=200)
            now = time.time()
            for batch in batches.values():
                for message in batch:
                    alert = json.loads(message.value)
                    self.received.append(
                        (str(alert["transaction_id"]), message.timestamp, now)
                    )

    def stop(self) -> list[tuple[str, int, float]]:
        self._stop.set()
        self._thread.join()
        self.consumer.close()
        return self.received


def run(
    workspace: Workspace,
    model_dir: Path,
    frame: pd.DataFrame,
    rate: float,
    seconds: float,
    parallelism: int,
    job_overrides: dict,
    progress,
    drain_timeout: float = 90.0,
) -> dict:
    """One rate: start the job, warm it up, produce at ``rate``, measure."""
    name = f"latency-{int(rate)}"
    job_run = workspace.run(name, **job_overrides)
    kafka = job_run.settings.kafka
    workspace.empty_tables()
    warmup = frame.iloc[:WARMUP_ROWS]
    timed = frame.iloc[WARMUP_ROWS : WARMUP_ROWS + int(rate * seconds)]
    if len(timed) < int(rate * seconds):
        raise ValueError(
            f"{rate:,.0f}/s for {seconds:.0f} s needs {int(rate * seconds):,} rows "
            f"after the warm-up, the stream has {len(timed):,}"
        )

    listener = AlertListener(kafka.bootstrap_servers, kafka.topics.alerts).start()
    job = job_run.job(
        model_dir, "--parallelism", str(parallelism), log_dir=workspace.log_dir
    )
    job.start()
    conn = workspace.connect()
    producer = make_producer(kafka.bootstrap_servers)
    try:
        replay(
            producer,
            warmup,
            kafka.topics.transactions,
            rate=WARMUP_RATE,
            progress=False,
        )
        waited = wait_until(
            lambda: _count(conn) >= len(warmup),
            300.0,
            "scoring of the warm-up transactions",
            interval=1.0,
            alive=job.running,
        )
        progress(
            f"latency {rate:,.0f}/s: job consuming after {waited:.0f} s of warm-up"
        )

        sent = replay(
            producer, timed, kafka.topics.transactions, rate=rate, progress=False
        )
        load = os.getloadavg()[0]
        at_end = _count(conn) - len(warmup)
        progress(
            f"latency {rate:,.0f}/s: sent {sent.transactions:,} at {sent.rate:,.0f}/s; "
            f"{at_end:,} scored when the producer stopped"
        )
        total = len(warmup) + len(timed)
        try:
            wait_until(
                lambda: _count(conn) >= total,
                drain_timeout,
                "scoring of the timed transactions",
                interval=1.0,
                alive=job.running,
            )
            drained = True
        except TimeoutError:
            drained = False
        # Alerts become visible at the checkpoint after them.
        time.sleep(2 * job_run.settings.job.checkpoint_interval_ms / 1000 + 2)
    finally:
        producer.close()
        job.stop()
        alerts = listener.stop()

    arrivals = _arrivals(kafka.bootstrap_servers, kafka.topics.transactions)
    timed_ids = {str(int(i)) for i in timed["transaction_id"]}
    rows = _rows(conn, timed_ids)
    conn.close()

    row_latency = [
        (scored_at - arrivals[tx] / 1000.0) * 1000.0
        for tx, scored_at in rows
        if tx in arrivals
    ]
    timed_alerts = [a for a in alerts if a[0] in timed_ids and a[0] in arrivals]
    record_latency = [ts - arrivals[tx] for tx, ts, _ in timed_alerts]
    visible_latency = [(seen * 1000.0 - arrivals[tx]) for tx, _, seen in timed_alerts]
    return {
        "rate": rate,
        "seconds": seconds,
        "parallelism": parallelism,
        "sent": sent.transactions,
        "achieved_rate": sent.rate,
        "scored_when_producer_stopped": at_end,
        "scored": len(rows),
        "kept_up": drained and len(timed) - at_end <= rate * KEPT_UP_BACKLOG_S,
        "drained": drained,
        "alerts": len(timed_alerts),
        "load_average": load,
        "job_settings": {
            key: getattr(job_run.settings.job, key)
            for key in (
                "checkpoint_interval_ms",
                "min_pause_between_checkpoints_ms",
                "bundle_time_ms",
                "bundle_size",
                "jdbc_flush_interval_ms",
                "jdbc_batch_rows",
            )
        },
        "latency_ms": {
            "alert record": percentiles(record_latency),
            "alert visible": percentiles(visible_latency),
            "row": percentiles(row_latency),
        },
    }


def _count(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM scored_transactions")
        return int(cur.fetchone()[0])


def _rows(conn, ids: set[str]) -> list[tuple[str, float]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT transaction_id, extract(epoch FROM scored_at) "
            "FROM scored_transactions"
        )
        return [(tx, float(at)) for tx, at in cur.fetchall() if tx in ids]


def _arrivals(bootstrap_servers: str, topic: str) -> dict[str, int]:
    """transaction_id -> Kafka record timestamp (ms) of every message in ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        consumer_timeout_ms=3_000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for p in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        arrivals = {}
        for message in consumer:
            arrivals[str(json.loads(message.value)["transaction_id"])] = (
                message.timestamp
            )
        return arrivals
    finally:
        consumer.close()
