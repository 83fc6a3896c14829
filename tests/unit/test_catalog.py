"""What ``model_versions`` should say for a registry or a model directory."""

from __future__ import annotations

import json

from model_factory import make_model

from txwatch.catalog import entries
from txwatch.cli import main as cli
from udfs import registry
from udfs.scoring import ModelMetadata


def test_a_model_directory_is_one_champion(tmp_path):
    model_dir = make_model(tmp_path / "model", seed=1)

    (entry,) = entries(model_dir)

    meta = ModelMetadata.read(model_dir / "model.json")
    assert (entry.version, entry.alias, entry.threshold) == (
        "m1",
        "champion",
        meta.threshold,
    )
    assert "25 trees" in entry.notes and "amount" in entry.notes
    assert entry.fraud_threshold is None  # no supervised stage: the forest decides


def test_a_supervised_stage_gives_the_threshold_that_decides(tmp_path):
    model_dir = make_model(tmp_path / "model", seed=1)
    meta = json.loads((model_dir / "model.json").read_text())
    meta["supervised"] = {
        "feature_names": ["amount", "anomaly_score"],
        "threshold": 0.42,
        "trained_rows": 1000,
        "trained_frauds": 12,
        "labelled_to": "2018-06-24",
    }
    (model_dir / "model.json").write_text(json.dumps(meta))

    (entry,) = entries(model_dir)

    assert (entry.threshold, entry.fraud_threshold) == (meta["threshold"], 0.42)
    assert "Supervised stage (decides alerts)" in entry.notes
    assert "1000 labelled transactions (12 frauds) up to 2018-06-24" in entry.notes


def test_a_registry_gives_every_version_and_its_pointer(tmp_path):
    root = tmp_path / "registry"
    for seed in (1, 2, 3):
        registry.register(root, make_model(tmp_path / f"model{seed}", seed))
    registry.promote(root, "m2")
    registry.promote(root, "m3", "challenger")

    assert [(e.version, e.alias) for e in entries(root)] == [
        ("m1", None),
        ("m2", "champion"),
        ("m3", "challenger"),
    ]
    registry.promote(root, "m3")  # both pointers on m3: shown as champion
    assert [(e.version, e.alias) for e in entries(root)] == [
        ("m1", None),
        ("m2", None),
        ("m3", "champion"),
    ]


def test_promote_still_moves_the_pointer_when_the_table_cannot_be_written(
    tmp_path, capsys
):
    root = tmp_path / "registry"
    registry.register(root, make_model(tmp_path / "model1", seed=1))

    assert cli(["promote", "m1", "--file-only", "--registry", str(root)]) == 0

    assert registry.current(root) == "m1"
    err = capsys.readouterr().err
    assert "model_versions not updated" in err
    assert "TXWATCH_WRITER_PASSWORD is not set" in err
