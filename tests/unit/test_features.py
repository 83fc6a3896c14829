import pickle

import numpy as np
import pytest

from training.dataset import compute_features
from udfs.features import (
    DEDUP_DAYS,
    FEATURE_NAMES,
    MS_PER_DAY,
    MS_PER_HOUR,
    MS_PER_MINUTE,
    CardFeatures,
    TerminalFeatures,
    calendar_flags,
)

T0 = 1_530_403_200_000  # 2018-07-01T00:00:00Z, a Sunday


def run_card(events, terminal="t1"):
    state, out = None, []
    for i, (t, amount) in enumerate(events):
        update, state = CardFeatures.update(state, f"tx{i}", t, amount, terminal)
        out.append(update.features)
    return out, state


def test_short_windows_are_sliding_and_include_the_current_event():
    events = [
        (T0, 10.0),
        (T0 + 5 * MS_PER_MINUTE, 20.0),
        (T0 + 11 * MS_PER_MINUTE, 30.0),
    ]
    out, _ = run_card(events)
    assert out[1]["c_count_10m"] == 2
    assert out[2]["c_count_10m"] == 2  # the first event is 11 minutes old
    assert out[2]["c_count_1h"] == 3
    assert out[2]["c_sum_1h"] == 60.0
    assert out[2]["c_mean_1d"] == 20.0


def test_long_windows_are_calendar_days():
    events = [(T0 - 6 * MS_PER_DAY, 100.0), (T0 - 7 * MS_PER_DAY, 50.0), (T0, 10.0)]
    events.sort()
    out, _ = run_card(events)
    last = out[-1]
    assert last["c_count_7d"] == 2  # day -7 is outside days -6..0
    assert last["c_count_30d"] == 3
    assert last["c_mean_30d"] == pytest.approx(160.0 / 3)


def test_ratio_compares_with_history_before_the_transaction():
    events = [(T0 + i * MS_PER_DAY, 20.0) for i in range(5)] + [
        (T0 + 5 * MS_PER_DAY, 100.0)
    ]
    out, _ = run_card(events)
    assert out[0]["c_amount_ratio_30d"] == 1.0  # no history: neutral
    assert out[-1]["c_amount_ratio_30d"] == pytest.approx(5.0)
    assert out[-1]["c_amount_zscore_30d"] == 0.0  # constant history has no spread


def test_median_ratio_keeps_its_baseline_while_a_card_spends_more_than_usual():
    # Ten days of 20.0, then a compromised card paying five times that.
    events = [(T0 + i * MS_PER_DAY, 20.0) for i in range(10)]
    events += [(T0 + (10 + i) * MS_PER_DAY, 100.0) for i in range(4)]
    out, _ = run_card(events)
    assert out[0]["c_amount_median_ratio"] == 1.0  # no history: neutral
    last = out[-1]
    assert last["c_amount_median_ratio"] == pytest.approx(5.0)
    # the mean has already moved towards the frauds
    assert last["c_amount_ratio_30d"] < 3.5


def test_median_ratio_follows_only_the_last_amounts():
    events = [(T0 + i * MS_PER_MINUTE, 10.0) for i in range(30)]
    events += [(T0 + (30 + i) * MS_PER_MINUTE, 40.0) for i in range(30)]
    events.append((T0 + 60 * MS_PER_MINUTE, 40.0))
    out, _ = run_card(events)
    assert out[-1]["c_amount_median_ratio"] == pytest.approx(1.0)


def test_peak_ratio_marks_a_card_for_the_seven_day_window():
    events = [(T0 + i * MS_PER_HOUR, 20.0) for i in range(5)]
    events.append((T0 + MS_PER_DAY, 120.0))
    events += [(T0 + (1 + d) * MS_PER_DAY + MS_PER_HOUR, 20.0) for d in range(8)]
    out, _ = run_card(events)
    assert out[5]["c_peak_median_ratio_7d"] == 1.0  # not its own peak
    assert out[6]["c_peak_median_ratio_7d"] == pytest.approx(6.0)  # same day
    assert out[12]["c_peak_median_ratio_7d"] == pytest.approx(6.0)  # day 7: last
    assert out[13]["c_peak_median_ratio_7d"] == 1.0  # day 8: out of the window


