"""A benchmark's private slice of the real Kafka broker and PostgreSQL server.

Every topic the benchmark creates is named ``<prefix>.<run>.<topic>`` with a
random ``bench-xxxxxxxx`` prefix, every job run gets its own consumer group
and transactional id prefix, and all runs share one database
``bench_xxxxxxxx`` whose sink tables are emptied before each run. ``close``
deletes the prefix's topics and drops the database; nothing else on the
servers is touched.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import yaml

from txwatch import db, topics
from txwatch.config import DEFAULT_CONFIG, Settings, load
from txwatch.runner import JobProcess

logger = logging.getLogger(__name__)

# Daily partitions for the handbook window the benchmark replays.
PARTITIONS = (date(2018, 4, 1), date(2018, 8, 15))


@dataclass(frozen=True)
class Secrets:
    """Database passwords, read from the environment by the entry point."""

    admin: str
    writer: str
    analyst: str


@dataclass(frozen=True)
class Run:
    """One configured run of the job: its settings and where they are written."""

    name: str
    config_path: Path
    settings: Settings
    transactional_prefix: str

    def job(self, model_dir: Path, *args: str, log_dir: Path) -> JobProcess:
        """The job on this run's settings; ``args`` go to ``jobs.pipeline``.

        Flink's own log goes to ``log_dir/<run>/``, not to PyFlink's shared
        log file, which concurrent jobs on the machine overwrite.
        """
        flink_logs = log_dir / self.name
        flink_logs.mkdir(parents=True, exist_ok=True)
        return JobProcess(
            [
                "--config",
                str(self.config_path),
                "--model-dir",
                str(model_dir),
                "--transactional-prefix",
                self.transactional_prefix,
                "--name",
                self.transactional_prefix,
                *args,
            ],
            log_dir / f"{self.name}.log",
            env={"FLINK_LOG_DIR": str(flink_logs)},
        )

    def flink_errors(self, log_dir: Path, lines: int = 12) -> str:
        """The last exception lines of this run's Flink log, for error messages."""
        found = []
        for path in sorted((log_dir / self.name).glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            found += [line for line in text if "Exception" in line or "ERROR" in line]
        return "\n".join(found[-lines:])


class Workspace:
    """Private topics, database and configuration files for one benchmark."""

    def __init__(self, secrets: Secrets, partitions: int = 2):
        token = uuid.uuid4().hex[:8]
        self.prefix = f"bench-{token}"
        self.database = f"bench_{token}"
        self.secrets = secrets
        self.partitions = partitions
        self.directory = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        # Job logs outlive the workspace, for reading after a failed run.
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-logs-"))
        self.base = yaml.safe_load(DEFAULT_CONFIG.read_text())
        self._database_settings: Settings | None = None

    def topic(self, run: str, name: str) -> str:
        return f"{self.prefix}.{run}.{name}"

    def run(
        self,
        name: str,
        transactions: str | None = None,
        feedback: str | None = None,
        **job_overrides,
    ) -> Run:
        """Settings for a run; ``transactions``/``feedback`` share input topics.

        Creates the run's topics and, on first use, the database.
        """
        raw = yaml.safe_load(yaml.safe_dump(self.base))
        names = raw["kafka"]["topics"]
        raw["kafka"]["topics"] = {k: self.topic(name, v) for k, v in names.items()}
        if transactions:
            raw["kafka"]["topics"]["transactions"] = transactions
        if feedback:
            raw["kafka"]["topics"]["feedback"] = feedback
        raw["kafka"]["partitions"] = self.partitions
        raw["kafka"]["consumer_group"] = f"{self.prefix}-{name}"
        raw["postgres"]["database"] = self.database
        raw["job"]["checkpoint_dir"] = str(self.directory / name / "checkpoints")
        raw["job"].update(job_overrides)
        path = self.directory / name / "txwatch.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(raw))
        settings = load(path)

        if self._database_settings is None:
            pg = settings.postgres
            db.migrate(
                pg,
                self.secrets.admin,
                {
                    pg.writer_user: self.secrets.writer,
                    pg.analyst_user: self.secrets.analyst,
                },
            )
            db.ensure_partitions(pg, self.secrets.admin, *PARTITIONS)
            self._database_settings = settings
        topics.ensure_topics(settings.kafka)
        return Run(name, path, settings, f"{self.prefix}-{name}")

    def connect(self):
        """An autocommit administrator connection to the workspace's database."""
        pg = self._database_settings.postgres
        conn = db.connect(pg, pg.admin_user, self.secrets.admin)
        conn.autocommit = True
        return conn

    def empty_tables(self) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("TRUNCATE scored_transactions, alerts")
        finally:
            conn.close()

    def close(self) -> None:
        """Delete this workspace's topics and database, and its files."""
        from kafka import KafkaAdminClient

        bootstrap = self.base["kafka"]["bootstrap_servers"]
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            mine = [t for t in admin.list_topics() if t.startswith(f"{self.prefix}.")]
            if mine:
                admin.delete_topics(mine, timeout_ms=30_000)
            logger.info("deleted %d topics of %s", len(mine), self.prefix)
        finally:
            admin.close()
        if self._database_settings is not None:
            pg = self._database_settings.postgres
            conn = db.connect(
                pg,
                pg.admin_user,
                self.secrets.admin,
                database="postgres",
            )
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'
                    )
            finally:
                conn.close()
            logger.info("dropped database %s", self.database)
        shutil.rmtree(self.directory, ignore_errors=True)
