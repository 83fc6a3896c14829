"""The job submitted to a standalone Flink cluster at parallelism 2."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from training.dataset import load_handbook
from txwatch.config import PROJECT_ROOT
from txwatch.replay import make_producer, replay
from txwatch.runner import wait_until
from txwatch.summary import collect

pytestmark = pytest.mark.slow
REST = "http://127.0.0.1:18081"


def _cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts/cluster.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=PROJECT_ROOT,
    )


def _jobs() -> list[dict]:
    with urllib.request.urlopen(f"{REST}/jobs/overview", timeout=10) as response:
        return json.load(response)["jobs"]


@pytest.fixture
def cluster():
    started = _cluster("start")
    assert started.returncode == 0, started.stdout + started.stderr
    yield
    _cluster("stop")


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

    submitted = _cluster(
        "submit",
        "--config",
        str(stack.config_path),
        "--model-dir",
        str(trained_model),
        "--bounded",
        "--parallelism",
        "2",
        "--name",
        stack.prefix,
        "--transactional-prefix",
        stack.prefix,
        "--detached",
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    def finished() -> bool:
        jobs = [j for j in _jobs() if j["name"] == stack.prefix]
        for job in jobs:
            with urllib.request.urlopen(
                f"{REST}/jobs/{job['jid']}/exceptions", timeout=10
            ) as response:
                failure = json.load(response).get("root-exception")
            assert not failure, failure[:2000]
        return [j["state"] for j in jobs] == ["FINISHED"]

    wait_until(finished, 600, "the cluster job finishing", interval=3)
    job = next(j for j in _jobs() if j["name"] == stack.prefix)
    with urllib.request.urlopen(f"{REST}/jobs/{job['jid']}", timeout=10) as response:
        vertices = json.load(response)["vertices"]
    assert max(v["parallelism"] for v in vertices) == 2

    conn = stack.connect()
    summary = collect(stack.settings, conn)
    conn.close()
    assert summary.scored_rows == len(frame)
    assert summary.dead_lettered == 1
    assert summary.accounted
    assert summary.alerts_kafka == summary.alerts_table
