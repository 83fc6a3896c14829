"""Champion and challenger aliases in a real MLflow store (SQLite in a tmp dir)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from model_factory import make_model

from training.aliases import AliasError, ModelAliases
from training.tracking import log_training_run
from training.train import TrainingConfig, TrainingResult
from txwatch.cli import main as cli
from udfs import registry
from udfs.scoring import ModelMetadata

NAME = "test-iforest"


@pytest.fixture
def store(tmp_path):
    """Three versions logged to MLflow; none yet in the file registry."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for seed in (1, 2, 3):
        model_dir = make_model(tmp_path / f"model{seed}", seed)
        result = TrainingResult(
            model_dir, ModelMetadata.read(model_dir / "model.json"), {"rows": 1.0}
        )
        log_training_run(result, TrainingConfig(), uri, NAME)
    root = tmp_path / "registry"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return root, uri, client


def mlflow_aliases(client) -> dict[str, str]:
    return {
        alias: str(number)
        for alias, number in client.get_registered_model(NAME).aliases.items()
    }


def test_promote_sets_the_mlflow_alias_and_downloads_the_files_it_points_at(store):
    root, uri, client = store
    change = ModelAliases(root, uri, NAME).promote("m2")

    assert mlflow_aliases(client) == {"champion": "2"}
    assert change.before is None and change.after == "m2"
    assert change.mlflow_version == "2"
    assert registry.current(root) == "m2"
    assert registry.current(root, "challenger") is None
    assert (registry.version_dir(root, "m2") / "model.onnx").is_file()
    assert not registry.version_dir(root, "m1").exists()


def test_a_version_is_named_by_its_model_version_or_its_mlflow_number(store):
    root, uri, client = store
    aliases = ModelAliases(root, uri, NAME)
    aliases.promote("1")
    aliases.promote("m3", "challenger")

    assert mlflow_aliases(client) == {"champion": "1", "challenger": "3"}
    assert aliases.aliases() == {"champion": "m1", "challenger": "m3"}
    assert registry.current(root) == "m1"
    assert registry.current(root, "challenger") == "m3"


def test_promoting_the_challenger_to_champion_ends_its_shadow_scoring(store):
    root, uri, client = store
    aliases = ModelAliases(root, uri, NAME)
    aliases.promote("m1")
    aliases.promote("m2", "challenger")

    change = aliases.promote("m2")
    assert mlflow_aliases(client) == {"champion": "2"}
    assert change.before == "m1"
    assert change.pointers == {"champion": "m2", "challenger": None}


def test_clearing_the_challenger_removes_it_from_mlflow_and_the_registry(store):
    root, uri, client = store
    aliases = ModelAliases(root, uri, NAME)
    aliases.promote("m1")
    aliases.promote("m3", "challenger")

    change = aliases.clear("challenger")
    assert change.before == "m3" and change.after is None
    assert mlflow_aliases(client) == {"champion": "1"}
    assert not (root / "challenger").exists()
    with pytest.raises(ValueError, match="cannot be removed"):
        aliases.clear("champion")


def test_mlflow_is_the_truth_sync_repairs_a_registry_moved_behind_its_back(store):
    root, uri, client = store
    aliases = ModelAliases(root, uri, NAME)
    aliases.promote("m1")
    # Someone moves the pointer file by hand, and the alias in the MLflow UI.
    registry.register(root, root.parent / "model3")
    registry.promote(root, "m3")
    client.set_registered_model_alias(NAME, "challenger", "2")

    pointers = aliases.sync()
    assert pointers == {"champion": "m1", "challenger": "m2"}
    assert registry.current(root) == "m1"


def test_an_unknown_version_changes_nothing(store):
    root, uri, client = store
    aliases = ModelAliases(root, uri, NAME)
    aliases.promote("m1")

    with pytest.raises(AliasError, match="no version 'm9'.*1:m1"):
        aliases.promote("m9", "challenger")
    assert mlflow_aliases(client) == {"champion": "1"}
    assert registry.current(root, "challenger") is None


def test_the_promote_command_moves_both_and_prints_the_pointers(store, capsys):
    root, uri, client = store
    common = ["--registry", str(root), "--tracking-uri", uri, "--model-name", NAME]

    assert cli(["promote", "m1", *common]) == 0
    assert cli(["promote", "m2", "--alias", "challenger", *common]) == 0
    out = capsys.readouterr().out
    assert "challenger: none -> m2 (MLflow version 2)" in out
    assert mlflow_aliases(client) == {"champion": "1", "challenger": "2"}

    assert cli(["promote", "--clear", "--alias", "challenger", *common]) == 0
    assert registry.current(root, "challenger") is None
    assert mlflow_aliases(client) == {"champion": "1"}
    assert cli(["promote", *common]) == 2  # neither a version, --clear nor --sync
    assert cli(["promote", "m9", *common]) == 2
    assert "no version 'm9'" in capsys.readouterr().err


def test_file_only_moves_the_pointer_and_sync_puts_mlflow_back(store, capsys):
    root, uri, client = store
    common = ["--registry", str(root), "--tracking-uri", uri, "--model-name", NAME]
    assert cli(["promote", "m1", *common]) == 0
    registry.register(root, root.parent / "model2")

    assert cli(["promote", "m2", "--file-only", *common]) == 0
    assert registry.current(root) == "m2"
    assert mlflow_aliases(client) == {"champion": "1"}
    assert cli(["promote", "--sync", *common]) == 0
    assert registry.current(root) == "m1"
