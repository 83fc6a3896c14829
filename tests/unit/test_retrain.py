"""Retraining on handbook days, graded against a champion on later days."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from model_factory import make_model

from training.retrain import RetrainConfig, retrain
from txwatch.cli import main as cli
from udfs import registry
from udfs.drift import REFERENCE_FILE
from udfs.scoring import Scorer

# Small windows inside the first half of April: warm-up 04-03..04-05,
# training 04-05..04-08, evaluation 04-08..04-10, labels known by 04-17.
SMALL = {"as_of": "2018-04-17", "train_days": 3, "eval_days": 2, "warmup_days": 2}


def test_the_windows_run_back_from_the_day_of_retraining():
    config = RetrainConfig(as_of="2018-08-15")
    assert config.windows == {
        "warmup_from": "2018-06-04",
        "train_from": "2018-07-04",
        "eval_from": "2018-08-01",
        "eval_to": "2018-08-08",
    }
    training = config.training_config()
    assert (training.history_from, training.train_from, training.train_to) == (
        "2018-06-04",
        "2018-07-04",
        "2018-08-01",
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"as_of": "yesterday"}, "as_of must be an ISO date"),
        ({"as_of": "2018-08-15", "eval_days": 0}, "eval_days must be .* at least 1"),
        ({"as_of": "2018-08-15", "warmup_days": -1}, "warmup_days .* at least 0"),
    ],
)
def test_bad_windows_are_refused_naming_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        RetrainConfig(**bad)


def test_an_evaluation_beyond_the_data_is_refused_before_any_work(
    handbook_files, tmp_path
):
    with pytest.raises(ValueError, match="data ends on 2018-04-30.*earlier --as-of"):
        retrain(
            handbook_files[:1],
            tmp_path / "model",
            RetrainConfig(as_of="2018-05-20", train_days=3, eval_days=2),
            progress=False,
        )
    assert not (tmp_path / "model").exists()


@pytest.fixture(scope="module")
def retrained(handbook_files, tmp_path_factory):
    """``txwatch retrain`` once, against a registry and an MLflow store."""
    tmp = tmp_path_factory.mktemp("retrain")
    root = tmp / "registry"
    registry.register(root, make_model(tmp / "champion", 1))
    registry.promote(root, "m1")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = tmp / "evaluation.json"
    code = cli(
        [
            "retrain",
            "--as-of",
            SMALL["as_of"],
            "--train-days",
            str(SMALL["train_days"]),
            "--eval-days",
            str(SMALL["eval_days"]),
            "--warmup-days",
            str(SMALL["warmup_days"]),
            "--trees",
            "40",
            "--data-dir",
            str(handbook_files[0].parent),
            "--registry",
            str(root),
            "--tracking-uri",
            uri,
            "--model-name",
            "test-iforest",
            "--json-out",
            str(out),
            "--quiet",
        ]
    )
    report = json.loads(out.read_text())
    return {"code": code, "root": root, "uri": uri, "report": report}


def test_retrain_registers_the_new_model_as_challenger_in_both_registries(retrained):
    assert retrained["code"] == 0
    report, root = retrained["report"], retrained["root"]
    version = report["challenger_version"]
    assert report["champion_version"] == "m1"
    assert registry.current(root) == "m1"
    assert registry.current(root, "challenger") == version
    assert (registry.version_dir(root, version) / REFERENCE_FILE).is_file()

    client = MlflowClient(tracking_uri=retrained["uri"], registry_uri=retrained["uri"])
    model = client.get_registered_model("test-iforest")
    assert set(model.aliases) == {"challenger"}
    number = model.aliases["challenger"]
    tagged = client.get_model_version("test-iforest", number)
    assert tagged.tags["txwatch.model_version"] == version
    run = client.get_run(tagged.run_id)
    assert run.data.params["train_from"] == "2018-04-05"
    assert run.data.params["train_to"] == "2018-04-08"
    assert run.data.metrics["eval_auc_roc"] == pytest.approx(
        report["evaluation"]["challenger"]["auc_roc"]
    )
    assert "eval_champion_auc_roc" in run.data.metrics
    logged = {
        info.path.split("/")[-1]
        for info in client.list_artifacts(run.info.run_id, "model")
    }
    assert {"model.onnx", REFERENCE_FILE, "reference_distributions.json"} <= logged


def test_retrain_grades_both_models_on_the_same_later_rows(retrained, handbook_files):
    from training.dataset import load_handbook

    report = retrained["report"]
    frame = load_handbook(handbook_files[:1], "2018-04-03", "2018-04-10")
    days = frame["event_time_ms"] // 86_400_000
    first_eval = int(np.datetime64("2018-04-08", "D").astype(int))
    evaluated = frame[days >= first_eval]
    trained = frame[(days < first_eval) & (days >= first_eval - 3)]

    assert report["rows"]["eval"] == len(evaluated)
    assert report["rows"]["train"] == len(trained)
    assert report["training"]["train_rows"] == len(trained)
    assert report["frauds_evaluated"] == int(evaluated["label"].sum()) > 50
    challenger = report["evaluation"]["challenger"]
    champion = report["evaluation"]["champion"]
    assert set(challenger) == set(champion)
    # A forest fitted on the handbook's own days ranks its fraud well; the
    # champion, fitted on synthetic rows, serves as the comparison.
    assert challenger["auc_roc"] > 0.7
    assert challenger["average_precision"] > 0.2
    for metrics in (challenger, champion):
        assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
        assert 0 < metrics["alert_rate"] < 1


def test_the_threshold_comes_from_training_not_from_the_evaluation(retrained):
    report = retrained["report"]
    root = retrained["root"]
    scorer = Scorer(registry.version_dir(root, report["challenger_version"]))
    stage = scorer.metadata.supervised
    # Labels of the training days are known on the day of retraining: the
    # model has a supervised stage, and its threshold decides alerts.
    assert stage is not None
    assert report["evaluation"]["challenger"]["threshold"] == stage.threshold
    assert report["training"]["supervised_threshold"] == stage.threshold
    assert report["training"]["threshold"] == scorer.threshold
    assert report["training"]["train_alert_rate"] == pytest.approx(0.005, abs=0.001)
