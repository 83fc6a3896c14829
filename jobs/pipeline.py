"""The txwatch streaming job.

Graph (every operator has a stable ``uid`` and a ``name``)::

    Kafka transactions ─► validate ─► key by card ─► card history
         (raw JSON)         │ VALID                    │ + card rules
                            └─► dead letters ◄─ duplicates┤ CARD_OUT
    Kafka feedback ─► parse (labels as CARD_OUT) ─► union ─┘
                                                     │ key by terminal
    Kafka rules ─► broadcast ─► (both keyed operators) ─► terminal history
                      rule status ◄─┘                │ + terminal rules
                                                     │ FEATURED, rule hits
                     table ◄─────────────────────────┘
                       │ score (vectorized ONNX, Arrow batches): anomaly score,
                       │ fraud probability (supervised stage), reasons;
                       │ the challenger, if any, scores the same batch in shadow
                       ├─► JDBC scored_transactions, alerts, rule_hits, fraud_labels
                       └─► Kafka alerts (exactly once)
    dead letters ─► Kafka transactions.dlq (exactly once)
    rule status  ─► Kafka rules.status

Keys are computed by the operator before each keyed one (records are emitted
routed, see ``jobs.records``) and partitioned on by Flink's Java key selector.
Nothing reads event-time timestamps or watermarks: windows are kept in
keyed state by event time, and lateness is decided per card.

Run it locally with ``txwatch job run`` or submit ``jobs/pipeline.py`` to a
Flink cluster with ``flink run --python`` (see the Makefile's ``submit``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Configuration, Types, WatermarkStrategy
from pyflink.common.serialization import SimpleStringSchema
from pyflink.datastream import (
    CheckpointingMode,
    DataStream,
    KeyedStream,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment
from pyflink.table.expressions import col

from jobs import records
from jobs.operators import (
    DEAD_LETTERS,
    RULE_HITS,
    RULE_NAMES,
    RULE_STATUS,
    RULES_STATE,
    CardHistory,
    ParseFeedback,
    TerminalHistory,
    Validate,
)
from jobs.scoring_udf import score_function
from txwatch.config import PROJECT_ROOT, Settings, load
from udfs.features import FEATURE_NAMES
from udfs.rules import RuleSet

logger = logging.getLogger(__name__)

JARS_DIR = PROJECT_ROOT / ".run" / "jars"


@dataclass(frozen=True)
class JobOptions:
    """What varies between runs of the same job."""

    model_dir: Path
    rules_file: Path = PROJECT_ROOT / "conf" / "rules" / "starter.yaml"
    bounded: bool = False
    parallelism: int | None = None
    job_name: str = "txwatch"
    transactional_prefix: str = "txwatch"


def connector_jars(jars_dir: Path = JARS_DIR) -> list[str]:
    jars = sorted(jars_dir.glob("*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"no connector jars in {jars_dir}; run `make setup` to fetch them"
        )
    return [jar.as_uri() for jar in jars]


def build(
    env: StreamExecutionEnvironment,
    settings: Settings,
    options: JobOptions,
    writer_password: str,
):
    """Add the whole job to ``env``; the caller executes it."""
    job = settings.job
    topics = settings.kafka.topics
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.local-time-zone", "UTC")
    # Operator ids of the SQL part from its plan (``<node>_<kind>``), not from
    # the shape of the whole graph: a change upstream of the tables then
    # leaves the sinks' state restorable from a savepoint.
    t_env.get_config().set("table.exec.uid.generation", "ALWAYS")
    t_env.get_config().set(
        "python.fn-execution.arrow.batch.size", str(job.score_batch_size)
    )

    raw = env.from_source(
        _source(settings, topics.transactions, options),
        WatermarkStrategy.no_watermarks(),
        "transactions",
    ).uid("source-transactions")

    valid = (
        raw.process(
            Validate(settings.contract, job.max_lateness_ms),
            output_type=records.ROUTED_VALID,
        )
        .name("validate")
        .uid("validate")
    )

    rules = (
        env.from_source(
            _source(settings, topics.rules, options, from_earliest=True),
            WatermarkStrategy.no_watermarks(),
            "rules",
        )
        .uid("source-rules")
        .broadcast(RULES_STATE)
    )
    initial_rules = RuleSet.from_yaml(options.rules_file, RULE_NAMES).to_dicts()

    carded = (
        _by_route_key(valid, records.VALID)
        .connect(rules)
        .process(
            CardHistory(initial_rules, job.state_ttl_ms, job.max_out_of_orderness_ms),
            output_type=records.ROUTED_CARD_OUT,
        )
        .name("card-history")
        .uid("card-history")
    )

    feedback = (
        env.from_source(
            _source(settings, topics.feedback, options),
            WatermarkStrategy.no_watermarks(),
            "feedback",
        )
        .uid("source-feedback")
        .process(ParseFeedback(), output_type=records.ROUTED_CARD_OUT)
        .name("parse-feedback")
        .uid("parse-feedback")
    )
    featured = (
        _by_route_key(carded.union(feedback), records.CARD_OUT)
        .connect(rules)
        .process(
            TerminalHistory(initial_rules, job.label_delay_days, job.state_ttl_ms),
            output_type=records.FEATURED,
        )
        .name("terminal-history")
        .uid("terminal-history")
    )
    _side_output(carded, RULE_STATUS, "card-history").sink_to(
        _string_sink(settings, topics.rules_status, None)
    ).name("rule-status").uid("sink-rule-status")

    dead = _side_output(valid, DEAD_LETTERS, "validate").union(
        _side_output(carded, DEAD_LETTERS, "card-history"),
        _side_output(feedback, DEAD_LETTERS, "parse-feedback"),
    )
    dead.sink_to(
        _string_sink(
            settings, topics.dead_letters, f"{options.transactional_prefix}-dlq"
        )
    ).name("dead-letters").uid("sink-dead-letters")

    table = t_env.from_data_stream(featured)
    score = score_function(str(options.model_dir))
    scored = table.map(score(*[col(name) for name in records.FEATURED_NAMES]))
    t_env.create_temporary_view("scored", scored)

    t_env.create_temporary_view(
        "rule_hit_rows",
        t_env.from_data_stream(_side_output(featured, RULE_HITS, "terminal-history")),
    )
    t_env.create_temporary_view(
        "feedback_rows",
        t_env.from_data_stream(feedback).select(
            *[
                col("record").get(name).alias(name)
                for name in (
                    "transaction_id",
                    "event_time_ms",
                    "terminal_id",
                    "known_at_ms",
                )
            ]
        ),
    )

    statements = t_env.create_statement_set()
    _create_sinks(t_env, settings, writer_password, options)
    statements.add_insert_sql(
        f"""INSERT INTO rule_hits_jdbc
            SELECT transaction_id, {_event_time_expr()}, rule_id, rule_version, mode,
                   severity, reason, card_id, terminal_id
            FROM rule_hit_rows"""
    )
    statements.add_insert_sql(
        f"""INSERT INTO fraud_labels_jdbc SELECT transaction_id, {_event_time_expr()},
            terminal_id, CAST(TO_TIMESTAMP_LTZ(known_at_ms, 3) AS TIMESTAMP(3))
            FROM feedback_rows"""
    )
    statements.add_insert_sql(_insert_scored())
    statements.add_insert_sql(_insert_alerts("alerts_jdbc"))
    statements.add_insert_sql(_insert_alerts("alerts_kafka"))
    statements.attach_as_datastream()
    return env


def _side_output(stream: DataStream, tag, operator_uid: str) -> DataStream:
    """A side output, through the operator PyFlink adds for it, with a uid."""
    return stream.get_side_output(tag).uid(f"{operator_uid}-{tag.tag_id}")


def _by_route_key(routed: DataStream, record_type) -> KeyedStream:
    """Key a stream of routed records on their key, without a Python function.

    ``DataStream.key_by`` runs a Python operator that only wraps each record
    as ``(key, record)`` before Flink's Java ``KeyByKeySelector`` partitions
    on field 0; the operators of this job emit that shape themselves. The
    keyed operators downstream receive ``record`` alone, as after ``key_by``.
    """
    key_type = Types.ROW([Types.STRING()]).get_java_type_info()
    j_keyed = routed._j_data_stream.keyBy(
        get_gateway().jvm.KeyByKeySelector(), key_type
    )
    return KeyedStream(j_keyed, record_type, routed)


def configure(settings: Settings, options: JobOptions) -> StreamExecutionEnvironment:
    """An execution environment set up for this job: thread mode, checkpoints."""
    job = settings.job
    config = Configuration()
    config.set_string("python.execution-mode", "thread")
    config.set_string("python.fn-execution.bundle.size", str(job.bundle_size))
    config.set_string("python.fn-execution.bundle.time", str(job.bundle_time_ms))
    config.set_string("python.state.cache-size", "100000")
    config.set_string(
        "execution.checkpointing.interval", f"{job.checkpoint_interval_ms} ms"
    )
    config.set_string(
        "execution.checkpointing.timeout", f"{job.checkpoint_timeout_ms} ms"
    )
    config.set_string(
        "execution.checkpointing.min-pause",
        f"{job.min_pause_between_checkpoints_ms} ms",
    )
    config.set_string(
        "execution.checkpointing.externalized-checkpoint-retention",
        "RETAIN_ON_CANCELLATION",
    )
    config.set_string(
        "execution.checkpointing.dir", settings.path(job.checkpoint_dir).as_uri()
    )
    config.set_string("state.backend.type", job.state_backend)
    if job.state_backend == "rocksdb":
        # Only the files RocksDB wrote since the last checkpoint are uploaded.
        config.set_string("execution.checkpointing.incremental", "true")
    config.set_string("restart-strategy.type", "exponential-delay")
    config.set_string("restart-strategy.exponential-delay.initial-backoff", "1 s")
    config.set_string("restart-strategy.exponential-delay.max-backoff", "30 s")
    config.set_string(
        "restart-strategy.exponential-delay.attempts-before-reset-backoff",
        str(job.restart_attempts),
    )
    config.set_string("pipeline.name", options.job_name)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.enable_checkpointing(job.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    env.set_parallelism(options.parallelism or job.parallelism)
    env.add_jars(*connector_jars())
    env.set_python_executable(sys.executable)
    return env


def _source(
    settings: Settings, topic: str, options: JobOptions, from_earliest: bool = False
) -> KafkaSource:
    # The rules topic is always read from its start: replaying every command
    # rebuilds the rule set when the job starts without a checkpoint.
    starting = (
        KafkaOffsetsInitializer.earliest()
        if from_earliest
        else KafkaOffsetsInitializer.committed_offsets(
            KafkaOffsetResetStrategy.EARLIEST
        )
    )
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_topics(topic)
        .set_group_id(settings.kafka.consumer_group)
        .set_starting_offsets(starting)
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("isolation.level", "read_committed")
        .set_property("commit.offsets.on.checkpoint", "true")
    )
    if options.bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


def _string_sink(
    settings: Settings, topic: str, transactional_prefix: str | None
) -> KafkaSink:
    """Exactly once with a transactional prefix, at least once without."""
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
    )
    if transactional_prefix is None:
        return builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE).build()
    return (
        builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(transactional_prefix)
        .set_property("transaction.timeout.ms", "600000")
        .build()
    )


def _jdbc_options(settings: Settings, table: str, password: str) -> str:
    job = settings.job
    options = {
        "connector": "jdbc",
        "url": settings.postgres.jdbc_url,
        "table-name": table,
        "driver": "org.postgresql.Driver",
        "username": settings.postgres.writer_user,
        "password": password,
        "sink.buffer-flush.max-rows": str(job.jdbc_batch_rows),
        "sink.buffer-flush.interval": f"{job.jdbc_flush_interval_ms}ms",
        "sink.max-retries": "10",
    }
    return ",\n".join(f"'{k}' = '{_sql_quote(v)}'" for k, v in options.items())


def _sql_quote(value: str) -> str:
    return value.replace("'", "''")


# An alert as both alert sinks (PostgreSQL and Kafka) carry it.
_ALERT_COLUMNS = """transaction_id STRING,
            event_time TIMESTAMP(3),
            card_id STRING,
            terminal_id STRING,
            amount DOUBLE,
            score DOUBLE,
            risk DOUBLE,
            model_version STRING,
            reasons STRING,
            rule_hits STRING,
            fraud_probability DOUBLE"""


def _create_sinks(t_env, settings: Settings, password: str, options: JobOptions):
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE scored_jdbc (
            transaction_id STRING,
            event_time TIMESTAMP(3),
            card_id STRING,
            terminal_id STRING,
            amount DOUBLE,
            original_amount DOUBLE,
            currency STRING,
            is_late BOOLEAN,
            score DOUBLE,
            risk DOUBLE,
            is_alert BOOLEAN,
            model_version STRING,
            features STRING,
            rule_hits STRING,
            challenger_score DOUBLE,
            challenger_version STRING,
            challenger_alert BOOLEAN,
            fraud_probability DOUBLE,
            PRIMARY KEY (transaction_id, event_time) NOT ENFORCED
        ) WITH ({_jdbc_options(settings, "scored_transactions", password)})
        """
    )
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE alerts_jdbc (
            {_ALERT_COLUMNS},
            PRIMARY KEY (transaction_id, event_time) NOT ENFORCED
        ) WITH ({_jdbc_options(settings, "alerts", password)})
        """
    )
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE rule_hits_jdbc (
            transaction_id STRING,
            event_time TIMESTAMP(3),
            rule_id STRING,
            rule_version INT,
            mode STRING,
            severity STRING,
            reason STRING,
            card_id STRING,
            terminal_id STRING,
            PRIMARY KEY (transaction_id, event_time, rule_id) NOT ENFORCED
        ) WITH ({_jdbc_options(settings, "rule_hits", password)})
        """
    )
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE fraud_labels_jdbc (
            transaction_id STRING,
            event_time TIMESTAMP(3),
            terminal_id STRING,
            known_at TIMESTAMP(3),
            PRIMARY KEY (transaction_id, event_time) NOT ENFORCED
        ) WITH ({_jdbc_options(settings, "fraud_labels", password)})
        """
    )
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY TABLE alerts_kafka (
            {_ALERT_COLUMNS}
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{settings.kafka.topics.alerts}',
            'properties.bootstrap.servers' = '{settings.kafka.bootstrap_servers}',
            'properties.transaction.timeout.ms' = '600000',
            'key.format' = 'raw',
            'key.fields' = 'card_id',
            'value.format' = 'json',
            'value.fields-include' = 'ALL',
            'value.json.timestamp-format.standard' = 'ISO-8601',
            'sink.delivery-guarantee' = 'exactly-once',
            'sink.transactional-id-prefix' = '{options.transactional_prefix}-alerts'
        )
        """
    )


