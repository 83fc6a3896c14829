"""Tests of MLflow tracking against a real, temporary SQLite store."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.ensemble import IsolationForest

from training.export import export_onnx
from training.tracking import (
    MODEL_FILES,
    REFERENCE_FILE,
    default_tracking_uri,
    log_training_run,
    reference_distributions,
)
from training.train import TrainingConfig, TrainingResult, choose_threshold
from udfs.explain import SKLEARN_FILE
from udfs.scoring import METADATA_FILE, MODEL_FILE, ModelMetadata

FEATURES = ("amount", "c_amount_ratio_30d", "t_risk_7d")


def trained(model_dir, seed: int = 3):
    """A small forest written the way training.train writes one, and its rows."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [rng.gamma(2.0, 30.0, 2_000), rng.lognormal(0.0, 0.3, 2_000), rng.random(2_000)]
    )
    config = TrainingConfig(n_estimators=10, max_samples=64, features=FEATURES)
    forest = IsolationForest(
        n_estimators=config.n_estimators,
        max_samples=config.max_samples,
        random_state=config.seed,
        n_jobs=1,
    ).fit(x)
    scores = -forest.score_samples(x)
    threshold = choose_threshold(scores, config.target_alert_rate)
    metadata = ModelMetadata(
        version=f"if-test-{seed}",
        feature_names=FEATURES,
        threshold=threshold,
        risk_quantiles=tuple(np.quantile(scores, np.linspace(0, 1, 11))),
        graph="skl2onnx",
        offset=float(forest.offset_),
        n_estimators=config.n_estimators,
        max_samples=int(forest.max_samples_),
    )
    model_dir.mkdir(parents=True)
    (model_dir / MODEL_FILE).write_bytes(export_onnx(forest, len(FEATURES)))
    joblib.dump(forest, model_dir / SKLEARN_FILE)
    metadata.write(model_dir / METADATA_FILE)
    metrics = {"train_rows": float(len(x)), "train_auc_roc": float("nan")}
    return TrainingResult(model_dir, metadata, metrics), config, x


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two runs logged to one SQLite store; the second without a matrix."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    first, config, x = trained(root / "first")
    second, _, _ = trained(root / "second", seed=4)
    runs = [
        log_training_run(first, config, uri, "test-iforest", training_matrix=x),
        log_training_run(second, config, uri, "test-iforest"),
    ]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return {"root": root, "client": client, "runs": runs, "first": first, "x": x}


def test_a_run_records_the_configuration_as_parameters(store):
    run = store["client"].get_run(store["runs"][0].run_id)
    assert run.data.params["n_estimators"] == "10"
    assert run.data.params["features"] == ",".join(FEATURES)
    assert run.data.params["model_version"] == "if-test-3"
    assert run.info.status == "FINISHED"


def test_a_run_records_the_metrics_and_the_threshold(store):
    metrics = store["client"].get_run(store["runs"][0].run_id).data.metrics
    assert metrics["train_rows"] == 2_000
    assert metrics["threshold"] == store["first"].metadata.threshold
    assert np.isnan(metrics["train_auc_roc"])


def test_a_run_stores_the_model_files_and_reference_under_model(store):
    listed = store["client"].list_artifacts(store["runs"][0].run_id, "model")
    names = {info.path.split("/")[-1] for info in listed}
    assert names == {*MODEL_FILES, REFERENCE_FILE}


def test_artifacts_of_a_sqlite_store_go_to_mlruns_beside_the_database(store):
    run_id = store["runs"][0].run_id
    stored = store["root"] / "mlruns" / run_id / "artifacts" / "model"
    assert (stored / MODEL_FILE).read_bytes() == (
        store["first"].model_dir / MODEL_FILE
    ).read_bytes()


def test_the_logged_reference_is_the_reference_of_the_training_matrix(store):
    run_id = store["runs"][0].run_id
    path = store["root"] / "mlruns" / run_id / "artifacts" / "model" / REFERENCE_FILE
    assert json.loads(path.read_text()) == reference_distributions(store["x"], FEATURES)


def test_a_run_without_a_training_matrix_logs_no_reference(store):
    listed = store["client"].list_artifacts(store["runs"][1].run_id, "model")
    assert {info.path.split("/")[-1] for info in listed} == set(MODEL_FILES)


def test_each_run_registers_the_next_version_of_the_model(store):
    client = store["client"]
    assert [run.model_version for run in store["runs"]] == ["1", "2"]
    version = client.get_model_version("test-iforest", "1")
    assert version.run_id == store["runs"][0].run_id
    assert version.source.endswith(f"{store['runs'][0].run_id}/artifacts/model")
    assert float(version.tags["threshold"]) == store["first"].metadata.threshold


def test_logging_refuses_a_model_directory_without_its_files(tmp_path):
    result, config, _ = trained(tmp_path / "model")
    (tmp_path / "model" / SKLEARN_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="lacks model.joblib"):
        log_training_run(result, config, f"sqlite:///{tmp_path / 'unused.db'}")
    assert not (tmp_path / "unused.db").exists()


def test_the_default_store_is_the_sqlite_file_in_the_project_run_directory():
    uri = default_tracking_uri()
    assert uri.startswith("sqlite:///") and uri.endswith("/.run/mlflow.db")


def test_reference_bins_hold_every_row_by_the_searchsorted_convention():
    rng = np.random.default_rng(0)
    values = rng.normal(size=1_000)
    reference = reference_distributions(values[:, None], ["x"], bins=4)
    feature = reference["features"]["x"]
    cuts = np.asarray(feature["cuts"])
    assert len(cuts) == 3 and np.all(np.diff(cuts) > 0)
    expected = np.bincount(np.searchsorted(cuts, values, side="left"), minlength=4)
    assert feature["proportions"] == pytest.approx(expected / 1_000)
    assert sum(feature["proportions"]) == pytest.approx(1.0)
    assert feature["quantiles"]["p50"] == pytest.approx(np.median(values))


def test_reference_of_a_flag_cuts_at_its_two_values_and_leaves_the_top_bin_empty():
    flags = np.array([0.0] * 70 + [1.0] * 30)
    feature = reference_distributions(flags[:, None], ["is_night"])["features"]
    assert feature["is_night"]["cuts"] == [0.0, 1.0]
    assert feature["is_night"]["proportions"] == pytest.approx([0.7, 0.3, 0.0])


def test_reference_refuses_non_finite_features_and_names_them():
    matrix = np.array([[1.0, np.nan], [2.0, 3.0]])
    with pytest.raises(ValueError, match="'b' has 1 NaN or infinite"):
        reference_distributions(matrix, ["a", "b"])


def test_reference_refuses_a_matrix_that_does_not_match_the_names():
    with pytest.raises(ValueError, match="one column per name"):
        reference_distributions(np.zeros((3, 2)), ["a"])
