"""A model's supervised stage: fitted on known labels, served, explained."""

from __future__ import annotations

import json
import logging
import shutil

import joblib
import numpy as np
import pandas as pd
import pytest
from model_factory import FEATURES, make_model

from jobs import records
from jobs.scoring_udf import ScoreBatch
from training.train import Labels, TrainingConfig, fit
from udfs import registry
from udfs.explain import SUPERVISED_SKLEARN_FILE, Explainer
from udfs.features import FEATURE_NAMES
from udfs.scoring import (
    ANOMALY_SCORE,
    SUPERVISED_FILE,
    ModelError,
    Scorer,
    stage_inputs,
)

TOLERANCE = 1e-5
ROWS, KNOWN = 4_000, 3_000
ACTIVE_HIT = json.dumps([{"rule_id": "big", "mode": "active"}])


def labelled_rows(seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Every feature of ``udfs.features``; fraud where the amount is far above
    the card's habit at a risky terminal, plus some label noise."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.gamma(2.0, 20.0, ROWS) for name in FEATURE_NAMES})
    frame["amount"] = rng.gamma(2.0, 30.0, ROWS)
    frame["c_amount_ratio_30d"] = rng.lognormal(0, 0.4, ROWS)
    frame["t_risk_7d"] = rng.random(ROWS)
    fraud = (frame["c_amount_ratio_30d"] > 1.6) & (frame["t_risk_7d"] > 0.5)
    noise = rng.random(ROWS) < 0.005
    return frame, (fraud.to_numpy() ^ noise).astype(np.int8)


def train(directory, frame: pd.DataFrame, y: np.ndarray, **overrides):
    config = TrainingConfig(
        features=FEATURES,
        n_estimators=25,
        supervised_trees=20,
        target_alert_rate=0.02,
        **overrides,
    )
    labels = Labels(
        features=frame[list(FEATURE_NAMES)].to_numpy(),
        known=np.arange(ROWS) < KNOWN,
        known_to="2018-07-01",
    )
    x = frame[list(FEATURES)].to_numpy()
    return fit(x, y, directory, config, labels=labels)


@pytest.fixture(scope="module")
def data():
    return labelled_rows()


@pytest.fixture(scope="module")
def model(data, tmp_path_factory):
    frame, y = data
    return train(tmp_path_factory.mktemp("model") / "m", frame, y)


def test_the_stage_is_fitted_on_the_rows_whose_labels_were_known(model, data):
    _, y = data
    stage = model.metadata.supervised

    assert stage is not None
    assert stage.trained_rows == KNOWN
    assert stage.trained_frauds == int(y[:KNOWN].sum()) > 0
    assert stage.labelled_to == "2018-07-01"
    assert stage.feature_names == (*FEATURE_NAMES, ANOMALY_SCORE)
    assert (model.model_dir / SUPERVISED_FILE).stat().st_size > 0
    assert model.metrics["supervised_onnx_max_abs_diff"] < TOLERANCE
    assert model.metrics["supervised_oob_average_precision"] > 0.5


def test_alerts_follow_the_fraud_probability_which_matches_scikit_learn(model, data):
    frame, _ = data
    scorer = Scorer(model.model_dir)
    decision = scorer.decide(frame)

    forest = joblib.load(model.model_dir / SUPERVISED_SKLEARN_FILE)
    inputs = stage_inputs(frame[list(FEATURE_NAMES)].to_numpy(), decision.scores)
    expected = forest.predict_proba(inputs)[:, 1]
    threshold = scorer.metadata.supervised.threshold
    assert np.max(np.abs(decision.probability - expected)) < TOLERANCE
    np.testing.assert_array_equal(decision.alerts, expected >= threshold)
    # The forest's own threshold no longer decides: the two disagree somewhere.
    assert (decision.alerts != (decision.scores >= scorer.threshold)).any()
    assert 0 < decision.alerts.mean() < 0.2


def test_contributions_add_up_to_the_probability_and_reasons_push_to_fraud(model, data):
    frame, _ = data
    scorer = Scorer(model.model_dir)
    decision = scorer.decide(frame)
    rows = np.flatnonzero(decision.alerts)[:20]
    explainer = Explainer(model.model_dir, scorer.metadata)

    values = explainer.contributions(decision.explained[rows])
    rebuilt = explainer.base + values.sum(axis=1)
    np.testing.assert_allclose(rebuilt, decision.probability[rows], atol=1e-5)
    for reasons in explainer.explain(decision.explained[rows]):
        assert reasons, "an alert of the stage has at least one reason"
        pushes = [r["contribution"] for r in reasons]
        assert all(p > 0 for p in pushes) and pushes == sorted(pushes, reverse=True)
    top = {r[0]["feature"] for r in explainer.explain(decision.explained[rows])}
    assert top & {"c_amount_ratio_30d", "t_risk_7d", "c_amount_zscore_30d"}


def test_without_a_known_fraud_no_stage_is_fitted_and_the_forest_decides(
    data, tmp_path, caplog
):
    frame, y = data
    y = y.copy()
    y[:KNOWN] = 0  # frauds only among rows whose labels are not known yet

    with caplog.at_level(logging.WARNING):
        result = train(tmp_path / "m", frame, y)

    assert result.metadata.supervised is None
    assert not (tmp_path / "m" / SUPERVISED_FILE).exists()
    assert "no supervised stage" in caplog.text
    decision = Scorer(tmp_path / "m").decide(frame)
    assert decision.probability is None
    np.testing.assert_array_equal(
        decision.alerts, decision.scores >= result.metadata.threshold
    )


def test_a_stage_can_be_turned_off(data, tmp_path):
    frame, y = data
    result = train(tmp_path / "m", frame, y, supervised=False)
    assert result.metadata.supervised is None
    assert "supervised_threshold" not in result.metrics


def test_the_registry_refuses_a_stage_with_an_impossible_threshold(model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model.model_dir, broken)
    raw = json.loads((broken / "model.json").read_text())
    raw["supervised"]["threshold"] = 1.5
    (broken / "model.json").write_text(json.dumps(raw))

    with pytest.raises(ModelError, match="supervised stage has threshold"):
        registry.check(Scorer(broken))


def test_a_model_json_without_a_stage_loads_as_before(tmp_path):
    directory = make_model(tmp_path / "old", 1)
    raw = json.loads((directory / "model.json").read_text())
    raw.pop("supervised")  # as written before stages existed
    (directory / "model.json").write_text(json.dumps(raw))

    assert Scorer(directory).metadata.supervised is None


def test_the_scoring_step_writes_the_probability_and_alerts_on_it_or_a_rule(
    model, data, tmp_path
):
    features, _ = data
    frame = features.iloc[:500].copy()
    for name in records.FEATURED_NAMES:
        if name not in frame:
            frame[name] = "x"
    frame["transaction_id"] = [str(i) for i in range(len(frame))]
    frame["event_time_ms"] = 1_530_403_200_000 + np.arange(len(frame)) * 1_000
    frame["is_late"] = False
    frame["rule_hits"] = ["[]"] * len(frame)
    decision = Scorer(model.model_dir).decide(frame)
    quiet = int(np.flatnonzero(~decision.alerts)[0])
    frame.loc[quiet, "rule_hits"] = ACTIVE_HIT

    step = ScoreBatch(str(model.model_dir), check_interval_s=0.0)
    step.open(None)
    out = step.eval(*[frame[name].copy() for name in records.FEATURED_NAMES])

    np.testing.assert_allclose(out["fraud_probability"], decision.probability)
    expected = decision.alerts.copy()
    expected[quiet] = True
    np.testing.assert_array_equal(out["is_alert"].to_numpy(), expected)
    reasons = out.loc[decision.alerts, "reasons"].map(json.loads)
    assert all(r and r[0]["contribution"] > 0 for r in reasons)


def test_the_explainer_refuses_rows_of_another_width(model, data):
    frame, _ = data
    scorer = Scorer(model.model_dir)
    explainer = Explainer(model.model_dir, scorer.metadata)
    forest_rows = frame[list(FEATURES)].to_numpy()[:5]  # the forest's inputs only

    with pytest.raises(
        ValueError, match=f"takes rows of {len(FEATURE_NAMES) + 1} inputs"
    ):
        explainer.explain(forest_rows)


def test_a_model_naming_a_feature_the_job_lacks_is_refused_when_it_loads(
    model, tmp_path
):
    broken = tmp_path / "renamed"
    shutil.copytree(model.model_dir, broken)
    raw = json.loads((broken / "model.json").read_text())
    raw["supervised"]["feature_names"][0] = "c_count_90d"
    (broken / "model.json").write_text(json.dumps(raw))

    with pytest.raises(ModelError, match="does not compute: c_count_90d"):
        Scorer(broken)
