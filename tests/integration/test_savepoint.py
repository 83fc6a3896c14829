"""Stop with a savepoint, start a changed job from it: its state carries over."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from training.dataset import compute_features, load_handbook
from txwatch import topics
from txwatch.replay import make_producer, to_messages
from txwatch.runner import wait_until
from txwatch.summary import scored_count
from udfs.features import CARD_FEATURES, FEATURE_NAMES

pytestmark = pytest.mark.slow
DUPLICATES = 20
BACKEND_CLASSES = {
    "hashmap": "HashMapStateBackend",
    "rocksdb": "EmbeddedRocksDBStateBackend",
}


# Savepoints are in Flink's canonical format: the second job may switch the
# state backend the first one used.
@pytest.mark.parametrize(
    ("backend_before", "backend_after"),
    [("hashmap", "rocksdb"), ("rocksdb", "hashmap")],
)
def test_a_job_rescaled_from_a_savepoint_keeps_card_history_and_duplicate_ids(
    cluster, stack_with, trained_model, handbook_files, backend_before, backend_after
):
    stack = stack_with(state_backend=backend_before)
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["job"]["state_backend"] = backend_after
    config_after = stack.tmp_path / "txwatch-after.yaml"
    config_after.write_text(yaml.safe_dump(raw))
    frame = load_handbook(handbook_files[3:4], "2018-07-08", "2018-07-10").head(6_000)
    first, second = frame.iloc[:3_000], frame.iloc[3_000:]
    topic = stack.settings.kafka.topics.transactions
    producer = make_producer(stack.settings.kafka.bootstrap_servers)
    conn = stack.connect()

    def send(messages) -> None:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush()

    def submit(parallelism: int, backend: str, savepoint: str | None = None) -> str:
        args = ["--parallelism", str(parallelism)]
        if backend == backend_after:
            args += ["--config", str(config_after)]  # the last --config wins
        job_id = cluster.submit(
            *stack.job_args(trained_model, *args), savepoint=savepoint
        )
        wait_until(lambda: cluster.all_running(job_id), 180, "the job running", 1)
        used = cluster.get(f"/jobs/{job_id}/checkpoints/config")["state_backend"]
        assert used == BACKEND_CLASSES[backend]
        return job_id

    # the first half at parallelism 1, then stop with a savepoint
    send(to_messages(first))
    job_id = submit(1, backend_before)
    wait_until(lambda: scored_count(conn) >= len(first), 600, "the first half")
    savepoint = cluster.stop_with_savepoint(job_id, stack.tmp_path / "savepoints")
    wait_until(lambda: cluster.state(job_id) == "FINISHED", 60, "the job stopping")

    # the second half, and repeats of first-half ids, to the job rescaled to 2
    send(to_messages(second))
    send(to_messages(first.head(DUPLICATES)))
    job_id = submit(2, backend_after, savepoint)
    wait_until(lambda: scored_count(conn) >= len(frame), 600, "the second half")

    def dead_letters() -> list[dict]:
        return [
            json.loads(m)
            for m in topics.read_committed(
                stack.settings.kafka.bootstrap_servers,
                stack.settings.kafka.topics.dead_letters,
            )
        ]

    wait_until(lambda: len(dead_letters()) >= DUPLICATES, 120, "the dead letters")
    assert max(v["parallelism"] for v in cluster.job(job_id)["vertices"]) == 2
    assert cluster.root_exception(job_id) is None
    cluster.cancel(job_id)

    with conn.cursor() as cur:
        cur.execute("SELECT transaction_id, features FROM scored_transactions")
        online = {int(tx): f for tx, f in cur.fetchall()}
    conn.close()
    producer.close()
    assert len(online) == len(frame)
    # the first-half ids were remembered across the savepoint
    assert [d["reason"] for d in dead_letters()] == [
        "duplicate_transaction_id"
    ] * DUPLICATES
    # the card windows after the restore count the transactions before it
    offline, _, _ = compute_features(frame)
    card = [FEATURE_NAMES.index(name) for name in CARD_FEATURES]
    ids = second["transaction_id"].to_numpy()
    job = np.array([[online[int(i)][n] for n in CARD_FEATURES] for i in ids])
    expected = offline[len(first) :][:, card]
    assert np.allclose(job, expected, rtol=1e-9, atol=1e-9)


def test_every_operator_of_the_job_has_a_uid(trained_model):
    """Savepoints map state by operator id; a generated id moves with the graph."""
    from jobs import pipeline
    from txwatch.config import load

    settings = load()
    options = pipeline.JobOptions(model_dir=trained_model)
    env = pipeline.configure(settings, options)
    pipeline.build(env, settings, options, writer_password="not-used")

    graph = env._j_stream_execution_environment.getStreamGraph(False)
    nodes = [
        (node.getOperatorName(), node.getTransformationUID())
        for node in graph.getStreamNodes().toArray()
    ]
    assert len(nodes) > 20
    assert [name for name, uid in nodes if not uid] == []
    uids = [uid for _, uid in nodes]
    assert len(set(uids)) == len(uids)
