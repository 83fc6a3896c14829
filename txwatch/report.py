"""The analyst report: one self-contained HTML file built from the database.

``build_report`` reads the scored transactions, alerts, rule hits, fraud labels
and drift metrics of a period (by default the last 30 days up to the latest
event) and writes a single HTML file with no external resources: the plots
are PNG images made by matplotlib and embedded as base64 ``data:`` URLs, the
style sheet is inline, and there is no script. The file can be mailed,
archived or opened offline.

Contents, in order:

* a summary table (volume, alerts, rule hits, confirmed fraud, precision and
  recall of the alerts, model versions, worst drift) and the riskiest
  terminals of the latest day;
* alerts over time: transactions and alerts per hour;
* scores over time: mean, median, 95th and 99th percentile per hour, with the
  alert threshold;
* score distribution of confirmed fraud against the rest;
* precision and recall of each rule and of the model;
* precision and recall of the model's score at every threshold;

"Score" is the score that decides alerts (``DECISION_SCORE``): the fraud
probability where the model has a supervised stage, else the anomaly score,
with the matching threshold of ``model_versions``.
* feature drift: the PSI per feature and window from ``drift_metrics``; when
  that table has nothing for the period, the shift of each feature's daily
  mean from its first-day mean, in first-day standard deviations, computed
  from ``scored_transactions.features``.

Labels: a transaction is *fraud* when ``fraud_labels`` has it and *genuine*
otherwise. Labels arrive late, so the most recent days count as genuine some
fraud that is not known yet; precision is then an underestimate. When the
period has no labels at all the report says so and leaves out the plots that
need them (fraud-against-genuine becomes the plain score distribution).

The report only reads: it runs as the analyst role. Every figure is an
``<img class="plot">`` inside a ``<figure>`` with a caption, in a ``<section>``
whose id names the plot, so that a browser test can find and measure them.

Limitations: the feature-drift fallback reads every feature of every row of
the period (one pass over the JSON); for long periods on large tables prefer
recording ``drift_metrics``.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from matplotlib.figure import Figure

from txwatch.config import Settings, load
from txwatch.queries import format_value, run_query

logger = logging.getLogger(__name__)

# The score an alert is decided on, per row of scored_transactions, and its
# threshold per row of model_versions.
DECISION_SCORE = "coalesce(fraud_probability, score)"
DECISION_THRESHOLD = "coalesce(m.fraud_threshold, m.threshold)"

UTC = timezone.utc
DEFAULT_DAYS = 30
SCORE_BINS = 200  # for the threshold curve; the histogram merges them by 4
MAX_DRIFT_FEATURES = 30
DPI = 100


@dataclass(frozen=True)
class Plot:
    """One embedded figure: a section id, a heading, a caption and the PNG."""

    slug: str
    title: str
    caption: str
    png: bytes


@dataclass
class ReportData:
    """Everything the report shows, read from the database in one go."""

    since: datetime
    until: datetime
    summary: list[tuple[str, str]]
    hourly: list[tuple]  # hour, transactions, alerts, mean, median, p95, p99 score
    histogram: list[tuple[int, int, int]]  # bin, genuine count, fraud count
    frauds: int
    threshold: float | None
    detectors: tuple[list[str], list[tuple]]
    drift_psi: list[tuple]  # window_start, feature, psi
    drift_means: list[tuple]  # day, feature, mean, standard deviation
    terminals: tuple[list[str], list[tuple]]
    notes: list[str] = field(default_factory=list)


def build_report(conn, out_path: str | Path, days: int = DEFAULT_DAYS) -> Path:
    """Write the HTML report of the last ``days`` days of data to ``out_path``.

    ``conn`` needs only SELECT on the txwatch tables (the analyst role is
    enough); the report runs its queries in the caller's transaction and
    leaves it open. The period ends at the latest scored transaction, not at
    the wall clock, so a replayed or historical database reports on its own
    data. Returns the path written. Raises ``ValueError`` if ``days`` is not
    positive.
    """
    if days < 1:
        raise ValueError(f"days must be 1 or more, got {days}")
    out_path = Path(out_path)

    data = _read(conn, days)
    plots = _plots(data) if data is not None else []

    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(_html(data, plots), encoding="utf-8")
    logger.info("report with %d plots written to %s", len(plots), out_path)
    return out_path


# --- reading -------------------------------------------------------------------


def _read(conn, days: int) -> ReportData | None:
    with conn.cursor() as cur:
        cur.execute("SELECT min(event_time), max(event_time) FROM scored_transactions")
        earliest, latest = cur.fetchone()
        if latest is None:
            return None
        since = max(earliest, latest - timedelta(days=days))
        window = {"since": since, "until": latest}

        cur.execute(
            "SELECT count(*) FROM fraud_labels"
            " WHERE event_time >= %(since)s AND event_time <= %(until)s",
            window,
        )
        (frauds,) = cur.fetchone()
        data = ReportData(
            since=since,
            until=latest,
            summary=_summary(cur, window, frauds),
            hourly=_hourly(cur, window),
            histogram=_histogram(cur, window),
            frauds=frauds,
            threshold=_threshold(cur, window),
            detectors=run_query(conn, "detector_precision", window),
            drift_psi=_drift_psi(cur, window),
            drift_means=[],
            terminals=_terminals(conn),
        )
        if not data.drift_psi:
            data.drift_means = _drift_means(cur, window)
    if frauds == 0:
        data.notes.append(
            "No fraud labels in this period: fraud_labels has no confirmed fraud "
            "between these dates, so precision, recall and the fraud-against-genuine "
            "comparison cannot be shown. The score distribution below covers all "
            "transactions."
        )
    if not data.drift_psi:
        data.notes.append(
            "No drift metrics recorded for this period: the drift plot shows how far "
            "each feature's daily mean moved from its first-day mean instead."
        )
    return data


def _summary(cur, window: dict, frauds: int) -> list[tuple[str, str]]:
    cur.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE is_alert),
               count(*) FILTER (WHERE is_late),
               count(DISTINCT card_id), count(DISTINCT terminal_id),
               count(DISTINCT model_version), string_agg(DISTINCT model_version, ', '),
               avg({DECISION_SCORE}), sum(amount)
        FROM scored_transactions
        WHERE event_time >= %(since)s AND event_time <= %(until)s
        """,
        window,
    )
    (rows, alerts, late, cards, terminals, n_models, models, mean_score, amount) = (
        cur.fetchone()
    )
    cur.execute(
        """
        SELECT count(*) FILTER (WHERE mode = 'active'),
               count(*) FILTER (WHERE mode = 'shadow'),
               count(DISTINCT rule_id)
        FROM rule_hits WHERE event_time >= %(since)s AND event_time <= %(until)s
        """,
        window,
    )
    active_hits, shadow_hits, rules = cur.fetchone()
    cur.execute(
        """
        SELECT count(*) FROM scored_transactions s
        JOIN fraud_labels f USING (transaction_id, event_time)
        WHERE s.is_alert AND s.event_time >= %(since)s AND s.event_time <= %(until)s
        """,
        window,
    )
    (caught,) = cur.fetchone()
    cur.execute(
        """
        SELECT feature, psi, window_start FROM drift_metrics
        WHERE window_end > %(since)s AND window_start <= %(until)s
        ORDER BY psi DESC LIMIT 1
        """,
        window,
    )
    worst = cur.fetchone()

    def share(part, whole) -> str:
        return f"{part / whole:.2%}" if whole else "n/a"

    return [
        ("Transactions scored", f"{rows:,}"),
        ("Amount scored (EUR)", f"{amount or 0:,.2f}"),
        ("Cards / terminals", f"{cards:,} / {terminals:,}"),
        ("Alerts (alert rate)", f"{alerts:,} ({share(alerts, rows)})"),
        ("Late events", f"{late:,} ({share(late, rows)})"),
        ("Mean score", "n/a" if mean_score is None else f"{mean_score:.4f}"),
        (
            "Rule hits: active / shadow",
            f"{active_hits:,} / {shadow_hits:,} ({rules} rules)",
        ),
        ("Confirmed fraud (labels)", f"{frauds:,}"),
        ("Alert precision", share(caught, alerts) if frauds else "no labels"),
        ("Alert recall", share(caught, frauds) if frauds else "no labels"),
        (f"Model versions ({n_models})", models or "none"),
        (
            "Highest feature drift (PSI)",
            f"{worst[0]}: {worst[1]:.3f} (window from {worst[2]:%Y-%m-%d})"
            if worst
            else "no drift metrics",
        ),
    ]


