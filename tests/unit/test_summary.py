from txwatch.summary import RunSummary


def summary(**extra) -> RunSummary:
    return RunSummary(
        read=110,
        scored_rows=100,
        dead_lettered=10,
        dead_letter_reasons={"malformed_json": 10},
        alerts_table=3,
        alerts_kafka=3,
        duplicate_alerts_kafka=0,
        late_rows=0,
        **extra,
    )


def test_the_summary_prints_the_drift_of_each_period_side_by_side():
    text = summary(
        drift={
            "amount": {
                "July median": 0.0266,
                "July max": 0.1943,
                "July hours > 0.25": 0.0,
                "July hours": 744.0,
                "2018-08-01 shifted median": 0.6631,
                "2018-08-01 shifted max": 0.9796,
                "2018-08-01 shifted hours > 0.25": 24.0,
                "2018-08-01 shifted hours": 24.0,
            },
            "t_risk_1d": {"July median": 0.01, "July max": 0.02},
        }
    ).render()

    lines = text.splitlines()
    header = next(line for line in lines if "feature" in line)
    assert "July" in header and "2018-08-01 shifted" in header
    amount = next(line for line in lines if line.strip().startswith("amount"))
    assert "0.027 / 0.194  0/744h" in amount and "0.663 / 0.980  24/24h" in amount
    risk = next(line for line in lines if line.strip().startswith("t_risk_1d"))
    assert risk.rstrip().endswith("-")  # no value for the shifted day


def test_without_drift_the_summary_has_no_drift_section():
    assert "drift" not in summary().render()
    assert summary().accounted
