"""The run summary's quality figures, read back from ``scored_transactions``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import conftest_db
import numpy as np
import pandas as pd
import pytest
from psycopg2.extras import execute_values
from sklearn.metrics import average_precision_score, roc_auc_score

from txwatch.summary import quality

pytestmark = pytest.mark.integration

pg_admin = conftest_db.pg_admin
throwaway_db = conftest_db.throwaway_db
migrated_db = conftest_db.migrated_db

START = datetime(2018, 7, 1, tzinfo=UTC)


def _fill(conn, rows: pd.DataFrame) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT txwatch_ensure_partitions(%s, %s)", ("2018-07-01",) * 2)
        execute_values(
            cur,
            "INSERT INTO scored_transactions (transaction_id, event_time, card_id,"
            " terminal_id, amount, original_amount, currency, is_late, score, risk,"
            " is_alert, model_version, features, rule_hits, fraud_probability)"
            " VALUES %s",
            [
                (
                    str(r.transaction_id),
                    START + timedelta(seconds=int(r.transaction_id)),
                    "c",
                    "t",
                    10.0,
                    10.0,
                    "EUR",
                    False,
                    float(r.score),
                    0.5,
                    bool(r.is_alert),
                    "m1",
                    "{}",
                    "[]",
                    None
                    if np.isnan(r.fraud_probability)
                    else float(r.fraud_probability),
                )
                for r in rows.itertuples()
            ],
        )


def _rows(seed: int = 5, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    label = rng.random(n) < 0.1
    probability = np.clip(0.6 * label + rng.normal(0.2, 0.15, n), 0, 1)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(n),
            "event_time_ms": int(START.timestamp() * 1000) + np.arange(n) * 1000,
            "label": label.astype(np.int8),
            "score": np.clip(0.2 * label + rng.normal(0.5, 0.1, n), 0.01, 1),
            "fraud_probability": probability,
            "is_alert": probability >= 0.5,
        }
    )


def _quality(pg_admin, database, rows: pd.DataFrame) -> dict:
    """``quality`` of ``rows`` once stored in ``database``."""
    conn = pg_admin.connect(database.database)
    try:
        _fill(conn, rows)
        return quality(conn, rows[["transaction_id", "event_time_ms", "label"]])
    finally:
        conn.close()


def test_quality_ranks_both_scores_when_every_row_has_a_probability(
    pg_admin, migrated_db
):
    rows = _rows()
    got = _quality(pg_admin, migrated_db, rows)

    fraud = rows["label"].to_numpy(dtype=bool)
    flagged = rows["is_alert"].to_numpy()
    assert got["evaluated rows"] == len(rows)
    assert got["precision"] == pytest.approx((flagged & fraud).sum() / flagged.sum())
    assert got["AUC-ROC (anomaly score)"] == pytest.approx(
        roc_auc_score(fraud, rows["score"])
    )
    assert got["average precision (fraud probability)"] == pytest.approx(
        average_precision_score(fraud, rows["fraud_probability"])
    )
    assert got["AUC-ROC (fraud probability)"] > got["AUC-ROC (anomaly score)"]


def test_without_a_probability_on_every_row_only_the_anomaly_score_is_ranked(
    pg_admin, migrated_db
):
    rows = _rows()
    rows.loc[:9, "fraud_probability"] = np.nan  # scored by a model without a stage
    got = _quality(pg_admin, migrated_db, rows)

    assert "AUC-ROC (anomaly score)" in got
    assert not any("fraud probability" in name for name in got)