TERMINAL_COLUMNS = (
    "terminal_id",
    "transactions",
    "alerts",
    "alert_rate",
    "mean_risk",
    "max_risk",
    "confirmed_fraud",
)


def _terminals(conn) -> tuple[list[str], list[tuple]]:
    """The riskiest terminals of the latest day, with the columns that fit."""
    columns, rows = run_query(conn, "riskiest_terminals", {"top": 10})
    keep = [columns.index(name) for name in TERMINAL_COLUMNS]
    return list(TERMINAL_COLUMNS), [tuple(row[i] for i in keep) for row in rows]


def _hourly(cur, window: dict) -> list[tuple]:
    cur.execute(
        f"""
        SELECT date_bin(interval '1 hour', event_time, timestamptz '2000-01-01Z'),
               count(*), count(*) FILTER (WHERE is_alert), avg({DECISION_SCORE}),
               percentile_cont(ARRAY[0.5, 0.95, 0.99])
                   WITHIN GROUP (ORDER BY {DECISION_SCORE})
        FROM scored_transactions
        WHERE event_time >= %(since)s AND event_time <= %(until)s
        GROUP BY 1 ORDER BY 1
        """,
        window,
    )
    return [(h, n, a, mean, *q) for h, n, a, mean, q in cur.fetchall()]


