-- Sink tables on TimescaleDB: hypertables chunked by day of event time.
-- Every unique key includes the time column, as hypertables require.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS scored_transactions (
    transaction_id  text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    card_id         text             NOT NULL,
    terminal_id     text             NOT NULL,
    amount          double precision NOT NULL,
    original_amount double precision NOT NULL,
    currency        text             NOT NULL,
    is_late         boolean          NOT NULL DEFAULT false,
    score           double precision NOT NULL,
    risk            double precision NOT NULL,
    is_alert        boolean          NOT NULL,
    model_version   text             NOT NULL,
    features        jsonb            NOT NULL,
    rule_hits       jsonb            NOT NULL DEFAULT '[]',
    scored_at       timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT scored_transactions_pkey PRIMARY KEY (transaction_id, event_time)
);
SELECT create_hypertable('scored_transactions', 'event_time',
                         chunk_time_interval => interval '1 day', if_not_exists => true);

CREATE TABLE IF NOT EXISTS alerts (
    transaction_id  text             NOT NULL,
    event_time      timestamptz      NOT NULL,
    card_id         text             NOT NULL,
    terminal_id     text             NOT NULL,
    amount          double precision NOT NULL,
    score           double precision NOT NULL,
    risk            double precision NOT NULL,
    model_version   text             NOT NULL,
    reasons         jsonb            NOT NULL DEFAULT '[]',
    rule_hits       jsonb            NOT NULL DEFAULT '[]',
    alerted_at      timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT alerts_pkey PRIMARY KEY (transaction_id, event_time)
);
SELECT create_hypertable('alerts', 'event_time',
                         chunk_time_interval => interval '1 day', if_not_exists => true);

-- Chunks are created by TimescaleDB as rows arrive; the function exists so
-- that callers need not know which path the database took.
CREATE OR REPLACE FUNCTION txwatch_ensure_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;

CREATE INDEX IF NOT EXISTS scored_transactions_card_idx
    ON scored_transactions (card_id, event_time DESC);
CREATE INDEX IF NOT EXISTS scored_transactions_terminal_idx
    ON scored_transactions (terminal_id, event_time DESC);
