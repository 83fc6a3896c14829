"""The ONNX scorer against scikit-learn, and the explanations of its alerts."""

import json

import numpy as np
import pytest
from model_factory import write_model
from sklearn.ensemble import IsolationForest

from training.train import check_parity
from udfs.explain import Explainer, render, score_from_contributions
from udfs.scoring import ModelError, Scorer

NAMES = ("amount", "c_count_1h", "c_amount_ratio_30d", "t_risk_7d")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    rng = np.random.default_rng(3)
    x = np.column_stack(
        [
            rng.gamma(4.0, 12.0, 20_000),
            rng.poisson(1.0, 20_000),
            rng.normal(1.0, 0.2, 20_000),
            rng.beta(1, 50, 20_000),
        ]
    )
    forest = IsolationForest(n_estimators=60, random_state=1).fit(x)
    directory = tmp_path_factory.mktemp("model")
    write_model(directory, forest, x, "test-1", NAMES, 0.01, quantiles=101)
    return directory, forest, x


def test_onnx_scores_equal_scikit_learn_in_batches(model_dir):
    directory, forest, x = model_dir
    scorer = Scorer(directory)
    assert check_parity(forest, scorer, x, scorer.threshold) < 1e-5
    one_by_one = np.concatenate([scorer.score(x[i : i + 1]) for i in range(50)])
    assert np.allclose(one_by_one, scorer.score(x[:50]), atol=1e-9)


def test_threshold_gives_the_target_alert_rate_and_lies_between_scores(model_dir):
    directory, forest, x = model_dir
    scores = -forest.score_samples(x)
    threshold = Scorer(directory).threshold
    assert np.mean(scores >= threshold) == pytest.approx(0.01, abs=1e-4)
    assert not np.any(scores == threshold)


def test_risk_is_monotone_in_score_and_bounded(model_dir):
    scorer = Scorer(model_dir[0])
    risk = scorer.risk(np.array([0.0, 0.3, 0.5, 0.7, 1.0]))
    assert np.all(np.diff(risk) >= 0) and risk[0] == 0.0 and risk[-1] == 1.0


def test_a_matrix_of_the_wrong_width_is_refused(model_dir):
    with pytest.raises(ModelError, match="4 columns"):
        Scorer(model_dir[0]).score(np.zeros((3, 5), dtype=np.float32))


def test_a_broken_model_file_is_refused_with_its_path(model_dir, tmp_path):
    directory = model_dir[0]
    (tmp_path / "model.json").write_text((directory / "model.json").read_text())
    (tmp_path / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(ModelError, match=str(tmp_path)):
        Scorer(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"version": "x"}))
    with pytest.raises(ModelError, match="unreadable"):
        Scorer(tmp_path)


def test_the_top_reason_of_an_injected_outlier_names_its_feature(model_dir):
    directory, forest, x = model_dir
    scorer = Scorer(directory)
    explainer = Explainer(directory, scorer.metadata)
    typical = np.median(x, axis=0, keepdims=True).astype(np.float32)
    outlier = typical.copy()
    outlier[0, 2] = 20.0  # amount ratio: twenty times the card's mean
    assert scorer.risk(scorer.score(outlier))[0] > 0.8
    assert scorer.score(outlier)[0] > scorer.score(typical)[0] + 0.05

    reasons = explainer.explain(outlier)[0]
    assert reasons[0]["feature"] == "c_amount_ratio_30d"
    assert reasons[0]["contribution"] < 0  # shortens the path: towards anomalous
    assert reasons[0]["text"] == "amount 20.0x this card's 30-day mean"


def test_contributions_add_up_to_the_score(model_dir):
    directory, forest, x = model_dir
    scorer = Scorer(directory)
    explainer = Explainer(directory, scorer.metadata)
    rows = x[:200].astype(np.float32)
    rebuilt = score_from_contributions(
        explainer.base, explainer.contributions(rows), scorer.metadata.max_samples
    )
    assert np.max(np.abs(rebuilt - scorer.score(rows))) < 1e-6


def test_reasons_render_as_sentences():
    assert render("c_count_1h", 7.0) == "7 transactions on this card in the last hour"
    assert render("t_risk_30d", 0.25).startswith("25%")
    assert render("unknown_feature", 1.5) == "unknown_feature = 1.5"
