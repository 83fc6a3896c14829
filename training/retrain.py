"""Retraining on recent data, graded against the champion on later days.

``retrain`` answers "would a forest fitted on the last weeks do better than
the one scoring now?" with the data a fraud team has on day ``as_of``.

Windows (whole UTC days; ``as_of`` is the day retraining runs, excluded)::

    warm-up         training           (later, held out) evaluation     label delay
    |-- warmup_days --|-- train_days --|-- eval_days --|-- label_delay_days --| as_of

- evaluation ends ``label_delay_days`` before ``as_of``: the latest days
  whose every fraud label is known on ``as_of``;
- training is the ``train_days`` before the evaluation, so nothing of the
  evaluation is seen in fitting or in choosing the threshold;
- warm-up days only fill the 30-day feature windows before training starts.

Labels
    They come from the handbook CSV with the label delay applied, as the job
    sees them on its feedback topic: a fraud counts in the terminal risk
    features only ``label_delay_days`` after its transaction (the same
    ``udfs.features`` code as the job), and only the labels known on
    ``as_of`` grade the models. The forest itself is fitted without labels;
    the training labels only describe it (``train_*`` metrics). The job's
    ``fraud_labels`` table holds the same labels once the feedback reached
    it; reading them from the CSV lets retraining run with no server and on
    any past day.

Evaluation
    The champion and the new model score the same evaluation rows, each on
    its own features and at its own threshold, each by the score that
    decides its alerts (the supervised stage's fraud probability when it has
    one, else the anomaly score; rules are left out for both): AUC-ROC,
    average precision, card precision at 100 per day, alert rate, precision
    and recall
    (``training.metrics``). Every transaction of the window is kept; unlike
    ``txwatch evaluate`` no card already known to be compromised is left out,
    so the figures are those the job would see, for both models alike.

Limitations: the evaluation window is as long as ``eval_days`` and holds
about 80 frauds a day in the handbook data; differences of a few hundredths
in precision at the threshold are within the noise of one week.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from udfs.features import FEATURE_NAMES, MS_PER_DAY
from udfs.scoring import Scorer

from .dataset import compute_features, load_handbook
from .metrics import detection_summary
from .train import Labels, TrainingConfig, TrainingResult, fit

logger = logging.getLogger(__name__)

TOP_K = 100
SUMMARY_METRICS = (
    "auc_roc",
    "average_precision",
    f"card_precision_at_{TOP_K}",
    "threshold",
    "alert_rate",
    "precision",
    "recall",
)


@dataclass(frozen=True)
class RetrainConfig:
    """The windows of one retraining and the forest's settings.

    ``as_of`` is an ISO date; every count of days is at least 1 (``warmup_days``
    and ``label_delay_days`` at least 0).
    """

    as_of: str
    train_days: int = 28
    eval_days: int = 7
    warmup_days: int = 30
    label_delay_days: int = 7
    # The forest's settings default to training's own.
    n_estimators: int = TrainingConfig.n_estimators
    max_samples: int = TrainingConfig.max_samples
    target_alert_rate: float = TrainingConfig.target_alert_rate
    seed: int = TrainingConfig.seed
    features: tuple[str, ...] = TrainingConfig.features

    def __post_init__(self):
        try:
            pd.Timestamp(self.as_of, tz="UTC")
        except ValueError as exc:
            raise ValueError(
                f"as_of must be an ISO date (YYYY-MM-DD), got {self.as_of!r}"
            ) from exc
        for name, least in (
            ("train_days", 1),
            ("eval_days", 1),
            ("warmup_days", 0),
            ("label_delay_days", 0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < least:
                raise ValueError(
                    f"{name} must be a whole number of days, at least {least}, "
                    f"got {value!r}"
                )

    @property
    def windows(self) -> dict[str, str]:
        """First day (inclusive) and end (exclusive) of each window, ISO dates."""
        day = pd.Timedelta(days=1)
        eval_end = pd.Timestamp(self.as_of) - self.label_delay_days * day
        eval_start = eval_end - self.eval_days * day
        train_start = eval_start - self.train_days * day
        warmup_start = train_start - self.warmup_days * day
        return {
            name: stamp.date().isoformat()
            for name, stamp in (
                ("warmup_from", warmup_start),
                ("train_from", train_start),
                ("eval_from", eval_start),
                ("eval_to", eval_end),
            )
        }

    def training_config(self) -> TrainingConfig:
        w = self.windows
        return TrainingConfig(
            history_from=w["warmup_from"],
            train_from=w["train_from"],
            train_to=w["eval_from"],
            label_delay_days=self.label_delay_days,
            n_estimators=self.n_estimators,
            max_samples=self.max_samples,
            target_alert_rate=self.target_alert_rate,
            seed=self.seed,
            features=self.features,
        )


@dataclass
class RetrainReport:
    """What retraining made and how it compares on the held-out days."""

    config: RetrainConfig
    result: TrainingResult
    champion_version: str | None
    evaluation: dict[str, dict[str, float]]  # "challenger"/"champion" -> metrics
    rows: dict[str, int]  # warm-up, training and evaluation rows
    frauds_evaluated: int
    seconds: dict[str, float] = field(default_factory=dict)
    # The rows the forest was fitted on, for the reference logged to MLflow.
    training_matrix: np.ndarray | None = field(default=None, repr=False)

    @property
    def version(self) -> str:
        return self.result.metadata.version

    def as_dict(self) -> dict:
        return {
            "challenger_version": self.version,
            "champion_version": self.champion_version,
            "as_of": self.config.as_of,
            "windows": self.config.windows,
            "rows": self.rows,
            "frauds_evaluated": self.frauds_evaluated,
            "evaluation": self.evaluation,
            "training": self.result.metrics,
            "seconds": self.seconds,
            "config": {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self.config).items()
            },
        }

    def mlflow_metrics(self) -> dict[str, float]:
        """The evaluation as flat MLflow metric names (``eval_*``)."""
        out = {}
        for role, metrics in self.evaluation.items():
            prefix = "eval_" if role == "challenger" else "eval_champion_"
            out.update({prefix + k: float(v) for k, v in metrics.items()})
        return out

    def render(self) -> str:
        w = self.config.windows
        lines = [
            f"retrained {self.version} as of {self.config.as_of}",
            f"  training   {w['train_from']} .. {w['eval_from']} (exclusive), "
            f"{self.rows['train']:,} transactions",
            f"  evaluation {w['eval_from']} .. {w['eval_to']} (exclusive), "
            f"{self.rows['eval']:,} transactions, {self.frauds_evaluated:,} frauds",
            "",
            f"  {'metric':<26}{'champion':>12}{'challenger':>12}{'change':>10}",
        ]
        champion = self.evaluation.get("champion", {})
        challenger = self.evaluation["challenger"]
        for name in SUMMARY_METRICS:
            new = challenger[name]
            old = champion.get(name, math.nan)
            change = "" if math.isnan(old) or math.isnan(new) else f"{new - old:+.4f}"
            lines.append(f"  {name:<26}{_cell(old):>12}{_cell(new):>12}{change:>10}")
        if self.champion_version:
            lines.append(f"  (champion: {self.champion_version})")
        else:
            lines.append("  (no champion to compare with)")
        return "\n".join(lines)


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def retrain(
    files: Sequence[str | Path],
    model_dir: str | Path,
    config: RetrainConfig,
    champion_dir: str | Path | None = None,
    progress: bool = True,
    say: Callable[[str], None] = logger.info,
) -> RetrainReport:
    """Fit a new forest on the training window and grade it and the champion.

    ``model_dir`` receives the new model; ``champion_dir`` is the model
    directory of the champion, or None to grade the new model alone.
    ``say`` is told the start of each long step.
    """
    w = config.windows
    seconds = {}
    started = time.monotonic()
    say(f"loading transactions {w['warmup_from']} .. {w['eval_to']}")
    frame = load_handbook(files, w["warmup_from"], w["eval_to"])
    _check_coverage(frame, w)

    say(
        f"features of {len(frame):,} transactions (labels {config.label_delay_days} "
        "days late, as the job gets them)"
    )
    matrix, duplicates, _ = compute_features(
        frame, config.label_delay_days, use_feedback=True, progress=progress
    )
    seconds["features"] = time.monotonic() - started
    times = frame["event_time_ms"].to_numpy()
    labels = frame["label"].to_numpy().astype(np.int8)
    in_train = (times >= _ms(w["train_from"])) & (times < _ms(w["eval_from"]))
    in_eval = (times >= _ms(w["eval_from"])) & (times < _ms(w["eval_to"]))
    in_train &= ~duplicates
    in_eval &= ~duplicates

    say(
        f"fitting the forest and its supervised stage on {int(in_train.sum()):,} "
        "transactions"
    )
    tick = time.monotonic()
    columns = [FEATURE_NAMES.index(name) for name in config.features]
    x = matrix[in_train][:, columns]
    known = Labels(
        features=matrix[in_train],
        known=np.ones(int(in_train.sum()), dtype=bool),
        known_to=w["eval_from"],
    )
    result = fit(x, labels[in_train], model_dir, config.training_config(), labels=known)
    seconds["fit"] = time.monotonic() - tick

    say(f"evaluating on {int(in_eval.sum()):,} later transactions")
    tick = time.monotonic()
    days = times[in_eval] // MS_PER_DAY
    cards = frame["card_id"].to_numpy()[in_eval]
    evaluation = {
        "challenger": _grade(
            Scorer(result.model_dir), matrix[in_eval], labels[in_eval], days, cards
        )
    }
    champion_version = None
    if champion_dir is not None:
        champion = Scorer(champion_dir)
        champion_version = champion.version
        evaluation["champion"] = _grade(
            champion, matrix[in_eval], labels[in_eval], days, cards
        )
    seconds["evaluate"] = time.monotonic() - tick
    seconds["total"] = time.monotonic() - started

    report = RetrainReport(
        config=config,
        result=result,
        champion_version=champion_version,
        evaluation=evaluation,
        rows={
            "warmup": int((times < _ms(w["train_from"])).sum()),
            "train": int(in_train.sum()),
            "eval": int(in_eval.sum()),
        },
        frauds_evaluated=int(labels[in_eval].sum()),
        seconds=seconds,
        training_matrix=x,
    )
    logger.info("retrained %s: %s", report.version, report.mlflow_metrics())
    return report


def _grade(scorer: Scorer, matrix, labels, days, cards) -> dict[str, float]:
    """One model's metrics on the evaluation rows, by the score that alerts."""
    decision = scorer.decide(pd.DataFrame(matrix, columns=list(FEATURE_NAMES)))
    stage = scorer.metadata.supervised
    if stage is None:
        scores, threshold = decision.scores, scorer.threshold
    else:
        scores, threshold = decision.probability, stage.threshold
    return detection_summary(labels, scores, threshold, days, cards, k=TOP_K)


def _check_coverage(frame: pd.DataFrame, windows: dict[str, str]) -> None:
    """Refuse windows the data does not reach into on both ends."""
    if frame.empty:
        raise ValueError(
            f"no transactions between {windows['warmup_from']} and "
            f"{windows['eval_to']}; choose an --as-of inside the data"
        )
    last = int(frame["event_time_ms"].max())
    if last < _ms(windows["eval_to"]) - MS_PER_DAY:
        raise ValueError(
            f"the data ends on {pd.Timestamp(last, unit='ms').date()}, before the "
            f"evaluation window ends ({windows['eval_to']}, exclusive); choose an "
            "earlier --as-of or give more data"
        )
    first = int(frame["event_time_ms"].min())
    if first >= _ms(windows["train_from"]):
        raise ValueError(
            f"the data starts on {pd.Timestamp(first, unit='ms').date()}, after the "
            f"training window starts ({windows['train_from']}); choose a later "
            "--as-of or give more data"
        )


def _ms(iso_date: str) -> int:
    return int(pd.Timestamp(iso_date, tz="UTC").value // 1_000_000)
