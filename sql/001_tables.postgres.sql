-- Sink tables on plain PostgreSQL: declarative partitions by day of event
-- time. The TimescaleDB twin of this file creates the same tables as
-- hypertables. Partitions are made by txwatch_ensure_partitions(); rows for
-- days without one land in the default partition.

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
) PARTITION BY RANGE (event_time);

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
) PARTITION BY RANGE (event_time);

CREATE TABLE IF NOT EXISTS scored_transactions_default
    PARTITION OF scored_transactions DEFAULT;
CREATE TABLE IF NOT EXISTS alerts_default PARTITION OF alerts DEFAULT;

CREATE OR REPLACE FUNCTION txwatch_ensure_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date := first_day;
    parent text;
    created integer := 0;
BEGIN
    WHILE day <= last_day LOOP
        FOREACH parent IN ARRAY ARRAY['scored_transactions', 'alerts'] LOOP
            IF to_regclass(format('%s_%s', parent, to_char(day, 'YYYYMMDD'))) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    format('%s_%s', parent, to_char(day, 'YYYYMMDD')), parent,
                    day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
                created := created + 1;
            END IF;
        END LOOP;
        day := day + 1;
    END LOOP;
    RETURN created;
END
$$;

CREATE INDEX IF NOT EXISTS scored_transactions_card_idx
    ON scored_transactions (card_id, event_time DESC);
CREATE INDEX IF NOT EXISTS scored_transactions_terminal_idx
    ON scored_transactions (terminal_id, event_time DESC);
CREATE INDEX IF NOT EXISTS alerts_time_idx ON alerts (event_time DESC);
