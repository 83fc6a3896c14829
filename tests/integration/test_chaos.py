"""Faults injected into a running job: nothing lost, nothing scored or alerted twice.

The job runs on its own standalone cluster against its own Kafka broker and
PostgreSQL server (other ports, data under ``.run/chaos``), so that killing
and stopping them disturbs no other test. A known set of transactions is
replayed in three parts; while the job works through each, in turn:

1. the TaskManager is killed with SIGKILL and a new one is started;
2. the Kafka broker is stopped and started again;
3. PostgreSQL is stopped for 30 seconds.

The job restores from its last checkpoint each time. At the end the counts
must add up exactly; they are written to ``.run/reports/chaos.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter

import psycopg2
import pytest
import yaml
from flink_cluster import FlinkCluster
from provisioning import provision

from training.dataset import load_handbook
from txwatch import db, topics
from txwatch.config import DEFAULT_CONFIG, PROJECT_ROOT, load
from txwatch.corpus import bad_messages
from txwatch.replay import make_producer, to_messages
from txwatch.runner import wait_until
from txwatch.summary import collect

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

HOME = PROJECT_ROOT / ".run" / "chaos"
REPORT = PROJECT_ROOT / ".run" / "reports" / "chaos.json"
ENV = {
    "TXWATCH_STATE_DIR": str(HOME),
    "TXWATCH_KAFKA_PORT": "29092",
    "TXWATCH_KAFKA_CONTROLLER_PORT": "29093",
    "TXWATCH_PG_PORT": "25432",
    "TXWATCH_FLINK_DIR": str(HOME / "flink"),
    "TXWATCH_FLINK_REST_PORT": "28081",
    "TXWATCH_FLINK_RPC_PORT": "26123",
    "TXWATCH_FLINK_EXTRA_CONF": str(HOME / "flink-extra.yaml"),
}
# A lost TaskManager is noticed within seconds rather than the default 50 s.
FLINK_EXTRA = {"heartbeat": {"interval": 2000, "timeout": 8000}}
PART_ROWS = 12_000
DUPLICATES = 50


def services(*args: str) -> None:
    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts/services.sh"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=PROJECT_ROOT,
        env={**os.environ, **ENV},
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def own_stack(secrets, tmp_path_factory):
    """Broker, database and cluster of this module only; settings to reach them."""
    shutil.rmtree(HOME, ignore_errors=True)
    HOME.mkdir(parents=True)
    (HOME / "flink-extra.yaml").write_text(yaml.safe_dump(FLINK_EXTRA))
    services("start")
    cluster = FlinkCluster(ENV)
    cluster.start()

    tmp = tmp_path_factory.mktemp("chaos")
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["kafka"]["bootstrap_servers"] = "127.0.0.1:29092"
    raw["postgres"]["port"] = 25432
    raw["job"].update(
        checkpoint_dir=str(tmp / "checkpoints"),
        checkpoint_interval_ms=2_000,
        restart_attempts=200,
    )
    config_path = tmp / "txwatch.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    settings = load(config_path)
    provision(settings, secrets)
    yield settings, config_path, cluster

    cluster.stop()
    services("stop")
    shutil.rmtree(HOME, ignore_errors=True)


def scored_rows(settings, password: str) -> int | None:
    """Rows in ``scored_transactions``, or None while PostgreSQL is down."""
    try:
        conn = db.connect(settings.postgres, settings.postgres.admin_user, password)
    except psycopg2.OperationalError:
        return None
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM scored_transactions")
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def test_killed_taskmanager_restarted_broker_and_stopped_database_lose_nothing(
    own_stack, secrets, trained_model, handbook_files
):
    settings, config_path, cluster = own_stack
    admin = secrets["admin"]
    frame = load_handbook(handbook_files[3:4], "2018-07-10", "2018-07-14")
    frame = frame.head(3 * PART_ROWS)
    parts = [frame.iloc[i * PART_ROWS : (i + 1) * PART_ROWS] for i in range(3)]
    corpus = bad_messages()
    job_id = cluster.submit(
        "--config",
        str(config_path),
        "--model-dir",
        str(trained_model),
        "--parallelism",
        "2",
        "--name",
        "chaos",
        "--transactional-prefix",
        "chaos",
    )
    wait_until(lambda: cluster.all_running(job_id), 180, "the job running", 1)

    producer = make_producer(settings.kafka.bootstrap_servers)
    read = 0

    def produce(messages) -> None:
        nonlocal read
        for key, value in messages:
            producer.send(settings.kafka.topics.transactions, key=key, value=value)
        producer.flush()
        read += len(messages)

    def progressed(target: int) -> None:
        wait_until(
            lambda: (scored_rows(settings, admin) or 0) >= target,
            600,
            f"{target} scored rows",
            interval=0.5,
        )

    faults = []

    def fault(name: str) -> None:
        faults.append({"fault": name, "at_rows": scored_rows(settings, admin)})

    # 1. SIGKILL the TaskManager after a checkpoint, with the first part in flight
    produce(to_messages(parts[0]))
    produce([(None, message) for message, _ in corpus])
    produce(to_messages(parts[0].head(DUPLICATES)))
    wait_until(
        lambda: cluster.completed_checkpoints(job_id) >= 1, 120, "a checkpoint", 1
    )
    progressed(PART_ROWS // 4)
    killed = cluster.kill_taskmanagers()
    assert killed
    fault("taskmanager SIGKILL")
    cluster.script("taskmanager")

    # 2. restart the broker while the second part is being scored
    produce(to_messages(parts[1]))
    progressed(PART_ROWS + PART_ROWS // 4)
    producer.close()
    fault("kafka restart")
    services("stop", "kafka")
    services("start", "kafka")
    producer = make_producer(settings.kafka.bootstrap_servers)

    # 3. stop PostgreSQL for 30 s while the third part is being scored
    produce(to_messages(parts[2]))
    producer.close()
    progressed(2 * PART_ROWS + PART_ROWS // 4)
    fault("postgres stopped 30 s")
    services("stop", "postgres")
    time.sleep(30)
    services("start", "postgres")

    # every part scored, then the last transactions committed in Kafka
    progressed(len(frame))
    conn = db.connect(settings.postgres, settings.postgres.admin_user, admin)
    conn.autocommit = True
    expected_dead = len(corpus) + DUPLICATES
    summary = None

    def settled() -> bool:
        nonlocal summary
        summary = collect(settings, conn)
        return (
            summary.dead_lettered >= expected_dead
            and summary.alerts_kafka >= summary.alerts_table
        )

    wait_until(settled, 300, "dead letters and alerts committed", interval=3)
    with conn.cursor() as cur:
        cur.execute("SELECT transaction_id FROM scored_transactions")
        ids = [str(r[0]) for r in cur.fetchall()]
    conn.close()
    failures = cluster.failures(job_id)
    cluster.cancel(job_id)

    dead = [
        json.loads(m)
        for m in topics.read_committed(
            settings.kafka.bootstrap_servers, settings.kafka.topics.dead_letters
        )
    ]
    report = {
        **summary.as_dict(),
        "distinct_valid_ids": int(frame["transaction_id"].nunique()),
        "duplicates_found": sum(
            d["reason"] == "duplicate_transaction_id" for d in dead
        ),
        "job_failures": failures,
        "faults": faults,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))

    assert summary.read == read == len(frame) + len(corpus) + DUPLICATES
    assert len(ids) == len(set(ids)) == summary.scored_rows
    assert set(ids) == {str(t) for t in frame["transaction_id"]}
    assert summary.dead_lettered == expected_dead
    assert summary.accounted
    assert summary.duplicate_alerts_kafka == 0
    assert summary.alerts_kafka == summary.alerts_table > 0
    assert report["duplicates_found"] == DUPLICATES
    assert Counter(d["reason"] for d in dead) == Counter(
        [reason for _, reason in corpus] + ["duplicate_transaction_id"] * DUPLICATES
    )
    # each fault made the job fail and restore (a broker restart may be ridden
    # out by the clients' retries, so at least the other two)
    assert len(failures) >= 2, failures