def test_a_state_written_without_ids_and_amount_history_is_taken_up():
    _, state = run_card([(T0, 10.0), (T0 + MS_PER_HOUR, 10.0)])
    legacy = state[:4]
    repeat = legacy[0][0][2]  # an id of the card's last day
    update, _ = CardFeatures.update(legacy, repeat, T0, 10.0, "t1")
    assert update.duplicate
    update, upgraded = CardFeatures.update(
        legacy, "next", T0 + 2 * MS_PER_HOUR, 30.0, "t1"
    )
    assert update.features["c_count_1d"] == 3
    assert update.features["c_amount_median_ratio"] == 1.0
    assert upgraded[5] == [30.0]
    assert repeat in upgraded[4] and "next" in upgraded[4]


def test_time_since_previous_is_capped_and_never_negative():
    out, _ = run_card([(T0, 1.0), (T0 + 90_000, 1.0), (T0 + 10_000, 1.0)])
    assert out[0]["c_secs_since_prev"] == 30 * 24 * 3600
    assert out[1]["c_secs_since_prev"] == 90.0
    assert out[2]["c_secs_since_prev"] == 0.0  # out of order


def test_a_repeated_transaction_id_is_a_duplicate_and_leaves_state_unchanged():
    update, state = CardFeatures.update(None, "a", T0, 5.0, "t")
    again, same = CardFeatures.update(state, "a", T0 + 1000, 5.0, "t")
    assert not update.duplicate and again.duplicate
    assert pickle.dumps(same) == pickle.dumps(state)


def test_card_state_stays_bounded_on_a_busy_card():
    state = None
    for i in range(20_000):
        _, state = CardFeatures.update(
            state, i, T0 + i * 10 * MS_PER_MINUTE, 1.0, i % 500
        )
    recent, days, _, terminals, seen, amounts, peaks = state
    assert len(days) <= 30
    assert len(terminals) <= 200
    assert len(amounts) <= 30
    assert len(peaks) <= 7
    assert len(recent) <= 24 * 6 + 1
    assert len(seen) <= (DEDUP_DAYS + 1) * 24 * 6
    assert len(pickle.dumps(state)) < 200_000


def test_a_repeated_id_is_a_duplicate_even_after_newer_and_late_transactions():
    state = None
    late = T0 + 10 * MS_PER_DAY - 2 * MS_PER_DAY
    for tx, when in [("a", T0), ("b", T0 + 10 * MS_PER_DAY), ("c", late)]:
        update, state = CardFeatures.update(state, tx, when, 5.0, 1)
        assert not update.duplicate
    for tx, when in [("a", T0), ("c", late)]:
        update, after = CardFeatures.update(state, tx, when, 5.0, 1)
        assert update.duplicate and after is state


def test_ids_are_forgotten_past_the_deduplication_horizon():
    _, state = CardFeatures.update(None, "a", T0, 5.0, 1)
    later = T0 + (DEDUP_DAYS + 2) * MS_PER_DAY
    _, state = CardFeatures.update(state, "b", later, 5.0, 1)
    update, _ = CardFeatures.update(state, "a", later, 5.0, 1)
    assert not update.duplicate


def test_terminal_risk_uses_only_labels_known_after_the_delay():
    terminals = TerminalFeatures(label_delay_days=7)
    state = None
    _, state = terminals.update(state, T0)
    state = terminals.add_feedback(state, T0, T0 + 7 * MS_PER_DAY)
    features, state = terminals.update(state, T0 + 6 * MS_PER_DAY)
    assert features["t_risk_7d"] == 0.0  # not known yet
    features, state = terminals.update(state, T0 + 7 * MS_PER_DAY)
    assert features["t_risk_7d"] == 1.0  # day 0 alone in days -6..0 shifted by 7
    assert features["t_risk_30d"] == 1.0


