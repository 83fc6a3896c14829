"""Offline evaluation of every detector on the fraud-detection handbook's protocol.

Protocol (the handbook's, see the data README)
    Train on the days ``train_from .. train_to``, leave ``delay_days`` days
    for the labels to come in, test on ``test_from .. test_to``; all dates
    are whole UTC days, both ends included. The test set leaves out the
    transactions of cards already known to be compromised: on test day ``D``,
    the cards with a fraud in the training window or on any day from
    ``train_to + 1`` to ``D - delay_days`` (the README's "day one delay
    earlier", accumulated). Features use all history before each
    transaction, from the earliest file on, so the windows are full.

    The handbook's published code adds, for test day ``D``, the frauds of
    day ``D - delay_days - 1`` instead; with that variant its logistic
    regression figures come out within 0.001, with the README's
    rule used here they stay within 0.012 of them.

Detectors, each scored on the same test rows
    ``isolation_forest``
        The Isolation Forest of ``training.train`` (same size and seed),
        fitted without labels on the training window, on ``FOREST_FEATURES``.
        Alert threshold: the training score above which the target alert
        rate lies.
    ``rules``
        The starter rule pack replayed by ``udfs.rules.RuleEngine`` in event
        time. Score: the severity rank (low 1 .. critical 4) of the most
        severe active rule that fired, 0 when none did; alert: any active
        rule fired (score >= 1), as in the streaming job.
    ``supervised``
        The supervised stage a served model carries
        (``training.supervised.fit_stage``, with ``training.train``'s
        settings): a random forest on every feature of ``udfs.features``
        plus the Isolation Forest's score, fitted on the training window's
        labels, which are all known once the delay has passed and before the
        test window starts. Score: its fraud probability; threshold: the
        target alert rate of its out-of-bag training scores. Rules play no
        part.
    ``full_system``
        What the streaming job decides: an alert when the supervised stage's
        probability reaches its threshold or an active rule fires. Score,
        for the ranking metrics: the rules' severity rank plus the
        probability (in [0, 1]), so a transaction a rule flagged ranks above
        every other and the stage orders the rest; at the stage's threshold
        this score alerts exactly when the job does. The forest learns from
        the labels how far to trust the anomaly score, and the rules keep
        what analysts know and can change within seconds.
    ``baseline_logistic_regression``
        ``training.baseline``: the handbook's features and model, the check
        that this protocol is the handbook's.

Metrics are those of ``training.metrics``; no threshold or setting is ever
chosen on the test window.

Card precision ceilings (``protocol.card_precision_ceiling``)
    What card precision at ``k`` any detector could reach on the test rows.
    ``every_fraud_first`` ranks every compromised card first.
    ``knowable_frauds_first`` ranks first only the cards whose frauds the
    labels known at the time could reveal: every fraud except those of the
    data's terminal-compromise scenario (``TX_FRAUD_SCENARIO`` 2) at a
    terminal with no fraud labelled in the longest terminal-risk window
    before the label delay. A freshly compromised terminal serves ordinary
    customers their ordinary purchases, so nothing in a transaction tells
    such a fraud apart until its labels arrive.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

import udfs.features as features_module
from udfs.features import FEATURE_NAMES, MS_PER_DAY, RISK_WINDOWS_DAYS
from udfs.rules import BASE_FIELDS, SEVERITIES, RuleEngine, RuleSet
from udfs.scoring import stage_inputs

from . import dataset as dataset_module
from .backtest import ANY_ACTIVE, backtest
from .baseline import BASELINE_FEATURES, baseline_features, fit_baseline
from .dataset import compute_features, load_handbook
from .metrics import card_precision_at_k, detection_summary
from .supervised import fraud_probability
from .train import (
    MODEL_FEATURES,
    TrainingConfig,
    choose_threshold,
    fit_configured_stage,
)

logger = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "conf" / "rules" / "starter.yaml"
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES, start=1)}
# The data's scenario of frauds at compromised terminals.
TERMINAL_COMPROMISE = 2
TOP_K = 100
DEFAULT_ALERT_RATE = 0.005

# The forest the streaming job runs; the reasons for the choice of features
# are written beside its definition.
FOREST_FEATURES = MODEL_FEATURES


@dataclass(frozen=True)
class Split:
    """Rows of one handbook split, as boolean masks over the loaded frame.

    ``train`` holds every transaction of the training days, ``test`` those of
    the test days minus the cards already known to be compromised;
    ``excluded`` counts the test-day transactions so removed, ``days`` is the
    UTC day number of every row.
    """

    train: np.ndarray
    test: np.ndarray
    days: np.ndarray
    excluded: int


@dataclass(frozen=True)
class RuleScores:
    """Per-row result of a rule replay; rows outside the replay score 0.

    ``severity`` is the score of each row, ``rule_ids`` are the active rules,
    ``hits_by_rule`` counts each rule's hits over the replayed days
    ``replayed`` (first, last; ISO dates).
    """

    severity: np.ndarray
    rule_ids: tuple[str, ...]
    hits_by_rule: dict[str, int]
    replayed: tuple[str, str]


def day_number(iso_date: str, field: str = "date") -> int:
    """Whole UTC days since the epoch of an ISO date ``YYYY-MM-DD``."""
    try:
        parsed = date.fromisoformat(iso_date)
    except (TypeError, ValueError):
        raise ValueError(
            f"{field} must be an ISO date YYYY-MM-DD, got {iso_date!r}"
        ) from None
    return (parsed - date(1970, 1, 1)).days


def handbook_split(
    frame: pd.DataFrame,
    train_from: str,
    train_to: str,
    delay_days: int,
    test_from: str,
    test_to: str,
) -> Split:
    """The handbook's train and test rows of ``frame`` (dates inclusive).

    Raises ValueError when the dates are out of order, when the test window
    starts before the training labels are known (``test_from`` must be more
    than ``delay_days`` after ``train_to``), or when a window holds no
    transaction.
    """
    first, last, test_first, test_last = (
        day_number(value, name)
        for value, name in (
            (train_from, "train_from"),
            (train_to, "train_to"),
            (test_from, "test_from"),
            (test_to, "test_to"),
        )
    )
    if delay_days < 0:
        raise ValueError(f"delay_days must be >= 0, got {delay_days}")
    if not first <= last < test_first <= test_last:
        raise ValueError(
            "dates must satisfy train_from <= train_to < test_from <= test_to, got "
            f"{train_from}, {train_to}, {test_from}, {test_to}"
        )
    if test_first - last <= delay_days:
        raise ValueError(
            f"test_from {test_from} is only {test_first - last} day(s) after "
            f"train_to {train_to}; with delay_days {delay_days} some training "
            f"labels would not be known yet: start the test at least "
            f"{delay_days + 1} days after train_to"
        )

    days = frame["event_time_ms"].to_numpy() // MS_PER_DAY
    cards = frame["card_id"].to_numpy()
    fraud = frame["label"].to_numpy() == 1
    train = (days >= first) & (days <= last)
    known = set(cards[train & fraud].tolist())
    test = np.zeros(len(frame), dtype=bool)
    excluded = 0
    for day in range(test_first, test_last + 1):
        newly_known = fraud & (days > last) & (days <= day - delay_days)
        known.update(cards[newly_known].tolist())
        today = days == day
        kept = today & ~np.isin(cards, np.fromiter(known, dtype=cards.dtype))
        test |= kept
        excluded += int(today.sum() - kept.sum())

    for mask, name in ((train, "training"), (test, "test")):
        if not mask.any():
            raise ValueError(
                f"the {name} window holds no transaction; check the dates against "
                f"the data, which covers {_iso(days.min())} to {_iso(days.max())}"
            )
    return Split(train, test, days, excluded)


def card_precision_ceilings(
    frame: pd.DataFrame,
    test: np.ndarray,
    days: np.ndarray,
    delay_days: int,
    k: int = TOP_K,
) -> dict[str, float]:
    """Card precision at ``k`` of the two ideal rankings of the module's notes.

    ``test`` selects the test rows of ``frame``; ``days`` is every row's UTC
    day number.
    """
    labels = frame["label"].to_numpy()
    fraud = labels == 1
    cards = frame["card_id"].to_numpy()[test]
    test_days = days[test]
    knowable = fraud & ~_unrevealed_terminal_frauds(frame, fraud, days, delay_days)
    return {
        "every_fraud_first": card_precision_at_k(
            test_days, cards, labels[test], fraud[test].astype(float), k
        ),
        "knowable_frauds_first": card_precision_at_k(
            test_days, cards, labels[test], knowable[test].astype(float), k
        ),
    }


def _unrevealed_terminal_frauds(
    frame: pd.DataFrame, fraud: np.ndarray, days: np.ndarray, delay_days: int
) -> np.ndarray:
    """Terminal-compromise frauds whose terminal shows no known fraud yet.

    Known: labelled fraud on a day before ``day - delay_days`` and at most
    the longest risk window earlier.
    """
    window = max(RISK_WINDOWS_DAYS)
    terminals = frame["terminal_id"].to_numpy()
    scenario = frame["scenario"].to_numpy()
    asked = np.flatnonzero(fraud & (scenario == TERMINAL_COMPROMISE))
    out = np.zeros(len(frame), dtype=bool)
    if not len(asked):
        return out
    known = pd.DataFrame(
        {"terminal": terminals[fraud], "known_day": days[fraud]}
    ).sort_values("known_day")
    queries = pd.DataFrame(
        {
            "row": asked,
            "terminal": terminals[asked],
            # The latest day whose labels are known on the row's day.
            "known_day": days[asked] - delay_days - 1,
        }
    ).sort_values("known_day")
    latest = pd.merge_asof(
        queries,
        known.rename(columns={"known_day": "fraud_day"}),
        left_on="known_day",
        right_on="fraud_day",
        by="terminal",
    )
    seen = latest["fraud_day"] > latest["known_day"] - window
    out[latest["row"].to_numpy()[~seen.to_numpy()]] = True
    return out


def rule_scores(
    frame: pd.DataFrame,
    matrix: np.ndarray,
    ruleset: RuleSet,
    start_ms: int,
    end_ms: int,
    skip: np.ndarray | None = None,
) -> RuleScores:
    """Replay ``ruleset`` over the rows with ``start_ms <= event_time_ms < end_ms``.

    Each card-keyed rule sees the events of its card, each terminal-keyed
    rule those of its terminal, in event-time order, with the features of
    ``matrix`` (``FEATURE_NAMES`` order) as fields. Rows in ``skip`` (the
    duplicates the job drops) are not replayed. The per-rule hit counts come
    from ``training.backtest.backtest`` on the same events, and its count of
    rows flagged by an active rule must equal this replay's.
    """
    active = tuple(rule.id for rule in ruleset if rule.mode == "active")
    kinds = [
        kind
        for kind in ("card", "terminal")
        if any(rule.key == kind and rule.mode != "paused" for rule in ruleset)
    ]
    times = frame["event_time_ms"].to_numpy()
    rows = np.flatnonzero((times >= start_ms) & (times < end_ms))
    if skip is not None:
        rows = rows[~skip[rows]]

    engine = RuleEngine(ruleset)
    severity = np.zeros(len(frame))
    states: dict[tuple[str, int], object] = {}
    for row, event in zip(rows, _rule_events(frame, matrix, rows), strict=True):
        for kind in kinds:
            slot = (kind, event["card_id" if kind == "card" else "terminal_id"])
            state, hits = engine.evaluate(kind, states.get(slot), event)
            if state is None:
                states.pop(slot, None)
            else:
                states[slot] = state
            for hit in hits:
                if hit["mode"] == "active":
                    rank = SEVERITY_RANK[hit["severity"]]
                    severity[row] = max(severity[row], rank)

    labels = frame["label"].to_numpy()[rows]
    summary = backtest(ruleset, _rule_events(frame, matrix, rows), labels.tolist())
    hits_by_rule = {r["rule_id"]: r["hits"] for r in summary if r["mode"] != "paused"}
    flagged = int(np.count_nonzero(severity[rows]))
    if hits_by_rule[ANY_ACTIVE] != flagged:
        raise RuntimeError(
            f"rule replay flagged {flagged} rows but training.backtest flagged "
            f"{hits_by_rule[ANY_ACTIVE]} on the same events; the two replays "
            "disagree and the rule scores cannot be trusted"
        )
    days = times[rows[[0, -1]]] // MS_PER_DAY if len(rows) else (0, 0)
    replayed = (_iso(days[0]), _iso(days[1]))
    return RuleScores(severity, active, hits_by_rule, replayed)


def evaluate(
    files: Sequence[str | Path],
    train_from: str,
    train_to: str,
    delay_days: int,
    test_from: str,
    test_to: str,
    *,
    rules_path: str | Path = DEFAULT_RULES,
    k: int = TOP_K,
    target_alert_rate: float = DEFAULT_ALERT_RATE,
    seed: int = 7,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """Score every detector on one handbook split; dates are inclusive.

    Returns a JSON-ready mapping: ``protocol`` (the split, its sizes and
    the card precision ceilings of the module's notes),
    then one entry per detector with ``auc_roc``, ``average_precision``,
    ``card_precision_at_<k>``, ``threshold``, ``alert_rate``, ``precision``
    and ``recall`` on the test rows (None where undefined), and ``seconds``.
    ``cache_dir``, outside the repository, keeps the computed features for
    later runs on the same files.
    """
    if not 0 < target_alert_rate <= 0.5:
        raise ValueError(
            f"target_alert_rate must be in (0, 0.5], got {target_alert_rate}; "
            "pass the share of transactions that may alert, e.g. 0.005"
        )
    started = time.monotonic()
    frame = load_handbook(files)
    split = handbook_split(frame, train_from, train_to, delay_days, test_from, test_to)
    matrix, duplicates = _project_features(
        frame, files, delay_days, cache_dir, progress
    )
    train = split.train & ~duplicates
    test = split.test & ~duplicates
    if duplicates[split.train | split.test].any():
        logger.warning(
            "%d duplicate transactions in the windows are left out, as the job "
            "drops them",
            int(duplicates[split.train | split.test].sum()),
        )
    labels = frame["label"].to_numpy()
    y_train, y_test = labels[train], labels[test]
    logger.info(
        "train %d rows (%d frauds), test %d rows (%d frauds), %d test rows of "
        "known compromised cards left out",
        train.sum(),
        y_train.sum(),
        test.sum(),
        y_test.sum(),
        split.excluded,
    )

    def summary(scores: np.ndarray, threshold: float) -> dict:
        return detection_summary(
            y_test,
            scores[test],
            threshold,
            split.days[test],
            frame["card_id"].to_numpy()[test],
            k,
        )

    result: dict = {
        "protocol": {
            "train": [train_from, train_to],
            "delay_days": delay_days,
            "test": [test_from, test_to],
            "dates_inclusive": True,
            "train_rows": int(train.sum()),
            "train_frauds": int(y_train.sum()),
            "test_rows": int(test.sum()),
            "test_frauds": int(y_test.sum()),
            "test_rows_of_known_compromised_cards": split.excluded,
            "k": k,
            "target_alert_rate": target_alert_rate,
            "card_precision_ceiling": card_precision_ceilings(
                frame, test, split.days, delay_days, k
            ),
        }
    }

    forest_scores, forest_threshold = _isolation_forest(
        matrix, train, train | test, target_alert_rate
    )
    result["isolation_forest"] = summary(forest_scores, forest_threshold)
    result["isolation_forest"]["features"] = list(FOREST_FEATURES)

    rules = _replay_rules(frame, matrix, duplicates, rules_path, split, delay_days)
    result["rules"] = summary(rules.severity, 1.0)
    result["rules"]["replay"] = {
        "days": list(rules.replayed),
        "active_rule_hits": {
            rule_id: hits
            for rule_id, hits in rules.hits_by_rule.items()
            if rule_id in rules.rule_ids
        },
    }

    logger.info("fitting the supervised stage")
    stage = fit_configured_stage(
        TrainingConfig(target_alert_rate=target_alert_rate, seed=seed),
        matrix[train],
        forest_scores[train],
        y_train,
        train_to,
    )
    probability = np.zeros(len(frame))
    probability[test] = fraud_probability(
        stage.model, stage_inputs(matrix[test], forest_scores[test])
    )
    threshold = stage.metadata.threshold
    result["supervised"] = summary(probability, threshold)
    result["supervised"]["inputs"] = [
        f"{len(FEATURE_NAMES)} features",
        "isolation_forest score",
    ]
    # threshold <= 1 <= any fired rule's severity: alerts are the OR.
    result["full_system"] = summary(rules.severity + probability, threshold)

    logger.info("fitting the handbook baseline")
    handbook = baseline_features(frame, delay_days)[list(BASELINE_FEATURES)]
    handbook = handbook.to_numpy()
    baseline = fit_baseline(handbook[train], y_train, seed=0)
    scores = np.zeros(len(frame))
    scores[train | test] = baseline.predict_proba(handbook[train | test])[:, 1]
    threshold = choose_threshold(scores[train], target_alert_rate)
    result["baseline_logistic_regression"] = summary(scores, threshold)

    result["seconds"] = round(time.monotonic() - started, 1)
    return _json_ready(result)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: evaluate one split and print the result as JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description=(
            "Evaluate the Isolation Forest, the rules, the supervised model, the "
            "full system and the handbook baseline on one handbook split. All "
            "dates are ISO days (YYYY-MM-DD), UTC, both ends inclusive."
        ),
    )
    parser.add_argument("--data", nargs="+", required=True, metavar="FILE")
    day = {"required": True, "metavar": "YYYY-MM-DD"}
    parser.add_argument("--train-from", **day, help="first training day (inclusive)")
    parser.add_argument("--train-to", **day, help="last training day (inclusive)")
    parser.add_argument(
        "--delay-days",
        type=int,
        default=7,
        metavar="N",
        help="label delay: days before a fraud label is known (default 7)",
    )
    parser.add_argument("--test-from", **day, help="first test day (inclusive)")
    parser.add_argument("--test-to", **day, help="last test day (inclusive)")
    parser.add_argument("--rules", default=str(DEFAULT_RULES), help="rule pack YAML")
    parser.add_argument("--k", type=int, default=TOP_K, help="cards checked a day")
    parser.add_argument(
        "--alert-rate",
        type=float,
        default=DEFAULT_ALERT_RATE,
        help="target share of training transactions that alert (default 0.005)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--cache-dir", help="keep computed features here (outside the repository)"
    )
    parser.add_argument("--json-out", help="also write the JSON to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )

    try:
        result = evaluate(
            args.data,
            args.train_from,
            args.train_to,
            args.delay_days,
            args.test_from,
            args.test_to,
            rules_path=args.rules,
            k=args.k,
            target_alert_rate=args.alert_rate,
            seed=args.seed,
            cache_dir=args.cache_dir,
            progress=True,
        )
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    text = json.dumps(result, indent=2, allow_nan=False)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)
    return 0


def _isolation_forest(
    matrix: np.ndarray, train: np.ndarray, scored: np.ndarray, alert_rate: float
) -> tuple[np.ndarray, float]:
    """Fit on the training rows; scores of the ``scored`` rows and the threshold."""
    from sklearn.ensemble import IsolationForest

    config = TrainingConfig()
    columns = [FEATURE_NAMES.index(name) for name in FOREST_FEATURES]
    logger.info("fitting the Isolation Forest on %d features", len(columns))
    forest = IsolationForest(
        n_estimators=config.n_estimators,
        max_samples=config.max_samples,
        random_state=config.seed,
        n_jobs=1,
    ).fit(matrix[train][:, columns])
    scores = np.zeros(len(matrix))
    scores[scored] = -forest.score_samples(matrix[scored][:, columns])
    return scores, choose_threshold(scores[train], alert_rate)


def _replay_rules(
    frame: pd.DataFrame,
    matrix: np.ndarray,
    duplicates: np.ndarray,
    rules_path: str | Path,
    split: Split,
    delay_days: int,
) -> RuleScores:
    """Replay the rule pack from one warm-up before training to the test end."""
    ruleset = RuleSet.from_yaml(rules_path, BASE_FIELDS | set(FEATURE_NAMES))
    longest = max((rule.span_ms for rule in ruleset), default=0)
    warm_up_days = -(-longest // MS_PER_DAY)  # whole days, rounded up
    first_day = int(split.days[split.train].min()) - warm_up_days
    last_day = int(split.days[split.test].max())
    logger.info("replaying %d rules from day %s", len(ruleset), _iso(first_day))
    return rule_scores(
        frame,
        matrix,
        ruleset,
        first_day * MS_PER_DAY,
        (last_day + 1) * MS_PER_DAY,
        skip=duplicates,
    )


def _rule_events(
    frame: pd.DataFrame, matrix: np.ndarray, rows: np.ndarray
) -> Iterator[dict]:
    """The events the rule operator sees: transaction fields plus features."""
    ids = frame["transaction_id"].to_numpy()
    times = frame["event_time_ms"].to_numpy()
    cards = frame["card_id"].to_numpy()
    terminals = frame["terminal_id"].to_numpy()
    amounts = frame["amount"].to_numpy()
    for row in rows:
        event = dict(zip(FEATURE_NAMES, matrix[row].tolist(), strict=True))
        event.update(
            transaction_id=int(ids[row]),
            event_time_ms=int(times[row]),
            card_id=int(cards[row]),
            terminal_id=int(terminals[row]),
            amount=float(amounts[row]),
        )
        yield event


def _project_features(
    frame: pd.DataFrame,
    files: Sequence[str | Path],
    delay_days: int,
    cache_dir: str | Path | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``udfs.features`` of every row, from the cache when it holds them."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"features-{_cache_key(files, delay_days)}.npz"
        if path.exists():
            logger.info("features read from %s", path)
            with np.load(path) as cached:
                return cached["matrix"], cached["duplicates"]

    logger.info("computing features of %d transactions", len(frame))
    matrix, duplicates, _ = compute_features(
        frame, delay_days, use_feedback=True, progress=progress
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npz")
        np.savez(partial, matrix=matrix, duplicates=duplicates)
        partial.replace(path)
        logger.info("features cached in %s", path)
    return matrix, duplicates


def _cache_key(files: Sequence[str | Path], delay_days: int) -> str:
    """Changes whenever a data file, the delay or the feature code changes."""
    digest = hashlib.sha256()
    for file in sorted(Path(f).resolve() for f in files):
        stat = file.stat()
        digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(f"{delay_days}|{','.join(FEATURE_NAMES)}".encode())
    for module in (features_module, dataset_module):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _iso(day: int) -> str:
    return (pd.Timestamp(0, tz="UTC") + pd.Timedelta(days=int(day))).date().isoformat()


def _json_ready(value):
    """Plain Python values, floats to 4 decimals, NaN as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


if __name__ == "__main__":
    sys.exit(main())
