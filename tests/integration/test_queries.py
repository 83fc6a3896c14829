"""The ready queries on a realistic sample, run as the analyst role."""

from __future__ import annotations

import json
import logging
import time
from datetime import date, datetime, timedelta, timezone

import conftest_db
import pytest
import yaml
from conftest_db import SAMPLE, TRANSACTIONS_PER_DAY

from txwatch.config import DEFAULT_CONFIG
from txwatch.queries import (
    QueryError,
    list_queries,
    load_query,
    main_queries,
    run_query,
)

pytestmark = pytest.mark.integration

# Fixtures from conftest_db, so that this module runs on its own too.
pg_admin = conftest_db.pg_admin
sample_db = conftest_db.sample_db
throwaway_db = conftest_db.throwaway_db
migrated_db = conftest_db.migrated_db
logger = logging.getLogger(__name__)

REQUIRED = {
    "card_timeline": {"card_id": SAMPLE.risky_card},
    "terminal_hourly": {"terminal_id": SAMPLE.risky_terminal},
}


@pytest.fixture(scope="module")
def analyst(pg_admin, sample_db):
    """An administrator connection acting as the analyst role."""
    conn = pg_admin.connect(sample_db.database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET ROLE analyst")
    yield conn
    conn.close()


def rows_as_dicts(columns, rows) -> list[dict]:
    return [dict(zip(columns, row, strict=True)) for row in rows]


def query(conn, name, **params) -> list[dict]:
    return rows_as_dicts(*run_query(conn, name, params))


@pytest.mark.parametrize("name", [q.name for q in list_queries()])
def test_every_ready_query_answers_on_the_sample(analyst, name):
    started = time.perf_counter()
    columns, rows = run_query(analyst, name, REQUIRED.get(name, {}))
    elapsed = time.perf_counter() - started

    logger.info("query %s: %d rows in %.1f ms", name, len(rows), elapsed * 1000)
    assert columns and rows, name
    assert elapsed < 5, f"{name} took {elapsed:.1f}s on a few thousand rows"


def test_query_files_state_their_question_and_parameters():
    for ready in list_queries():
        assert ready.question.endswith((".", "?", ")")), ready.name
        for parameter in ready.parameters:
            assert parameter.description, (ready.name, parameter.name)


def test_riskiest_terminal_of_the_latest_day_is_the_compromised_one(analyst):
    rows = query(analyst, "riskiest_terminals")

    assert rows[0]["day"] == SAMPLE.last_day
    assert rows[0]["terminal_id"] == SAMPLE.risky_terminal
    assert rows[0]["alerts"] > 3 * rows[1]["alerts"]
    assert rows[0]["confirmed_fraud"] > 0
    assert [r["alerts"] for r in rows] == sorted(
        (r["alerts"] for r in rows), reverse=True
    )


def test_riskiest_terminals_of_an_earlier_day_do_not_single_it_out(analyst):
    rows = query(analyst, "riskiest_terminals", day=SAMPLE.first_day.isoformat(), top=5)

    assert len(rows) == 5
    assert {r["day"] for r in rows} == {SAMPLE.first_day}
    assert rows[0]["alerts"] <= 4


def test_riskiest_card_is_the_card_under_attack(analyst):
    rows = query(analyst, "riskiest_cards", top=3)

    assert rows[0]["card_id"] == SAMPLE.risky_card
    assert rows[0]["terminals"] >= 10
    assert rows[0]["rule_hits"] >= 12


def test_card_timeline_is_ordered_and_carries_reasons_rule_hits_and_labels(analyst):
    rows = query(analyst, "card_timeline", card_id=SAMPLE.risky_card)

    times = [r["event_time"] for r in rows]
    assert times == sorted(times)
    assert {r["event_time"].date() for r in rows} >= {SAMPLE.last_day}
    alerted = [r for r in rows if r["is_alert"]]
    assert alerted and all(r["reasons"] for r in alerted)
    assert (
        sum("card-velocity [active, medium]" in (r["rule_hits"] or "") for r in rows)
        == 12
    )
    assert any(r["fraud_known_at"] for r in rows)
    assert all(r["reasons"] is None for r in rows if not r["is_alert"])


def test_card_timeline_needs_a_card():
    with pytest.raises(QueryError, match="card_id"):
        load_query("card_timeline").bind({})


def test_card_timeline_window_can_be_narrowed(analyst):
    since = datetime(2024, 5, 3, 14, tzinfo=timezone.utc)
    rows = query(
        analyst,
        "card_timeline",
        card_id=SAMPLE.risky_card,
        since=since.isoformat(),
        until=(since + timedelta(hours=1)).isoformat(),
    )

    assert sum("burst" in r["transaction_id"] for r in rows) == 12
    assert all(since <= r["event_time"] <= since + timedelta(hours=1) for r in rows)


def test_detector_precision_ranks_the_model_and_rules_against_labels(analyst):
    rows = {
        (r["kind"], r["detector"], r["mode"]): r
        for r in query(analyst, "detector_precision")
    }

    model = rows[("model", SAMPLE.model_version, "active")]
    precise = rows[("rule", SAMPLE.precise_rule, "active")]
    noisy = rows[("rule", SAMPLE.noisy_rule, "shadow")]
    combined = rows[("combined", "model or active rule", "active")]
    assert model["precision"] > 0.5
    assert model["recall"] > 0.8
    assert precise["precision"] > 5 * noisy["precision"]
    assert combined["recall"] >= model["recall"]
    for row in rows.values():
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
        assert row["confirmed_fraud"] <= row["hits"]


def test_alerts_per_hour_lists_every_hour_and_adds_up(analyst):
    rows = query(analyst, "alerts_per_hour")

    assert len(rows) == 24
    assert rows[0]["hour"] == datetime(2024, 5, 3, tzinfo=timezone.utc)
    assert sum(r["transactions"] for r in rows) == TRANSACTIONS_PER_DAY + 12
    busiest = max(rows, key=lambda r: r["alerts"])
    assert busiest["hour"].hour == 14  # the card burst


def test_score_drift_shows_daily_quantiles_and_the_drifting_feature(analyst):
    rows = query(analyst, "score_drift")

    assert [r["day"] for r in rows] == [
        SAMPLE.first_day + timedelta(days=i) for i in range(3)
    ]
    for r in rows:
        quantiles = [
            r[k]
            for k in (
                "p05_score",
                "p25_score",
                "median_score",
                "p75_score",
                "p95_score",
                "p99_score",
            )
        ]
        assert quantiles == sorted(quantiles)
    assert rows[-1]["max_psi"] > 0.25
    assert rows[-1]["most_drifted_feature"] == SAMPLE.drifting_feature
    assert rows[-1]["alert_rate"] > rows[0]["alert_rate"]


def test_feature_drift_puts_the_drifting_feature_first(analyst):
    rows = query(analyst, "feature_drift")

    assert rows[0]["feature"] == SAMPLE.drifting_feature
    assert rows[0]["level"] == "major"
    assert rows[0]["previous_psi"] < rows[0]["psi"]
    assert {r["level"] for r in rows[1:]} == {"stable"}


def test_open_alerts_are_unlabelled_and_riskiest_first(analyst, pg_admin, sample_db):
    rows = query(analyst, "open_alerts", days=3, top=500)

    conn = pg_admin.connect(sample_db.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT transaction_id FROM fraud_labels")
            labelled = {r[0] for r in cur.fetchall()}
    finally:
        conn.close()
    assert rows
    assert not labelled & {r["transaction_id"] for r in rows}
    risks = [r["risk"] for r in rows]
    assert risks == sorted(risks, reverse=True)
    assert all(r["reasons"] for r in rows)


def test_model_versions_join_the_registry_with_usage(analyst):
    rows = {r["version"]: r for r in query(analyst, "model_versions")}

    used = rows[SAMPLE.model_version]
    assert used["alias"] == "champion"
    assert used["transactions"] == 3 * TRANSACTIONS_PER_DAY + 12
    assert 0 < used["alert_rate"] < 0.1
    assert rows[SAMPLE.challenger_version]["transactions"] == 0


def test_champion_vs_challenger_compares_both_on_the_shadow_scored_rows(
    analyst, pg_admin, sample_db
):
    rows = query(analyst, "champion_vs_challenger")

    assert [(r["role"], r["version"], r["compared_with"]) for r in rows] == [
        ("champion", SAMPLE.model_version, SAMPLE.challenger_version),
        ("challenger", SAMPLE.challenger_version, SAMPLE.model_version),
    ]
    champion, challenger = rows
    # Only the last day was shadow scored, and both see the same rows and frauds.
    assert champion["transactions"] == challenger["transactions"]
    assert champion["transactions"] == TRANSACTIONS_PER_DAY + 12
    assert champion["frauds"] == challenger["frauds"] > 0
    # The sample's challenger separates fraud from genuine further.
    assert challenger["precision"] > champion["precision"]
    assert challenger["recall"] >= champion["recall"] - 0.02
    assert challenger["mean_score_fraud"] > champion["mean_score_fraud"]
    assert challenger["alerts_only_here"] < champion["alerts_only_here"]

    # Each count is recomputed here from the rows themselves.
    conn = pg_admin.connect(sample_db.database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE s.is_alert),"
                " count(*) FILTER (WHERE s.challenger_alert),"
                " count(*) FILTER (WHERE s.challenger_alert AND f.transaction_id"
                " IS NOT NULL)"
                " FROM scored_transactions s LEFT JOIN fraud_labels f"
                " ON f.transaction_id = s.transaction_id"
                " AND f.event_time = s.event_time"
                " WHERE s.challenger_version IS NOT NULL"
            )
            alerts, challenger_alerts, challenger_hits = cur.fetchone()
    finally:
        conn.close()
    assert champion["alerts"] == alerts
    assert challenger["alerts"] == challenger_alerts
    assert challenger["confirmed_alerts"] == challenger_hits


def test_champion_vs_challenger_is_empty_before_the_shadow_scored_day(analyst):
    rows = query(
        analyst,
        "champion_vs_challenger",
        until=datetime(2024, 5, 2, 23, tzinfo=timezone.utc).isoformat(),
    )
    assert rows == []


def test_terminal_hourly_reads_the_hourly_aggregate(analyst):
    rows = query(analyst, "terminal_hourly", terminal_id=SAMPLE.risky_terminal, days=7)
    base = query(analyst, "riskiest_terminals", top=1)[0]

    last_day = [r for r in rows if r["hour"].date() == SAMPLE.last_day]
    assert sum(r["alerts"] for r in last_day) == base["alerts"]
    assert sum(r["transactions"] for r in last_day) == base["transactions"]
    assert all(r["p95_score"] <= r["max_score"] for r in rows)


def test_label_delay_is_within_the_sample_range(analyst):
    rows = query(analyst, "label_delay")

    assert [r["day"] for r in rows] == [
        SAMPLE.first_day + timedelta(days=i) for i in range(3)
    ]
    for r in rows:
        assert (
            2
            <= r["median_delay_hours"]
            <= r["p90_delay_hours"]
            <= r["max_delay_hours"]
            <= 96
        )


def test_parameters_are_bound_not_pasted(analyst):
    rows = query(analyst, "card_timeline", card_id="x' OR '1'='1")

    assert rows == []


def test_bad_parameters_name_the_parameter():
    ready = load_query("riskiest_terminals")
    with pytest.raises(QueryError, match="'day'"):
        ready.bind({"day": "yesterday"})
    with pytest.raises(QueryError, match="no parameter"):
        ready.bind({"colour": "red"})
    with pytest.raises(QueryError, match="zone offset"):
        load_query("card_timeline").bind({"card_id": "c", "since": "2024-05-01T00:00"})
    with pytest.raises(QueryError, match="no ready query"):
        load_query("drop_everything")
    assert ready.bind({"day": date(2024, 5, 1)}) == {"day": date(2024, 5, 1), "top": 20}


def test_cli_lists_and_runs_queries_as_the_analyst(sample_db, tmp_path, capsys):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["postgres"]["database"] = sample_db.database
    config = tmp_path / "txwatch.yaml"
    config.write_text(yaml.safe_dump(raw))

    assert main_queries(["--list"]) == 0
    listing = capsys.readouterr().out
    assert all(q.name in listing for q in list_queries())

    code = main_queries(
        [
            "riskiest_terminals",
            "--param",
            "top=3",
            "--format",
            "json",
            "--config",
            str(config),
        ]
    )
    assert code == 0, "the analyst role must log in with TXWATCH_ANALYST_PASSWORD"
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 3
    assert records[0]["terminal_id"] == SAMPLE.risky_terminal

    assert main_queries(["card_timeline", "--config", str(config)]) == 2
    assert "card_id" in capsys.readouterr().err


def test_open_alerts_put_the_most_probable_fraud_first(pg_admin, migrated_db):
    conn = pg_admin.connect(migrated_db.database)
    start = datetime(2018, 7, 1, tzinfo=timezone.utc)
    # (id, fraud probability, anomaly risk): the last one is from a model
    # without a supervised stage.
    alerts = [("a", 0.55, 0.99), ("b", 0.97, 0.10), ("c", 0.80, 0.50), ("d", None, 1.0)]
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT txwatch_ensure_partitions(%s, %s)", (start.date(),) * 2)
            for i, (tx, probability, risk) in enumerate(alerts):
                cur.execute(
                    "INSERT INTO alerts (transaction_id, event_time, card_id,"
                    " terminal_id, amount, score, risk, model_version,"
                    " fraud_probability) VALUES (%s, %s, 'c1', 't1', 10, 0.7, %s,"
                    " 'm1', %s)",
                    (tx, start + timedelta(minutes=i), risk, probability),
                )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET ROLE analyst")
        rows = query(conn, "open_alerts", days=1, top=10)
    finally:
        conn.close()

    assert [r["transaction_id"] for r in rows] == ["b", "c", "a", "d"]
    assert rows[0]["fraud_probability"] == pytest.approx(0.97)
