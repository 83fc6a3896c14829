"""Rules published to the running job take effect without a restart."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from training.dataset import load_handbook
from txwatch import topics
from txwatch.replay import make_producer, replay
from txwatch.runner import wait_until
from txwatch.summary import scored_count

pytestmark = pytest.mark.slow

ACTIVE = {
    "id": "test-large",
    "version": 1,
    "kind": "condition",
    "severity": "high",
    "description": "Amounts of 150 or more.",
    "key": "card",
    "when": "amount >= 150",
}
SHADOW = {
    "id": "test-shadow",
    "version": 1,
    "kind": "condition",
    "severity": "low",
    "mode": "shadow",
    "description": "Amounts of 60 or more, on trial.",
    "key": "terminal",
    "when": "amount >= 60",
}
HOSTILE = {**ACTIVE, "id": "hostile", "when": "__import__('os').system('true')"}
HUGE = {**ACTIVE, "id": "huge", "when": " + ".join(["amount"] * 5_000) + " > 1"}


def _status(stack) -> list[dict]:
    return [
        json.loads(m)
        for m in topics.read_committed(
            stack.settings.kafka.bootstrap_servers,
            stack.settings.kafka.topics.rules_status,
            idle_ms=1_000,
        )
    ]


def test_published_rules_take_effect_and_bad_ones_are_rejected(
    stack, trained_model, handbook_files
):
    kafka = stack.settings.kafka
    job = stack.job(trained_model, "--parallelism", "1").start()
    try:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        for rule in (ACTIVE, SHADOW, HOSTILE, HUGE):
            producer.send(
                kafka.topics.rules, json.dumps({"op": "upsert", "rule": rule}).encode()
            )
        producer.send(kafka.topics.rules, b"{not json")
        producer.flush()
        wait_until(
            lambda: len(_status(stack)) >= 5,
            300,
            "answers on rules.status",
            interval=3,
            alive=job.running,
        )

        frame = load_handbook(handbook_files[3:4], "2018-07-10", "2018-07-11").head(
            2_000
        )
        replay(
            make_producer(kafka.bootstrap_servers),
            frame,
            kafka.topics.transactions,
            kafka.topics.feedback,
            progress=False,
        )
        conn = stack.connect()
        wait_until(
            lambda: scored_count(conn) >= len(frame),
            300,
            "scoring",
            interval=3,
            alive=job.running,
        )
    finally:
        job.stop()

    answers = {s["rule_id"]: s for s in _status(stack)}
    assert answers["test-large"]["accepted"] and answers["test-shadow"]["accepted"]
    assert not answers["hostile"]["accepted"]
    assert "__import__" in answers["hostile"]["reason"]
    assert not answers["huge"]["accepted"] and answers["huge"]["reason"]
    assert any(not s["accepted"] and "JSON" in s["reason"] for s in _status(stack))

    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM scored_transactions WHERE amount >= 150 "
            'AND NOT (is_alert AND rule_hits @> \'[{"rule_id": "test-large"}]\')'
        )
        assert cur.fetchone()[0] == 0  # every large amount alerted through the rule
        cur.execute("SELECT count(*) FROM scored_transactions WHERE amount >= 150")
        assert cur.fetchone()[0] > 0
        cur.execute(
            "SELECT count(*) FROM rule_hits WHERE rule_id = 'test-shadow' "
            "AND mode = 'shadow' AND rule_version = 1"
        )
        shadow_hits = cur.fetchone()[0]
        cur.execute(
            "SELECT count(*) FROM scored_transactions s WHERE amount >= 60 "
            "AND amount < 150 AND NOT is_alert"
        )
        quiet = cur.fetchone()[0]
    assert shadow_hits > 0 and quiet > 0  # recorded, and those rows did not alert
    assert scored_count(conn) == len(frame)
    conn.close()
