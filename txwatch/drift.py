"""Hourly drift metrics from the scored transactions.

``hourly_drift`` groups scored rows by hour of event time and computes the
PSI of every model feature and of the score against the model's training
reference (``udfs.drift``). ``txwatch drift`` writes the result into
``drift_metrics`` (one row per hour, feature and reference version; re-running
an hour replaces its rows) and prints a drift alert for every value above the
threshold.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from udfs.drift import DRIFT_THRESHOLD, Reference

logger = logging.getLogger(__name__)


def hourly_drift(rows: pd.DataFrame, reference: Reference, min_rows: int = 50):
    """PSI per hour and feature for ``rows`` (columns ``hour``, ``score`` and
    one per feature); hours with fewer than ``min_rows`` rows are skipped."""
    out = []
    for hour, group in rows.groupby("hour", sort=True):
        if len(group) < min_rows:
            continue
        columns = {
            name: group[name].to_numpy() for name in group.columns if name != "hour"
        }
        for feature, value in reference.window_psi(columns).items():
            out.append(
                {
                    "window_start": hour,
                    "window_end": hour + pd.Timedelta(hours=1),
                    "feature": feature,
                    "psi": value,
                    "rows": len(group),
                }
            )
    return pd.DataFrame(
        out, columns=["window_start", "window_end", "feature", "psi", "rows"]
    )


def load_rows(
    conn, model_version: str, features: Sequence[str], since=None, until=None
):
    """Scored rows of one model version, with the hour of their event time."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT date_trunc('hour', event_time), score, features "
            "FROM scored_transactions WHERE model_version = %s "
            "AND (%s::timestamptz IS NULL OR event_time >= %s::timestamptz) "
            "AND (%s::timestamptz IS NULL OR event_time < %s::timestamptz)",
            (model_version, since, since, until, until),
        )
        fetched = cur.fetchall()
    frame = pd.DataFrame(
        {
            "hour": [row[0] for row in fetched],
            "score": np.array([row[1] for row in fetched], dtype=np.float64),
        }
    )
    for name in features:
        frame[name] = np.array(
            [row[2].get(name, np.nan) for row in fetched], dtype=float
        )
    return frame


def store(conn, metrics: pd.DataFrame, reference_version: str) -> int:
    with conn, conn.cursor() as cur:
        for row in metrics.itertuples(index=False):
            cur.execute(
                "INSERT INTO drift_metrics (window_start, window_end, feature, psi, "
                "reference_version, rows) VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (window_start, feature, reference_version) DO UPDATE SET "
                "psi = EXCLUDED.psi, rows = EXCLUDED.rows, "
                "window_end = EXCLUDED.window_end, "
                "computed_at = now()",
                (
                    row.window_start,
                    row.window_end,
                    row.feature,
                    row.psi,
                    reference_version,
                    int(row.rows),
                ),
            )
    return len(metrics)


def main(argv: list[str] | None = None) -> int:
    """``txwatch drift [--model-dir D] [--since T] [--until T] [--threshold X]``."""
    from txwatch import db
    from txwatch.config import Settings, load
    from udfs.registry import resolve
    from udfs.scoring import ModelMetadata

    parser = argparse.ArgumentParser(
        prog="txwatch drift", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config")
    parser.add_argument(
        "--model-dir", help="model directory or registry (default job.model_dir)"
    )
    parser.add_argument("--since", help="first event time (ISO-8601)")
    parser.add_argument("--until", help="end of event time (ISO-8601, exclusive)")
    parser.add_argument("--threshold", type=float, default=DRIFT_THRESHOLD)
    args = parser.parse_args(argv)

    settings = load(args.config)
    model_dir = resolve(args.model_dir or settings.path(settings.job.model_dir))
    metadata = ModelMetadata.read(model_dir / "model.json")
    reference = Reference.read(model_dir, metadata.version)
    pg = settings.postgres
    conn = db.connect(pg, pg.writer_user, Settings.secret(pg.writer_password_env))
    rows = load_rows(
        conn, metadata.version, metadata.feature_names, args.since, args.until
    )
    metrics = hourly_drift(rows, reference)
    written = store(conn, metrics, metadata.version)
    conn.close()

    print(
        f"{len(rows):,} rows scored by {metadata.version}: "
        f"{written:,} hourly PSI values"
    )
    alerts = metrics[metrics["psi"] > args.threshold]
    for row in alerts.itertuples(index=False):
        print(
            json.dumps(
                {
                    "drift_alert": row.feature,
                    "hour": row.window_start.isoformat(),
                    "psi": round(row.psi, 4),
                    "rows": int(row.rows),
                }
            )
        )
    if metrics.empty:
        print("no hour had enough rows to measure")
    else:
        worst = metrics.loc[metrics["psi"].idxmax()]
        print(
            f"largest PSI {worst['psi']:.4f} "
            f"({worst['feature']}, {worst['window_start']}); "
            f"{len(alerts)} values above {args.threshold}"
        )
    return 0