def _event_time_expr() -> str:
    return "CAST(TO_TIMESTAMP_LTZ(event_time_ms, 3) AS TIMESTAMP(3))"


def _insert_scored() -> str:
    pairs = ", ".join(f"KEY '{name}' VALUE {name}" for name in FEATURE_NAMES)
    return f"""
        INSERT INTO scored_jdbc
        SELECT transaction_id, {_event_time_expr()}, card_id, terminal_id, amount,
               original_amount, currency, is_late, score, risk, is_alert, model_version,
               JSON_OBJECT({pairs}), rule_hits, challenger_score, challenger_version,
               challenger_alert, fraud_probability
        FROM scored
    """


def _insert_alerts(sink: str) -> str:
    return f"""
        INSERT INTO {sink}
        SELECT transaction_id, {_event_time_expr()}, card_id, terminal_id, amount,
               score, risk, model_version, reasons, rule_hits, fraud_probability
        FROM scored WHERE is_alert
    """


def _expose_environment() -> None:
    """Let Python embedded in the JVM (thread mode) import what this one can.

    Thread mode runs the functions in an interpreter that pemja starts from
    the base Python installation, which does not see a virtualenv's
    site-packages or this project unless they are on ``PYTHONPATH``.
    """
    import site

    paths = [*site.getsitepackages(), str(PROJECT_ROOT)]
    current = os.environ.get("PYTHONPATH")
    if current:
        paths.append(current)
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``flink run --python jobs/pipeline.py`` and ``txwatch job``."""
    parser = argparse.ArgumentParser(
        prog="txwatch-job", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--config", default=None, help="YAML settings (conf/txwatch.yaml)"
    )
    parser.add_argument(
        "--model-dir", default=None, help="model directory to score with"
    )
    parser.add_argument(
        "--rules",
        default=None,
        help="rule pack in force at start (conf/rules/starter.yaml)",
    )
    parser.add_argument("--parallelism", type=int, default=None)
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the Kafka offsets that are the latest at start",
    )
    parser.add_argument("--name", default="txwatch")
    parser.add_argument("--transactional-prefix", default="txwatch")
    parser.add_argument(
        "--detached",
        action="store_true",
        help="submit and return instead of waiting for the job to end",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    os.environ.setdefault("TZ", "UTC")
    _expose_environment()
    settings = load(args.config)
    options = JobOptions(
        model_dir=Path(args.model_dir)
        if args.model_dir
        else settings.path(settings.job.model_dir),
        bounded=args.bounded,
        **({"rules_file": Path(args.rules)} if args.rules else {}),
        parallelism=args.parallelism,
        job_name=args.name,
        transactional_prefix=args.transactional_prefix,
    )
    password = Settings.secret(settings.postgres.writer_password_env)
    env = configure(settings, options)
    build(env, settings, options, password)
    if args.detached:
        client = env.execute_async(options.job_name)
        print(f"submitted job {client.get_job_id()}")
        return 0
    env.execute(options.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
