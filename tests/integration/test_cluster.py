"""The job submitted to a standalone Flink cluster at parallelism 2."""

from __future__ import annotations

import pytest

from training.dataset import load_handbook
from txwatch.replay import make_producer, replay
from txwatch.runner import wait_until
from txwatch.summary import collect

pytestmark = pytest.mark.slow


def test_a_submitted_job_scores_every_transaction_at_parallelism_two(
    cluster, stack, trained_model, handbook_files
):
    frame = load_handbook(handbook_files[3:4], "2018-07-05", "2018-07-06").head(4_000)
    producer = make_producer(stack.settings.kafka.bootstrap_servers)
    replay(
        producer,
        frame,
        stack.settings.kafka.topics.transactions,
        stack.settings.kafka.topics.feedback,
        progress=False,
        extra=[b"{broken"],
    )
    producer.close()

    job_id = cluster.submit(
        *stack.job_args(trained_model, "--bounded", "--parallelism", "2")
    )

    def finished() -> bool:
        failure = cluster.root_exception(job_id)
        assert not failure, failure[:2000]
        return cluster.state(job_id) == "FINISHED"

    wait_until(finished, 600, "the cluster job finishing", interval=3)
    vertices = cluster.job(job_id)["vertices"]
    assert max(v["parallelism"] for v in vertices) == 2

    conn = stack.connect()
    summary = collect(stack.settings, conn)
    conn.close()
    assert summary.scored_rows == len(frame)
    assert summary.dead_lettered == 1
    assert summary.accounted
    assert summary.alerts_kafka == summary.alerts_table
