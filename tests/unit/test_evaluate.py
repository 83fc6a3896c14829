"""``txwatch evaluate`` on a small split of April: every detector, consistent."""

from __future__ import annotations

import json

import pytest

from training.evaluate import main

pytestmark = pytest.mark.slow

DETECTORS = (
    "isolation_forest",
    "rules",
    "supervised",
    "full_system",
    "baseline_logistic_regression",
)


@pytest.fixture(scope="module")
def result(handbook_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "result.json"
    argv = ["--data", str(handbook_files[0]), "--json-out", str(out)]
    argv += ["--train-from", "2018-04-15", "--train-to", "2018-04-21"]
    argv += [
        "--delay-days",
        "3",
        "--test-from",
        "2018-04-25",
        "--test-to",
        "2018-04-28",
    ]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_every_detector_is_graded_on_the_same_test_rows(result):
    protocol = result["protocol"]
    assert protocol["train"] == ["2018-04-15", "2018-04-21"]
    assert protocol["test_rows"] > 30_000 and protocol["test_frauds"] > 0
    for name in DETECTORS:
        figures = result[name]
        for metric in ("auc_roc", "average_precision", "card_precision_at_100"):
            assert 0.0 <= figures[metric] <= 1.0, (name, metric)
        assert 0.0 < figures["alert_rate"] < 0.05, name


def test_the_full_system_alerts_on_the_supervised_stage_or_the_rules(result):
    stage, rules, job = (
        result[name] for name in ("supervised", "rules", "full_system")
    )
    assert job["threshold"] == stage["threshold"]
    # Alerts of an OR: at least each part's, at most both together.
    assert max(stage["alert_rate"], rules["alert_rate"]) <= job["alert_rate"]
    assert job["alert_rate"] <= stage["alert_rate"] + rules["alert_rate"] + 1e-12
    assert job["recall"] >= max(stage["recall"], rules["recall"])


def test_the_supervised_stage_takes_the_forest_score_as_an_input(result):
    assert result["supervised"]["inputs"][-1] == "isolation_forest score"


def test_no_detector_passes_the_card_precision_ceilings(result):
    ceilings = result["protocol"]["card_precision_ceiling"]
    perfect, knowable = ceilings["every_fraud_first"], ceilings["knowable_frauds_first"]
    assert 0.0 < knowable <= perfect <= 1.0
    for name in DETECTORS:
        assert result[name]["card_precision_at_100"] <= perfect, name