def test_days_since_fraud_counts_from_the_last_known_fraud():
    terminals = TerminalFeatures(label_delay_days=7)
    features, state = terminals.update(None, T0)
    assert features["t_days_since_fraud"] == 37.0  # none known: the whole horizon
    state = terminals.add_feedback(state, T0, T0 + 7 * MS_PER_DAY)
    features, state = terminals.update(state, T0 + 6 * MS_PER_DAY)
    assert features["t_days_since_fraud"] == 37.0  # not known yet
    features, state = terminals.update(state, T0 + 7 * MS_PER_DAY)
    assert features["t_days_since_fraud"] == 7.0
    _, state = terminals.update(state, T0 + 3 * MS_PER_DAY)  # a later fraud
    state = terminals.add_feedback(state, T0 + 3 * MS_PER_DAY, T0 + 10 * MS_PER_DAY)
    features, state = terminals.update(state, T0 + 12 * MS_PER_DAY)
    assert features["t_days_since_fraud"] == 9.0
    features, _ = terminals.update(state, T0 + 40 * MS_PER_DAY)
    assert features["t_days_since_fraud"] == 37.0  # both out of the horizon


def test_fraud_run_counts_the_latest_days_of_nothing_but_known_fraud():
    terminals = TerminalFeatures(label_delay_days=7)
    state = None
    for day, frauds in [(0, 0), (1, 1), (2, 2), (4, 1)]:
        for i in range(2 if day != 4 else 1):
            when = T0 + day * MS_PER_DAY + i * MS_PER_HOUR
            _, state = terminals.update(state, when)
            if i < frauds:
                state = terminals.add_feedback(state, when, when + 7 * MS_PER_DAY)
    features, state = terminals.update(state, T0 + 11 * MS_PER_DAY)
    assert features["t_fraud_run"] == 2.0  # day 2; day 4 is not all labelled yet
    features, state = terminals.update(state, T0 + 12 * MS_PER_DAY)
    assert features["t_fraud_run"] == 3.0  # days 4 and 2 (3 is empty); 1 is mixed
    _, state = terminals.update(state, T0 + 5 * MS_PER_DAY)  # a genuine one, late
    features, _ = terminals.update(state, T0 + 13 * MS_PER_DAY)
    assert features["t_fraud_run"] == 0.0


def test_a_terminal_is_new_to_a_card_until_used_and_again_after_30_days():
    state = None
    flags = []
    for i, (t, terminal) in enumerate(
        [
            (T0, "a"),
            (T0 + MS_PER_DAY, "a"),
            (T0 + 2 * MS_PER_DAY, "b"),
            (T0 + 40 * MS_PER_DAY, "a"),
        ]
    ):
        update, state = CardFeatures.update(state, i, t, 1.0, terminal)
        flags.append(update.features["c_new_terminal"])
    assert flags == [1.0, 0.0, 1.0, 1.0]


def test_calendar_flags_are_utc():
    assert calendar_flags(T0) == (1.0, 1.0)  # Sunday midnight
    assert calendar_flags(T0 + MS_PER_DAY + 12 * 3_600_000) == (0.0, 0.0)  # Monday noon


def test_offline_features_are_finite_on_real_data(april_frame):
    matrix, duplicates, _ = compute_features(april_frame)
    assert not duplicates.any()
    assert matrix.shape == (len(april_frame), len(FEATURE_NAMES))
    assert np.isfinite(matrix).all()


def test_offline_features_continue_across_frames(april_frame):
    whole, _, _ = compute_features(april_frame)
    half = len(april_frame) // 2
    first, _, store = compute_features(april_frame.iloc[:half])
    second, _, _ = compute_features(april_frame.iloc[half:], store=store)
    assert np.array_equal(np.vstack([first, second]), whole)


def test_feature_names_are_unique():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
