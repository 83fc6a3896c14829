-- Hourly aggregates for analysts, plain PostgreSQL path.
--
-- The same three relations as the TimescaleDB twin, with the same names and
-- columns, as materialized views:
--
--   alerts_hourly_by_terminal   alerts per terminal and hour
--   scores_hourly_by_terminal   transactions, alerts and score statistics per
--                               terminal and hour
--   rule_hits_hourly_by_rule    rule hits per rule, version, mode and hour
--
-- Each has a unique index, so txwatch_refresh_aggregates() can refresh it
-- CONCURRENTLY: readers are never blocked. Buckets are hours of UTC whatever
-- the session time zone (date_bin with a UTC origin, not date_trunc).
--
-- Freshness and cost: a materialized view holds what was true at its last
-- refresh. Call SELECT txwatch_refresh_aggregates() on a schedule (as the
-- writer or an administrator); each refresh recomputes the whole history, so
-- its cost grows with the data kept. Ready queries that must be exact for the
-- current day read the base tables instead.
--
-- Retention: TimescaleDB drops old chunks by policy. Here nothing is dropped
-- automatically; old days are removed by detaching and dropping their daily
-- partitions (scored_transactions_YYYYMMDD, alerts_YYYYMMDD).

-- The ready queries look up "the latest day with data" and filter on time
-- ranges; TimescaleDB makes this index itself for hypertables.
CREATE INDEX IF NOT EXISTS scored_transactions_time_idx
    ON scored_transactions (event_time DESC);

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_hourly_by_terminal AS
SELECT
    date_bin(interval '1 hour', event_time, timestamptz '2000-01-01 00:00:00+00')
        AS bucket,
    terminal_id,
    count(*)                AS alerts,
    count(DISTINCT card_id) AS cards,
    sum(amount)             AS amount_total,
    avg(risk)               AS mean_risk,
    max(score)              AS max_score
FROM alerts
GROUP BY bucket, terminal_id;

CREATE UNIQUE INDEX IF NOT EXISTS alerts_hourly_by_terminal_key
    ON alerts_hourly_by_terminal (bucket, terminal_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS scores_hourly_by_terminal AS
SELECT
    date_bin(interval '1 hour', event_time, timestamptz '2000-01-01 00:00:00+00')
        AS bucket,
    terminal_id,
    count(*)                                            AS transactions,
    count(*) FILTER (WHERE is_alert)                    AS alerts,
    count(*) FILTER (WHERE is_late)                     AS late,
    sum(amount)                                         AS amount_total,
    avg(score)                                          AS mean_score,
    max(score)                                          AS max_score,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY score) AS p95_score,
    avg(risk)                                           AS mean_risk,
    max(risk)                                           AS max_risk
FROM scored_transactions
GROUP BY bucket, terminal_id;

