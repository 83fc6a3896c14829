"""The scoring step with a challenger: shadow scores beside the champion's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from model_factory import FEATURES, make_model

from jobs import records
from jobs.scoring_udf import SCORE_COLUMNS, ScoreBatch
from udfs import registry
from udfs.scoring import ModelError, Scorer

ACTIVE_HIT = json.dumps([{"rule_id": "big", "mode": "active"}])
SHADOW_HIT = json.dumps([{"rule_id": "night", "mode": "shadow"}])


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "registry"
    registry.register(root, make_model(tmp_path / "a", 1))
    registry.register(root, make_model(tmp_path / "b", 2, alert_rate=0.2))
    registry.promote(root, "m1")
    return root


def batch(n: int = 400, seed: int = 9) -> pd.DataFrame:
    """A batch of FEATURED rows, the first one hit by an active rule."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {name: rng.gamma(2.0, 40.0, n) for name in records.FEATURED_NAMES}
    )
    frame["transaction_id"] = [str(i) for i in range(n)]
    frame["event_time_ms"] = 1_530_403_200_000 + np.arange(n) * 1_000
    for name in ("card_id", "terminal_id", "currency"):
        frame[name] = "x"
    frame["is_late"] = False
    frame["rule_hits"] = ["[]"] * n
    frame.loc[0, "rule_hits"] = ACTIVE_HIT
    frame.loc[1, "rule_hits"] = SHADOW_HIT
    # The models' features, drawn like their training rows.
    frame["amount"] = rng.gamma(2.0, 30.0, n)
    frame["c_amount_ratio_30d"] = rng.lognormal(0, 0.3, n)
    frame["t_risk_7d"] = rng.random(n)
    frame.loc[2, "amount"] = 5_000.0  # an outlier for both models
    return frame


def score(step: ScoreBatch, frame: pd.DataFrame) -> pd.DataFrame:
    out = step.eval(*[frame[name].copy() for name in records.FEATURED_NAMES])
    assert list(out.columns) == [
        *records.FEATURED_NAMES,
        *(name for name, _ in SCORE_COLUMNS),
    ]
    return out


def opened(root) -> ScoreBatch:
    step = ScoreBatch(str(root), check_interval_s=0.0)
    step.open(None)
    return step


def test_without_a_challenger_the_shadow_columns_are_null(root):
    out = score(opened(root), batch())

    assert out["challenger_score"].isna().all()
    assert out["challenger_version"].isna().all()
    assert out["challenger_alert"].isna().all()
    assert (out["model_version"] == "m1").all()


def test_the_challenger_scores_every_row_and_never_decides_an_alert(root):
    frame = batch()
    alone = score(opened(root), frame)
    registry.promote(root, "m2", "challenger")
    shadowed = score(opened(root), frame)

    challenger = Scorer(registry.version_dir(root, "m2"))
    expected = challenger.score(frame[list(FEATURES)].to_numpy(np.float32))
    np.testing.assert_allclose(shadowed["challenger_score"].astype(float), expected)
    assert (shadowed["challenger_version"] == "m2").all()
    # The champion's decision, score and reasons are what they were alone.
    for column in ("score", "is_alert", "reasons", "model_version"):
        pd.testing.assert_series_equal(shadowed[column], alone[column])
    # The challenger's would-be alert: its own threshold, or an active rule.
    would = (expected >= challenger.threshold) | (frame["rule_hits"] == ACTIVE_HIT)
    assert shadowed["challenger_alert"].tolist() == would.tolist()
    assert shadowed["challenger_alert"].sum() > shadowed["is_alert"].sum()
    assert bool(shadowed.loc[0, "challenger_alert"])  # the active rule
    assert bool(shadowed.loc[2, "challenger_alert"])  # the outlier


def test_removing_the_challenger_stops_shadow_scoring_at_the_next_batch(root):
    registry.promote(root, "m2", "challenger")
    step = opened(root)
    assert score(step, batch())["challenger_version"].eq("m2").all()

    assert registry.clear(root, "challenger")
    out = score(step, batch())
    assert out["challenger_score"].isna().all()
    assert step.watcher.challenger() is None


def test_a_challenger_that_fails_on_a_batch_is_refused_and_the_champion_goes_on(
    root,
):
    registry.promote(root, "m2", "challenger")
    step = opened(root)
    challenger = step.watcher.challenger()
    assert challenger.version == "m2"

    def fail(frame):
        raise RuntimeError("onnxruntime: out of memory")

    challenger.decide = fail  # it loaded and passed its probe, then fails
    out = score(step, batch())
    assert out["challenger_score"].isna().all()
    assert out["score"].notna().all() and (out["model_version"] == "m1").all()
    assert "m2" in step.watcher.refused and step.watcher.challenger() is None
    # Refused for good: the pointer still names it, yet it is not loaded again.
    score(step, batch())
    assert step.watcher.challenger() is None


def test_a_challenger_wanting_a_feature_the_job_lacks_is_refused_at_load(
    root, tmp_path
):
    with pytest.raises(ModelError, match="does not compute: not_a_feature"):
        make_model(tmp_path / "c", 3, features=("amount", "not_a_feature"))
        registry.register(root, tmp_path / "c")
    # Even put into the registry by hand, it never shadows the champion.
    shutil.copytree(tmp_path / "c", registry.version_dir(root, "m3"))
    registry.promote(root, "m3", "challenger")
    step = opened(root)
    out = score(step, batch())
    assert "m3" in step.watcher.refused
    assert out["challenger_score"].isna().all() and out["score"].notna().all()


def test_a_broken_challenger_is_refused_at_load_and_the_champion_scores(root):
    broken = registry.version_dir(root, "m2")
    (broken / "model.onnx").write_bytes(b"not onnx")
    registry.promote(root, "m2", "challenger")
    step = opened(root)

    out = score(step, batch())
    assert "m2" in step.watcher.refused
    assert out["challenger_score"].isna().all() and out["score"].notna().all()


def test_a_challenger_naming_the_champion_is_not_scored_twice(root):
    registry.promote(root, "m1", "challenger")
    assert opened(root).watcher.challenger() is None
