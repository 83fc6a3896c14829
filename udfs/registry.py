"""A model registry on disk, and the hot swap of the model that scores.

Layout::

    <root>/versions/<version>/model.onnx, model.json, model.joblib
    <root>/champion        the version that scores and alerts (one line)
    <root>/challenger      optional: a version that scores in shadow

``promote`` rewrites a pointer atomically (write, then rename), so a reader
sees the old or the new version, never half a file; ``clear`` removes one.
``ModelWatcher`` is what the scoring step holds: it checks both pointers at
most every ``interval_s`` seconds, between batches; a new version is loaded
and checked (it must score a probe matrix to finite values in (0, 1]) before
it replaces the old one, and so must its supervised stage, to probabilities
in [0, 1]. A version that fails is refused with a logged reason,
remembered, and the old model keeps scoring (for the challenger: the old
challenger, or none, keeps shadow scoring).

These files are the running job's view of the registry and it reads nothing
else: where models are tracked in MLflow, MLflow's aliases are the truth and
``training.aliases`` writes them here (see the README).

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

from udfs.scoring import METADATA_FILE, ModelError, Scorer, stage_inputs

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


def clear(root: str | Path, alias: str) -> bool:
    """Remove the ``alias`` pointer; True when there was one."""
    if alias not in ALIASES:
        raise ValueError(f"alias must be one of {ALIASES}, got {alias!r}")
    try:
        (Path(root) / alias).unlink()
    except FileNotFoundError:
        return False
    logger.info("%s cleared", alias)
    return True


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
    stage = scorer.metadata.supervised
    if stage is None:
        return
    features = np.repeat(probe[:, :1], len(stage.feature_names) - 1, axis=1)
    probability = scorer.fraud_probability(stage_inputs(features, scores))
    if not (np.all(probability >= 0) and np.all(probability <= 1)):
        raise ModelError(
            f"model {scorer.version}'s supervised stage gives probabilities "
            f"{probability.tolist()} on a probe"
        )
    if not 0 < stage.threshold <= 1:
        raise ModelError(
            f"model {scorer.version}'s supervised stage has threshold {stage.threshold}"
        )


class ModelWatcher:
    """The models in force for a model path, swapped when a pointer changes.

    ``get()`` is what ``loader`` made of the champion; ``challenger()`` what
    ``challenger_loader`` made of the challenger, or None when there is no
    challenger pointer (or it names the champion's version, or a version
    that was refused). Both are checked together, at most every
    ``interval_s`` seconds, from ``get()``: call ``get()`` once per batch,
    then ``challenger()``.
    """

    def __init__(
        self,
        model_path: str | Path,
        interval_s: float = 2.0,
        loader=None,
        challenger_loader=None,
    ):
        self.model_path = Path(model_path)
        self.interval_s = interval_s
        self.loader = loader or (lambda directory: Scorer(directory))
        self.challenger_loader = challenger_loader or (
            lambda directory: Scorer(directory)
        )
        self.swappable = not (self.model_path / METADATA_FILE).exists()
        self.refused: set[str] = set()
        directory = resolve(self.model_path)
        self.loaded = self._load(directory, self.loader)
        self.shadow = None
        if self.swappable:
            self._maybe_swap_challenger()
        self.next_check = time.monotonic() + interval_s

    @staticmethod
    def _load(directory: Path, loader):
        loaded = loader(directory)
        check(_scorer(loaded))
        return loaded

    def get(self):
        """What the loader made of the current champion (swapping if needed)."""
        if self.swappable and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + self.interval_s
            self._maybe_swap()
            self._maybe_swap_challenger()
        return self.loaded

    def challenger(self):
        """What the challenger loader made of the challenger, or None."""
        return self.shadow

    def refuse_challenger(self, reason: object) -> None:
        """Stop shadow scoring with the current challenger, for good."""
        if self.shadow is None:
            return
        version = _scorer(self.shadow).version
        self.refused.add(version)
        self.shadow = None
        logger.warning("challenger %s refused while scoring: %s", version, reason)

    def _maybe_swap(self) -> None:
        wanted = current(self.model_path)
        scorer = _scorer(self.loaded)
        if wanted is None or wanted == scorer.version or wanted in self.refused:
            return
        try:
            self.loaded = self._load(version_dir(self.model_path, wanted), self.loader)
        except Exception as exc:  # any failure to load or check keeps the old model
            self.refused.add(wanted)
            logger.warning(
                "model %s refused, %s keeps scoring: %s", wanted, scorer.version, exc
            )
            return
        logger.info("model swapped: %s -> %s", scorer.version, wanted)

    def _maybe_swap_challenger(self) -> None:
        wanted = current(self.model_path, "challenger")
        before = None if self.shadow is None else _scorer(self.shadow).version
        if wanted == _scorer(self.loaded).version:
            wanted = None  # shadow scoring the champion would only repeat it
        if wanted == before or wanted in self.refused:
            return
        if wanted is None:
            self.shadow = None
            logger.info("challenger %s removed: shadow scoring stops", before)
            return
        try:
            self.shadow = self._load(
                version_dir(self.model_path, wanted), self.challenger_loader
            )
        except Exception as exc:  # a broken challenger never stops the champion
            self.refused.add(wanted)
            logger.warning(
                "challenger %s refused, %s keeps shadow scoring: %s",
                wanted,
                before or "no model",
                exc,
            )
            return
        logger.info("challenger %s -> %s: shadow scoring", before or "none", wanted)


def _scorer(loaded) -> Scorer:
    """The scorer of what a loader returned (a Scorer or a tuple led by one)."""
    return loaded if isinstance(loaded, Scorer) else loaded[0]
