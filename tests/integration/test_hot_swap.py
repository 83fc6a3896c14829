"""A new champion model takes over in the running job, between batches."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from training.dataset import load_handbook
from txwatch.replay import make_producer, replay
from txwatch.runner import wait_until
from txwatch.summary import collect, scored_count
from udfs import registry

pytestmark = pytest.mark.slow


def _variant(source, target, version: str, broken: bool = False, stage: bool = True):
    """A copy of the model ``source`` as ``version``; ``stage=False`` drops its
    supervised stage, so that its anomaly score decides."""
    shutil.copytree(source, target)
    meta = json.loads((target / "model.json").read_text())
    meta["version"] = version
    if not stage:
        meta["supervised"] = None
    (target / "model.json").write_text(json.dumps(meta))
    if broken:
        (target / "model.onnx").write_bytes(b"\x00not an onnx graph")
    return target


def run_in_phases(stack, model_dir, phases) -> None:
    """Run the job on ``model_dir`` through ``(rows, change)`` phases.

    Before each phase's rows are replayed, ``change`` (if any) edits the
    registry and the test waits past the interval at which the job checks
    its pointers; each phase's rows are scored before the next starts.
    """
    kafka = stack.settings.kafka
    producer = make_producer(kafka.bootstrap_servers)
    conn = stack.connect()
    job = stack.job(model_dir, "--parallelism", "1").start()
    try:
        done = 0
        for rows, change in phases:
            if change:
                change()
                time.sleep(3)  # the pointers are checked at most every 2 s
            replay(
                producer,
                rows,
                kafka.topics.transactions,
                kafka.topics.feedback,
                progress=False,
            )
            done += len(rows)
            wait_until(
                lambda target=done: scored_count(conn) >= target,
                300,
                f"scoring of {done} rows",
                interval=2,
                alive=job.running,
            )
        wait_until(
            lambda: (lambda s: s.alerts_kafka >= s.alerts_table)(
                collect(stack.settings, conn)
            ),
            120,
            "alerts committed",
            alive=job.running,
        )
    finally:
        job.stop()
        producer.close()
        conn.close()


def test_a_promoted_model_scores_the_next_records_and_a_broken_one_is_refused(
    stack, trained_model, handbook_files, tmp_path
):
    root = tmp_path / "registry"
    first = registry.register(root, trained_model)
    # The first model decides on its supervised stage, the second (the same
    # forest) on its anomaly score alone.
    second = registry.register(
        root, _variant(trained_model, tmp_path / "m2", "swap-two", stage=False)
    )
    broken_dir = registry.version_dir(root, "swap-broken")
    _variant(trained_model, broken_dir, "swap-broken", broken=True)
    registry.promote(root, first)

    frame = load_handbook(handbook_files[3:4], "2018-07-12", "2018-07-13").head(3_000)
    batches = [frame.iloc[i * 1_000 : (i + 1) * 1_000] for i in range(3)]
    run_in_phases(
        stack,
        root,
        [
            (batches[0], None),
            (batches[1], lambda: registry.promote(root, second)),
            (batches[2], lambda: registry.promote(root, "swap-broken")),
        ],
    )

    conn = stack.connect()
    with conn.cursor() as cur:
        versions = {}
        for i, batch in enumerate(batches):
            cur.execute(
                "SELECT model_version, count(*) FROM scored_transactions "
                "WHERE transaction_id = ANY(%s) GROUP BY 1",
                ([str(t) for t in batch["transaction_id"]],),
            )
            versions[i] = dict(cur.fetchall())
    assert versions[0] == {first: 1_000}
    assert versions[1] == {second: 1_000}
    assert versions[2] == {second: 1_000}  # the broken model was refused

    stage = registry.version_dir(root, first) / "model.json"
    stage_threshold = json.loads(stage.read_text())["supervised"]["threshold"]
    forest_threshold = json.loads(
        (registry.version_dir(root, second) / "model.json").read_text()
    )["threshold"]
    with conn.cursor() as cur:
        for i, batch in enumerate(batches):
            cur.execute(
                "SELECT score, fraud_probability, is_alert, rule_hits"
                " FROM scored_transactions WHERE transaction_id = ANY(%s)",
                ([str(t) for t in batch["transaction_id"]],),
            )
            for score, probability, is_alert, hits in cur.fetchall():
                active = any(h["mode"] == "active" for h in hits)
                if i == 0:
                    assert is_alert == (probability >= stage_threshold or active)
                else:  # no stage: no probability, the anomaly score decides
                    assert probability is None
                    assert is_alert == (score >= forest_threshold or active)

    summary = collect(stack.settings, conn)
    assert summary.scored_rows == 3_000 and summary.accounted
    assert summary.duplicate_alerts_kafka == 0
    assert summary.alerts_kafka == summary.alerts_table
    conn.close()


def test_a_challenger_scores_every_row_in_shadow_and_never_alerts(
    stack, trained_model, handbook_files, tmp_path
):
    champion_dir = tmp_path / "champion"
    shutil.copytree(trained_model, champion_dir)
    champion = registry.register(root := tmp_path / "registry", champion_dir)
    # The champion decides on its supervised stage. The challenger is the same
    # forest without a stage, deciding on its anomaly score at the training
    # 80th percentile: it would alert far more often than the champion.
    challenger_dir = _variant(trained_model, tmp_path / "m2", "shadow-two")
    meta = json.loads((challenger_dir / "model.json").read_text())
    assert meta.pop("supervised") is not None
    meta["threshold"] = meta["risk_quantiles"][800]
    (challenger_dir / "model.json").write_text(json.dumps(meta))
    challenger = registry.register(root, challenger_dir)
    registry.promote(root, champion)
    registry.promote(root, challenger, "challenger")

    frame = load_handbook(handbook_files[3:4], "2018-07-12", "2018-07-13").head(2_000)
    shadowed, alone = frame.iloc[:1_000], frame.iloc[1_000:]
    run_in_phases(
        stack,
        root,
        [(shadowed, None), (alone, lambda: registry.clear(root, "challenger"))],
    )

    conn = stack.connect()

    def rows(batch):
        with conn.cursor() as cur:
            cur.execute(
                "SELECT transaction_id, score, is_alert, challenger_score,"
                " challenger_version, challenger_alert, rule_hits, fraud_probability"
                " FROM scored_transactions WHERE transaction_id = ANY(%s)",
                ([str(t) for t in batch["transaction_id"]],),
            )
            return cur.fetchall()

    first, second = rows(shadowed), rows(alone)
    assert len(first) == len(second) == 1_000
    # Every row of the first batch carries the challenger's score: the same
    # forest on the same features gives the same score.
    assert {r[4] for r in first} == {challenger}
    assert all(abs(r[3] - r[1]) < 1e-9 for r in first)
    # Alerts follow the champion's stage (or an active rule) only.
    champion_meta = json.loads((champion_dir / "model.json").read_text())
    threshold = champion_meta["supervised"]["threshold"]
    for row in first + second:
        _, _, is_alert, shadow_score, _, shadow_alert, hits, probability = row
        active = any(h["mode"] == "active" for h in hits)
        assert is_alert == (probability >= threshold or active)
        if shadow_score is not None:
            assert shadow_alert == (shadow_score >= meta["threshold"] or active)
    would_only = {r[0] for r in first if r[5] and not r[2]}
    assert len(would_only) > 10
    with conn.cursor() as cur:
        cur.execute("SELECT transaction_id FROM alerts")
        alerted = {r[0] for r in cur.fetchall()}
    assert not alerted & would_only
    assert len(alerted) == sum(r[2] for r in first + second)
    # Once the challenger is removed, shadow scoring stops.
    assert all(r[3] is None and r[4] is None and r[5] is None for r in second)

    summary = collect(stack.settings, conn)
    assert summary.scored_rows == 2_000 and summary.accounted
    assert summary.alerts_kafka == summary.alerts_table
    conn.close()
