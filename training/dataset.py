"""Labelled handbook data and offline features computed by the job's own code.

``load_handbook`` reads the bundled CSV files (one per month, gzip) into a
frame sorted by event time. ``compute_features`` replays that frame, and the
fraud labels as delayed feedback, through ``udfs.features`` in event-time
order: the same state machines the streaming job runs, so the matrix it
returns is what the job would compute for the same stream.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from udfs.features import (
    FEATURE_NAMES,
    MS_PER_DAY,
    CardFeatures,
    TerminalFeatures,
)

logger = logging.getLogger(__name__)

HANDBOOK_COLUMNS = (
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
)


def data_files(data_dir: str | Path) -> list[Path]:
    """The handbook CSV files in a folder, oldest first."""
    files = sorted(Path(data_dir).glob("transactions-*.csv*"))
    if not files:
        raise FileNotFoundError(
            f"no transactions-*.csv(.gz) files in {data_dir}; point --data-dir "
            "or TXWATCH_DATA_DIR at the handbook data"
        )
    return files


def load_handbook(
    files: Iterable[str | Path], start: str | None = None, end: str | None = None
) -> pd.DataFrame:
    """Read handbook CSVs, keeping ``start <= day < end`` (ISO dates, UTC).

    Returns columns ``transaction_id`` (int64), ``event_time_ms`` (int64),
    ``card_id``, ``terminal_id`` (int64), ``amount`` (float64), ``label``
    (int8) and ``scenario`` (int8), sorted by event time then id.
    """
    frames = []
    for path in files:
        frame = pd.read_csv(path, usecols=list(HANDBOOK_COLUMNS))
        missing = set(HANDBOOK_COLUMNS) - set(frame.columns)
        if missing:
            raise ValueError(f"{path} lacks columns {sorted(missing)}")
        frames.append(frame)
    raw = pd.concat(frames, ignore_index=True)
    times = pd.to_datetime(raw["TX_DATETIME"], utc=True)
    frame = pd.DataFrame(
        {
            "transaction_id": raw["TRANSACTION_ID"].astype(np.int64),
            "event_time_ms": times.astype("int64") // 1_000_000,
            "card_id": raw["CUSTOMER_ID"].astype(np.int64),
            "terminal_id": raw["TERMINAL_ID"].astype(np.int64),
            "amount": raw["TX_AMOUNT"].astype(np.float64),
            "label": raw["TX_FRAUD"].astype(np.int8),
            "scenario": raw["TX_FRAUD_SCENARIO"].astype(np.int8),
        }
    )
    if start is not None:
        frame = frame[frame["event_time_ms"] >= _day_ms(start)]
    if end is not None:
        frame = frame[frame["event_time_ms"] < _day_ms(end)]
    frame = frame.sort_values(["event_time_ms", "transaction_id"], kind="stable")
    return frame.reset_index(drop=True)


def _day_ms(iso_date: str) -> int:
    return int(pd.Timestamp(iso_date, tz="UTC").value // 1_000_000)


@dataclass
class FeatureStore:
    """Per-key state of the offline replay; it can continue on later data."""

    label_delay_days: int
    cards: dict
    terminals: dict

    @classmethod
    def new(cls, label_delay_days: int) -> FeatureStore:
        return cls(label_delay_days, {}, {})


def feedback_times(frame: pd.DataFrame, label_delay_days: int) -> np.ndarray:
    """When each fraud label becomes known: the event time plus the delay."""
    return frame["event_time_ms"].to_numpy() + label_delay_days * MS_PER_DAY


def compute_features(
    frame: pd.DataFrame,
    label_delay_days: int = 7,
    use_feedback: bool = True,
    store: FeatureStore | None = None,
    progress: bool = False,
    names: Sequence[str] = FEATURE_NAMES,
) -> tuple[np.ndarray, np.ndarray, FeatureStore]:
    """Features of every row of ``frame`` (sorted by event time).

    Returns ``(matrix, duplicate_mask, store)``: a float64 matrix in
    ``names`` order, a mask of rows the card history reported as duplicate
    ids (their feature rows are NaN), and the state after the last row, to
    continue on a later frame.
    """
    store = store or FeatureStore.new(label_delay_days)
    terminals_fn = TerminalFeatures(store.label_delay_days)
    index = {name: i for i, name in enumerate(names)}
    n = len(frame)
    matrix = np.full((n, len(names)), np.nan)
    duplicates = np.zeros(n, dtype=bool)

    ids = frame["transaction_id"].to_numpy()
    times = frame["event_time_ms"].to_numpy()
    cards = frame["card_id"].to_numpy()
    terminals = frame["terminal_id"].to_numpy()
    amounts = frame["amount"].to_numpy()
    labels = frame["label"].to_numpy() if use_feedback else np.zeros(n, dtype=np.int8)

    bar = _progress(n, progress)
    for i in range(n):
        tx_id, t, card, terminal, amount = (
            int(ids[i]),
            int(times[i]),
            int(cards[i]),
            int(terminals[i]),
            float(amounts[i]),
        )
        update, store.cards[card] = CardFeatures.update(
            store.cards.get(card), tx_id, t, amount, terminal
        )
        if update.duplicate:
            duplicates[i] = True
            continue
        t_features, state = terminals_fn.update(store.terminals.get(terminal), t)
        if labels[i]:
            # The label is published now and counts once the delay has passed.
            state = terminals_fn.add_feedback(
                state, t, t + store.label_delay_days * MS_PER_DAY
            )
        store.terminals[terminal] = state
        row = matrix[i]
        for name, value in update.features.items():
            row[index[name]] = value
        for name, value in t_features.items():
            row[index[name]] = value
        if bar is not None and i % 10_000 == 0:
            bar.update(min(10_000, n - i))
    if bar is not None:
        bar.close()
    return matrix, duplicates, store


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="tx", desc="features", mininterval=1.0)
