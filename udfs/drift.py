"""Population stability of features and scores against the training reference.

The reference of a model (``reference.json`` beside it, written by
``txwatch train``) holds, for every model feature and for the score, the
training distribution over about ten quantile bins: ``cuts`` and the share of
training rows in each bin (see ``training.tracking.reference_distributions``).

The population stability index of a window of live values is::

    PSI = sum over bins of (live - reference) * ln(live / reference)

where ``live`` and ``reference`` are a bin's shares of the two populations,
each floored at ``EPSILON`` so that an empty bin does not make it infinite.
Usual reading: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a
major one (``DRIFT_THRESHOLD``): the model is seeing data unlike
what it learned from, and its scores, threshold and alert rate no longer mean
what they did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_FILE = "reference.json"
EPSILON = 1e-4
DRIFT_THRESHOLD = 0.25


def psi(cuts, reference_shares, values) -> float:
    """PSI of ``values`` against a reference binned at ``cuts``."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 0.0
    bins = np.searchsorted(np.asarray(cuts, dtype=np.float64), values, side="left")
    live = np.bincount(bins, minlength=len(reference_shares)) / len(values)
    expected = np.maximum(np.asarray(reference_shares, dtype=np.float64), EPSILON)
    live = np.maximum(live, EPSILON)
    return float(np.sum((live - expected) * np.log(live / expected)))


@dataclass(frozen=True)
class Reference:
    """The training distributions of one model version."""

    version: str
    features: dict  # name -> {"cuts": [...], "proportions": [...]}

    @staticmethod
    def read(model_dir: str | Path, version: str) -> Reference:
        path = Path(model_dir) / REFERENCE_FILE
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(
                f"no readable drift reference at {path}; retrain the model with "
                "`txwatch train`, which writes it"
            ) from exc
        return Reference(version, raw["features"])

    def window_psi(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        """PSI of each referenced column present in ``columns``."""
        out = {}
        for name, reference in self.features.items():
            if name in columns:
                out[name] = psi(
                    reference["cuts"], reference["proportions"], columns[name]
                )
        return out
