"""Throwaway PostgreSQL databases for tests, and a small realistic sample.

Fixtures (import them into a conftest or a test module):

``pg_admin``
    Connection settings from ``txwatch.config.load()`` and the administrator
    password from ``TXWATCH_ADMIN_PASSWORD``; fails, never skips, when the
    password is missing.
``throwaway_db``
    A factory: ``throwaway_db()`` creates an empty database with a unique name
    and returns its ``PostgresSettings``; every database it made is dropped at
    the end of the test.
``fresh_db``
    One empty throwaway database.
``migrated_db``
    One throwaway database with every migration applied (plain PostgreSQL path).
``sample_db``
    A migrated database filled by ``fill_sample`` (module scope, read-only
    use): three UTC days of scored transactions with one compromised terminal,
    one card under attack, alerts with reasons, rule hits, confirmed fraud,
    drift metrics, a model registry and, on the last day, a challenger's shadow
    scores. ``SAMPLE`` says what is in it.

Migrations are applied without role passwords: the roles ``txwatch_writer``
and ``analyst`` belong to the whole server, and tests act as them with
``SET ROLE`` on an administrator connection instead of logging in.
"""

from __future__ import annotations

import json
import math
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone

import pytest
from psycopg2 import sql as pgsql
from psycopg2.extras import execute_values

from txwatch import db
from txwatch.config import PostgresSettings, load
from udfs.features import FEATURE_NAMES

UTC = timezone.utc


@dataclass(frozen=True)
class Admin:
    """Where the server is and how to act on it as administrator."""

    settings: PostgresSettings
    password: str

    def connect(self, database: str | None = None):
        return db.connect(
            self.settings, self.settings.admin_user, self.password, database=database
        )


@pytest.fixture(scope="session")
def pg_admin() -> Admin:
    password = os.environ.get("TXWATCH_ADMIN_PASSWORD")
    if not password:
        pytest.fail(
            "TXWATCH_ADMIN_PASSWORD is not set; load it first: "
            "set -a; . .run/secrets.env; set +a"
        )
    return Admin(load().postgres, password)


