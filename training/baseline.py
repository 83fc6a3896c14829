"""The fraud-detection handbook's baseline: its features and its logistic regression.

This is the protocol check of the evaluation. The handbook publishes figures
for these features and this model on its split, so reproducing them shows
that the split, the test-set exclusions and the metrics here are the
handbook's; the project's own detectors are then compared on the same rows.

Features (``baseline_features``), computed the handbook's way with pandas
time-based rolling windows, a window of ``w`` days at time ``t`` holding the
transactions in ``(t - w, t]``, the current one included:

* ``amount``, ``is_weekend`` (Saturday or Sunday) and ``is_night`` (hour of
  day at most 6, so 06:59 is still night; the streaming features stop at
  05:59);
* per customer, over 1, 7 and 30 days: the number of transactions and their
  mean amount;
* per terminal, over 1, 7 and 30 days ending one label delay before ``t``:
  the number of transactions and the share of them that were fraudulent
  (0 when there were none). The label of every transaction older than the
  delay is taken as known, as in the handbook.

Limitations: these windows are recomputed from the whole history in one
batch; they are not what the streaming job computes (``udfs.features``
has day-aligned long windows and applies labels when their feedback arrives).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

WINDOWS_DAYS = (1, 7, 30)
INPUT_COLUMNS = (
    "transaction_id",
    "event_time_ms",
    "card_id",
    "terminal_id",
    "amount",
    "label",
)
NIGHT_LAST_HOUR = 6

BASELINE_FEATURES = (
    "amount",
    "is_weekend",
    "is_night",
    *(
        f"customer_{stat}_{w}d"
        for w in WINDOWS_DAYS
        for stat in ("nb_tx", "avg_amount")
    ),
    *(f"terminal_{stat}_{w}d" for w in WINDOWS_DAYS for stat in ("nb_tx", "risk")),
)


def baseline_features(
    frame: pd.DataFrame,
    delay_days: int = 7,
    windows_days: Sequence[int] = WINDOWS_DAYS,
) -> pd.DataFrame:
    """The handbook's features of every row of ``frame``, in its row order.

    ``frame`` has the columns of ``training.dataset.load_handbook``
    (``transaction_id``, ``event_time_ms``, ``card_id``, ``terminal_id``,
    ``amount``, ``label``); the result has the same index and the columns
    ``BASELINE_FEATURES`` when ``windows_days`` is the default.
    """
    if delay_days < 0:
        raise ValueError(
            f"delay_days must be >= 0, got {delay_days}; pass the number of "
            "days after which fraud labels are known"
        )
    missing = set(INPUT_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(
            f"frame lacks columns {sorted(missing)}; read it with "
            "training.dataset.load_handbook"
        )

    time = pd.to_datetime(frame["event_time_ms"], unit="ms")
    data = pd.DataFrame(
        {
            "time": time,
            "transaction_id": frame["transaction_id"],
            "card_id": frame["card_id"],
            "terminal_id": frame["terminal_id"],
            "amount": frame["amount"].astype(np.float64),
            "label": frame["label"].astype(np.float64),
        },
        index=frame.index,
    )
    out = pd.DataFrame(index=frame.index)
    out["amount"] = data["amount"]
    out["is_weekend"] = (time.dt.weekday >= 5).astype(np.float64)
    out["is_night"] = (time.dt.hour <= NIGHT_LAST_HOUR).astype(np.float64)

    for w in windows_days:
        count, total = _rolling(data, "card_id", "amount", w, ("count", "sum"))
        out[f"customer_nb_tx_{w}d"] = count
        out[f"customer_avg_amount_{w}d"] = total / count

    # A window shifted by the delay is the long window minus the delay window.
    delay_count, delay_frauds = _rolling(
        data, "terminal_id", "label", delay_days, ("count", "sum")
    )
    for w in windows_days:
        long_count, long_frauds = _rolling(
            data, "terminal_id", "label", delay_days + w, ("count", "sum")
        )
        count = long_count - delay_count
        frauds = long_frauds - delay_frauds
        out[f"terminal_nb_tx_{w}d"] = count
        out[f"terminal_risk_{w}d"] = (frauds / count.where(count > 0)).fillna(0.0)
    return out


def fit_baseline(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Pipeline:
    """The handbook's baseline model fitted on ``x``, ``y``.

    Standardisation fitted on the training rows, then a logistic regression
    with scikit-learn's defaults (L2, ``C=1``). ``predict_proba(x)[:, 1]`` is
    the score.
    """
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("logistic", LogisticRegression(random_state=seed, max_iter=1_000)),
        ]
    )
    return model.fit(x, y)


def _rolling(
    data: pd.DataFrame, key: str, column: str, days: int, aggregates: Sequence[str]
) -> list[pd.Series]:
    """Per-key rolling ``aggregates`` of ``column`` over ``days``, in row order.

    A window of 0 days is empty (count and sum 0), which makes an undelayed
    terminal window the plain window.
    """
    if days == 0:
        zero = pd.Series(0.0, index=data.index)
        return [zero for _ in aggregates]
    ordered = data.sort_values([key, "time", "transaction_id"], kind="stable")
    rolling = ordered.groupby(key, sort=False).rolling(f"{days}D", on="time")[column]
    results = []
    for aggregate in aggregates:
        values = getattr(rolling, aggregate)()
        # Keys are sorted and contiguous, so the result comes in ``ordered``'s
        # row order; its own index is (key, time) and cannot be aligned on.
        keys = values.index.get_level_values(0).to_numpy()
        assert np.array_equal(keys, ordered[key].to_numpy()), "rolling reordered rows"
        aligned = pd.Series(values.to_numpy(np.float64), index=ordered.index)
        results.append(aligned.reindex(data.index))
    return results
