"""A model registry on disk, and the hot swap of the model that scores.

Layout::

    <root>/versions/<version>/model.onnx, model.json, model.joblib
    <root>/champion        the version that scores and alerts (one line)
    <root>/challenger      optional: a version that scores in shadow

``promote`` rewrites a pointer atomically (write, then rename), so a reader
sees the old or the new version, never half a file. ``ModelWatcher`` is what
the scoring step holds: it checks the champion pointer at most every
``interval_s`` seconds, between batches; a new version is loaded and checked
(it must score a probe matrix to finite values in (0, 1]) before it replaces
the old one. A version that fails is refused with a logged reason, remembered,
and the old model keeps scoring.

A plain model directory (``model.json`` at its root) is also accepted: it is
served as is and never swapped.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from udfs.scoring import METADATA_FILE, ModelError, Scorer

logger = logging.getLogger(__name__)

ALIASES = ("champion", "challenger")


def version_dir(root: Path, version: str) -> Path:
    return Path(root) / "versions" / version


def register(root: str | Path, model_dir: str | Path) -> str:
    """Copy a model directory into the registry; returns its version."""
    root = Path(root)
    scorer = Scorer(model_dir)  # refuse what does not load
    target = version_dir(root, scorer.version)
    if not target.exists():
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(model_dir, staging)
        os.replace(staging, target)
    return scorer.version


def promote(root: str | Path, version: str, alias: str = "champion") -> None:
    """Point ``alias`` at ``version`` (which must be registered)."""
    if alias not in ALIASES:
        raise ValueError(f"alias must be one of {ALIASES}, got {alias!r}")
    root = Path(root)
    if not (version_dir(root, version) / METADATA_FILE).exists():
        raise ModelError(
            f"version {version!r} is not registered under {root / 'versions'}"
        )
    pointer = root / alias
    staging = root / f".{alias}.tmp"
    staging.write_text(version + "\n")
    os.replace(staging, pointer)
    logger.info("%s is now %s", alias, version)


def current(root: str | Path, alias: str = "champion") -> str | None:
    try:
        return (Path(root) / alias).read_text().strip() or None
    except FileNotFoundError:
        return None


def resolve(model_path: str | Path, alias: str = "champion") -> Path:
    """The directory of the model to load for ``model_path``."""
    path = Path(model_path)
    if (path / METADATA_FILE).exists():
        return path
    version = current(path, alias)
    if version is None:
        raise ModelError(
            f"{path} is neither a model directory nor a registry with a {alias}"
        )
    return version_dir(path, version)


def check(scorer: Scorer) -> None:
    """Refuse a model that does not score sensibly."""
    probe = np.zeros((4, len(scorer.metadata.feature_names)), dtype=np.float32)
    probe[1] += 1.0
    probe[2] += 1e6
    scores = scorer.score(probe)
    if not (np.all(np.isfinite(scores)) and np.all(scores > 0) and np.all(scores <= 1)):
        raise ModelError(f"model {scorer.version} scores a probe to {scores.tolist()}")
    if not 0 < scorer.threshold <= 1:
        raise ModelError(f"model {scorer.version} has threshold {scorer.threshold}")


class ModelWatcher:
    """The scorer in force for a model path, swapped when the champion changes."""

    def __init__(self, model_path: str | Path, interval_s: float = 2.0, loader=None):
        self.model_path = Path(model_path)
        self.interval_s = interval_s
        self.loader = loader or (lambda directory: Scorer(directory))
        self.swappable = not (self.model_path / METADATA_FILE).exists()
        self.refused: set[str] = set()
        directory = resolve(self.model_path)
        self.loaded = self._load(directory)
        self.next_check = time.monotonic() + interval_s

    def _load(self, directory: Path):
        loaded = self.loader(directory)
        check(loaded if isinstance(loaded, Scorer) else loaded[0])
        return loaded

    def get(self):
        """What the loader made of the current champion (swapping if needed)."""
        if self.swappable and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + self.interval_s
            self._maybe_swap()
        return self.loaded

    def _maybe_swap(self) -> None:
        wanted = current(self.model_path)
        scorer = self.loaded if isinstance(self.loaded, Scorer) else self.loaded[0]
        if wanted is None or wanted == scorer.version or wanted in self.refused:
            return
        try:
            self.loaded = self._load(version_dir(self.model_path, wanted))
        except Exception as exc:  # any failure to load or check keeps the old model
            self.refused.add(wanted)
            logger.warning(
                "model %s refused, %s keeps scoring: %s", wanted, scorer.version, exc
            )
            return
        logger.info("model swapped: %s -> %s", scorer.version, wanted)
