"""Typed configuration, loaded from YAML and validated on load.

The environment is read in one place only, ``Settings.secret``, called by the
entry points; library code receives values, never variable names.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path

import yaml

from udfs.contract import ContractLimits

logger = logging.getLogger(__name__)

# Settings that earlier releases read and this one does not: accepted with a
# warning, so that a configuration written for them still loads.
RETIRED = {
    ("job", "idle_source_timeout_ms"): "the job keeps no watermarks any more",
}

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "conf" / "txwatch.yaml"


class ConfigError(ValueError):
    """A configuration value is missing or out of range."""


@dataclass(frozen=True)
class Topics:
    transactions: str = "transactions"
    dead_letters: str = "transactions.dlq"
    alerts: str = "alerts"
    feedback: str = "feedback"
    rules: str = "rules"
    rules_status: str = "rules.status"
    models: str = "models"


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "127.0.0.1:19092"
    partitions: int = 2
    consumer_group: str = "txwatch-job"
    topics: Topics = field(default_factory=Topics)


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "127.0.0.1"
    port: int = 15432
    database: str = "txwatch"
    writer_user: str = "txwatch_writer"
    writer_password_env: str = "TXWATCH_WRITER_PASSWORD"
    analyst_user: str = "analyst"
    analyst_password_env: str = "TXWATCH_ANALYST_PASSWORD"
    admin_user: str = "postgres"
    admin_password_env: str = "TXWATCH_ADMIN_PASSWORD"

    @property
    def jdbc_url(self) -> str:
        # stringtype=unspecified lets the server cast text parameters to jsonb.
        return (
            f"jdbc:postgresql://{self.host}:{self.port}/{self.database}"
            "?stringtype=unspecified&reWriteBatchedInserts=true"
        )

    def dsn(self, user: str, password: str) -> str:
        return (
            f"host={self.host} port={self.port} dbname={self.database} "
            f"user={user} password={password}"
        )


# Flink's keyed state backends: on the JVM heap, checkpointed in full; or in
# RocksDB on local disk, checkpointed incrementally.
STATE_BACKENDS = ("hashmap", "rocksdb")


@dataclass(frozen=True)
class JobSettings:
    parallelism: int = 1
    max_out_of_orderness_ms: int = 5_000
    max_lateness_ms: int = 30 * 24 * 3_600_000
    checkpoint_interval_ms: int = 10_000
    checkpoint_timeout_ms: int = 120_000
    min_pause_between_checkpoints_ms: int = 2_000
    checkpoint_dir: str = ".run/checkpoints"
    label_delay_days: int = 7
    score_batch_size: int = 5_000
    bundle_time_ms: int = 200
    bundle_size: int = 5_000
    jdbc_batch_rows: int = 5_000
    jdbc_flush_interval_ms: int = 1_000
    model_dir: str = ".run/model"
    restart_attempts: int = 30
    state_ttl_ms: int = 31 * 24 * 3_600_000
    state_backend: str = "hashmap"

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and value < 0:
                raise ConfigError(f"job.{f.name} must be >= 0, got {value}")
        if self.parallelism < 1:
            raise ConfigError(f"job.parallelism must be >= 1, got {self.parallelism}")
        if self.score_batch_size < 1:
            raise ConfigError("job.score_batch_size must be >= 1")
        if self.state_backend not in STATE_BACKENDS:
            raise ConfigError(
                f"job.state_backend must be one of {', '.join(STATE_BACKENDS)}, "
                f"got {self.state_backend!r}"
            )


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings
    postgres: PostgresSettings
    job: JobSettings
    contract: ContractLimits

    def path(self, relative: str) -> Path:
        """A configured path, resolved against the project root."""
        p = Path(relative)
        return p if p.is_absolute() else PROJECT_ROOT / p

    @staticmethod
    def secret(variable: str) -> str:
        value = os.environ.get(variable)
        if not value:
            raise ConfigError(
                f"environment variable {variable} is not set; export it "
                "(make writes .run/secrets.env and loads it for you)"
            )
        return value


def load(path: str | Path | None = None, overrides: dict | None = None) -> Settings:
    """Read a YAML configuration; ``overrides`` maps ``section.key`` to values."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file {path} does not exist") from exc
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value

    kafka = dict(raw.get("kafka", {}))
    kafka["topics"] = _build(Topics, kafka.get("topics", {}), "kafka.topics")
    contract = dict(raw.get("contract", {}))
    limits = ContractLimits(
        currencies={
            str(k): float(v)
            for k, v in contract.get("currencies", {"EUR": 1.0}).items()
        },
        max_amount=float(contract.get("max_amount", 1_000_000)),
        max_message_bytes=int(contract.get("max_message_bytes", 16_384)),
        min_event_time_ms=_epoch_ms(
            contract.get("min_event_time", "2000-01-01T00:00:00Z")
        ),
        max_future_ms=int(float(contract.get("max_future_hours", 24)) * 3_600_000),
    )
    return Settings(
        kafka=_build(KafkaSettings, kafka, "kafka"),
        postgres=_build(PostgresSettings, raw.get("postgres", {}), "postgres"),
        job=_build(JobSettings, raw.get("job", {}), "job"),
        contract=limits,
    )


def _build(cls, values: dict, section: str):
    values = dict(values)
    for name in [n for n in values if (section, n) in RETIRED]:
        del values[name]
        logger.warning(
            "%s.%s is ignored: %s; remove it from the configuration",
            section,
            name,
            RETIRED[(section, name)],
        )
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ConfigError(
            f"{section}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
        )
    converted = {}
    for name, value in values.items():
        kind = known[name].type
        if kind in ("int", int):
            converted[name] = int(value)
        elif kind in ("str", str):
            converted[name] = str(value)
        else:
            converted[name] = value
    return cls(**converted)


def _epoch_ms(text: str) -> int:
    parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ConfigError(f"contract.min_event_time {text!r} needs a zone offset")
    return int(parsed.timestamp() * 1000)
