import numpy as np
import pandas as pd

from training.tracking import reference_distributions
from txwatch.drift import hourly_drift
from udfs.drift import DRIFT_THRESHOLD, Reference, psi


def test_psi_is_near_zero_for_the_same_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(11)
    reference = reference_distributions(rng.normal(size=(20_000, 1)), ["x"])[
        "features"
    ]["x"]
    same = psi(reference["cuts"], reference["proportions"], rng.normal(size=5_000))
    small = psi(reference["cuts"], reference["proportions"], rng.normal(0.3, 1, 5_000))
    large = psi(reference["cuts"], reference["proportions"], rng.normal(1.5, 1, 5_000))
    assert same < 0.02 < small < DRIFT_THRESHOLD < large


def test_hourly_drift_rises_when_the_data_shifts():
    rng = np.random.default_rng(5)
    training = np.column_stack([rng.gamma(2.0, 30.0, 50_000), rng.uniform(size=50_000)])
    reference = Reference(
        "v1", reference_distributions(training, ["amount", "score"])["features"]
    )
    hours = pd.date_range("2018-07-01", periods=6, freq="h", tz="UTC")
    frames = []
    for i, hour in enumerate(hours):
        scale = 30.0 if i < 3 else 90.0  # amounts triple from the fourth hour on
        frames.append(
            pd.DataFrame(
                {
                    "hour": hour,
                    "amount": rng.gamma(2.0, scale, 2_000),
                    "score": rng.uniform(size=2_000),
                }
            )
        )
    metrics = hourly_drift(pd.concat(frames), reference)
    amount = metrics[metrics["feature"] == "amount"].set_index("window_start")["psi"]
    score = metrics[metrics["feature"] == "score"]["psi"]
    assert (amount.iloc[:3] < 0.05).all() and (amount.iloc[3:] > DRIFT_THRESHOLD).all()
    assert (score < 0.05).all()
    assert set(metrics["rows"]) == {2_000}


def test_hours_with_too_few_rows_are_skipped():
    reference = Reference(
        "v1", reference_distributions(np.arange(100.0)[:, None], ["a"])["features"]
    )
    rows = pd.DataFrame({"hour": pd.Timestamp("2018-07-01", tz="UTC"), "a": [1.0, 2.0]})
    assert hourly_drift(rows, reference).empty
