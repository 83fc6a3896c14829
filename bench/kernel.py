"""Scoring kernel: rows a second on one core, for each way to score the forest.

The same forest is scored three ways on real feature rows, in batches of 1,
64, 1,024 and 100,000 rows: scikit-learn's ``score_samples``, skl2onnx's
graph and the compact graph (both through ``udfs.scoring.Scorer`` with one
onnxruntime thread). The compact graph is also timed with NaN tracking on
(``missing_like_sklearn``), which the job does not need. Every rate is the
median of three timed windows; BLAS and OpenMP pools are held to one thread.

Parity is checked on every row: the largest score difference from
scikit-learn and the number of rows flagged differently at the threshold.

When the model has a supervised stage, its random forest is timed the same
way, scikit-learn's ``predict_proba`` against its ONNX graph, on the stage's
inputs of the same rows; and the reasons of an alert (exact SHAP values,
``udfs.explain``) are timed per row for the stage and for the forest.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
from threadpoolctl import threadpool_limits

from bench.inputs import Inputs
from bench.timing import median_rate
from training.compact_onnx import export_compact
from udfs.explain import SUPERVISED_SKLEARN_FILE
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
        "scikit-learn score_samples": (lambda b: -forest.score_samples(b), x32),
        **{name: (scorer.score, x32) for name, scorer in scorers.items()},
        "compact graph, NaN like scikit-learn": (tracked, x32),
    }
    if inputs.stage_rows is not None:
        stage = joblib.load(inputs.compact_dir / SUPERVISED_SKLEARN_FILE)
        fraud = scorers["compact graph (Scorer)"].fraud_probability
        methods["supervised stage, scikit-learn predict_proba"] = (
            lambda b: stage.predict_proba(b)[:, 1],
            inputs.stage_rows,
        )
        methods["supervised stage, ONNX (Scorer)"] = (fraud, inputs.stage_rows)
    rates: dict[str, dict[str, float]] = {}
    with threadpool_limits(limits=1):
        for name, (method, data) in methods.items():
            rates[name] = {}
            for size in BATCHES:
                rate = median_rate(
                    _walker(method, data, size), size, seconds, min_calls=2
                )
                rates[name][str(size)] = rate
                progress(f"kernel  {name:<38} batch {size:>7,}: {rate:>12,.0f} rows/s")

        parity = {
            name: _parity(forest, scorer, rows, inputs.threshold)
            for name, scorer in scorers.items()
        }
        reasons = _reasons_cost(inputs, scorers["compact graph (Scorer)"])
    for name, check in parity.items():
        progress(
            f"kernel  parity of {name}: max |diff| {check['max_abs_diff']:.2e}, "
            f"{check['flagged_differently']} rows flagged differently "
            f"of {check['rows']:,}"
        )
    for name, ms in reasons.items():
        progress(f"kernel  reasons of an alert, {name}: {ms:.2f} ms per row")
    return {
        "rows_per_second": rates,
        "parity": parity,
        "batches": list(BATCHES),
        "reasons_ms_per_row": reasons,
    }


def _reasons_cost(inputs: Inputs, scorer: Scorer, rows: int = 50) -> dict:
    """Milliseconds per row of an alert's reasons, forest and stage."""
    from udfs.explain import Explainer

    forest_only = replace(inputs.metadata, supervised=None)
    forest_rows = inputs.feature_rows.astype(np.float32)
    # (name, metadata to explain, its input rows, its score of them)
    cases = [("Isolation Forest", forest_only, forest_rows, scorer.score(forest_rows))]
    if inputs.stage_rows is not None:
        probability = scorer.fraud_probability(inputs.stage_rows)
        cases.append(
            ("supervised stage", inputs.metadata, inputs.stage_rows, probability)
        )
    out = {}
    for name, metadata, data, scores in cases:
        explainer = Explainer(inputs.compact_dir, metadata)
        top = np.argsort(-scores)[:rows]
        explainer.explain(data[top[:2]])  # warm up
        started = time.perf_counter()
        explainer.explain(data[top])
        out[name] = (time.perf_counter() - started) * 1e3 / len(top)
    return out


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
        forest_only = replace(inputs.metadata, graph="compact", supervised=None)
        forest_only.write(path / METADATA_FILE)
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
