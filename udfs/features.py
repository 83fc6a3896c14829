"""Feature definitions shared by the streaming job and offline training.

Every feature the model sees is computed here, by two small state machines:
``CardFeatures`` for the history of one card (or customer, when the input has
no card) and ``TerminalFeatures`` for the history of one terminal. The Flink
job keeps one instance's state per key in keyed state; training replays the
CSV through exactly the same classes in event-time order, so training and
serving cannot disagree on what a feature means.

Windows
    Short windows (10 minutes, 1 hour, 1 day) are exact and sliding: they
    hold the events with ``event_time`` in ``(t - length, t]`` where ``t`` is
    the current event's time, the current event included. Long windows
    (7 and 30 days) are aligned on UTC calendar days: the current day so far
    plus the ``N - 1`` previous days. Day buckets keep the state of a key at a
    few hundred bytes however busy the key is.

History versus current event
    Counts, sums and means include the current event, as in the handbook the
    data comes from. The ratios and the z-score compare the current amount
    with the card's history *before* it, so a first transaction is never its
    own baseline (ratio 1.0 and z-score 0.0 when there is no history).

Robust amount baseline
    A compromised card that spends several times its usual amount also
    inflates its own mean and spread, which hides its later frauds from the
    mean ratio and the z-score. ``c_amount_median_ratio`` divides the amount
    by the median of the card's last ``AMOUNT_HISTORY`` amounts instead: a
    median moves little until half of them are abnormal.
    ``c_peak_median_ratio_7d`` is the highest such ratio among the card's
    earlier transactions of the 7-day window: a card that recently spent far
    above its habit is suspect as a whole, whatever its current amount.

Terminal risk and label delay
    A terminal's fraud risk over a window is the share of its transactions in
    that window that are known to be fraudulent. Labels become known late
    (chargebacks), so the window is shifted back by the label delay: with a
    delay of 7 days, the 7-day risk on day ``D`` covers days
    ``D - 13 .. D - 7``. Labels arrive as feedback events and are applied
    with ``TerminalFeatures.add_feedback``. A compromised terminal keeps
    serving fraud for weeks, so how recent its last known fraud is says more
    than a share diluted over a window: ``t_days_since_fraud`` counts the
    days since the latest day with a known fraud, and is the terminal's
    whole horizon (longest window plus label delay) when there is none.
    A compromised terminal serves nothing but fraud, while a stolen card
    used once at an honest terminal leaves one fraud among genuine
    transactions: ``t_fraud_run`` counts the transactions of the terminal's
    latest unbroken run of days on which every transaction was a known
    fraud, among the days whose labels are all known (up to the label delay
    plus one day); days without transactions do not break the run.

Late and out-of-order events are accepted: they update the buckets of their
own day and the exact windows by their own time. Buckets older than the
longest window plus the label delay are dropped on every update, so state
stops growing once a key goes quiet; the job also clears idle keys by timer.

Limitations: long windows have day granularity. Duplicate detection
remembers a card's transaction ids for ``DEDUP_DAYS`` days behind its newest
event, which covers the 30 days of lateness the job accepts; an id repeated
later than that would be scored again.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

MS_PER_SECOND = 1_000
MS_PER_MINUTE = 60 * MS_PER_SECOND
MS_PER_HOUR = 60 * MS_PER_MINUTE
MS_PER_DAY = 24 * MS_PER_HOUR

SHORT_WINDOWS_MS = {"10m": 10 * MS_PER_MINUTE, "1h": MS_PER_HOUR, "1d": MS_PER_DAY}
LONG_WINDOWS_DAYS = (7, 30)
RISK_WINDOWS_DAYS = (1, 7, 30)
DEFAULT_LABEL_DELAY_DAYS = 7
MAX_GAP_SECONDS = 30 * 24 * 3600.0
NIGHT_END_HOUR = 6
MAX_TERMINALS_PER_CARD = 200
MAX_PENDING_LABELS = 10_000
# Days of transaction ids a card remembers to recognise a repeated message:
# the longest lateness the job accepts (30 days) plus one.
DEDUP_DAYS = 31
# A card remembers at most this many ids (the newest), bounding its state
# under a burst of thousands of transactions a day.
MAX_REMEMBERED_IDS = 10_000
AMOUNT_HISTORY = 30
PEAK_WINDOW_DAYS = 7

CARD_FEATURES = (
    "amount",
    "c_count_10m",
    "c_count_1h",
    "c_count_1d",
    "c_count_7d",
    "c_count_30d",
    "c_sum_1h",
    "c_mean_1d",
    "c_mean_7d",
    "c_mean_30d",
    "c_std_30d",
    "c_amount_ratio_30d",
    "c_amount_zscore_30d",
    "c_secs_since_prev",
    "is_night",
    "is_weekend",
    "c_new_terminal",
    "c_amount_median_ratio",
    "c_peak_median_ratio_7d",
)
TERMINAL_FEATURES = (
    "t_count_1d",
    "t_count_7d",
    "t_count_30d",
    "t_risk_1d",
    "t_risk_7d",
    "t_risk_30d",
    "t_days_since_fraud",
    "t_fraud_run",
)
FEATURE_NAMES = CARD_FEATURES + TERMINAL_FEATURES
FEATURE_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def day_of(event_time_ms: int) -> int:
    """Whole UTC days since the epoch."""
    return event_time_ms // MS_PER_DAY


def calendar_flags(event_time_ms: int) -> tuple[float, float]:
    """``(is_night, is_weekend)`` of a UTC time: night is 00:00-05:59."""
    day = day_of(event_time_ms)
    hour = (event_time_ms % MS_PER_DAY) // MS_PER_HOUR
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return float(hour < NIGHT_END_HOUR), float(weekday >= 5)


@dataclass(frozen=True)
class CardUpdate:
    """What a card's history says about one new transaction."""

    duplicate: bool
    features: dict[str, float]


