"""The demo's drift step on a small slice: doubled amounts make the PSI rise."""

from __future__ import annotations

import json

import conftest_db
import numpy as np
import pandas as pd
import pytest
from psycopg2.extras import execute_values

from training.dataset import compute_features, load_handbook
from txwatch.demo import measure_drift, shift_amounts
from udfs.drift import DRIFT_THRESHOLD
from udfs.features import FEATURE_NAMES
from udfs.scoring import Scorer

pg_admin = conftest_db.pg_admin
throwaway_db = conftest_db.throwaway_db
migrated_db = conftest_db.migrated_db

pytestmark = pytest.mark.slow

PERIODS = {
    "before": ("2018-07-02", "2018-07-03"),
    "shifted": ("2018-07-03", "2018-07-04"),
}


def _ms(day: str) -> int:
    return pd.Timestamp(day, tz="UTC").value // 1_000_000


def _scored_rows(handbook_files, model_dir):
    """July 1-3 as the job would score it, with July 3's amounts doubled."""
    frame = load_handbook(handbook_files[3:4], "2018-07-01", "2018-07-04")
    last_day = frame["event_time_ms"] >= _ms("2018-07-03")
    frame = pd.concat(
        [frame[~last_day], shift_amounts(frame[last_day], 2.0)], ignore_index=True
    )
    matrix, duplicates, _ = compute_features(frame)
    scorer = Scorer(model_dir)
    columns = [FEATURE_NAMES.index(n) for n in scorer.metadata.feature_names]
    keep = ~duplicates & (frame["event_time_ms"] >= _ms("2018-07-02")).to_numpy()
    scores = scorer.score(matrix[keep][:, columns].astype(np.float32))
    rows = []
    for row, features, score in zip(
        frame[keep].itertuples(), matrix[keep], scores, strict=True
    ):
        rows.append(
            (
                str(row.transaction_id),
                pd.Timestamp(row.event_time_ms, unit="ms", tz="UTC"),
                str(row.card_id),
                str(row.terminal_id),
                row.amount,
                row.amount,
                "EUR",
                float(score),
                0.5,
                bool(score >= scorer.threshold),
                scorer.version,
                json.dumps(dict(zip(FEATURE_NAMES, features.tolist(), strict=True))),
            )
        )
    return rows


def test_doubled_amounts_raise_the_hourly_psi_above_the_drift_threshold(
    pg_admin, migrated_db, handbook_files, trained_model
):
    conn = pg_admin.connect(migrated_db.database)
    try:
        with conn, conn.cursor() as cur:
            execute_values(
                cur,
                "INSERT INTO scored_transactions (transaction_id, event_time, card_id,"
                " terminal_id, amount, original_amount, currency, score, risk,"
                " is_alert, model_version, features) VALUES %s",
                _scored_rows(handbook_files, trained_model),
                page_size=5_000,
            )
        drift = measure_drift(conn, trained_model, PERIODS)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), count(DISTINCT window_start) FROM drift_metrics"
            )
            stored, hours = cur.fetchone()
    finally:
        conn.close()

    above = f"hours > {DRIFT_THRESHOLD:g}"
    amount = drift["amount"]
    assert amount["before hours"] == amount["shifted hours"] == 24
    assert amount["before median"] < 0.1 and amount[f"before {above}"] == 0
    assert amount["shifted median"] > 2 * DRIFT_THRESHOLD
    assert amount[f"shifted {above}"] == 24
    # The card's amount ratio sees the jump against its 30-day habit too, and
    # the score distribution moves with it.
    ratio = drift["c_amount_ratio_30d"]
    assert ratio["shifted median"] > max(DRIFT_THRESHOLD, 5 * ratio["before median"])
    score = drift["score"]
    assert score[f"before {above}"] == 0 and score[f"shifted {above}"] == 24
    # Terminal risk does not depend on amounts: its PSI stays where it was.
    risk = drift["t_risk_7d"]
    assert risk["shifted median"] == pytest.approx(risk["before median"])
    assert hours == 48 and stored == 48 * len(drift)
