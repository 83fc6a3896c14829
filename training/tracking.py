"""Experiment tracking of trained models in MLflow: runs, files and the registry.

``log_training_run`` records one trained model as an MLflow run: the
training configuration as parameters, the training metrics, the model
directory (``model.onnx``, ``model.json``, ``model.joblib`` and, when the
model has them, the drift reference ``reference.json`` and the supervised
stage's ``supervised.onnx`` and ``supervised.joblib``) and the reference
distributions of the training features under the artifact path ``model/``,
and then registers that directory as a new version of a registered model.
Which version scores is said by the registered model's aliases (see
``training.aliases``). The streaming job, or whoever deploys, takes a version
from the registry and finds everything it needs in one folder.

Store
    By default the tracking and registry store is the SQLite file
    ``.run/mlflow.db`` of the project and artifacts go to ``.run/mlruns``,
    both ignored by git. For any other ``sqlite:///PATH`` store the artifacts
    go to ``mlruns`` beside ``PATH``; other stores keep their own artifact
    location. Nothing here reads the environment or changes MLflow's global
    state: every call goes through an explicit client.

Reference distributions
    ``reference_distributions`` summarises each training feature by cut
    points at its deciles and the share of training rows in each bin, which
    is what a population stability index (PSI) of live features needs later.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from udfs.drift import REFERENCE_FILE as DRIFT_REFERENCE_FILE
from udfs.explain import SKLEARN_FILE, SUPERVISED_SKLEARN_FILE
from udfs.scoring import METADATA_FILE, MODEL_FILE, SUPERVISED_FILE

from .train import TrainingConfig, TrainingResult

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "txwatch"
MODEL_ARTIFACT_PATH = "model"
MODEL_FILES = (MODEL_FILE, METADATA_FILE, SKLEARN_FILE)
# present when the model has them: the drift reference, the supervised stage
OPTIONAL_FILES = (DRIFT_REFERENCE_FILE, SUPERVISED_FILE, SUPERVISED_SKLEARN_FILE)
REFERENCE_FILE = "reference_distributions.json"
REFERENCE_BINS = 10
REFERENCE_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


class TrackedRun(NamedTuple):
    """The MLflow run of a trained model and the registry version it became."""

    run_id: str
    model_version: str


def default_tracking_uri() -> str:
    """The project's own store: ``sqlite:///<project>/.run/mlflow.db``."""
    return f"sqlite:///{PROJECT_ROOT / '.run' / 'mlflow.db'}"


