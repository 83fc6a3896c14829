"""Throughput of the job against the number of cards it holds in state.

For each size N (10,000, 100,000 and 1,000,000 cards), a synthetic stream in
the input contract first opens the N cards, one transaction each, over the
two days before the measured part. Then ``measured`` transactions follow on
cards drawn uniformly among the N, one a second of event time; each card
spends at a few terminals of its own among 10,000, as in the handbook. The
job runs bounded at parallelism 1 with its default settings, on the heap
state backend at every size and on RocksDB (incremental checkpoints) at the
smallest and the largest; its rate and CPU per row count the measured
transactions only, read from PostgreSQL as in ``bench.endtoend``, when all
N cards are in state.

While the job runs, the resident memory of its processes (by
``bench.cpu.GroupCpu``, every half second) and the size of its checkpoint
directory (every 5 s) are sampled; the largest of each is reported.

What it shows is what the number of keys costs: Flink's keyed state in the
JVM, the Python side's cache of ``python.state.cache-size`` keys (100,000 in
the job), beyond which a state read crosses to the JVM, and the checkpoints.
Two other things differ between sizes. Cards of the smaller sizes gather
more history during the measured part (10 transactions each at 10,000
cards; one card in ten gets one at 1,000,000), so their state is larger;
and a card with little history alerts more often, so at the larger sizes
the scoring worker explains more rows. Each run's alert share and CPU by
part tell these apart. A card opened by one transaction also holds less
state than a card of the handbook (about 60 transactions in its 30-day
windows).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench import endtoend
from bench.cpu import micros_per_row
from bench.workspace import Workspace
from udfs.features import MS_PER_DAY

logger = logging.getLogger(__name__)

# (cards, state backend): the heap backend at every size, RocksDB at both ends.
RUNS = (
    (10_000, "hashmap"),
    (100_000, "hashmap"),
    (1_000_000, "hashmap"),
    (10_000, "rocksdb"),
    (1_000_000, "rocksdb"),
)
TERMINALS = 10_000
MEASURED_FROM_MS = 1_530_403_200_000  # 2018-07-01T00:00:00Z
WARM_UP_DAYS = 2
MEASURED_SPACING_MS = 1_000
HOME_TERMINALS = 5
# Parts of the job, by the names of their threads (cut at 15 characters).
PARTS = {
    "card history": ("java/card-history",),
    "terminal history": ("java/terminal-histor",),
    "scoring worker": ("python/",),
    "snapshots": ("java/AsyncOperations", "java/rocksdb"),
}


def synthetic_stream(cards: int, measured: int, seed: int = 5) -> pd.DataFrame:
    """Rows in ``bench.inputs``' stream layout: ``cards`` openings, then the rest.

    Cards keep habits, as in the handbook's simulator: each spends around its
    own mean amount (5 to 100, spread half the mean) at a few terminals of
    its own, so the rows alert at rates near those of real ones. Every
    transaction is genuine (label 0); ids rise with event time.
    """
    rng = np.random.default_rng(seed)
    opening = MEASURED_FROM_MS - WARM_UP_DAYS * MS_PER_DAY
    warm_times = opening + np.sort(
        rng.integers(0, WARM_UP_DAYS * MS_PER_DAY, size=cards)
    )
    measured_times = MEASURED_FROM_MS + np.arange(measured) * MEASURED_SPACING_MS
    card = np.concatenate([rng.permutation(cards), rng.integers(cards, size=measured)])
    rows = len(card)
    mean = rng.uniform(5.0, 100.0, size=cards)[card]
    amount = np.maximum(rng.normal(mean, mean / 2.0), 0.01)
    home = rng.integers(TERMINALS, size=(cards, HOME_TERMINALS))
    return pd.DataFrame(
        {
            "transaction_id": np.arange(rows, dtype=np.int64),
            "event_time_ms": np.concatenate([warm_times, measured_times]),
            "card_id": card,
            "terminal_id": home[card, rng.integers(HOME_TERMINALS, size=rows)],
            "amount": np.round(amount, 2),
            "label": np.zeros(rows, dtype=np.int8),
        }
    )


class DirectoryPeak:
    """The largest total size of the files under a directory, as sampled."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.bytes = 0

    def sample(self) -> None:
        self.bytes = max(self.bytes, _directory_bytes(self.directory))