class CardFeatures:
    """Sliding and day-bucketed aggregates of one card's amounts.

    State (a plain tuple, cheap to pickle into Flink keyed state)::

        (recent, days, last_time_ms, terminals, seen, amounts, peaks)
        recent:    list of (event_time_ms, amount, transaction_id), last day,
                   sorted by time
        seen:      dict transaction_id -> day of its event, DEDUP_DAYS days,
                   at most MAX_REMEMBERED_IDS
        days:      list of [day, count, sum, sum_of_squares], oldest first,
                   at most 30 entries
        terminals: dict terminal_id -> last day the card used it (30 days,
                   at most MAX_TERMINALS_PER_CARD)
        amounts:   the card's last AMOUNT_HISTORY amounts, in arrival order
        peaks:     list of [day, highest c_amount_median_ratio that day],
                   oldest first, at most PEAK_WINDOW_DAYS entries

    ``c_new_terminal`` is 1.0 when the card has not used the transaction's
    terminal in the previous 30 days.

    ``update`` returns the features of the transaction and the new state; a
    transaction id already seen for this card (within ``DEDUP_DAYS`` of its
    newest event) is reported as a duplicate and leaves the state unchanged.
    A state of four entries, written before ids and amounts were kept apart,
    is taken up with the ids of its last day and an empty amount history.
    """

    @staticmethod
    def empty() -> tuple:
        return ([], [], None, {}, {}, [], [])

    @staticmethod
    def newest_event_time(state: tuple | None) -> int | None:
        """The newest event time the card has seen, or None for a new card."""
        return None if state is None else state[2]

    @staticmethod
    def update(
        state: tuple | None,
        transaction_id,
        event_time_ms: int,
        amount: float,
        terminal_id,
    ):
        if state is None:
            state = CardFeatures.empty()
        elif len(state) == 4:
            recent = state[0]
            state = (*state, {e[2]: day_of(e[0]) for e in recent}, [], [])
        recent, days, last_time, terminals, seen, amounts, peaks = state
        if transaction_id in seen:
            return CardUpdate(True, {}), state

        newest = max(
            event_time_ms, last_time if last_time is not None else event_time_ms
        )
        horizon = newest - SHORT_WINDOWS_MS["1d"]
        recent = [entry for entry in recent if entry[0] > horizon]
        bisect.insort(recent, (event_time_ms, amount, transaction_id))

        history = _long_window(days, day_of(event_time_ms), 30)
        days = _add_to_day(days, day_of(event_time_ms), amount, keep_days=30)

        features = {"amount": amount}
        for label, length in SHORT_WINDOWS_MS.items():
            in_window = [
                a for t, a, _ in recent if event_time_ms - length < t <= event_time_ms
            ]
            features[f"c_count_{label}"] = float(len(in_window))
            if label == "1h":
                features["c_sum_1h"] = float(sum(in_window))
            if label == "1d":
                features["c_mean_1d"] = sum(in_window) / len(in_window)
        for length in LONG_WINDOWS_DAYS:
            count, total, _ = _long_window(days, day_of(event_time_ms), length)
            features[f"c_count_{length}d"] = float(count)
            features[f"c_mean_{length}d"] = total / count
        count30, total30, squares30 = _long_window(days, day_of(event_time_ms), 30)
        features["c_std_30d"] = _std(count30, total30, squares30)

        h_count, h_total, h_squares = history
        if h_count > 0:
            h_mean = h_total / h_count
            h_std = _std(h_count, h_total, h_squares)
            features["c_amount_ratio_30d"] = amount / h_mean if h_mean > 0 else 1.0
            features["c_amount_zscore_30d"] = (
                (amount - h_mean) / h_std if h_std > 0 else 0.0
            )
        else:
            features["c_amount_ratio_30d"] = 1.0
            features["c_amount_zscore_30d"] = 0.0

        today = day_of(event_time_ms)
        median = _median(amounts)
        ratio = amount / median if median > 0 else 1.0
        features["c_amount_median_ratio"] = ratio
        features["c_peak_median_ratio_7d"] = _window_peak(peaks, today)
        amounts = (amounts + [amount])[-AMOUNT_HISTORY:]
        peaks = _add_peak(peaks, today, ratio)

        if last_time is None or event_time_ms < last_time:
            gap = MAX_GAP_SECONDS if last_time is None else 0.0
        else:
            gap = min((event_time_ms - last_time) / MS_PER_SECOND, MAX_GAP_SECONDS)
        features["c_secs_since_prev"] = gap
        features["is_night"], features["is_weekend"] = calendar_flags(event_time_ms)

        last_used = terminals.get(terminal_id)
        features["c_new_terminal"] = float(last_used is None or today - last_used >= 30)
        if last_used is None or today > last_used:
            terminals[terminal_id] = today
        if last_used is None:
            terminals = _recent_keys(terminals, today, MAX_TERMINALS_PER_CARD)

        seen[transaction_id] = today
        if last_time is None or day_of(newest) > day_of(last_time):
            oldest = day_of(newest) - DEDUP_DAYS
            seen = {tx: day for tx, day in seen.items() if day >= oldest}
        if len(seen) > MAX_REMEMBERED_IDS:
            newest_first = sorted(seen.items(), key=lambda item: -item[1])
            seen = dict(newest_first[: MAX_REMEMBERED_IDS // 2])
        state = (recent, days, newest, terminals, seen, amounts, peaks)
        return CardUpdate(False, features), state


class TerminalFeatures:
    """Day-bucketed counts and delayed fraud risk of one terminal.

    State::

        (days, pending)
        days:    list of [day, count, known_frauds], oldest first
        pending: list of (known_at_ms, day): fraud labels not yet known
    """

    def __init__(self, label_delay_days: int = DEFAULT_LABEL_DELAY_DAYS):
        if label_delay_days < 0:
            raise ValueError(
                f"label_delay_days must be >= 0, got {label_delay_days}; "
                "use the delay after which fraud labels are known"
            )
        self.label_delay_days = label_delay_days
        self.keep_days = max(LONG_WINDOWS_DAYS) + label_delay_days

    @staticmethod
    def empty() -> tuple:
        return ([], [])

    def update(self, state: tuple | None, event_time_ms: int):
        days, pending = state if state is not None else self.empty()
        today = day_of(event_time_ms)
        days = _count_in_day(days, today, keep_days=self.keep_days)
        if pending:
            days, pending = _apply_known_labels(days, pending, event_time_ms)

        features = {}
        for length in RISK_WINDOWS_DAYS:
            count, _ = _terminal_window(days, today, length, shift=0)
            features[f"t_count_{length}d"] = float(count)
            shifted_count, frauds = _terminal_window(
                days, today, length, shift=self.label_delay_days
            )
            features[f"t_risk_{length}d"] = (
                frauds / shifted_count if shifted_count else 0.0
            )
        features["t_days_since_fraud"] = self._days_since_fraud(days, today)
        features["t_fraud_run"] = self._fraud_run(days, today)
        return features, (days, pending)

    def _days_since_fraud(self, days: list, today: int) -> float:
        fraud_days = [day for day, _, frauds in days if frauds > 0]
        if not fraud_days:
            return float(self.keep_days)
        return float(min(max(today - max(fraud_days), 0), self.keep_days))

    def _fraud_run(self, days: list, today: int) -> float:
        # The day one delay back is labelled only up to the current time of
        # day, so its later transactions would look genuine: leave it out.
        last_labelled = today - self.label_delay_days - 1
        run = 0
        for day, count, frauds in reversed(days):
            if day > last_labelled:
                continue
            if frauds < count:
                break
            run += count
        return float(run)

    def add_feedback(self, state: tuple | None, event_time_ms: int, known_at_ms: int):
        """Record that a past transaction of this terminal was fraudulent.

        The label counts from ``known_at_ms`` on: it is applied by the first
        update at or after that time, whatever order the feedback and the
        transactions arrive in.
        """
        days, pending = state if state is not None else self.empty()
        pending = pending + [(known_at_ms, day_of(event_time_ms))]
        if len(pending) > MAX_PENDING_LABELS:
            pending = sorted(pending)[-MAX_PENDING_LABELS:]
        return (days, pending)


def _apply_known_labels(days: list, pending: list, now_ms: int):
    still_pending = []
    for known_at, day in pending:
        if known_at > now_ms:
            still_pending.append((known_at, day))
            continue
        for bucket in days:
            if bucket[0] == day:
                bucket[2] += 1
                break
    return days, still_pending


def _day_bucket(buckets: list, day: int, keep_days: int, fresh: list):
    """The bucket of ``day`` in a list of day buckets sorted by day.

    Buckets ``keep_days`` or more behind the newest day are dropped; a
    missing bucket is added as ``fresh``. Returns ``(buckets, bucket)``, the
    bucket None when ``day`` itself is out of the horizon.
    """
    newest = max(day, buckets[-1][0]) if buckets else day
    if day <= newest - keep_days:
        return buckets, None  # older than every window: nothing to record
    buckets = [b for b in buckets if b[0] > newest - keep_days]
    for bucket in buckets:
        if bucket[0] == day:
            return buckets, bucket
    bisect.insort(buckets, fresh)
    return buckets, fresh


def _add_to_day(days: list, day: int, amount: float, keep_days: int) -> list:
    """Add one amount to its card day bucket: count, sum, sum of squares."""
    days, bucket = _day_bucket(days, day, keep_days, [day, 0, 0.0, 0.0])
    if bucket is not None:
        bucket[1] += 1
        bucket[2] += amount
        bucket[3] += amount * amount
    return days


def _count_in_day(days: list, day: int, keep_days: int) -> list:
    """Count one event in its terminal day bucket: count, known frauds."""
    days, bucket = _day_bucket(days, day, keep_days, [day, 0, 0])
    if bucket is not None:
        bucket[1] += 1
    return days


def _add_peak(peaks: list, day: int, ratio: float) -> list:
    """Raise the day's peak ratio to ``ratio``; drop days out of the window."""
    peaks, bucket = _day_bucket(peaks, day, PEAK_WINDOW_DAYS, [day, ratio])
    if bucket is not None:
        bucket[1] = max(bucket[1], ratio)
    return peaks


def _window_peak(peaks: list, today: int) -> float:
    """Highest ratio of the window ending today; 1.0 (neutral) without any."""
    inside = [r for day, r in peaks if today - PEAK_WINDOW_DAYS < day <= today]
    return max(inside, default=1.0)


def _median(values: Sequence[float]) -> float:
    """Median of ``values``; 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2.0


def _recent_keys(last_days: dict, today: int, limit: int) -> dict:
    """Keys seen in the last 30 days, at most ``limit`` of them, newest kept."""
    kept = {k: d for k, d in last_days.items() if today - d < 30}
    if len(kept) > limit:
        newest = sorted(kept.items(), key=lambda item: item[1])
        kept = dict(newest[-limit:])
    return kept


def _long_window(days: list, today: int, length: int) -> tuple[int, float, float]:
    count = total = squares = 0
    for day, c, s, q in days:
        if today - length < day <= today:
            count += c
            total += s
            squares += q
    return count, total, squares


def _terminal_window(days: list, today: int, length: int, shift: int):
    count = frauds = 0
    last = today - shift
    for day, c, f in days:
        if last - length < day <= last:
            count += c
            frauds += f
    return count, frauds


def _std(count: float, total: float, squares: float) -> float:
    if count < 2:
        return 0.0
    variance = (squares - total * total / count) / (count - 1)
    return math.sqrt(variance) if variance > 0 else 0.0


def feature_vector(features: dict[str, float], names: Sequence[str] = FEATURE_NAMES):
    """The features in model order, as a list of floats."""
    return [float(features[name]) for name in names]
