"""Generated bad input through the running job: nothing stops it, nothing is lost."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from training.dataset import load_handbook
from txwatch import topics
from txwatch.corpus import mutated_messages
from txwatch.replay import make_producer, to_messages
from txwatch.summary import collect
from udfs.contract import Transaction, parse

pytestmark = pytest.mark.slow

DUPLICATE = "duplicate_transaction_id"


def expected_outcomes(messages, limits) -> tuple[set[str], Counter]:
    """Ids the job must score, and the dead-letter reasons it must give."""
    now_ms = int(time.time() * 1000)
    scored: set[str] = set()
    seen: set[tuple[str, str]] = set()
    reasons: Counter = Counter()
    for _, value in messages:
        result = parse(value, limits, now_ms)
        if not isinstance(result, Transaction):
            reasons[result.reason] += 1
        elif (result.card_id, result.transaction_id) in seen:
            reasons[DUPLICATE] += 1
        else:
            seen.add((result.card_id, result.transaction_id))
            scored.add(result.transaction_id)
    return scored, reasons


def test_generated_messages_are_scored_or_dead_lettered_with_the_contracts_reason(
    stack_with, trained_model, handbook_files
):
    stack = stack_with()
    frame = load_handbook(handbook_files[3:4], "2018-07-05", "2018-07-06").head(1_500)
    base = to_messages(frame)
    fuzzed = mutated_messages(base, 3_000, seed=11)
    messages = base + fuzzed
    scored_ids, reasons = expected_outcomes(messages, stack.settings.contract)
    # the generator must exercise both outcomes and many reasons
    assert len(scored_ids) > len(base) and len(reasons) >= 8

    producer = make_producer(stack.settings.kafka.bootstrap_servers)
    for key, value in messages:
        producer.send(stack.settings.kafka.topics.transactions, key=key, value=value)
    producer.flush()
    producer.close()
    job = stack.job(trained_model, "--bounded", "--parallelism", "2").start()
    assert job.wait(timeout=900) == 0, job.log_tail()

    conn = stack.connect()
    summary = collect(stack.settings, conn)
    with conn.cursor() as cur:
        cur.execute("SELECT transaction_id, is_late FROM scored_transactions")
        rows = cur.fetchall()
    conn.close()
    dead = [
        json.loads(m)
        for m in topics.read_committed(
            stack.settings.kafka.bootstrap_servers,
            stack.settings.kafka.topics.dead_letters,
        )
    ]

    job_ids = {str(tx) for tx, _ in rows}
    assert job_ids == scored_ids, (
        f"scored but not expected: {sorted(job_ids - scored_ids)[:10]}; "
        f"expected but not scored: {sorted(scored_ids - job_ids)[:10]}"
    )
    got = Counter(d["reason"] for d in dead)
    assert got == reasons, f"more than expected {got - reasons}, fewer {reasons - got}"
    assert summary.read == len(messages)
    assert summary.accounted
    assert all(d["detail"] and d["stage"] for d in dead)


def test_events_behind_their_cards_newest_are_scored_and_marked_late(
    stack, trained_model, handbook_files
):
    frame = load_handbook(handbook_files[3:4], "2018-07-05", "2018-07-06").head(2_000)
    # a copy of a card's first transaction, an hour before it, sent after it
    firsts = frame.drop_duplicates("card_id").head(100)
    behind = firsts.assign(
        transaction_id=firsts["transaction_id"] + 50_000_000,
        event_time_ms=firsts["event_time_ms"] - 3_600_000,
    )
    producer = make_producer(stack.settings.kafka.bootstrap_servers)
    for rows in (frame, behind):
        for key, value in to_messages(rows):
            producer.send(
                stack.settings.kafka.topics.transactions, key=key, value=value
            )
    producer.flush()
    producer.close()
    job = stack.job(trained_model, "--bounded", "--parallelism", "2").start()
    assert job.wait(timeout=900) == 0, job.log_tail()

    conn = stack.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT transaction_id, is_late FROM scored_transactions")
        rows = cur.fetchall()
    conn.close()
    assert len(rows) == len(frame) + len(behind)
    late = {int(tx) for tx, is_late in rows if is_late}
    assert late == set(behind["transaction_id"].astype(int))