def _histogram(cur, window: dict) -> list[tuple[int, int, int]]:
    cur.execute(
        f"""
        SELECT least(width_bucket({DECISION_SCORE}, 0, 1, %(bins)s), %(bins)s) AS bin,
               count(*) FILTER (WHERE f.transaction_id IS NULL),
               count(*) FILTER (WHERE f.transaction_id IS NOT NULL)
        FROM scored_transactions s
        LEFT JOIN fraud_labels f USING (transaction_id, event_time)
        WHERE s.event_time >= %(since)s AND s.event_time <= %(until)s
        GROUP BY 1 ORDER BY 1
        """,
        {**window, "bins": SCORE_BINS},
    )
    return cur.fetchall()


def _threshold(cur, window: dict) -> float | None:
    """The alert threshold of the model version that scored the latest transaction."""
    cur.execute(
        f"""
        SELECT {DECISION_THRESHOLD} FROM model_versions m
        WHERE m.version = (SELECT model_version FROM scored_transactions
                           WHERE event_time <= %(until)s
                           ORDER BY event_time DESC LIMIT 1)
        """,
        window,
    )
    row = cur.fetchone()
    return None if row is None else row[0]


def _drift_psi(cur, window: dict) -> list[tuple]:
    cur.execute(
        """
        SELECT window_start, feature, max(psi)
        FROM drift_metrics
        WHERE window_end > %(since)s AND window_start <= %(until)s
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        window,
    )
    return cur.fetchall()


def _drift_means(cur, window: dict) -> list[tuple]:
    cur.execute(
        """
        SELECT (s.event_time AT TIME ZONE 'UTC')::date, f.key,
               avg(f.value::float8), stddev_pop(f.value::float8)
        FROM scored_transactions s
        CROSS JOIN LATERAL jsonb_each(s.features) AS f (key, value)
        WHERE s.event_time >= %(since)s AND s.event_time <= %(until)s
          AND jsonb_typeof(f.value) = 'number'
        GROUP BY 1, 2 ORDER BY 1, 2
        """,
        window,
    )
    return cur.fetchall()


# --- plotting ------------------------------------------------------------------


def _plots(data: ReportData) -> list[Plot]:
    plots = [
        _alerts_over_time(data),
        _scores_over_time(data),
        _score_distribution(data),
    ]
    if data.frauds:
        plots.append(_detector_precision(data))
        plots.append(_threshold_curve(data))
    drift = _feature_drift(data)
    if drift is not None:
        plots.append(drift)
    return plots


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _alerts_over_time(data: ReportData) -> Plot:
    hours = [row[0] for row in data.hourly]
    figure = Figure(figsize=(10, 4.6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    width = 1 / 24 * 0.9
    top.bar(
        hours,
        [row[1] for row in data.hourly],
        width=width,
        align="edge",
        color="#7f9cc0",
    )
    top.set_ylabel("transactions / hour")
    bottom.bar(
        hours,
        [row[2] for row in data.hourly],
        width=width,
        align="edge",
        color="#c0392b",
    )
    bottom.set_ylabel("alerts / hour")
    bottom.set_xlabel("event time (UTC)")
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    return Plot(
        "alerts-over-time",
        "Alerts over time",
        "Transactions scored and alerts raised per hour of event time.",
        _png(figure),
    )


def _scores_over_time(data: ReportData) -> Plot:
    hours = [row[0] for row in data.hourly]
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    axes = figure.subplots()
    for index, label, style in (
        (3, "mean", "-"),
        (4, "median", "--"),
        (5, "95th percentile", "-"),
        (6, "99th percentile", ":"),
    ):
        axes.plot(hours, [row[index] for row in data.hourly], style, label=label)
    if data.threshold is not None:
        axes.axhline(
            data.threshold, color="black", lw=1, ls="--", label="alert threshold"
        )
    axes.set_ylabel("score")
    axes.set_xlabel("event time (UTC)")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize="small", ncols=5)
    figure.autofmt_xdate()
    return Plot(
        "scores-over-time",
        "Scores over time",
        "Hourly statistics of the score that decides alerts: the fraud probability "
        "where the model has a supervised stage, else the anomaly score (higher is "
        "more suspect).",
        _png(figure),
    )


def _merged_histogram(data: ReportData, merge: int = 4):
    genuine = [0] * (SCORE_BINS // merge)
    fraud = [0] * (SCORE_BINS // merge)
    for bin_, g, f in data.histogram:
        index = min(max(bin_ - 1, 0), SCORE_BINS - 1) // merge
        genuine[index] += g
        fraud[index] += f
    edges = [i * merge / SCORE_BINS for i in range(SCORE_BINS // merge + 1)]
    return edges, genuine, fraud


def _score_distribution(data: ReportData) -> Plot:
    edges, genuine, fraud = _merged_histogram(data)
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    axes = figure.subplots()
    if data.frauds:
        for counts, label, colour in (
            (genuine, "genuine (no fraud label)", "#7f9cc0"),
            (fraud, "confirmed fraud", "#c0392b"),
        ):
            total = sum(counts) or 1
            axes.stairs(
                [c / total for c in counts],
                edges,
                label=label,
                color=colour,
                fill=True,
                alpha=0.55,
            )
        axes.set_ylabel("share of the group")
        caption = (
            "Score distribution of confirmed fraud against the rest, each "
            "normalised to its own total."
        )
    else:
        axes.stairs(
            [g + f for g, f in zip(genuine, fraud, strict=True)],
            edges,
            label="all transactions",
            color="#7f9cc0",
            fill=True,
        )
        axes.set_ylabel("transactions")
        caption = "Score distribution of all transactions (no fraud labels yet)."
    if data.threshold is not None:
        axes.axvline(
            data.threshold, color="black", lw=1, ls="--", label="alert threshold"
        )
    axes.set_xlabel("score")
    axes.set_xlim(_score_range(edges, genuine, fraud))
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return Plot("score-distribution", "Score distribution", caption, _png(figure))


def _score_range(edges, genuine, fraud) -> tuple[float, float]:
    used = [i for i, (g, f) in enumerate(zip(genuine, fraud, strict=True)) if g or f]
    if not used:
        return 0.0, 1.0
    return max(0.0, edges[used[0]] - 0.02), min(1.0, edges[used[-1] + 1] + 0.02)


def _detector_precision(data: ReportData) -> Plot:
    columns, rows = data.detectors
    index = {name: i for i, name in enumerate(columns)}
    labels = [
        f"{row[index['detector']]} ({row[index['kind']]}, {row[index['mode']]})"
        for row in rows
    ]
    precision = [row[index["precision"]] or 0.0 for row in rows]
    recall = [row[index["recall"]] or 0.0 for row in rows]
    figure = Figure(figsize=(10, 0.5 * len(rows) + 1.4), layout="constrained")
    axes = figure.subplots()
    positions = list(range(len(rows)))
    axes.barh(
        [p - 0.2 for p in positions],
        precision,
        height=0.4,
        label="precision",
        color="#2e86c1",
    )
    axes.barh(
        [p + 0.2 for p in positions],
        recall,
        height=0.4,
        label="recall",
        color="#e67e22",
    )
    axes.set_yticks(positions, labels)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("share")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncols=2,
        frameon=False,
        fontsize="small",
    )
    return Plot(
        "detector-precision",
        "Precision and recall by rule and model",
        "Precision: share of a detector's hits that are confirmed fraud. Recall: "
        "share of all confirmed fraud of the period that it caught.",
        _png(figure),
    )


def _threshold_curve(data: ReportData) -> Plot:
    genuine = [0] * SCORE_BINS
    fraud = [0] * SCORE_BINS
    for bin_, g, f in data.histogram:
        index = min(max(bin_ - 1, 0), SCORE_BINS - 1)
        genuine[index] += g
        fraud[index] += f
    thresholds, precision, recall = [], [], []
    above_all, above_fraud = 0, 0
    for index in range(SCORE_BINS - 1, -1, -1):  # from the top: counts at or above
        above_all += genuine[index] + fraud[index]
        above_fraud += fraud[index]
        if above_all:
            thresholds.append(index / SCORE_BINS)
            precision.append(above_fraud / above_all)
            recall.append(above_fraud / data.frauds)
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    axes = figure.subplots()
    axes.plot(thresholds, precision, label="precision", color="#2e86c1")
    axes.plot(thresholds, recall, label="recall", color="#e67e22")
    if data.threshold is not None:
        axes.axvline(
            data.threshold, color="black", lw=1, ls="--", label="alert threshold"
        )
    axes.set_xlim(_score_range(*_merged_histogram(data)))
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("score threshold (alert when score >= threshold)")
    axes.set_ylabel("share")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return Plot(
        "threshold-precision-recall",
        "Precision and recall by threshold",
        f"Precision and recall of the model's score at every threshold, in steps of "
        f"{1 / SCORE_BINS:g}.",
        _png(figure),
    )


def _feature_drift(data: ReportData) -> Plot | None:
    if data.drift_psi:
        cells = {(row[0], row[1]): row[2] for row in data.drift_psi}
        caption = (
            "Population stability index of each feature per window (from "
            "drift_metrics). Below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 major."
        )
        colour_label, colour_map, limits = "PSI", "YlOrRd", (0.0, 0.5)
    elif data.drift_means:
        first_day = min(row[0] for row in data.drift_means)
        reference = {
            row[1]: (row[2], row[3]) for row in data.drift_means if row[0] == first_day
        }
        cells = {}
        for day, feature, mean, _ in data.drift_means:
            base_mean, base_std = reference.get(feature, (None, None))
            if base_mean is None or not base_std:
                continue
            cells[(day, feature)] = (mean - base_mean) / base_std
        caption = (
            f"Shift of each feature's daily mean from its mean on {first_day}, in "
            "standard deviations of that first day (no drift metrics recorded)."
        )
        colour_label, colour_map, limits = "shift (std)", "RdBu_r", (-2.0, 2.0)
    else:
        return None
    if not cells:  # e.g. every feature constant on the reference day
        return None

    columns = sorted({key[0] for key in cells})
    features = sorted(
        {key[1] for key in cells},
        key=lambda f: -max(abs(cells.get((c, f), 0.0)) for c in columns),
    )[:MAX_DRIFT_FEATURES]
    matrix = [[cells.get((c, f), math.nan) for c in columns] for f in features]
    figure = Figure(figsize=(10, 0.26 * len(features) + 1.6), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(
        matrix,
        aspect="auto",
        cmap=colour_map,
        vmin=limits[0],
        vmax=limits[1],
        interpolation="nearest",
    )
    axes.set_yticks(range(len(features)), features, fontsize="small")
    axes.set_xticks(
        range(len(columns)),
        [f"{c:%Y-%m-%d}" for c in columns],
        rotation=45,
        ha="right",
        fontsize="small",
    )
    figure.colorbar(image, ax=axes, label=colour_label)
    return Plot("feature-drift", "Feature drift", caption, _png(figure))


# --- HTML ----------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1060px; color: #222; background: #fff; }
h1 { margin-bottom: 0.2em; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0 0 2em; }
img.plot { display: block; max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
.note { background: #fff6e0; border-left: 4px solid #e6a700; padding: 0.6em 1em; }
"""


def _html(data: ReportData | None, plots: Sequence[Plot]) -> str:
    generated = datetime.now(UTC)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>txwatch report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>txwatch report</h1>",
    ]
    if data is None:
        parts.append(
            f'<p class="meta">Generated {generated:%Y-%m-%d %H:%M} UTC.</p>'
            '<p class="note">No scored transactions yet: nothing to report.</p>'
        )
        return "\n".join(parts + ["</body></html>"])

    parts.append(
        f'<p class="meta">Event time from {data.since:%Y-%m-%d %H:%M} to '
        f"{data.until:%Y-%m-%d %H:%M} UTC; "
        f"generated {generated:%Y-%m-%d %H:%M} UTC.</p>"
    )
    parts.extend(f'<p class="note">{html.escape(note)}</p>' for note in data.notes)
    parts.append('<section id="summary"><h2>Summary</h2><table class="summary">')
    parts.extend(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in data.summary
    )
    parts.append("</table>")
    parts.append(f"<h3>Riskiest terminals on {data.until:%Y-%m-%d} (UTC)</h3>")
    parts.append(_table(*data.terminals))
    parts.append("</section>")
    for plot in plots:
        encoded = base64.b64encode(plot.png).decode("ascii")
        parts.append(
            f'<section id="{plot.slug}"><h2>{html.escape(plot.title)}</h2><figure>'
            f'<img class="plot" id="plot-{plot.slug}" alt="{html.escape(plot.title)}" '
            f'src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure></section>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            css = ' class="number"' if numeric else ""
            cells.append(f"<td{css}>{html.escape(format_value(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def main_report(argv: Sequence[str] | None = None) -> int:
    """``txwatch report --out PATH``: build the HTML report from the database.

    Connects as ``postgres.analyst_user`` with the password from the
    environment variable named by ``postgres.analyst_password_env``
    (``TXWATCH_ANALYST_PASSWORD`` by default) in a read-only session.
    """
    parser = argparse.ArgumentParser(
        prog="txwatch report", description="Write the HTML analyst report."
    )
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help="days of data up to the latest event (default 30)",
    )
    parser.add_argument(
        "--config", help="configuration file (default conf/txwatch.yaml)"
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error(f"--days must be 1 or more, got {args.days}")
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )

    from txwatch.db import connect  # psycopg2 only where a database is used

    settings = load(args.config)
    pg = settings.postgres
    conn = connect(pg, pg.analyst_user, Settings.secret(pg.analyst_password_env))
    try:
        conn.set_session(readonly=True)
        path = build_report(conn, args.out, days=args.days)
    finally:
        conn.close()
    print(path)
    return 0
