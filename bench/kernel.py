"""Scoring kernel: rows a second on one core, for each way to score the forest.

The same forest is scored three ways on real feature rows, in batches of 1,
64, 1,024 and 100,000 rows: scikit-learn's ``score_samples``, skl2onnx's
graph and the compact graph (both through ``udfs.scoring.Scorer`` with one
onnxruntime thread). The compact graph is also timed with NaN tracking on
(``missing_like_sklearn``), which the job does not need. Every rate is the
median of three timed windows; BLAS and OpenMP pools are held to one thread.

Parity is checked on every row: the largest score difference from
scikit-learn and the number of rows flagged differently at the threshold.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench.inputs import Inputs
from bench.timing import median_rate
from training.compact_onnx import export_compact
from udfs.scoring import METADATA_FILE, MODEL_FILE, Scorer

logger = logging.getLogger(__name__)

BATCHES = (1, 64, 1_024, 100_000)


def run(inputs: Inputs, seconds: float, progress) -> dict:
    rows = inputs.feature_rows
    if len(rows) < max(BATCHES):
        raise ValueError(
            f"the kernel needs {max(BATCHES):,} feature rows, got {len(rows):,}; "
            "widen bench.inputs.TRAINING"
        )
    x32 = np.ascontiguousarray(rows, dtype=np.float32)
    forest = inputs.forest
    scorers = {
        "skl2onnx graph (Scorer)": Scorer(inputs.skl2onnx_dir, threads=1),
        "compact graph (Scorer)": Scorer(inputs.compact_dir, threads=1),
    }
    tracked = _tracked_session(inputs)

    methods = {
        "scikit-learn score_samples": lambda batch: -forest.score_samples(batch),
        **{name: scorer.score for name, scorer in scorers.items()},
        "compact graph, NaN like scikit-learn": tracked,
    }
    rates: dict[str, dict[str, float]] = {}
    with threadpool_limits(limits=1):
        for name, method in methods.items():
            rates[name] = {}
            for size in BATCHES:
                rate = median_rate(
                    _walker(method, x32, size), size, seconds, min_calls=2
                )
                rates[name][str(size)] = rate
                progress(f"kernel  {name:<38} batch {size:>7,}: {rate:>12,.0f} rows/s")

        parity = {
            name: _parity(forest, scorer, rows, inputs.threshold)
            for name, scorer in scorers.items()
        }
    for name, check in parity.items():
        progress(
            f"kernel  parity of {name}: max |diff| {check['max_abs_diff']:.2e}, "
            f"{check['flagged_differently']} rows flagged differently "
            f"of {check['rows']:,}"
        )
    return {"rows_per_second": rates, "parity": parity, "batches": list(BATCHES)}


def _walker(method, x32: np.ndarray, size: int):
    """``call(i)`` scoring the i-th batch of ``size`` rows, wrapping around."""
    starts = max(1, len(x32) - size + 1)

    def call(i: int):
        start = (i * size) % starts
        return method(x32[start : start + size])

    return call


def _tracked_session(inputs: Inputs):
    graph = export_compact(
        inputs.forest, len(inputs.metadata.feature_names), missing_like_sklearn=True
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        (path / MODEL_FILE).write_bytes(graph)
        replace(inputs.metadata, graph="compact").write(path / METADATA_FILE)
        scorer = Scorer(path, threads=1)  # the session holds the graph in memory
    return scorer.score


def _parity(forest, scorer: Scorer, rows: np.ndarray, threshold: float) -> dict:
    expected = -forest.score_samples(rows)
    got = scorer.score(rows.astype(np.float32))
    return {
        "rows": int(len(rows)),
        "max_abs_diff": float(np.max(np.abs(expected - got))),
        "flagged_differently": int(
            np.sum((expected >= threshold) != (got >= threshold))
        ),
        "flagged": int(np.sum(expected >= threshold)),
    }
