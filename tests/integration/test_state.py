"""Keyed state is bounded: one-off cards make it grow, their expiry shrinks it back.

The job runs with a state time-to-live of a few seconds instead of 31 days.
Its checkpoints are full snapshots of the heap state, and expired entries are
left out of them, so the size of the latest completed checkpoint is the size
of the live state. The sizes are written to ``.run/reports/state-soak.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from training.dataset import load_handbook
from txwatch.config import PROJECT_ROOT
from txwatch.replay import make_producer, to_messages
from txwatch.runner import wait_until
from txwatch.summary import scored_count

pytestmark = pytest.mark.slow

REPORT = PROJECT_ROOT / ".run" / "reports" / "state-soak.json"
TTL_MS = 20_000
ONE_OFF_CARDS = 30_000


def latest_checkpoint(root: Path) -> tuple[int, int]:
    """(number, bytes) of the newest completed checkpoint under ``root``."""
    done = [p for p in root.glob("*/chk-*") if (p / "_metadata").exists()]
    if not done:
        return -1, 0
    newest = max(done, key=lambda p: int(p.name.split("-")[1]))
    size = sum(f.stat().st_size for f in newest.rglob("*") if f.is_file())
    return int(newest.name.split("-")[1]), size


def checkpoint_after(root: Path, seconds: float = 120) -> int:
    """The size of the first checkpoint completed after now."""
    before, _ = latest_checkpoint(root)
    wait_until(lambda: latest_checkpoint(root)[0] > before + 1, seconds, "a checkpoint")
    return latest_checkpoint(root)[1]


def one_off_cards(frame: pd.DataFrame, count: int) -> pd.DataFrame:
    """``count`` transactions, each on a card never seen before or after."""
    rows = frame.sample(count, replace=True, random_state=5).reset_index(drop=True)
    rows["card_id"] = 10_000_000 + rows.index
    rows["transaction_id"] = 90_000_000 + rows.index
    rows["event_time_ms"] = frame["event_time_ms"].max() + 1 + rows.index
    return rows


def test_state_grows_with_one_off_cards_and_returns_once_they_expire(
    stack_with, trained_model, handbook_files
):
    stack = stack_with(state_ttl_ms=TTL_MS, checkpoint_interval_ms=2_000)
    frame = load_handbook(handbook_files[3:4], "2018-07-05", "2018-07-06").head(3_000)
    soak = one_off_cards(frame, ONE_OFF_CARDS)
    checkpoints = stack.tmp_path / "checkpoints"
    topic = stack.settings.kafka.topics.transactions
    producer = make_producer(stack.settings.kafka.bootstrap_servers)
    conn = stack.connect()

    def send(rows: pd.DataFrame) -> None:
        for key, value in to_messages(rows):
            producer.send(topic, key=key, value=value)
        producer.flush()

    def scored(target: int) -> None:
        wait_until(lambda: scored_count(conn) >= target, 600, f"{target} rows")

    job = stack.job(trained_model, "--parallelism", "1").start()
    try:
        send(frame)
        scored(len(frame))
        before = checkpoint_after(checkpoints)

        send(soak)
        scored(len(frame) + len(soak))
        peak = checkpoint_after(checkpoints)

        # Past the time-to-live every one-off card has expired; the checkpoint
        # taken then leaves them out.
        time.sleep(TTL_MS / 1000 + 2)
        after = checkpoint_after(checkpoints)
    finally:
        job.stop()
        producer.close()
        conn.close()

    report = {
        "state_ttl_ms": TTL_MS,
        "cards_before": int(frame["card_id"].nunique()),
        "one_off_cards": ONE_OFF_CARDS,
        "checkpoint_bytes_before": before,
        "checkpoint_bytes_peak": peak,
        "checkpoint_bytes_after_ttl": after,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))

    assert peak > 3 * before
    # the one-off cards are gone; what is left is bounded by the active keys
    assert after < before + 0.1 * (peak - before)
