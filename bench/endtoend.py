"""End-to-end throughput of the real job: Kafka in, Kafka and PostgreSQL out.

The transactions are in Kafka before the job starts. The job runs in bounded
mode (``--bounded``: it stops at the offsets that are the latest at start) on
the run's own consumer group, so each run reads the whole topic again.

Throughput is read from PostgreSQL: the sink writes in flushes, and
``scored_at`` (the row's insert time) is shared by the rows of one flush, so
the rate is the rows written after the first flush divided by the time from
the first flush to the last. Wall time, from starting the process to its
exit, includes the JVM, the Python workers, loading the model and the final
checkpoint, and is reported next to it. The job's process group is sampled
for CPU time by process and thread (``bench.cpu``), over the whole run and
between the first and the last flush (the steady state).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.cpu import GroupCpu
from bench.workspace import Run, Workspace
from txwatch import topics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    name: str
    parallelism: int
    rows: int
    expected_rows: int
    rows_per_second: float
    span_seconds: float
    wall_seconds: float
    first_row_after_seconds: float
    alerts_table: int
    alerts_kafka: int
    job_settings: dict
    cpu: dict
    cpu_steady: dict  # between the first and the last flush, with its rows
    load_average: tuple[float, float]  # 1-minute load at start and at exit

    @property
    def wall_rows_per_second(self) -> float:
        return self.rows / self.wall_seconds

    def as_dict(self) -> dict:
        out = asdict(self)
        out["wall_rows_per_second"] = self.wall_rows_per_second
        return out


def run_bounded(
    workspace: Workspace,
    run: Run,
    model_dir: Path,
    parallelism: int,
    expected_rows: int,
    timeout: float,
    progress,
    measured_from: datetime | None = None,
) -> RunResult:
    """Run the job to the end of its input; read its rate from PostgreSQL.

    With ``measured_from``, the rate and the steady-state CPU count only the
    transactions whose event time is at or after it (a warm-up before it is
    left out).
    """
    workspace.empty_tables()
    job = run.job(
        model_dir,
        "--bounded",
        "--parallelism",
        str(parallelism),
        log_dir=workspace.log_dir,
    )
    load_before = os.getloadavg()[0]
    started_wall = time.time()
    started = time.monotonic()
    job.start()
    cpu = GroupCpu(job.process.pid).start()
    try:
        code = _wait(workspace, job, expected_rows, timeout, progress)
    except BaseException:
        job.stop()
        raise
    finally:
        usage = cpu.stop()
    wall = time.monotonic() - started
    load_after = os.getloadavg()[0]
    if code != 0:
        raise RuntimeError(
            f"the job of run {run.name} exited with {code}; log {job.log_path}:\n"
            f"{job.log_tail()}\n{run.flink_errors(workspace.log_dir)}"
        )
    if not usage["by_process"]:
        logger.warning("no CPU samples of the job's process group were taken")

    conn = workspace.connect()
    try:
        flushes = _flushes(conn, measured_from)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM alerts")
            alerts_table = int(cur.fetchone()[0])
    finally:
        conn.close()
    alerts_kafka = len(
        topics.read_committed(
            run.settings.kafka.bootstrap_servers, run.settings.kafka.topics.alerts
        )
    )
    rows, first, last, first_flush_rows = flushes
    span = (last - first).total_seconds()
    steady = cpu.window(first.timestamp(), last.timestamp())
    steady["rows"] = rows - first_flush_rows
    rate = (rows - first_flush_rows) / span if span > 0 else float("nan")
    job_settings = {
        key: getattr(run.settings.job, key)
        for key in (
            "bundle_size",
            "bundle_time_ms",
            "score_batch_size",
            "checkpoint_interval_ms",
            "jdbc_batch_rows",
            "jdbc_flush_interval_ms",
        )
    }
    return RunResult(
        name=run.name,
        parallelism=parallelism,
        rows=rows,
        expected_rows=expected_rows,
        rows_per_second=rate,
        span_seconds=span,
        wall_seconds=wall,
        first_row_after_seconds=first.timestamp() - started_wall,
        alerts_table=alerts_table,
        alerts_kafka=alerts_kafka,
        job_settings=job_settings,
        cpu=usage,
        cpu_steady=steady,
        load_average=(load_before, load_after),
    )


def _wait(workspace: Workspace, job, expected_rows: int, timeout: float, progress):
    """Wait for the job to exit, reporting rows written; its exit code."""
    started = time.monotonic()
    conn = workspace.connect()
    try:
        while job.running():
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise TimeoutError(
                    f"the bounded job did not finish within {timeout:.0f} s; "
                    f"log {job.log_path}"
                )
            time.sleep(5.0)
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM scored_transactions")
                rows = int(cur.fetchone()[0])
            progress(f"        {elapsed:5.0f} s: {rows:,} of {expected_rows:,} rows")
    finally:
        conn.close()
    return job.wait(timeout=60)


def _flushes(conn, measured_from: datetime | None = None):
    """(rows, first scored_at, last scored_at, rows of the first flush).

    Only rows with an event time at or after ``measured_from``, when given.
    """
    since = measured_from or datetime(1970, 1, 1, tzinfo=timezone.utc)
    with conn.cursor() as cur:
        cur.execute(
            """
            WITH measured AS (
                SELECT scored_at FROM scored_transactions WHERE event_time >= %s
            )
            SELECT count(*), min(scored_at), max(scored_at),
                   count(*) FILTER (WHERE scored_at = (SELECT min(scored_at)
                                                       FROM measured))
            FROM measured
            """,
            (since,),
        )
        rows, first, last, first_rows = cur.fetchone()
    if not rows:
        raise RuntimeError("the job wrote no rows to scored_transactions")
    return int(rows), first, last, int(first_rows)