def create_database(admin: Admin, prefix: str = "txwatch_test") -> PostgresSettings:
    """Create an empty database with a unique name; its settings."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = admin.connect(database="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    finally:
        conn.close()
    return replace(admin.settings, database=name)


def drop_database(admin: Admin, settings: PostgresSettings) -> None:
    conn = admin.connect(database="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    pgsql.Identifier(settings.database)
                )
            )
    finally:
        conn.close()


@pytest.fixture
def throwaway_db(pg_admin) -> Iterator:
    made: list[PostgresSettings] = []

    def make() -> PostgresSettings:
        made.append(create_database(pg_admin))
        return made[-1]

    yield make
    for settings in made:
        drop_database(pg_admin, settings)


@pytest.fixture
def fresh_db(throwaway_db) -> PostgresSettings:
    return throwaway_db()


@pytest.fixture
def migrated_db(pg_admin, throwaway_db) -> PostgresSettings:
    settings = throwaway_db()
    db.migrate(settings, pg_admin.password, {}, force_postgres=True)
    return settings


@pytest.fixture(scope="module")
def sample_db(pg_admin) -> Iterator[PostgresSettings]:
    settings = create_database(pg_admin)
    try:
        db.migrate(settings, pg_admin.password, {}, force_postgres=True)
        conn = pg_admin.connect(settings.database)
        try:
            fill_sample(conn)
        finally:
            conn.close()
        yield settings
    finally:
        drop_database(pg_admin, settings)


# --- the sample ---------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """What ``fill_sample`` puts in a database, for assertions."""

    first_day: date
    last_day: date
    model_version: str
    threshold: float
    risky_terminal: str  # compromised on the last day: most alerts and fraud
    risky_card: str  # a burst of fraud on the last day, across terminals
    drifting_feature: str  # shifted on the last day; highest PSI there
    precise_rule: str  # fires mostly on fraud
    noisy_rule: str  # shadow rule that fires at random
    challenger_version: str  # shadow scores on the last day; separates better
    challenger_threshold: float


SAMPLE = Sample(
    first_day=date(2024, 5, 1),
    last_day=date(2024, 5, 3),
    model_version="if-2024.04.2",
    threshold=0.55,
    risky_terminal="T0007",
    risky_card="C00042",
    drifting_feature="amount",
    precise_rule="card-velocity",
    noisy_rule="night-owl",
    challenger_version="if-2024.05.1",
    challenger_threshold=0.6,
)

TERMINALS = [f"T{i:04d}" for i in range(30)]
CARDS = [f"C{i:05d}" for i in range(240)]
TRANSACTIONS_PER_DAY = 2_000
BASE_FRAUD_RATE = 0.004
RISKY_TERMINAL_FRAUD_RATE = 0.45
RISKY_CARD_BURST = 12


def _risk(score: float) -> float:
    return 1.0 / (1.0 + math.exp(-(score - 0.47) * 30.0))


def _features(rng: random.Random, amount: float, when: datetime, fraud: bool) -> dict:
    values = {name: round(rng.uniform(0.0, 5.0), 4) for name in FEATURE_NAMES}
    values["amount"] = amount
    values["is_night"] = float(when.hour < 6)
    values["is_weekend"] = float(when.weekday() >= 5)
    values["c_count_1d"] = float(rng.randint(1, 4) + (6 if fraud else 0))
    values["t_risk_7d"] = round(rng.uniform(0.0, 0.02) + (0.3 if fraud else 0.0), 4)
    return values


def _rule_hits(
    rng: random.Random, amount: float, fraud: bool, burst: bool, night: bool
) -> list[dict]:
    hits = []
    if amount >= 220:
        hits.append(
            ("large-amount", 1, "high", "active", f"amount {amount:.2f} >= 220")
        )
    if burst:
        hits.append(
            ("card-velocity", 2, "medium", "active", "6 transactions in 10m >= 5")
        )
    if night and rng.random() < 0.25:
        hits.append(("night-owl", 1, "low", "shadow", "payment at night"))
    return [
        {"rule_id": r, "version": v, "severity": s, "mode": m, "reason": why}
        for r, v, s, m, why in hits
    ]


def _reasons(features: dict) -> list[dict]:
    top = sorted(
        ("amount", "c_count_1d", "t_risk_7d"), key=lambda n: -float(features[n])
    )
    return [
        {
            "feature": name,
            "value": features[name],
            "contribution": round(-0.5 + 0.1 * i, 4),
            "text": f"{name} is unusually high ({features[name]})",
        }
        for i, name in enumerate(top)
    ]


def fill_sample(conn, seed: int = 7, labels: bool = True, drift: bool = True) -> Sample:
    """Fill a migrated database with ``SAMPLE``'s three days; commits.

    Genuine scores centre near 0.42 and fraudulent ones near 0.63, so the
    model (threshold 0.55) is good but not perfect. On the last day the
    challenger (threshold 0.6) scores every row in shadow, genuine near 0.40
    and fraud near 0.70: fewer false alerts at the same recall or better. Its
    draws come from a second generator, so the rest of the sample is the same
    with or without it. ``labels=False`` leaves
    ``fraud_labels`` empty and ``drift=False`` leaves ``drift_metrics`` empty,
    to exercise the report's fallbacks.
    """
    rng = random.Random(seed)
    shadow_rng = random.Random(seed + 1)
    scored, alerts, hits, frauds = [], [], [], []
    days = (SAMPLE.last_day - SAMPLE.first_day).days + 1
    for day_index in range(days):
        day = SAMPLE.first_day + timedelta(days=day_index)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        last = day == SAMPLE.last_day
        events = []
        for n in range(TRANSACTIONS_PER_DAY):
            terminal = rng.choice(TERMINALS)
            fraud_rate = BASE_FRAUD_RATE
            if last and terminal == SAMPLE.risky_terminal:
                fraud_rate = RISKY_TERMINAL_FRAUD_RATE
            events.append(
                (
                    f"tx-{day:%Y%m%d}-{n:05d}",
                    start + timedelta(seconds=rng.randrange(86_400)),
                    rng.choice(CARDS),
                    terminal,
                    rng.random() < fraud_rate,
                    False,
                )
            )
        if last:  # the card under attack: a burst around 14:00 on many terminals
            burst_start = start + timedelta(hours=14)
            for n in range(RISKY_CARD_BURST):
                events.append(
                    (
                        f"tx-{day:%Y%m%d}-burst-{n:02d}",
                        burst_start + timedelta(seconds=40 * n),
                        SAMPLE.risky_card,
                        TERMINALS[(3 * n) % len(TERMINALS)],
                        n % 4 != 0,
                        True,
                    )
                )

        for tx_id, when, card, terminal, fraud, burst in events:
            amount = round(
                rng.uniform(150, 400) if fraud else rng.lognormvariate(3.6, 0.7), 2
            )
            if last and not fraud:
                amount = round(amount * 1.8, 2)  # the drift to be found
            score = min(0.99, max(0.3, rng.gauss(0.63 if fraud else 0.42, 0.05)))
            risk = _risk(score)
            features = _features(rng, amount, when, fraud)
            rule_hits = _rule_hits(rng, amount, fraud, burst, when.hour < 6)
            is_alert = score >= SAMPLE.threshold
            late = rng.random() < 0.01
            shadow = (None, None, None)
            if last:
                challenger = min(
                    0.99, max(0.3, shadow_rng.gauss(0.70 if fraud else 0.40, 0.04))
                )
                # Like is_alert in this sample, the score alone decides.
                shadow = (
                    challenger,
                    SAMPLE.challenger_version,
                    challenger >= SAMPLE.challenger_threshold,
                )
            scored.append(
                (
                    tx_id,
                    when,
                    card,
                    terminal,
                    amount,
                    amount,
                    "EUR",
                    late,
                    score,
                    risk,
                    is_alert,
                    SAMPLE.model_version,
                    json.dumps(features),
                    json.dumps(rule_hits),
                    *shadow,
                )
            )
            if is_alert:
                alerts.append(
                    (
                        tx_id,
                        when,
                        card,
                        terminal,
                        amount,
                        score,
                        risk,
                        SAMPLE.model_version,
                        json.dumps(_reasons(features)),
                        json.dumps(rule_hits),
                    )
                )
            for hit in rule_hits:
                hits.append(
                    (
                        tx_id,
                        when,
                        hit["rule_id"],
                        hit["version"],
                        hit["mode"],
                        hit["severity"],
                        hit["reason"],
                        card,
                        terminal,
                    )
                )
            if fraud and labels and rng.random() < 0.9:  # some fraud stays unknown
                known_at = when + timedelta(hours=rng.uniform(2, 96))
                frauds.append((tx_id, when, card, terminal, known_at))

    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT txwatch_ensure_partitions(%s, %s)",
            (SAMPLE.first_day, SAMPLE.last_day),
        )
        execute_values(
            cur,
            "INSERT INTO scored_transactions (transaction_id, event_time, card_id,"
            " terminal_id, amount, original_amount, currency, is_late, score, risk,"
            " is_alert, model_version, features, rule_hits, challenger_score,"
            " challenger_version, challenger_alert) VALUES %s",
            scored,
            page_size=2_000,
        )
        execute_values(
            cur,
            "INSERT INTO alerts (transaction_id, event_time, card_id, terminal_id,"
            " amount, score, risk, model_version, reasons, rule_hits) VALUES %s",
            alerts,
            page_size=2_000,
        )
        execute_values(
            cur,
            "INSERT INTO rule_hits (transaction_id, event_time, rule_id, rule_version,"
            " mode, severity, reason, card_id, terminal_id) VALUES %s",
            hits,
            page_size=2_000,
        )
        if frauds:
            execute_values(
                cur,
                "INSERT INTO fraud_labels (transaction_id, event_time, card_id,"
                " terminal_id, known_at) VALUES %s",
                frauds,
            )
        if drift:
            execute_values(cur, _DRIFT_INSERT, list(_drift_rows(rng, days)))
        cur.execute(
            "INSERT INTO model_versions"
            " (version, alias, registered_at, threshold, notes) VALUES"
            " (%s, 'champion', %s, %s, 'trained on April'),"
            " (%s, 'challenger', %s, %s, 'candidate, shadow scoring')",
            (
                SAMPLE.model_version,
                datetime(2024, 4, 28, tzinfo=UTC),
                SAMPLE.threshold,
                SAMPLE.challenger_version,
                datetime(2024, 5, 2, tzinfo=UTC),
                SAMPLE.challenger_threshold,
            ),
        )
        cur.execute("SELECT txwatch_refresh_aggregates()")
    return SAMPLE


_DRIFT_INSERT = (
    "INSERT INTO drift_metrics (window_start, window_end, feature, psi,"
    " reference_version, rows) VALUES %s"
)


def _drift_rows(rng: random.Random, days: int):
    for day_index in range(days):
        day = SAMPLE.first_day + timedelta(days=day_index)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for name in FEATURE_NAMES:
            psi = rng.uniform(0.005, 0.06)
            if name == SAMPLE.drifting_feature:
                psi = (0.02, 0.09, 0.41)[min(day_index, 2)]
            yield (
                start,
                start + timedelta(days=1),
                name,
                round(psi, 4),
                SAMPLE.model_version,
                TRANSACTIONS_PER_DAY,
            )
