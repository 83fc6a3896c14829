"""The ``model_versions`` table: the analysts' copy of the model registry.

The job follows a file registry (``udfs.registry``) or a single model
directory and never writes to this table. Whoever changes what scores
(``txwatch train --register``, ``promote``, ``retrain`` and the demo) calls
``publish`` afterwards, which makes the table say what the files say: one
row per registered version with its threshold, and the aliases ``champion``
and ``challenger`` on the versions the pointers name, nowhere else.

The rows are rewritten in one transaction, so a reader sees the aliases
before or after a change, never a table without a champion. A row keeps its
``registered_at`` and ``notes`` once written; versions removed from the
registry keep their row (scored transactions still name them), without an
alias.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from udfs import registry
from udfs.scoring import METADATA_FILE, ModelMetadata

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    version: str
    alias: str | None
    threshold: float
    fraud_threshold: float | None  # the supervised stage's, when it has one
    notes: str


def entries(model_path: str | Path) -> list[Entry]:
    """What ``model_versions`` should hold for a registry or a model directory.

    A model directory is a registry of one version, its champion.
    """
    path = Path(model_path)
    if (path / METADATA_FILE).exists():
        return [_entry(path, "champion")]
    # A version named by both pointers is shown as champion.
    pointers = {
        registry.current(path, alias): alias for alias in reversed(registry.ALIASES)
    }
    found = sorted((path / "versions").glob(f"*/{METADATA_FILE}"))
    return [_entry(meta.parent, pointers.get(meta.parent.name)) for meta in found]


def publish(conn, model_path: str | Path) -> list[Entry]:
    """Write ``entries(model_path)`` into ``model_versions``; commits."""
    rows = entries(model_path)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE model_versions SET alias = NULL WHERE alias = ANY(%s)",
            (list(registry.ALIASES),),
        )
        for row in rows:
            cur.execute(
                """
                INSERT INTO model_versions
                    (version, alias, threshold, fraud_threshold, notes)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (version) DO UPDATE
                SET alias = EXCLUDED.alias, threshold = EXCLUDED.threshold,
                    fraud_threshold = EXCLUDED.fraud_threshold
                """,
                (row.version, row.alias, row.threshold, row.fraud_threshold, row.notes),
            )
    conn.commit()
    logger.info("model_versions: %s", describe(rows))
    return rows


def describe(rows: list[Entry]) -> str:
    """``2 versions (champion m1, challenger m2)``."""
    roles = ", ".join(f"{r.alias} {r.version}" for r in rows if r.alias)
    return f"{len(rows)} versions ({roles or 'no alias'})"


def _entry(model_dir: Path, alias: str | None) -> Entry:
    meta = ModelMetadata.read(model_dir / METADATA_FILE)
    notes = (
        f"Isolation Forest, {meta.n_estimators} trees of {meta.max_samples} "
        f"samples, {meta.graph} graph; features: {', '.join(meta.feature_names)}"
    )
    stage = meta.supervised
    if stage is None:
        return Entry(meta.version, alias, meta.threshold, None, notes)
    notes += (
        f". Supervised stage (decides alerts): random forest on "
        f"{len(stage.feature_names)} inputs, {stage.trained_rows} labelled "
        f"transactions ({stage.trained_frauds} frauds) up to {stage.labelled_to}"
    )
    return Entry(meta.version, alias, meta.threshold, stage.threshold, notes)
