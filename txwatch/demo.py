"""The end-to-end demo on the bundled handbook data.

Steps, each printed as it starts:

1. database migrations and daily partitions; sink tables emptied;
2. Kafka topics created afresh;
3. a model trained on May-June, with April as warm-up: the Isolation Forest
   and the supervised stage that decides alerts, fitted on the days whose
   labels were known at the end of June (kept in ``.run/model`` for later
   runs);
4. the job started (local Flink mini-cluster, its own process);
5. June (warm-up: fills the 30-day windows) and July replayed into Kafka,
   with fraud labels as delayed feedback and a few bad messages and
   duplicates mixed in, then one more day (August 1) whose amounts are all
   multiplied by ``shift_amount_factor`` (2): prices doubled overnight, a
   documented shift the model never saw;
6. wait until every transaction read is scored or dead-lettered and the
   alerts are committed to Kafka; stop the job;
7. drift: the hourly PSI of every model feature and of the score against the
   model's training reference (what ``txwatch drift`` computes), written to
   ``drift_metrics`` and summed up per period: July, then the shifted day;
8. the summary: counts, throughput, quality on July against the labels, and
   the drift of the two periods.

The shifted day is scored and counted like any other (read = scored +
dead-lettered holds over everything replayed); quality is measured on July
only, since the shifted day's alerts say more about the shift than about
the model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from txwatch import catalog, db, topics
from txwatch.config import PROJECT_ROOT, Settings
from txwatch.corpus import bad_messages
from txwatch.replay import make_producer, replay
from txwatch.runner import JobProcess, wait_until
from txwatch.summary import RunSummary, collect, scored_count
from udfs.drift import DRIFT_THRESHOLD

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    data_files: list[Path]
    train_from: str = "2018-05-01"
    train_to: str = "2018-07-01"
    warmup_from: str = "2018-06-01"
    replay_from: str = "2018-07-01"
    replay_to: str = "2018-08-01"
    duplicates: int = 25
    parallelism: int = 1
    shift_from: str = "2018-08-01"
    shift_to: str = "2018-08-02"
    shift_amount_factor: float = 2.0
    timeout_s: float = 3_600.0
    retrain: bool = False


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_demo(settings: Settings, plan: DemoPlan, secrets: dict[str, str]) -> RunSummary:
    from training.dataset import load_handbook
    from training.train import TrainingConfig, train

    admin = secrets["admin"]
    say("database: migrations and partitions")
    report = db.migrate(
        settings.postgres,
        admin,
        {
            settings.postgres.writer_user: secrets["writer"],
            settings.postgres.analyst_user: secrets["analyst"],
        },
    )
    print(
        f"   path taken: {report.path_taken}; applied {report.applied or 'nothing new'}"
    )
    db.ensure_partitions(settings.postgres, admin, date(2018, 4, 1), date(2018, 8, 15))
    conn = db.connect(settings.postgres, settings.postgres.admin_user, admin)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE scored_transactions, alerts")

    say("kafka: fresh topics")
    topics.ensure_topics(settings.kafka, reset=True)

    model_dir = settings.path(settings.job.model_dir)
    if plan.retrain or not _model_is_current(model_dir):
        say(
            f"training: Isolation Forest and supervised stage on "
            f"{plan.train_from} .. {plan.train_to}"
        )
        result = train(
            plan.data_files,
            model_dir,
            TrainingConfig(train_from=plan.train_from, train_to=plan.train_to),
        )
        print(
            f"   model {result.metadata.version}: "
            f"threshold {result.metadata.threshold:.4f}, "
            f"ONNX vs scikit-learn max diff {result.metrics['onnx_max_abs_diff']:.2g}"
        )
        stage = result.metadata.supervised
        if stage is not None:
            print(
                f"   supervised stage: {stage.trained_rows:,} transactions labelled "
                f"by {stage.labelled_to} ({stage.trained_frauds:,} frauds), "
                f"fraud threshold {stage.threshold:.4f}, ONNX vs scikit-learn max "
                f"diff {result.metrics['supervised_onnx_max_abs_diff']:.2g}"
            )
    else:
        print(f"   using the model in {model_dir.relative_to(PROJECT_ROOT)}")
    writer = db.connect(
        settings.postgres, settings.postgres.writer_user, secrets["writer"]
    )
    try:
        catalog.publish(writer, model_dir)
    finally:
        writer.close()

    say("loading the replay window")
    frame = load_handbook(plan.data_files, plan.warmup_from, plan.replay_to)
    shifted = shift_amounts(
        load_handbook(plan.data_files, plan.shift_from, plan.shift_to),
        plan.shift_amount_factor,
    )
    print(
        f"   {len(frame):,} transactions, then {len(shifted):,} of "
        f"{plan.shift_from} with amounts x{plan.shift_amount_factor:g}"
    )
    frame = pd.concat([frame, shifted], ignore_index=True)
    extra = [message for message, _ in bad_messages()]
    duplicates = frame.tail(plan.duplicates)  # repeats inside the duplicate horizon

    say(f"job: starting (parallelism {plan.parallelism})")
    stamp = time.strftime("%Y%m%d%H%M%S")
    job = JobProcess(
        [
            "--parallelism",
            str(plan.parallelism),
            "--name",
            "txwatch-demo",
            "--transactional-prefix",
            f"txwatch-demo-{stamp}",
        ],
        PROJECT_ROOT / ".run" / "logs" / "demo-job.log",
    ).start()
    try:
        say(
            f"replay: {plan.warmup_from} .. {plan.replay_to}, then the shifted "
            f"{plan.shift_from} into Kafka"
        )
        started = time.monotonic()
        producer = make_producer(settings.kafka.bootstrap_servers)
        sent = replay(
            producer,
            frame,
            settings.kafka.topics.transactions,
            settings.kafka.topics.feedback,
            settings.job.label_delay_days,
            extra=extra,
        )
        from txwatch.replay import to_messages

        for key, value in to_messages(duplicates):
            producer.send(settings.kafka.topics.transactions, key=key, value=value)
        producer.flush()
        producer.close()
        total = sent.transactions + len(duplicates)
        print(
            f"   sent {total:,} messages ({sent.rate:,.0f}/s), "
            f"{sent.feedback:,} feedback labels"
        )

        say("waiting for the job to score everything")
        wait_until(
            lambda: scored_count(conn) >= len(frame),
            plan.timeout_s,
            "scoring of every valid transaction",
            interval=5.0,
            alive=job.running,
            on_poll=lambda: print(
                f"   scored {scored_count(conn):,} / {len(frame):,}", flush=True
            ),
        )
        seconds = time.monotonic() - started

        def settled() -> bool:
            s = collect(settings, conn)
            return s.accounted and s.alerts_kafka >= s.alerts_table

        wait_until(
            settled,
            120.0,
            "dead letters and alerts committed to Kafka",
            interval=5.0,
            alive=job.running,
        )
    finally:
        job.stop()

    say("drift: hourly PSI against the training reference (txwatch drift)")
    drift = measure_drift(
        conn,
        model_dir,
        {
            "July": (plan.replay_from, plan.replay_to),
            f"{plan.shift_from} shifted": (plan.shift_from, plan.shift_to),
        },
    )

    say("summary")
    labels = frame[["transaction_id", "event_time_ms", "label"]]
    summary = collect(
        settings,
        conn,
        labels,
        seconds,
        quality_from_ms=_ms(plan.replay_from),
        quality_to_ms=_ms(plan.replay_to),
    )
    summary.drift = drift
    conn.close()
    return summary


def shift_amounts(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    """A copy of ``frame`` with every amount multiplied by ``factor``."""
    if not factor > 0:
        raise ValueError(f"shift_amount_factor must be above 0, got {factor}")
    return frame.assign(amount=(frame["amount"] * factor).round(2))


def measure_drift(
    conn, model_dir: Path, periods: dict[str, tuple[str, str]]
) -> dict[str, dict[str, float]]:
    """Hourly PSI of the model's rows into ``drift_metrics``, summed up per period.

    ``periods`` maps a name to a (first day, end day) pair of ISO dates. For
    each period and each feature (and the score): the median and the largest
    hourly PSI and the hours above the drift threshold. Commits.
    """
    from txwatch.drift import hourly_drift, load_rows, store
    from udfs.drift import Reference
    from udfs.registry import resolve
    from udfs.scoring import ModelMetadata

    model_dir = resolve(model_dir)
    metadata = ModelMetadata.read(model_dir / "model.json")
    reference = Reference.read(model_dir, metadata.version)
    since = min(pd.Timestamp(start, tz="UTC") for start, _ in periods.values())
    rows = load_rows(conn, metadata.version, metadata.feature_names, since=since)
    metrics = hourly_drift(rows, reference)
    written = store(conn, metrics, metadata.version)
    print(f"   {written:,} hourly PSI values written to drift_metrics")

    out = {}
    for name, (start, end) in periods.items():
        inside = metrics[
            (metrics["window_start"] >= pd.Timestamp(start, tz="UTC"))
            & (metrics["window_start"] < pd.Timestamp(end, tz="UTC"))
        ]
        for feature, group in inside.groupby("feature", sort=False):
            out.setdefault(feature, {})
            out[feature][f"{name} median"] = float(group["psi"].median())
            out[feature][f"{name} max"] = float(group["psi"].max())
            out[feature][f"{name} hours > {DRIFT_THRESHOLD:g}"] = float(
                (group["psi"] > DRIFT_THRESHOLD).sum()
            )
            out[feature][f"{name} hours"] = float(len(group))
    return out


def _model_is_current(model_dir: Path) -> bool:
    """A model exists there and has today's feature set, graph and stages."""
    from training.train import MODEL_FEATURES, TrainingConfig
    from udfs.scoring import ModelError, ModelMetadata

    try:
        metadata = ModelMetadata.read(model_dir / "model.json")
    except ModelError:
        return False
    return (
        metadata.feature_names == tuple(MODEL_FEATURES)
        and metadata.graph == TrainingConfig.graph
        and (metadata.supervised is not None) == TrainingConfig.supervised
    )


def _ms(iso_date: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(iso_date, tz="UTC").value // 1_000_000)