CREATE UNIQUE INDEX IF NOT EXISTS scores_hourly_by_terminal_key
    ON scores_hourly_by_terminal (bucket, terminal_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS rule_hits_hourly_by_rule AS
SELECT
    date_bin(interval '1 hour', event_time, timestamptz '2000-01-01 00:00:00+00')
        AS bucket,
    rule_id,
    rule_version,
    mode,
    count(*)                    AS hits,
    count(DISTINCT card_id)     AS cards,
    count(DISTINCT terminal_id) AS terminals
FROM rule_hits
GROUP BY bucket, rule_id, rule_version, mode;

CREATE UNIQUE INDEX IF NOT EXISTS rule_hits_hourly_by_rule_key
    ON rule_hits_hourly_by_rule (bucket, rule_id, rule_version, mode);

CREATE OR REPLACE FUNCTION txwatch_refresh_aggregates()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    view_name text;
    refreshed integer := 0;
BEGIN
    FOREACH view_name IN ARRAY ARRAY[
        'alerts_hourly_by_terminal', 'scores_hourly_by_terminal',
        'rule_hits_hourly_by_rule'
    ] LOOP
        -- CONCURRENTLY needs a populated view; the first refresh cannot use it.
        IF (SELECT relispopulated FROM pg_class WHERE oid = view_name::regclass) THEN
            EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %I', view_name);
        ELSE
            EXECUTE format('REFRESH MATERIALIZED VIEW %I', view_name);
        END IF;
        refreshed := refreshed + 1;
    END LOOP;
    RETURN refreshed;
END
$$;

REVOKE ALL ON FUNCTION txwatch_refresh_aggregates() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION txwatch_refresh_aggregates() TO txwatch_writer;
GRANT SELECT
    ON alerts_hourly_by_terminal, scores_hourly_by_terminal, rule_hits_hourly_by_rule
    TO analyst;

COMMENT ON FUNCTION txwatch_refresh_aggregates() IS
    'Refreshes the hourly aggregates (concurrently once populated) and returns how '
    'many were refreshed. On TimescaleDB it returns 0: refresh policies keep the '
    'continuous aggregates current.';

COMMENT ON MATERIALIZED VIEW alerts_hourly_by_terminal IS
    'Alerts per terminal and UTC hour. As fresh as the last '
    'txwatch_refresh_aggregates() on plain PostgreSQL.';
COMMENT ON COLUMN alerts_hourly_by_terminal.bucket IS 'Start of the UTC hour.';
COMMENT ON COLUMN alerts_hourly_by_terminal.terminal_id IS 'Terminal.';
COMMENT ON COLUMN alerts_hourly_by_terminal.alerts IS 'Alerts raised in the hour.';
COMMENT ON COLUMN alerts_hourly_by_terminal.cards IS
    'Distinct cards alerted in the hour (not additive across hours).';
COMMENT ON COLUMN alerts_hourly_by_terminal.amount_total IS
    'Sum of the alerted amounts, EUR.';
COMMENT ON COLUMN alerts_hourly_by_terminal.mean_risk IS 'Mean risk of the alerts.';
COMMENT ON COLUMN alerts_hourly_by_terminal.max_score IS 'Highest score of the alerts.';

COMMENT ON MATERIALIZED VIEW scores_hourly_by_terminal IS
    'Scored transactions per terminal and UTC hour: volume, alerts and score '
    'statistics. As fresh as the last txwatch_refresh_aggregates() on plain '
    'PostgreSQL.';
COMMENT ON COLUMN scores_hourly_by_terminal.bucket IS 'Start of the UTC hour.';
COMMENT ON COLUMN scores_hourly_by_terminal.terminal_id IS 'Terminal.';
COMMENT ON COLUMN scores_hourly_by_terminal.transactions IS 'Transactions scored.';
COMMENT ON COLUMN scores_hourly_by_terminal.alerts IS
    'Transactions that raised an alert.';
COMMENT ON COLUMN scores_hourly_by_terminal.late IS
    'Transactions that arrived after the watermark.';
COMMENT ON COLUMN scores_hourly_by_terminal.amount_total IS 'Sum of the amounts, EUR.';
COMMENT ON COLUMN scores_hourly_by_terminal.mean_score IS 'Mean score.';
COMMENT ON COLUMN scores_hourly_by_terminal.max_score IS 'Highest score.';
COMMENT ON COLUMN scores_hourly_by_terminal.p95_score IS
    '95th percentile of the score in the hour (exact; not additive across hours).';
COMMENT ON COLUMN scores_hourly_by_terminal.mean_risk IS 'Mean risk.';
COMMENT ON COLUMN scores_hourly_by_terminal.max_risk IS 'Highest risk.';

COMMENT ON MATERIALIZED VIEW rule_hits_hourly_by_rule IS
    'Rule hits per rule, rule version, mode and UTC hour. As fresh as the last '
    'txwatch_refresh_aggregates() on plain PostgreSQL.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.bucket IS 'Start of the UTC hour.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.rule_id IS 'Rule.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.rule_version IS 'Version of the rule.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.mode IS 'active or shadow.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.hits IS 'Hits in the hour.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.cards IS
    'Distinct cards hit in the hour (not additive across hours).';
COMMENT ON COLUMN rule_hits_hourly_by_rule.terminals IS
    'Distinct terminals hit in the hour (not additive across hours).';
