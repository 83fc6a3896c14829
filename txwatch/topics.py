"""Kafka topics of txwatch: creation, reset, and committed message counts."""

from __future__ import annotations

import logging
import time

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from txwatch.config import KafkaSettings

logger = logging.getLogger(__name__)

# Control topics carry few messages and must keep their order.
_SINGLE_PARTITION = ("rules", "rules_status", "models")


def topic_layout(kafka: KafkaSettings) -> dict[str, int]:
    """Topic name -> partition count."""
    layout = {}
    for field, name in kafka.topics.__dict__.items():
        layout[name] = 1 if field in _SINGLE_PARTITION else kafka.partitions
    return layout


def ensure_topics(kafka: KafkaSettings, reset: bool = False) -> list[str]:
    """Create missing topics (after deleting them all when ``reset``)."""
    admin = KafkaAdminClient(
        bootstrap_servers=kafka.bootstrap_servers, client_id="txwatch-admin"
    )
    try:
        layout = topic_layout(kafka)
        if reset:
            existing = set(admin.list_topics()) & set(layout)
            if existing:
                try:
                    admin.delete_topics(list(existing), timeout_ms=30_000)
                except UnknownTopicOrPartitionError:
                    pass
                _wait(
                    lambda: not (set(admin.list_topics()) & existing), "topic deletion"
                )
        created = []
        for name, partitions in layout.items():
            try:
                admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=30_000)
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        _wait(lambda: set(layout) <= set(admin.list_topics()), "topic creation")
        return created
    finally:
        admin.close()


def _wait(condition, what: str, seconds: float = 60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka {what} did not finish within {seconds:.0f} s")
        time.sleep(0.5)


def end_offsets_total(bootstrap_servers: str, topic: str) -> int:
    """Messages ever appended to ``topic`` (including transaction markers)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers)
    try:
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
        ]
        begin = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        return sum(end[p] - begin[p] for p in partitions)
    finally:
        consumer.close()


def read_committed(
    bootstrap_servers: str, topic: str, idle_ms: int = 3_000
) -> list[bytes]:
    """Every committed message of ``topic``, read from the beginning."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=idle_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return [message.value for message in consumer]
    finally:
        consumer.close()
