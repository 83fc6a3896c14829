"""What a run did: counts from Kafka and PostgreSQL, quality against labels.

``collect`` reads the transactions and dead-letter topics (committed
messages only), the sink tables and, for quality, the labels of the CSV
rows in the evaluated window. The job never sees those labels except as
delayed feedback; here they only grade its alerts.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from txwatch import topics
from txwatch.config import Settings

logger = logging.getLogger(__name__)


@dataclass
class RunSummary:
    read: int
    scored_rows: int
    dead_lettered: int
    dead_letter_reasons: dict[str, int]
    alerts_table: int
    alerts_kafka: int
    duplicate_alerts_kafka: int
    late_rows: int
    seconds: float | None = None
    quality: dict[str, float] = field(default_factory=dict)
    # feature -> "<period> median|max|hours > T|hours" -> value (see txwatch.demo)
    drift: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def accounted(self) -> bool:
        return self.read == self.scored_rows + self.dead_lettered

    @property
    def throughput(self) -> float | None:
        return self.scored_rows / self.seconds if self.seconds else None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["accounted"] = self.accounted
        out["throughput_per_second"] = self.throughput
        return out

    def render(self) -> str:
        check = "yes" if self.accounted else "NO"
        lines = [
            "txwatch run summary",
            f"  transactions read            {self.read:>10,}",
            f"  scored (rows in PostgreSQL)  {self.scored_rows:>10,}",
            f"  dead-lettered                {self.dead_lettered:>10,}",
            f"  read = scored + dead-letters {check:>10}",
        ]
        for reason, count in sorted(self.dead_letter_reasons.items()):
            lines.append(f"    {reason:<28}{count:>8,}")
        lines += [
            f"  late (scored, marked late)   {self.late_rows:>10,}",
            f"  alerts in PostgreSQL         {self.alerts_table:>10,}",
            f"  alerts in Kafka (committed)  {self.alerts_kafka:>10,}",
            f"  alerts repeated in Kafka     {self.duplicate_alerts_kafka:>10,}",
        ]
        if self.seconds:
            lines.append(f"  wall time                    {self.seconds:>9.1f}s")
            lines.append(f"  throughput                   {self.throughput:>9,.0f}/s")
        for name, value in self.quality.items():
            lines.append(f"  {name:<29}{value:>10.4g}")
        lines += self._render_drift()
        return "\n".join(lines)

    def _render_drift(self) -> list[str]:
        if not self.drift:
            return []
        periods = list(
            dict.fromkeys(
                key.rsplit(" ", 1)[0]
                for values in self.drift.values()
                for key in values
                if key.endswith((" median", " max"))
            )
        )
        lines = [
            "  drift: hourly PSI against the training reference",
            "    (median / max, and hours above the drift threshold / hours)",
            "    " + f"{'feature':<22}" + "".join(f"{p:>26}" for p in periods),
        ]
        for feature, values in self.drift.items():
            cells = []
            for period in periods:
                median = values.get(f"{period} median")
                if median is None:
                    cells.append("-")
                    continue
                top = values[f"{period} max"]
                above = next(
                    (v for k, v in values.items() if k.startswith(f"{period} hours >")),
                    None,
                )
                hours = values.get(f"{period} hours")
                counts = "" if above is None else f"  {above:.0f}/{hours:.0f}h"
                cells.append(f"{median:.3f} / {top:.3f}{counts}")
            lines.append("    " + f"{feature:<22}" + "".join(f"{c:>26}" for c in cells))
        return lines


def scored_count(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM scored_transactions")
        return int(cur.fetchone()[0])


def collect(
    settings: Settings,
    conn,
    labels: pd.DataFrame | None = None,
    seconds: float | None = None,
    quality_from_ms: int | None = None,
    quality_to_ms: int | None = None,
) -> RunSummary:
    """Counts of one run; ``labels`` (transaction_id, label) grades the alerts."""
    kafka = settings.kafka
    read = topics.end_offsets_total(kafka.bootstrap_servers, kafka.topics.transactions)
    dead = [
        json.loads(m)
        for m in topics.read_committed(
            kafka.bootstrap_servers, kafka.topics.dead_letters
        )
    ]
    reasons = Counter(d.get("reason", "?") for d in dead)
    dead_tx = sum(1 for d in dead if d.get("stage") != "feedback")
    alerts = [
        json.loads(m)
        for m in topics.read_committed(kafka.bootstrap_servers, kafka.topics.alerts)
    ]
    alert_ids = Counter(a["transaction_id"] for a in alerts)

    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE is_late) FROM scored_transactions"
        )
        scored, late = (int(v) for v in cur.fetchone())
        cur.execute("SELECT count(*) FROM alerts")
        alerts_table = int(cur.fetchone()[0])

    summary = RunSummary(
        read=read,
        scored_rows=scored,
        dead_lettered=dead_tx,
        dead_letter_reasons=dict(reasons),
        alerts_table=alerts_table,
        alerts_kafka=len(alerts),
        duplicate_alerts_kafka=sum(c - 1 for c in alert_ids.values() if c > 1),
        late_rows=late,
        seconds=seconds,
    )
    if labels is not None:
        summary.quality = quality(conn, labels, quality_from_ms, quality_to_ms)
    return summary


def quality(
    conn, labels: pd.DataFrame, from_ms: int | None = None, to_ms: int | None = None
) -> dict[str, float]:
    """Precision, recall and alert rate of the stored alerts on labelled rows
    with ``from_ms <= event time < to_ms`` (either end may be None), and the
    ranking quality of the anomaly score and, where every row has one, of
    the fraud probability."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT transaction_id, is_alert, score, fraud_probability "
            "FROM scored_transactions "
            "WHERE event_time >= to_timestamp(%s / 1000.0) "
            "AND (%s::bigint IS NULL OR event_time < to_timestamp(%s / 1000.0))",
            ((from_ms or 0), to_ms, to_ms),
        )
        rows = cur.fetchall()
    scored = pd.DataFrame(
        rows, columns=["transaction_id", "is_alert", "score", "fraud_probability"]
    )
    truth = labels.assign(transaction_id=labels["transaction_id"].astype(str))
    if from_ms is not None:
        truth = truth[truth["event_time_ms"] >= from_ms]
    if to_ms is not None:
        truth = truth[truth["event_time_ms"] < to_ms]
    merged = truth.merge(scored, on="transaction_id", how="inner")
    if merged.empty:
        return {}
    flagged = merged["is_alert"].to_numpy(dtype=bool)
    fraud = merged["label"].to_numpy(dtype=bool)
    true_positives = int(np.sum(flagged & fraud))
    out = {
        "evaluated rows": float(len(merged)),
        "alert rate": float(flagged.mean()),
        "precision": true_positives / flagged.sum() if flagged.any() else 0.0,
        "recall": true_positives / fraud.sum() if fraud.any() else 0.0,
    }
    if fraud.any() and not fraud.all():
        from sklearn.metrics import average_precision_score, roc_auc_score

        ranked = {"anomaly score": merged["score"]}
        if merged["fraud_probability"].notna().all():
            ranked["fraud probability"] = merged["fraud_probability"].astype(float)
        for name, values in ranked.items():
            out[f"AUC-ROC ({name})"] = float(roc_auc_score(fraud, values))
            out[f"average precision ({name})"] = float(
                average_precision_score(fraud, values)
            )
    return out
