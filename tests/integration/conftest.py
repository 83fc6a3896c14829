"""Fixtures for tests against the real Kafka broker, PostgreSQL and Flink.

Each test gets its own topics (a unique prefix) and its own database, so
tests never see each other's records. The servers are the project's own,
started by ``make services`` (``make test`` and ``.ci/run`` do it).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from flink_cluster import FlinkCluster
from provisioning import provision

from txwatch import db, topics
from txwatch.config import DEFAULT_CONFIG, PROJECT_ROOT, Settings, load
from txwatch.runner import JobProcess


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


def _secret(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: run the tests through `make test`"
    return value


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    return {
        "admin": _secret("TXWATCH_ADMIN_PASSWORD"),
        "writer": _secret("TXWATCH_WRITER_PASSWORD"),
        "analyst": _secret("TXWATCH_ANALYST_PASSWORD"),
    }


@pytest.fixture(scope="session")
def trained_model(handbook_files, tmp_path_factory) -> Path:
    """A small forest trained on April 2018, the way `txwatch train` does it."""
    from training.train import TrainingConfig, train

    model_dir = tmp_path_factory.mktemp("model")
    train(
        handbook_files[:1],
        model_dir,
        TrainingConfig(
            history_from="2018-04-01",
            train_from="2018-04-15",
            train_to="2018-05-01",
            n_estimators=50,
        ),
        progress=False,
    )
    return model_dir


@pytest.fixture
def cluster():
    """The standalone Flink cluster (scripts/cluster.sh), stopped afterwards."""
    cluster = FlinkCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@dataclass
class Stack:
    """One test's slice of the real services."""

    prefix: str
    config_path: Path
    settings: Settings
    secrets: dict[str, str]
    tmp_path: Path

    def connect(self):
        conn = db.connect(
            self.settings.postgres,
            self.settings.postgres.admin_user,
            self.secrets["admin"],
        )
        conn.autocommit = True
        return conn

    def job_args(self, model_dir: Path, *args: str) -> list[str]:
        """The job's options for this stack: settings, model, names, ``args``."""
        return [
            "--config",
            str(self.config_path),
            "--model-dir",
            str(model_dir),
            "--transactional-prefix",
            self.prefix,
            "--name",
            self.prefix,
            *args,
        ]

    def job(self, model_dir: Path, *args: str, name: str = "job") -> JobProcess:
        return JobProcess(
            self.job_args(model_dir, *args), self.tmp_path / f"{name}.log"
        )


def make_config(
    tmp_path: Path, prefix: str, partitions: int = 2, **job_overrides
) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["kafka"]["partitions"] = partitions
    raw["kafka"]["topics"] = {
        k: f"{prefix}.{v}" for k, v in raw["kafka"]["topics"].items()
    }
    raw["kafka"]["consumer_group"] = f"{prefix}-job"
    raw["postgres"]["database"] = prefix.replace("-", "_")
    raw["job"]["checkpoint_dir"] = str(tmp_path / "checkpoints")
    raw["job"]["checkpoint_interval_ms"] = 2000
    raw["job"]["restart_attempts"] = 3
    raw["job"].update(job_overrides)
    path = tmp_path / "txwatch.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def stack_with(request, tmp_path, secrets):
    """A factory of stacks whose job settings are overridden by keyword.

    ``@pytest.mark.partitions(n)`` sets the topics' size.
    """
    marker = request.node.get_closest_marker("partitions")
    made: list[Settings] = []

    def make(**job_overrides) -> Stack:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        config_path = make_config(
            tmp_path,
            prefix,
            partitions=marker.args[0] if marker else 2,
            **job_overrides,
        )
        settings = load(config_path)
        made.append(settings)
        provision(settings, secrets)
        return Stack(prefix, config_path, settings, secrets, tmp_path)

    yield make

    for settings in made:
        _drop(settings, secrets["admin"])


@pytest.fixture
def stack(stack_with):
    """Own topics and database; ``@pytest.mark.partitions(n)`` sets the topics' size."""
    return stack_with()


def _drop(settings: Settings, admin_password: str) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        admin.delete_topics(list(topics.topic_layout(settings.kafka)))
    finally:
        admin.close()
    conn = db.connect(
        settings.postgres,
        settings.postgres.admin_user,
        admin_password,
        database="postgres",
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            f'DROP DATABASE IF EXISTS "{settings.postgres.database}" WITH (FORCE)'
        )
    conn.close()


__all__ = ["PROJECT_ROOT", "Stack", "make_config"]
