"""The real job on a slice of July: Kafka in, Kafka and PostgreSQL out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.dataset import compute_features, load_handbook
from txwatch import topics
from txwatch.corpus import bad_messages
from txwatch.replay import make_producer, replay, to_messages
from txwatch.summary import collect
from udfs.features import FEATURE_NAMES
from udfs.scoring import ModelMetadata

pytestmark = pytest.mark.slow


def _run_bounded(stack, model_dir, frame, parallelism: int, duplicates: int = 0):
    producer = make_producer(stack.settings.kafka.bootstrap_servers)
    corpus = bad_messages()
    replay(
        producer,
        frame,
        stack.settings.kafka.topics.transactions,
        stack.settings.kafka.topics.feedback,
        label_delay_days=7,
        progress=False,
        extra=[m for m, _ in corpus],
    )
    for key, value in to_messages(frame.head(duplicates)):
        producer.send(stack.settings.kafka.topics.transactions, key=key, value=value)
    producer.flush()
    producer.close()

    job = stack.job(model_dir, "--bounded", "--parallelism", str(parallelism)).start()
    code = job.wait(timeout=900)
    assert code == 0, job.log_tail()
    return corpus


@pytest.fixture(scope="module")
def july(handbook_files):
    return load_handbook(handbook_files, "2018-07-01", "2018-07-03")


def test_every_transaction_is_scored_or_dead_lettered_and_alerts_match(
    stack, trained_model, july
):
    frame = july.head(4_000)
    corpus = _run_bounded(stack, trained_model, frame, parallelism=1, duplicates=30)
    conn = stack.connect()
    summary = collect(stack.settings, conn)

    assert summary.read == len(frame) + len(corpus) + 30
    assert summary.scored_rows == len(frame)
    assert summary.dead_lettered == len(corpus) + 30
    assert summary.accounted
    assert summary.alerts_table > 0
    assert summary.alerts_kafka == summary.alerts_table
    assert summary.duplicate_alerts_kafka == 0

    # each bad message is dead-lettered with its own reason
    dead = [
        json.loads(m)
        for m in topics.read_committed(
            stack.settings.kafka.bootstrap_servers,
            stack.settings.kafka.topics.dead_letters,
        )
    ]
    expected = {}
    for message, reason in corpus:
        expected.setdefault(message.decode("utf-8", "replace")[:200], reason)
    for letter in dead:
        if letter["reason"] == "duplicate_transaction_id":
            continue
        assert expected[letter["raw"][:200]] == letter["reason"]
    assert sum(d["reason"] == "duplicate_transaction_id" for d in dead) == 30

    with conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT model_version) FROM scored_transactions")
        assert cur.fetchone()[0] == 1
        # every fraud label sent as feedback is recorded, with its delay
        cur.execute(
            """SELECT transaction_id, terminal_id,
                      extract(epoch FROM known_at - event_time)::bigint
               FROM fraud_labels"""
        )
        labels = cur.fetchall()
    frauds = frame[frame["label"] == 1]
    assert len(frauds) > 0
    assert sorted(labels) == sorted(
        (str(int(r.transaction_id)), str(int(r.terminal_id)), 7 * 86_400)
        for r in frauds.itertuples()
    )

    # The supervised stage's probability decides, or an active rule.
    stage = ModelMetadata.read(trained_model / "model.json").supervised
    assert stage is not None
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*) FILTER (WHERE fraud_probability IS NULL),
                      count(*) FILTER (WHERE is_alert <> (fraud_probability >= %s
                          OR rule_hits @> '[{"mode": "active"}]')),
                      count(*) FILTER (WHERE is_alert AND fraud_probability >= %s)
               FROM scored_transactions""",
            (stage.threshold, stage.threshold),
        )
        missing, disagree, by_probability = cur.fetchone()
        cur.execute(
            """SELECT count(*) FROM alerts a JOIN scored_transactions s
                   USING (transaction_id, event_time)
               WHERE a.fraud_probability IS DISTINCT FROM s.fraud_probability"""
        )
        differ = cur.fetchone()[0]
    assert (missing, disagree, differ) == (0, 0, 0)
    assert by_probability > 0

    with conn.cursor() as cur:
        cur.execute("SELECT reasons FROM alerts")
        reasons = [r[0] for r in cur.fetchall()]
    assert all(isinstance(r, list) for r in reasons)
    explained = [r for r in reasons if r]
    assert len(explained) >= 0.9 * len(reasons)
    # Reasons of the stage: fraud-probability points, positive towards fraud.
    assert all(r[0]["contribution"] > 0 and r[0]["text"] for r in explained)
    conn.close()


# One partition: the job then sees every terminal's transactions in the order
# the offline replay does. With several partitions, transactions of one
# terminal from different cards interleave in arrival order, which moves the
# day-bucket counts of near-simultaneous transactions.
@pytest.mark.partitions(1)
def test_features_computed_by_the_job_equal_the_offline_ones(
    stack, trained_model, july
):
    frame = july.head(3_000)
    _run_bounded(stack, trained_model, frame, parallelism=1)
    conn = stack.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT transaction_id, features FROM scored_transactions")
        online = {int(tx): f for tx, f in cur.fetchall()}
    conn.close()

    offline, _, _ = compute_features(frame, label_delay_days=7)
    assert len(online) == len(frame)
    ids = frame["transaction_id"].to_numpy()
    job = np.array([[online[int(i)][name] for name in FEATURE_NAMES] for i in ids])
    mismatch = ~np.isclose(job, offline, rtol=1e-9, atol=1e-9)
    assert not mismatch.any(), (
        f"{mismatch.sum()} values differ, first in "
        f"{[FEATURE_NAMES[j] for j in np.flatnonzero(mismatch.any(axis=0))]}"
    )


def test_the_job_runs_at_parallelism_two(stack, trained_model, july):
    frame = july.iloc[4_000:9_000]
    corpus = _run_bounded(stack, trained_model, frame, parallelism=2)
    conn = stack.connect()
    summary = collect(stack.settings, conn)
    conn.close()
    assert summary.scored_rows == len(frame)
    assert summary.dead_lettered == len(corpus)
    assert summary.alerts_kafka == summary.alerts_table