def reference_distributions(
    matrix: np.ndarray, names: Sequence[str], bins: int = REFERENCE_BINS
) -> dict:
    """Per-feature distribution of a training matrix, for drift checks (PSI).

    For every feature (column of ``matrix``, named by ``names``):

    ``cuts``
        The distinct values among the feature's quantiles at ``1/bins`` ..
        ``(bins - 1)/bins``, each a training value (no interpolation, so a
        0/1 flag gets the cuts 0 and 1): fewer than ``bins - 1`` for a
        feature with few distinct values. Bin 0 holds the values
        ``<= cuts[0]``, bin ``i`` the values in ``(cuts[i-1], cuts[i]]`` and
        the last bin the values ``> cuts[-1]``:
        ``numpy.searchsorted(cuts, value, side="left")`` is the bin of a
        value, and any live value has one.
    ``proportions``
        Share of the training rows in each bin (``len(cuts) + 1`` values,
        summing to 1).
    ``quantiles``
        The 1st, 5th, 25th, 50th, 75th, 95th and 99th percentiles, keyed
        ``"p1"`` .. ``"p99"``; and ``count``, ``mean``, ``min``, ``max``.

    Raises ValueError when the shapes disagree, when ``bins < 2`` or when a
    feature holds NaN or infinite values.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(names) or len(matrix) == 0:
        raise ValueError(
            f"matrix must be 2-D with one column per name ({len(names)}) and at "
            f"least one row, got shape {matrix.shape}"
        )
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")

    features = {}
    for column, name in zip(matrix.T, names, strict=True):
        bad = int(np.count_nonzero(~np.isfinite(column)))
        if bad:
            raise ValueError(
                f"feature {name!r} has {bad} NaN or infinite values; reference "
                "distributions need finite training features, drop those rows first"
            )
        levels = np.arange(1, bins) / bins
        cuts = np.unique(np.quantile(column, levels, method="inverted_cdf"))
        counts = np.bincount(
            np.searchsorted(cuts, column, side="left"), minlength=len(cuts) + 1
        )
        quantiles = np.quantile(column, REFERENCE_QUANTILES)
        features[name] = {
            "cuts": cuts.tolist(),
            "proportions": (counts / len(column)).tolist(),
            "quantiles": {
                f"p{round(q * 100)}": float(v)
                for q, v in zip(REFERENCE_QUANTILES, quantiles, strict=True)
            },
            "count": len(column),
            "mean": float(column.mean()),
            "min": float(column.min()),
            "max": float(column.max()),
        }
    return {
        "bins": bins,
        "bin_of_value": "numpy.searchsorted(cuts, value, side='left')",
        "features": features,
    }


def log_training_run(
    result: TrainingResult,
    config: TrainingConfig,
    tracking_uri: str | None = None,
    register_as: str = "txwatch-iforest",
    *,
    training_matrix: np.ndarray | None = None,
    experiment: str = EXPERIMENT,
    extra_metrics: dict[str, float] | None = None,
) -> TrackedRun:
    """Log a trained model as an MLflow run and register it as a new version.

    Parameters
    ----------
    result
        What ``training.train.train`` returned; its ``model_dir`` must hold
        ``model.onnx``, ``model.json`` and ``model.joblib``.
    config
        The configuration the model was trained with; logged as parameters.
    tracking_uri
        MLflow tracking and registry store; None for :func:`default_tracking_uri`.
    register_as
        Name of the registered model that gets the new version.
    training_matrix
        The training rows in ``result.metadata.feature_names`` order. When
        given, their :func:`reference_distributions` are logged beside the
        model files; without them a later drift check has no reference, and
        a warning says so.
    experiment
        MLflow experiment of the run, created when missing.
    extra_metrics
        More metrics for the run, for example an evaluation on later data;
        NaN values are left out.

    Returns the run id and the registered version. A failure after the run
    started marks the run FAILED and raises.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    model_dir = Path(result.model_dir)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"model directory {model_dir} lacks {', '.join(missing)}; log the "
            "directory written by training.train.train"
        )
    reference = None
    if training_matrix is not None:
        reference = reference_distributions(
            training_matrix, result.metadata.feature_names
        )
    else:
        logger.warning(
            "no training matrix given: run logged without reference distributions"
        )

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = _experiment_id(client, experiment, _artifact_location(uri))
    run = client.create_run(
        experiment_id,
        run_name=result.metadata.version,
        tags={"txwatch.model_version": result.metadata.version},
    )
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        params = [Param(k, v) for k, v in _params(config, result).items()]
        metrics = [
            Metric(name, float(value), now, 0)
            for name, value in {
                **result.metrics,
                **{
                    k: v
                    for k, v in (extra_metrics or {}).items()
                    if not np.isnan(float(v))
                },
                "threshold": result.metadata.threshold,
            }.items()
        ]
        client.log_batch(run_id, metrics=metrics, params=params)
        for name in MODEL_FILES:
            client.log_artifact(run_id, str(model_dir / name), MODEL_ARTIFACT_PATH)
        for name in OPTIONAL_FILES:
            if (model_dir / name).is_file():
                client.log_artifact(run_id, str(model_dir / name), MODEL_ARTIFACT_PATH)
        if reference is not None:
            client.log_dict(
                run_id, reference, f"{MODEL_ARTIFACT_PATH}/{REFERENCE_FILE}"
            )

        _ensure_registered_model(client, register_as)
        version = client.create_model_version(
            register_as,
            f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
            run_id,
            tags=_version_tags(result.metadata),
        )
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    logger.info(
        "model %s logged as run %s and registered as %s version %s",
        result.metadata.version,
        run_id,
        register_as,
        version.version,
    )
    return TrackedRun(run_id, str(version.version))


def _version_tags(metadata) -> dict[str, str]:
    """Tags of a registered version: what scores and at which thresholds."""
    tags = {
        "txwatch.model_version": metadata.version,
        "threshold": repr(metadata.threshold),
        "graph": metadata.graph,
    }
    if metadata.supervised is not None:
        tags["fraud_threshold"] = repr(metadata.supervised.threshold)
    return tags


def _params(config: TrainingConfig, result: TrainingResult) -> dict[str, str]:
    """Configuration and model facts as MLflow parameters (strings)."""
    params = {}
    for key, value in dataclasses.asdict(config).items():
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        params[key] = str(value)
    metadata = result.metadata
    params.update(
        model_version=metadata.version,
        graph=metadata.graph,
        offset=repr(metadata.offset),
        fitted_max_samples=str(metadata.max_samples),
    )
    return params


def _artifact_location(tracking_uri: str) -> str | None:
    """``mlruns`` beside a SQLite store; None lets other stores decide."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = Path(tracking_uri[len(prefix) :])
    return (database.parent / "mlruns").resolve().as_uri()


def _experiment_id(client, name: str, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    logger.info("creating MLflow experiment %s", name)
    return client.create_experiment(name, artifact_location=artifact_location)


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        logger.info("creating registered model %s", name)
        client.create_registered_model(name)
