"""ONNX against scikit-learn: real handbook rows, split thresholds, extremes, NaN.

What these tests establish, for the Isolation Forest trained as
``training.train`` trains it and exported by ``training.export``, and for the
supervised forest of ``training.supervised``:

* Thresholds. scikit-learn casts features to float32 and compares them with
  float64 split thresholds. skl2onnx stores every threshold as the largest
  float32 not above the float64 one, and onnxruntime compares float32 with
  float32 (``BRANCH_LEQ``). For any float32 ``x``, ``x <= t`` holds exactly
  when ``x <= floor32(t)``, so both take the same branch at every node for
  every finite input: the default export is exact near thresholds. The tests
  check the stored thresholds and score rows placed on, and one float32 or
  float64 step either side of, every split threshold that real rows reach.
* Extremes. Features at 1e12, -1e12 and 0 score alike.
* NaN. The two differ: scikit-learn sends a NaN down the branch named by the
  node's ``missing_go_to_left`` flag (set at fit time, although no NaN was
  seen), onnxruntime's comparison with NaN is false, so a NaN takes the right
  branch at every node, exactly like +inf. The streaming job never sends NaN:
  ``udfs.features`` gives finite values for every non-duplicate transaction
  (duplicates are dropped before scoring), which is asserted over the slice.

The slow tests compute features for 2018-04-01 .. 2018-05-15 of the handbook
data (``TXWATCH_DATA_DIR``, else ``../shared/data/handbook``) and train on
2018-05-01 .. 2018-05-15.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from sklearn.ensemble import IsolationForest
from split_thresholds import rows_at_split_thresholds

from training import supervised
from training.dataset import compute_features, load_handbook
from training.export import export_onnx
from training.train import TrainingConfig, choose_threshold
from udfs.features import FEATURE_NAMES
from udfs.scoring import MODEL_FILE, ModelMetadata, Scorer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5
SLICE = ("2018-04-01", "2018-05-16")  # end exclusive: up to 2018-05-15
CONFIG = TrainingConfig(
    history_from=SLICE[0], train_from="2018-05-01", train_to=SLICE[1]
)
EXTREMES = (1e12, -1e12, 0.0)


def data_dir() -> Path:
    configured = os.environ.get("TXWATCH_DATA_DIR")
    return (
        Path(configured)
        if configured
        else PROJECT_ROOT.parent / "shared" / "data" / "handbook"
    )


@pytest.fixture(scope="module")
def handbook():
    """Features of the slice and the rows the forest is trained on."""
    files = sorted(data_dir().glob("transactions-*.csv*"))
    if not files:
        pytest.skip(f"no handbook data in {data_dir()}; set TXWATCH_DATA_DIR")
    frame = load_handbook(files, *SLICE)
    matrix, duplicates, _ = compute_features(frame, CONFIG.label_delay_days)
    train_from_ms = np.datetime64(CONFIG.train_from, "ms").astype(np.int64)
    training = (frame["event_time_ms"].to_numpy() >= train_from_ms) & ~duplicates
    return frame, matrix, duplicates, training


@pytest.fixture(scope="module")
def forest(handbook, tmp_path_factory):
    """The forest fitted and exported as training.train does, and its scorer."""
    _, matrix, duplicates, training = handbook
    columns = [FEATURE_NAMES.index(name) for name in CONFIG.features]
    x = matrix[training][:, columns]
    model = IsolationForest(
        n_estimators=CONFIG.n_estimators,
        max_samples=CONFIG.max_samples,
        random_state=CONFIG.seed,
        n_jobs=1,
    ).fit(x)
    threshold = choose_threshold(-model.score_samples(x), CONFIG.target_alert_rate)
    model_dir = tmp_path_factory.mktemp("model")
    onnx_bytes = export_onnx(model, len(columns))
    (model_dir / MODEL_FILE).write_bytes(onnx_bytes)
    ModelMetadata(
        version="if-exactness",
        feature_names=CONFIG.features,
        threshold=threshold,
        risk_quantiles=(0.0, 1.0),
        graph="skl2onnx",
        offset=float(model.offset_),
        n_estimators=CONFIG.n_estimators,
        max_samples=int(model.max_samples_),
    ).write(model_dir / "model.json")
    scored = matrix[~duplicates][:, columns]
    return model, Scorer(model_dir), onnx_bytes, threshold, x, scored


def assert_scores_agree(model, scorer, threshold, rows):
    expected = -model.score_samples(rows)
    got = scorer.score(rows)
    worst = float(np.max(np.abs(expected - got)))
    assert worst <= TOLERANCE, f"scores differ by up to {worst:.3g}"
    differently = np.flatnonzero((expected >= threshold) != (got >= threshold))
    assert differently.size == 0, f"{differently.size} rows flagged differently"


def onnx_tree_thresholds(onnx_bytes):
    """Per tree: ONNX node id -> stored threshold, for the branch nodes."""
    graph = onnx.load_from_string(onnx_bytes).graph
    trees = []
    for node in graph.node:
        if node.op_type != "TreeEnsembleRegressor":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert set(attrs["nodes_treeids"]) == {0}, "one tree per ensemble node"
        trees.append(
            {
                node_id: np.float32(value)
                for node_id, value, mode in zip(
                    attrs["nodes_nodeids"],
                    attrs["nodes_values"],
                    attrs["nodes_modes"],
                    strict=True,
                )
                if mode == b"BRANCH_LEQ"
            }
        )
    return trees


def floor32(value: float) -> np.float32:
    """The largest float32 not above ``value``."""
    rounded = np.float32(value)
    return np.nextafter(rounded, np.float32(-np.inf)) if rounded > value else rounded


# -- real rows -----------------------------------------------------------------


@pytest.mark.slow
def test_features_of_real_transactions_are_finite_so_the_job_never_sends_nan(
    handbook,
):
    _, matrix, duplicates, _ = handbook
    assert len(matrix) >= 100_000
    kept = matrix[~duplicates]
    assert np.isfinite(kept).all(), "udfs.features produced a NaN or infinite value"
    assert np.isnan(matrix[duplicates]).all()


@pytest.mark.slow
def test_onnx_and_sklearn_scores_agree_and_flag_the_same_real_rows(forest):
    model, scorer, _, threshold, _, scored = forest
    assert len(scored) >= 100_000
    assert_scores_agree(model, scorer, threshold, scored)
    assert (scorer.score(scored) >= threshold).any(), "the threshold flags nothing"


# -- split thresholds ------------------------------------------------------------


@pytest.mark.slow
def test_exported_thresholds_are_sklearns_rounded_down_to_float32(forest):
    model, _, onnx_bytes, *_ = forest
    stored = onnx_tree_thresholds(onnx_bytes)
    assert len(stored) == len(model.estimators_)
    rounded_up = 0
    for estimator in model.estimators_:
        tree = estimator.tree_
        branches = np.flatnonzero(tree.children_left != -1)
        expected = {int(node): floor32(tree.threshold[node]) for node in branches}
        # The graph's tree order is skl2onnx's; match each tree by content.
        assert expected in stored, "no exported tree holds the rounded-down splits"
        rounded_up += int(
            np.sum(np.float32(tree.threshold[branches]) > tree.threshold[branches])
        )
    # Rounding to nearest would have moved these thresholds up, past float32
    # inputs that scikit-learn sends right: the rounding direction matters.
    assert rounded_up > 0


@pytest.mark.slow
def test_rows_on_and_beside_every_split_threshold_score_alike(forest):
    model, scorer, _, threshold, x, _ = forest
    rows, reached = rows_at_split_thresholds(
        model.estimators_, model.estimators_features_, x[:50_000]
    )
    assert reached > 0.95, f"only {reached:.0%} of the splits were reached"
    assert_scores_agree(model, scorer, threshold, rows)


# -- extreme values and NaN ------------------------------------------------------


@pytest.mark.slow
def test_extreme_and_zero_feature_values_score_alike(forest):
    model, scorer, _, threshold, x, _ = forest
    width = x.shape[1]
    rows = [np.full(width, value) for value in EXTREMES]
    for feature in range(width):
        for value in EXTREMES:
            changed = x[:100].copy()
            changed[:, feature] = value
            rows.extend(changed)
    assert_scores_agree(model, scorer, threshold, np.array(rows))


@pytest.mark.slow
def test_onnx_sends_nan_right_at_every_split_like_positive_infinity(forest):
    _, scorer, _, _, x, _ = forest
    for feature in range(x.shape[1]):
        with_nan, with_inf = x[:200].copy(), x[:200].copy()
        with_nan[:, feature] = np.nan
        with_inf[:, feature] = np.inf
        np.testing.assert_array_equal(scorer.score(with_nan), scorer.score(with_inf))


@pytest.mark.slow
def test_sklearn_sends_nan_where_each_node_says_missing_values_go(forest):
    model, *_, x, _ = forest
    row = x[0].copy()
    row[0] = np.nan
    for estimator, features in zip(
        model.estimators_, model.estimators_features_, strict=True
    ):
        tree = estimator.tree_
        values = row[features].astype(np.float32)
        node = 0
        while tree.children_left[node] != -1:
            value = values[tree.feature[node]]
            left = (
                tree.missing_go_to_left[node]
                if np.isnan(value)
                else value <= tree.threshold[node]
            )
            node = tree.children_left[node] if left else tree.children_right[node]
        assert estimator.apply(values[None, :])[0] == node


@pytest.mark.slow
def test_nan_scores_differ_between_onnx_and_sklearn_so_nan_must_never_be_sent(
    forest,
):
    model, scorer, _, _, x, _ = forest
    rows = np.repeat(x[:50], x.shape[1], axis=0)
    rows[np.arange(len(rows)), np.tile(np.arange(x.shape[1]), 50)] = np.nan
    difference = np.abs(-model.score_samples(rows) - scorer.score(rows))
    assert (difference > TOLERANCE).any()


# -- the supervised forest ------------------------------------------------------


def synthetic(seed: int = 0, n: int = 3_000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * [1.0, 50.0, 1e-3, 1e6]
    y = ((x[:, 0] + x[:, 1] / 50.0 > 2.0) | (rng.random(n) < 0.01)).astype(np.int8)
    return x, y


def test_supervised_export_gives_sklearns_fraud_probabilities():
    x, y = synthetic()
    model = supervised.fit_supervised(x, y, n_estimators=20)
    onnx_bytes = supervised.export_onnx(model, x.shape[1])
    assert supervised.check_parity(model, onnx_bytes, x) <= TOLERANCE
    got = supervised.onnx_fraud_probability(onnx_bytes, x)
    # float32 sums of the trees' shares may overshoot 1 by an ulp.
    assert got.shape == (len(x),)
    assert got.min() >= 0.0 and got.max() <= 1.0 + TOLERANCE


def test_supervised_export_is_exact_beside_every_split_threshold():
    x, y = synthetic()
    model = supervised.fit_supervised(x, y, n_estimators=20)
    onnx_bytes = supervised.export_onnx(model, x.shape[1])
    all_features = [np.arange(x.shape[1])] * len(model.estimators_)
    rows, reached = rows_at_split_thresholds(model.estimators_, all_features, x)
    assert reached == 1.0
    expected = supervised.fraud_probability(model, rows)
    got = supervised.onnx_fraud_probability(onnx_bytes, rows)
    assert np.max(np.abs(expected - got)) <= TOLERANCE


def test_parity_check_refuses_the_export_of_another_model():
    x, y = synthetic()
    model = supervised.fit_supervised(x, y, n_estimators=20, seed=1)
    other = supervised.fit_supervised(*synthetic(seed=2), n_estimators=20, seed=2)
    with pytest.raises(ValueError, match="do not deploy this export"):
        supervised.check_parity(model, supervised.export_onnx(other, x.shape[1]), x)


def test_supervised_fit_refuses_a_window_without_fraud():
    x, _ = synthetic()
    with pytest.raises(ValueError, match="widen the training window"):
        supervised.fit_supervised(x, np.zeros(len(x), dtype=np.int8))


def test_out_of_bag_scores_cover_every_training_row():
    x, y = synthetic()
    model = supervised.fit_supervised(x, y, n_estimators=20)
    scores = supervised.out_of_bag_scores(model)
    assert scores.shape == (len(x),) and np.isfinite(scores).all()


@pytest.mark.slow
def test_supervised_export_agrees_on_real_rows(handbook):
    frame, matrix, duplicates, training = handbook
    first_week = training & (
        frame["event_time_ms"].to_numpy()
        < np.datetime64("2018-05-08", "ms").astype(np.int64)
    )
    model = supervised.fit_supervised(
        matrix[first_week], frame["label"].to_numpy()[first_week], n_estimators=30
    )
    rows = matrix[~duplicates]
    onnx_bytes = supervised.export_onnx(model, rows.shape[1])
    assert supervised.check_parity(model, onnx_bytes, rows) <= TOLERANCE
