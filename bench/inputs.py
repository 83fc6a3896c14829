"""What the benchmark runs on: handbook slices and models trained as usual.

``prepare`` trains a model with ``training.train`` (the Isolation Forest on
the project's features, ``MODEL_FEATURES``, 100 trees, skl2onnx export and
its parity check, and the supervised stage on the window's known labels) on
a short window, writes the same model with the forest as a compact graph
next to it, and computes the feature rows of that window for the scoring kernel. The
stream the job and its peers read is a later slice: July 2018.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.ensemble import IsolationForest

from training.compact_onnx import write_compact_model
from training.dataset import compute_features, data_files, load_handbook
from training.train import MODEL_FEATURES, TrainingConfig, train
from udfs.explain import SKLEARN_FILE
from udfs.features import FEATURE_NAMES
from udfs.scoring import METADATA_FILE, ModelMetadata, Scorer, stage_inputs

logger = logging.getLogger(__name__)

# skl2onnx's graph is trained, the compact one derived from the same forest.
TRAINING = TrainingConfig(
    history_from="2018-04-01",
    train_from="2018-04-08",
    train_to="2018-04-22",
    graph="skl2onnx",
)
STREAM = ("2018-07-01", "2018-08-01")


@dataclass(frozen=True)
class Inputs:
    """Models and data shared by every section."""

    forest: IsolationForest
    metadata: ModelMetadata
    skl2onnx_dir: Path
    compact_dir: Path
    feature_rows: np.ndarray  # MODEL_FEATURES columns, float64, shuffled
    stream: pd.DataFrame  # handbook rows, event-time order, for Kafka
    # The supervised stage's inputs of the same rows (every feature, then the
    # anomaly score), float32; None when the model has no stage.
    stage_rows: np.ndarray | None = None

    @property
    def threshold(self) -> float:
        return self.metadata.threshold


def prepare(data_dir: Path, work_dir: Path, seed: int = 7) -> Inputs:
    files = data_files(data_dir)
    skl2onnx_dir = work_dir / "model-skl2onnx"
    result = train(files, skl2onnx_dir, TRAINING, progress=False)
    forest = joblib.load(skl2onnx_dir / SKLEARN_FILE)
    metadata = ModelMetadata.read(skl2onnx_dir / METADATA_FILE)
    compact_dir = work_dir / "model-compact"
    write_compact_model(forest, compact_dir, metadata, stage_dir=skl2onnx_dir)
    logger.info("model %s trained: %s", result.metadata.version, result.metrics)

    frame = load_handbook(files, TRAINING.history_from, TRAINING.train_to)
    matrix, duplicates, _ = compute_features(frame, TRAINING.label_delay_days)
    columns = [FEATURE_NAMES.index(name) for name in MODEL_FEATURES]
    order = np.random.default_rng(seed).permutation(int((~duplicates).sum()))
    everything = matrix[~duplicates][order]
    rows = everything[:, columns]
    stage_rows = None
    if metadata.supervised is not None:
        scores = Scorer(skl2onnx_dir).score(rows.astype(np.float32))
        stage_rows = stage_inputs(everything, scores)

    stream = load_handbook(files, *STREAM)
    return Inputs(forest, metadata, skl2onnx_dir, compact_dir, rows, stream, stage_rows)
