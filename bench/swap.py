"""Batch latency of the scoring step around a model hot swap.

The job's scoring function (``jobs.scoring_udf.ScoreBatch``, as Flink calls
it: one pandas batch of featured rows at a time) scores real July feature
rows in batches of the job's size while the registry changes under it:

1. steady state with the champion alone;
2. a new champion promoted: the next batch loads and checks it (ONNX session,
   probe, SHAP explainer) before scoring;
3. steady state with the new champion;
4. a challenger promoted: the next batch loads it, then every batch is also
   scored in shadow;
5. the challenger cleared: back to the champion alone.

Each batch's time is recorded with its phase, in wall-clock time and in the
process's CPU time (which other processes on a shared machine disturb
less); the summary gives the median, 95th percentile and maximum per phase
and the time of the batches that swapped. The pointers are checked before
every batch here (the job checks at most every 2 s), which puts the cost of
reading them into every steady-state batch. What is not measured: Flink's
Arrow transfer around the function and the JDBC and Kafka sinks, which do
not depend on the model.

Usage: ``python -m bench.swap [--model-dir .run/model] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from jobs import records
from jobs.scoring_udf import ScoreBatch
from training.dataset import compute_features, data_files, load_handbook
from txwatch.config import PROJECT_ROOT, load
from udfs import registry
from udfs.features import FEATURE_NAMES

logger = logging.getLogger(__name__)

DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "data" / "handbook"


def featured_batches(files, batch_size: int) -> list[pd.DataFrame]:
    """Featured rows of early July (after a June warm-up), cut into batches."""
    frame = load_handbook(files, "2018-06-20", "2018-07-10")
    matrix, duplicates, _ = compute_features(frame, progress=True)
    start = int(np.searchsorted(frame["event_time_ms"], _ms("2018-07-01")))
    keep = np.arange(len(frame)) >= start
    keep &= ~duplicates
    rows = frame[keep].reset_index(drop=True)
    features = pd.DataFrame(matrix[keep], columns=list(FEATURE_NAMES))
    featured = pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"].astype(str),
            "event_time_ms": rows["event_time_ms"],
            "card_id": rows["card_id"].astype(str),
            "terminal_id": rows["terminal_id"].astype(str),
            "original_amount": rows["amount"],
            "currency": "EUR",
            "is_late": False,
            "rule_hits": "[]",
        }
    )
    for name in FEATURE_NAMES:
        featured[name] = features[name]
    featured = featured[list(records.FEATURED_NAMES)]
    return [
        featured.iloc[i * batch_size : (i + 1) * batch_size].reset_index(drop=True)
        for i in range(len(featured) // batch_size)
    ]


def run(model_dir: Path, files, batch_size: int, per_phase: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "registry"
        first = registry.register(root, model_dir)
        second = registry.register(root, _renamed(model_dir, Path(tmp) / "m2"))
        registry.promote(root, first)
        plan = [
            ("champion", None),
            ("new champion", lambda: registry.promote(root, second)),
            ("challenger", lambda: registry.promote(root, first, "challenger")),
            ("challenger cleared", lambda: registry.clear(root, "challenger")),
        ]
        # The batches are reused in turn: scoring keeps no state between them.
        batches = featured_batches(files, batch_size)
        step = ScoreBatch(str(root), check_interval_s=0.0)
        opened = time.perf_counter()
        step.open(None)
        open_ms = (time.perf_counter() - opened) * 1000
        step.eval(*_columns(batches[0]))  # warm the session once

        timings = []
        n = 1
        for phase, change in plan:
            if change is not None:
                change()
            for i in range(per_phase):
                batch = batches[n % len(batches)]
                n += 1
                columns = _columns(batch)
                cpu = time.process_time()
                started = time.perf_counter()
                out = step.eval(*columns)
                elapsed = (time.perf_counter() - started) * 1000
                cpu_ms = (time.process_time() - cpu) * 1000
                timings.append(
                    {
                        "phase": phase,
                        "swap": change is not None and i == 0,
                        "ms": elapsed,
                        "cpu_ms": cpu_ms,
                        "model_version": str(out["model_version"].iloc[0]),
                        "shadow": bool(out["challenger_version"].notna().all()),
                    }
                )
    return {
        "batch_size": batch_size,
        "batches_per_phase": per_phase,
        "open_ms": open_ms,
        "summary": summarise(timings),
        "batches": timings,
    }


def summarise(timings: list[dict]) -> dict:
    out = {}
    for phase in dict.fromkeys(t["phase"] for t in timings):
        mine = [t for t in timings if t["phase"] == phase]
        steady = [t for t in mine if not t["swap"]]
        swap = [t for t in mine if t["swap"]]
        out[phase] = {
            "steady_median_ms": statistics.median(t["ms"] for t in steady),
            "steady_p95_ms": float(np.percentile([t["ms"] for t in steady], 95)),
            "steady_max_ms": max(t["ms"] for t in steady),
            "steady_median_cpu_ms": statistics.median(t["cpu_ms"] for t in steady),
            "swap_batch_ms": swap[0]["ms"] if swap else None,
            "swap_batch_cpu_ms": swap[0]["cpu_ms"] if swap else None,
        }
    return out


def render(result: dict) -> str:
    lines = [
        f"scoring step, batches of {result['batch_size']:,} rows "
        f"({result['batches_per_phase']} per phase); open {result['open_ms']:.0f} ms",
        f"  {'phase':<20}{'median':>9}{'p95':>9}{'max':>9}{'cpu':>9}"
        f"{'swap batch':>12}{'its cpu':>9}",
    ]
    for phase, s in result["summary"].items():
        swap = "-" if s["swap_batch_ms"] is None else f"{s['swap_batch_ms']:.1f}"
        swap_cpu = (
            "-" if s["swap_batch_cpu_ms"] is None else f"{s['swap_batch_cpu_ms']:.1f}"
        )
        lines.append(
            f"  {phase:<20}{s['steady_median_ms']:>9.1f}{s['steady_p95_ms']:>9.1f}"
            f"{s['steady_max_ms']:>9.1f}{s['steady_median_cpu_ms']:>9.1f}"
            f"{swap:>12}{swap_cpu:>9}"
        )
    lines.append(
        "  (milliseconds per batch, wall clock; cpu: this process's CPU time; "
        "'swap batch' loaded a model first)"
    )
    return "\n".join(lines)


def _columns(batch: pd.DataFrame) -> list[pd.Series]:
    return [batch[name].copy() for name in records.FEATURED_NAMES]


def _renamed(model_dir: Path, target: Path) -> Path:
    """A copy of the model under another version name."""
    shutil.copytree(model_dir, target)
    meta = json.loads((target / "model.json").read_text())
    meta["version"] = f"{meta['version']}-copy"
    (target / "model.json").write_text(json.dumps(meta))
    return target


def _ms(iso_date: str) -> int:
    return int(pd.Timestamp(iso_date, tz="UTC").value // 1_000_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.swap", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model-dir", default=str(PROJECT_ROOT / ".run" / "model"))
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--batches-per-phase", type=int, default=20)
    parser.add_argument("--out", default=str(PROJECT_ROOT / "bench" / "swap.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    batch_size = load().job.score_batch_size
    result = run(
        Path(args.model_dir),
        data_files(args.data_dir),
        batch_size,
        args.batches_per_phase,
    )
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(render(result))
    print(f"(per-batch timings written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