def run(
    workspace: Workspace,
    model_dir: Path,
    measured: int,
    timeout: float,
    say,
    progress,
    runs=RUNS,
) -> dict:
    from txwatch.replay import make_producer, replay

    out = []
    for size, backend in runs:
        frame = synthetic_stream(size, measured)
        job_run = workspace.run(f"state-{size}-{backend}", state_backend=backend)
        kafka = job_run.settings.kafka
        producer = make_producer(kafka.bootstrap_servers)
        try:
            sent = replay(producer, frame, kafka.topics.transactions, progress=False)
        finally:
            producer.close()
        name = f"{size:>9,} cards, {backend:<7}"
        say(
            f"jobstate {name}: {sent.transactions:,} transactions "
            f"pre-loaded ({sent.rate:,.0f}/s); running the job"
        )
        settings = job_run.settings
        checkpoints = DirectoryPeak(settings.path(settings.job.checkpoint_dir))

        def sampling(text: str, checkpoints=checkpoints) -> None:
            checkpoints.sample()
            progress(text)

        result = endtoend.run_bounded(
            workspace,
            job_run,
            model_dir,
            1,
            len(frame),
            timeout,
            sampling,
            measured_from=datetime.fromtimestamp(
                MEASURED_FROM_MS / 1000, tz=timezone.utc
            ),
        )
        steady = result.cpu_steady
        micros = steady["total"] / steady["rows"] * 1e6 if steady.get("rows") else None
        alert_share = _alert_share(workspace, MEASURED_FROM_MS)
        say(
            f"jobstate {name}: {result.rows_per_second:,.0f} tx/s over the "
            f"measured transactions, {micros or float('nan'):,.0f} us CPU a row; "
            f"{alert_share:.2%} alerted; "
            f"memory up to {result.cpu['max_rss_bytes'] / 2**30:.2f} GiB, "
            f"checkpoints up to {checkpoints.bytes / 2**20:,.0f} MiB; "
            f"wall {result.wall_seconds:.0f} s"
        )
        out.append(
            {
                "cards": size,
                "state_backend": backend,
                "measured_rows": result.rows,
                "rows_per_second": result.rows_per_second,
                "cpu_micros_per_row": micros,
                "cpu_micros_per_row_by_part": _by_part(steady),
                "alert_share": alert_share,
                "wall_seconds": result.wall_seconds,
                "max_rss_bytes": result.cpu["max_rss_bytes"],
                "max_checkpoint_dir_bytes": checkpoints.bytes,
                "load_average": result.load_average,
                "cpu_steady": steady,
            }
        )
    return {"measured_per_size": measured, "terminals": TERMINALS, "runs": out}


def _alert_share(workspace: Workspace, measured_from_ms: int) -> float:
    """Share of the measured transactions that alerted, from PostgreSQL."""
    conn = workspace.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT avg(is_alert::int) FROM scored_transactions "
                "WHERE event_time >= to_timestamp(%s)",
                (measured_from_ms / 1000,),
            )
            return float(cur.fetchone()[0] or 0.0)
    finally:
        conn.close()


def _by_part(steady: dict) -> dict[str, float]:
    """Steady-state CPU us per row of the job's parts, by thread-name prefix."""
    if not steady.get("rows"):
        return {}
    return {part: micros_per_row(steady, prefixes) for part, prefixes in PARTS.items()}


def _directory_bytes(directory: Path) -> int:
    total = 0
    if not directory.exists():
        return 0
    for path in directory.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total
