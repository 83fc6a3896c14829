import json

import numpy as np
import pytest
from model_factory import FEATURES, write_model
from sklearn.ensemble import IsolationForest

from udfs import registry
from udfs.scoring import ModelError


def make_model(directory, seed: int):
    x = np.random.default_rng(seed).normal(size=(2_000, 3))
    forest = IsolationForest(n_estimators=20, random_state=seed).fit(x)
    directory.mkdir(parents=True)
    return write_model(directory, forest, x, f"v{seed}", FEATURES, 0.01)


def test_the_watcher_swaps_to_a_promoted_champion_and_refuses_a_broken_one(tmp_path):
    root = tmp_path / "registry"
    v1 = registry.register(root, make_model(tmp_path / "m1", 1))
    v2 = registry.register(root, make_model(tmp_path / "m2", 2))
    registry.promote(root, v1)
    watcher = registry.ModelWatcher(root, interval_s=0.0)
    assert watcher.get().version == "v1"

    registry.promote(root, v2)
    assert watcher.get().version == "v2"

    broken = make_model(tmp_path / "m3", 3)
    (broken / "model.onnx").write_bytes(b"garbage")
    target = registry.version_dir(root, "v3")
    target.parent.mkdir(exist_ok=True)
    broken.rename(target)
    registry.promote(root, "v3")
    assert watcher.get().version == "v2"  # refused; the old model keeps scoring
    assert "v3" in watcher.refused


def test_a_model_scoring_nonsense_is_refused(tmp_path):
    model = make_model(tmp_path / "m", 4)
    meta = json.loads((model / "model.json").read_text())
    meta["offset"] = 5.0  # pushes every score out of (0, 1]
    (model / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="probe"):
        registry.ModelWatcher(model)


def test_promoting_an_unknown_version_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="not registered"):
        registry.promote(tmp_path, "nope")


def test_a_plain_model_directory_is_served_and_never_swapped(tmp_path):
    watcher = registry.ModelWatcher(make_model(tmp_path / "m", 5), interval_s=0.0)
    assert not watcher.swappable and watcher.get().version == "v5"
