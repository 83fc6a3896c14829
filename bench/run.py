"""Run every benchmark section and write ``bench/results.json`` and ``results.md``.

Sections, in the order they run:

1. ``kernel``    scoring rows a second on one core: scikit-learn, skl2onnx's
                 graph and the compact graph, by batch size, with parity;
2. ``state``     the feature step against the number of cards in state;
3. ``pieces``    the job's Python work per transaction, piece by piece;
4. ``peers``     plain Kafka consumers scoring record by record (scikit-learn,
                 River) on the transactions the job reads;
5. ``endtoend``  the job in bounded mode at parallelism 1 and 2, then at
                 parallelism 1 with other bundle and batch sizes;
6. ``latency``   the job unbounded at fixed input rates;
7. ``jobstate``  the job's throughput against the number of cards in its
                 state, on synthetic streams.

Usage: ``python -m bench.run [--quick] [--sections kernel,peers,...]``
(``make bench``). The database passwords come from the environment
(``TXWATCH_ADMIN_PASSWORD``, ``TXWATCH_WRITER_PASSWORD``,
``TXWATCH_ANALYST_PASSWORD``). Every topic and the database the run creates
are private to it and removed at the end. Results are written after each
section, so a failed run still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.jobstate import RUNS as JOBSTATE_RUNS
from txwatch.config import PROJECT_ROOT, Settings

logger = logging.getLogger(__name__)

SECTIONS = ("kernel", "state", "pieces", "peers", "endtoend", "latency", "jobstate")
# Sections that run on the private Kafka topics and database.
JOB_SECTIONS = ("peers", "endtoend", "latency", "jobstate")
BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "handbook"
# One core per measurement: BLAS and OpenMP pools read these when loaded.
SINGLE_THREAD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Plan:
    """How big each section is; ``--quick`` shrinks every one."""

    kernel_seconds: float = 0.7
    state_updates: int = 100_000
    pieces_messages: int = 20_000
    peer_min_seconds: float = 20.0
    stream_rows: int = 200_000
    bundle_variants: tuple = (
        {"bundle_size": 1_000, "bundle_time_ms": 100, "score_batch_size": 1_000},
        {"bundle_size": 20_000, "bundle_time_ms": 1_000, "score_batch_size": 20_000},
    )
    latency_runs: tuple = ((1_000.0, 30.0), (5_000.0, 30.0))
    latency_checkpoint_ms: int = 1_000
    job_timeout_s: float = 900.0
    jobstate_runs: tuple = JOBSTATE_RUNS
    jobstate_measured: int = 100_000

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            kernel_seconds=0.3,
            state_updates=20_000,
            pieces_messages=10_000,
            peer_min_seconds=5.0,
            stream_rows=30_000,
            bundle_variants=cls.bundle_variants[:1],
            latency_runs=((1_000.0, 10.0), (5_000.0, 10.0)),
            job_timeout_s=300.0,
            jobstate_runs=((1_000, "hashmap"), (10_000, "hashmap"), (1_000, "rocksdb")),
            jobstate_measured=10_000,
        )


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, a smoke test"
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    parser.add_argument("--data-dir", default=None, help="handbook CSV files")
    parser.add_argument("--out-dir", default=str(BENCH_DIR))
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    for name in SINGLE_THREAD:
        os.environ.setdefault(name, "1")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # kafka-python warns about its own slow event loop under a busy CPU.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    data_dir = Path(
        args.data_dir or os.environ.get("TXWATCH_DATA_DIR") or DEFAULT_DATA_DIR
    )
    plan = Plan.quick() if args.quick else Plan()
    secrets = _secrets()
    return run(plan, sections, data_dir, Path(args.out_dir), secrets, args.quick)


def _secrets():
    from bench.workspace import Secrets
    from txwatch.config import PostgresSettings

    variables = PostgresSettings()
    return Secrets(
        admin=Settings.secret(variables.admin_password_env),
        writer=Settings.secret(variables.writer_password_env),
        analyst=Settings.secret(variables.analyst_password_env),
    )


@dataclass
class Services:
    """The private workspace and the transactions pre-loaded into it."""

    workspace: object
    transactions: str
    feedback: str
    rows: int


def run(
    plan: Plan, sections, data_dir: Path, out_dir: Path, secrets, quick: bool
) -> int:
    from bench import report

    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"meta": _meta(plan, quick, data_dir), "sections": {}}

    def save() -> None:
        results["meta"]["seconds"] = round(time.monotonic() - started, 1)
        (out_dir / "results.json").write_text(
            json.dumps(results, indent=2, default=str)
        )
        (out_dir / "results.md").write_text(report.render(results))

    failed = False
    with tempfile.TemporaryDirectory(prefix="txwatch-bench-") as work:
        say(f"== inputs: training the forest and computing features ({data_dir})")
        from bench.inputs import prepare

        inputs = prepare(data_dir, Path(work))
        say(
            f"   model {inputs.metadata.version}: {len(inputs.metadata.feature_names)} "
            f"features, {inputs.metadata.n_estimators} trees; "
            f"{len(inputs.feature_rows):,} feature rows; "
            f"stream of {len(inputs.stream):,} transactions"
        )
        results["meta"]["model"] = {
            "version": inputs.metadata.version,
            "features": list(inputs.metadata.feature_names),
            "trees": inputs.metadata.n_estimators,
            "threshold": inputs.threshold,
        }
        stage = inputs.metadata.supervised
        if stage is not None:
            results["meta"]["model"]["supervised"] = {
                "inputs": len(stage.feature_names),
                "labelled_to": stage.labelled_to,
                "frauds": stage.trained_frauds,
                "threshold": stage.threshold,
            }
        services = None
        try:
            for section in sections:
                say(f"== {section}")
                t0 = time.monotonic()
                try:
                    if section in JOB_SECTIONS and services is None:
                        services = _services(secrets, inputs, plan, results)
                    results["sections"][section] = _SECTION_RUNNERS[section](
                        inputs, plan, services, results
                    )
                except Exception as exc:
                    failed = True
                    logger.exception("section %s failed", section)
                    results["sections"][section] = {
                        "error": f"{type(exc).__name__}: {exc}"
                    }
                    say(f"   {section} FAILED: {type(exc).__name__}: {exc}")
                results["sections"].setdefault(section, {})["seconds"] = round(
                    time.monotonic() - t0, 1
                )
                save()
        finally:
            if services is not None:
                services.workspace.close()
    save()
    say(f"== done in {time.monotonic() - started:.0f} s; see {out_dir / 'results.md'}")
    return 1 if failed else 0


def _meta(plan: Plan, quick: bool, data_dir: Path) -> dict:
    import onnxruntime
    import sklearn

    return {
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "scikit_learn": sklearn.__version__,
        "data_dir": str(data_dir),
        "plan": {k: v for k, v in plan.__dict__.items()},
    }


# -- sections ------------------------------------------------------------------


def _kernel(inputs, plan: Plan, services, results) -> dict:
    from bench import kernel

    return kernel.run(inputs, plan.kernel_seconds, say)


def _state(inputs, plan: Plan, services, results) -> dict:
    from bench import statesize

    return statesize.run(plan.state_updates, say)


def _pieces(inputs, plan: Plan, services, results) -> dict:
    from bench import pieces
    from txwatch.config import load
    from txwatch.replay import to_messages

    settings = load()
    messages = [v for _, v in to_messages(inputs.stream.iloc[: plan.pieces_messages])]
    return pieces.run(
        messages,
        settings.contract,
        {"skl2onnx": inputs.skl2onnx_dir, "compact": inputs.compact_dir},
        settings.job.score_batch_size,
        say,
    )


def _services(secrets, inputs, plan: Plan, results) -> Services:
    """Private topics and database, and the stream pre-loaded into Kafka."""
    from bench.workspace import Workspace
    from txwatch.replay import make_producer, replay

    workspace = Workspace(secrets)
    say(f"   workspace {workspace.prefix}; job logs in {workspace.log_dir}")
    results["meta"]["job_logs"] = str(workspace.log_dir)
    source = workspace.run("input")
    kafka = source.settings.kafka
    frame = inputs.stream.iloc[: plan.stream_rows]
    producer = make_producer(kafka.bootstrap_servers)
    try:
        sent = replay(
            producer,
            frame,
            kafka.topics.transactions,
            kafka.topics.feedback,
            source.settings.job.label_delay_days,
            progress=False,
        )
    finally:
        producer.close()
    say(
        f"   pre-loaded {sent.transactions:,} transactions and {sent.feedback:,} "
        f"labels into {kafka.topics.transactions} ({sent.rate:,.0f}/s)"
    )
    return Services(
        workspace, kafka.topics.transactions, kafka.topics.feedback, len(frame)
    )


def _peers(inputs, plan: Plan, services: Services, results) -> dict:
    from bench import peers
    from txwatch.config import load
    from txwatch.replay import to_messages

    limits = load().contract
    names = list(inputs.metadata.feature_names)
    sample = [v for _, v in to_messages(inputs.stream.iloc[:5_000])]
    out = {}
    for name in ("sklearn", "river"):
        rate = peers.calibrate(
            name, inputs.forest, inputs.threshold, sample, names, limits
        )
        records = peers.records_for(rate, plan.peer_min_seconds, services.rows)
        say(
            f"peers   {name}: about {rate:,.0f} records/s alone; "
            f"timing {records:,} records"
        )
        kafka = services.workspace.run(f"peer-{name}").settings.kafka
        result = peers.run_peer(
            name,
            inputs.forest,
            inputs.threshold,
            names,
            limits,
            kafka.bootstrap_servers,
            services.transactions,
            kafka.topics.alerts,
            records,
        )
        say(
            f"peers   {name}: {result.rate:,.0f} records/s over {result.seconds:.1f} s "
            f"({result.alerts:,} alerts)"
        )
        out[name] = {
            "records": result.records,
            "seconds": result.seconds,
            "rows_per_second": result.rate,
            "alerts": result.alerts,
            "calibrated_rate": rate,
        }
    return out


def _endtoend(inputs, plan: Plan, services: Services, results) -> dict:
    from bench import endtoend

    workspace = services.workspace
    runs = []
    # The compact graph is what training writes; the skl2onnx run shows what
    # the graph alone changes, in the same session.
    compact, skl2onnx = inputs.compact_dir, inputs.skl2onnx_dir
    variants = [(f"p{p}", p, {}, compact) for p in (1, 2)]
    variants.append(("p1-skl2onnx", 1, {}, skl2onnx))
    variants += [
        (f"p1-bundle{v['bundle_size']}", 1, v, compact) for v in plan.bundle_variants
    ]
    for name, parallelism, overrides, model_dir in variants:
        say(f"e2e     {name}: bounded job on {services.rows:,} transactions")
        job_run = workspace.run(
            f"e2e-{name}",
            transactions=services.transactions,
            feedback=services.feedback,
            **overrides,
        )
        result = endtoend.run_bounded(
            workspace,
            job_run,
            model_dir,
            parallelism,
            services.rows,
            plan.job_timeout_s,
            _every(15.0),
        )
        say(
            f"e2e     {name}: {result.rows_per_second:,.0f} rows/s between flushes, "
            f"{result.rows:,} rows; wall {result.wall_seconds:.0f} s "
            f"({result.wall_rows_per_second:,.0f} rows/s with start-up); "
            f"CPU {result.cpu['total']:.0f} s"
        )
        runs.append({"variant": name, **result.as_dict()})
    return {"runs": runs}


def _every(seconds: float):
    """A progress printer that lets one line through every ``seconds``."""
    last = [0.0]

    def progress(text: str) -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            say(text)

    return progress


def _latency(inputs, plan: Plan, services: Services, results) -> dict:
    from bench import latency

    parallelism = _best_parallelism(results)
    overrides = {
        "checkpoint_interval_ms": plan.latency_checkpoint_ms,
        "min_pause_between_checkpoints_ms": 200,
    }
    runs = []
    for rate, seconds in plan.latency_runs:
        say(f"latency {rate:,.0f}/s for {seconds:.0f} s at parallelism {parallelism}")
        runs.append(
            latency.run(
                services.workspace,
                inputs.compact_dir,
                inputs.stream,
                rate,
                seconds,
                parallelism,
                overrides,
                say,
            )
        )
        p99 = {kind: _ms(q["p99"]) for kind, q in runs[-1]["latency_ms"].items()}
        say(
            f"latency {rate:,.0f}/s: p99 alert visible {p99['alert visible']}, "
            f"alert record {p99['alert record']}, row {p99['row']}"
        )
    return {"runs": runs}


def _jobstate(inputs, plan: Plan, services: Services, results) -> dict:
    from bench import jobstate

    # Long enough for the largest size's warm-up at a few thousand rows a second.
    timeout = plan.job_timeout_s + max(size for size, _ in plan.jobstate_runs) / 1_000
    return jobstate.run(
        services.workspace,
        inputs.compact_dir,
        plan.jobstate_measured,
        timeout,
        say,
        _every(30.0),
        runs=plan.jobstate_runs,
    )


def _ms(value) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _best_parallelism(results) -> int:
    runs = results["sections"].get("endtoend", {}).get("runs", [])
    plain = [r for r in runs if r["variant"] in ("p1", "p2")]
    if not plain:
        return 1
    return max(plain, key=lambda r: r["rows_per_second"])["parallelism"]


_SECTION_RUNNERS = {
    "kernel": _kernel,
    "state": _state,
    "pieces": _pieces,
    "peers": _peers,
    "endtoend": _endtoend,
    "latency": _latency,
    "jobstate": _jobstate,
}


if __name__ == "__main__":
    sys.exit(main())
