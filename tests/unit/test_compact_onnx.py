"""The compact ONNX graph against scikit-learn: real rows, split thresholds, NaN.

The slow tests compute features for 2018-04-01 .. 2018-04-14 of the handbook
data (about 134,000 transactions) and fit the forest as ``training.train``
does, on the second week.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from sklearn.ensemble import IsolationForest
from split_thresholds import rows_at_split_thresholds

from training.compact_onnx import (
    OUTPUT_NAME,
    check_parity,
    compact_scores,
    export_compact,
    floor_float32,
    write_compact_model,
)
from training.dataset import compute_features, load_handbook
from training.train import TrainingConfig, choose_threshold
from udfs.features import FEATURE_NAMES
from udfs.scoring import ModelMetadata, Scorer

TOLERANCE = 1e-5
CONFIG = TrainingConfig(
    history_from="2018-04-01", train_from="2018-04-08", train_to="2018-04-15"
)


@pytest.fixture(scope="module")
def real(handbook_files):
    """Feature rows of the slice, the fitted forest, its graph and threshold."""
    frame = load_handbook(handbook_files[:1], CONFIG.history_from, CONFIG.train_to)
    matrix, duplicates, _ = compute_features(frame, CONFIG.label_delay_days)
    columns = [FEATURE_NAMES.index(name) for name in CONFIG.features]
    rows = matrix[~duplicates][:, columns]
    train_from_ms = np.datetime64(CONFIG.train_from, "ms").astype(np.int64)
    training = frame["event_time_ms"].to_numpy()[~duplicates] >= train_from_ms
    forest = IsolationForest(
        n_estimators=CONFIG.n_estimators,
        max_samples=CONFIG.max_samples,
        random_state=CONFIG.seed,
        n_jobs=1,
    ).fit(rows[training])
    threshold = choose_threshold(
        -forest.score_samples(rows[training]), CONFIG.target_alert_rate
    )
    return forest, export_compact(forest, len(columns)), threshold, rows


def synthetic(seed: int = 0, n: int = 4_000, width: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 10.0, size=(n, width)) * rng.choice([1e-3, 1.0, 1e4], width)


def expected_scores(forest, rows):
    return -forest.score_samples(rows)


# -- real rows -------------------------------------------------------------------


@pytest.mark.slow
def test_compact_scores_equal_scikit_learns_on_real_rows_and_flag_the_same(real):
    forest, graph, threshold, rows = real
    assert len(rows) >= 100_000
    expected = expected_scores(forest, rows)
    got = compact_scores(forest, graph, rows)
    assert np.max(np.abs(expected - got)) <= TOLERANCE
    flagged = np.flatnonzero(expected >= threshold)
    assert flagged.size > 0, "the threshold flags nothing"
    np.testing.assert_array_equal(np.flatnonzero(got >= threshold), flagged)
    assert check_parity(forest, graph, rows, threshold) <= TOLERANCE


@pytest.mark.slow
def test_scorer_loads_the_compact_graph_and_scores_like_scikit_learn(real, tmp_path):
    forest, _, threshold, rows = real
    metadata = ModelMetadata(
        version="if-compact-test",
        feature_names=CONFIG.features,
        threshold=threshold,
        risk_quantiles=(0.0, 1.0),
        graph="skl2onnx",
        offset=float(forest.offset_),
        n_estimators=CONFIG.n_estimators,
        max_samples=int(forest.max_samples_),
    )
    written = write_compact_model(forest, tmp_path, metadata)

    scorer = Scorer(tmp_path)
    assert scorer.metadata.graph == "compact" == written.graph
    assert scorer.version == "if-compact-test-compact"
    expected = expected_scores(forest, rows)
    got = scorer.score(rows.astype(np.float32))
    assert np.max(np.abs(expected - got)) <= TOLERANCE
    np.testing.assert_array_equal(got >= scorer.threshold, expected >= threshold)


@pytest.mark.slow
def test_rows_on_and_beside_every_reached_split_threshold_score_alike(real):
    forest, graph, threshold, rows = real
    probes, reached = rows_at_split_thresholds(
        forest.estimators_, forest.estimators_features_, rows[:20_000]
    )
    assert reached > 0.9, f"only {reached:.0%} of the splits were reached"
    expected = expected_scores(forest, probes)
    got = compact_scores(forest, graph, probes)
    assert np.max(np.abs(expected - got)) <= TOLERANCE
    np.testing.assert_array_equal(got >= threshold, expected >= threshold)


def test_floor_float32_gives_the_largest_float32_not_above_the_value():
    values = np.array([0.1, -0.1, 1.0, 1e-40, 3.0e38, 16777217.0, -16777217.0])
    floors = floor_float32(values)
    assert floors.dtype == np.float32
    assert np.all(floors.astype(np.float64) <= values)
    above = np.nextafter(floors, np.float32(np.inf)).astype(np.float64)
    assert np.all(above > values)


def test_stored_thresholds_are_sklearns_rounded_down_and_rounding_matters():
    x = synthetic()
    forest = IsolationForest(n_estimators=10, random_state=0).fit(x)
    attrs = _ensemble_attributes(export_compact(forest, x.shape[1]))
    branch = np.array(attrs["nodes_modes"]) == b"BRANCH_LEQ"
    stored = np.array(attrs["nodes_values"], dtype=np.float32)[branch]
    sklearn = np.concatenate(
        [e.tree_.threshold[e.tree_.children_left != -1] for e in forest.estimators_]
    )
    np.testing.assert_array_equal(stored, floor_float32(sklearn))
    # Rounding to nearest would have moved these up, past inputs that
    # scikit-learn sends right.
    assert np.sum(sklearn.astype(np.float32).astype(np.float64) > sklearn) > 0


def test_the_whole_forest_is_one_operator_with_one_output():
    x = synthetic()
    forest = IsolationForest(n_estimators=25, random_state=0).fit(x)
    graph = onnx.load_from_string(export_compact(forest, x.shape[1])).graph
    assert [node.op_type for node in graph.node] == ["TreeEnsembleRegressor"]
    assert [output.name for output in graph.output] == [OUTPUT_NAME]
    attrs = _ensemble_attributes(graph)
    assert set(attrs["nodes_treeids"]) == set(range(25))


def test_forests_fitted_on_feature_subsets_score_alike():
    x = synthetic(width=8)
    forest = IsolationForest(n_estimators=30, max_features=0.5, random_state=2).fit(x)
    graph = export_compact(forest, x.shape[1])
    expected = expected_scores(forest, x)
    assert np.max(np.abs(expected - compact_scores(forest, graph, x))) <= TOLERANCE


def test_nan_goes_right_everywhere_by_default_like_positive_infinity():
    x = synthetic()
    forest = IsolationForest(n_estimators=20, random_state=0).fit(x)
    graph = export_compact(forest, x.shape[1])
    with_nan, with_inf = x[:200].copy(), x[:200].copy()
    with_nan[:, 1], with_inf[:, 1] = np.nan, np.inf
    np.testing.assert_array_equal(
        compact_scores(forest, graph, with_nan), compact_scores(forest, graph, with_inf)
    )


def test_nan_follows_scikit_learn_when_the_graph_tracks_missing_values():
    x = synthetic()
    forest = IsolationForest(n_estimators=20, random_state=0).fit(x)
    graph = export_compact(forest, x.shape[1], missing_like_sklearn=True)
    rows = np.repeat(x[:50], x.shape[1], axis=0)
    rows[np.arange(len(rows)), np.tile(np.arange(x.shape[1]), 50)] = np.nan
    expected = expected_scores(forest, rows)
    assert np.max(np.abs(expected - compact_scores(forest, graph, rows))) <= TOLERANCE


def test_parity_check_refuses_the_graph_of_another_forest():
    x = synthetic()
    forest = IsolationForest(n_estimators=20, random_state=0).fit(x)
    other = IsolationForest(n_estimators=20, random_state=1).fit(x)
    threshold = choose_threshold(expected_scores(forest, x), 0.01)
    with pytest.raises(ValueError, match="do not deploy this graph"):
        check_parity(forest, export_compact(other, x.shape[1]), x, threshold)


def test_export_refuses_a_width_other_than_the_fitted_one():
    x = synthetic()
    forest = IsolationForest(n_estimators=5, random_state=0).fit(x)
    with pytest.raises(ValueError, match="n_features must be the 5 columns"):
        export_compact(forest, 6)


def _ensemble_attributes(graph_or_bytes) -> dict:
    graph = (
        onnx.load_from_string(graph_or_bytes).graph
        if isinstance(graph_or_bytes, bytes)
        else graph_or_bytes
    )
    (node,) = graph.node
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@pytest.mark.parametrize("graph", ["compact", "skl2onnx"])
def test_training_writes_the_graph_it_is_asked_for_and_checks_it(graph, tmp_path):
    from training.train import fit

    x = synthetic(seed=4, width=3)
    features = ("amount", "c_amount_ratio_30d", "t_risk_7d")
    config = TrainingConfig(features=features, n_estimators=20, graph=graph)

    result = fit(x, np.zeros(len(x)), tmp_path / "model", config)

    scorer = Scorer(tmp_path / "model")
    assert scorer.metadata.graph == graph == result.metadata.graph
    operators = {
        n.op_type for n in onnx.load(tmp_path / "model" / "model.onnx").graph.node
    }
    assert (operators == {"TreeEnsembleRegressor"}) == (graph == "compact")
    assert result.metrics["onnx_max_abs_diff"] < TOLERANCE
    forest = IsolationForest(
        n_estimators=20, max_samples=config.max_samples, random_state=config.seed
    ).fit(x)
    np.testing.assert_allclose(
        scorer.score(x), expected_scores(forest, x), atol=TOLERANCE, rtol=0
    )


def test_training_refuses_an_unknown_graph():
    with pytest.raises(ValueError, match="graph must be one of"):
        TrainingConfig(graph="pmml")
