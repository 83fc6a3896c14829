-- Hourly aggregates, compression and retention, TimescaleDB path.
--
-- Needs TimescaleDB 2.7 or later (continuous aggregates in finalized form:
-- ordered-set aggregates such as percentile_cont, DISTINCT and FILTER are
-- allowed in their definitions).
--
-- 1. rule_hits and drift_metrics, created as plain tables by 003, become
--    hypertables: continuous aggregates can only be built on hypertables.
-- 2. Continuous aggregates with the same names and columns as the
--    materialized views of the plain PostgreSQL twin:
--      alerts_hourly_by_terminal, scores_hourly_by_terminal,
--      rule_hits_hourly_by_rule.
--    They are real-time (materialized_only = false): a query sees the
--    materialized hours plus the not yet materialized recent rows.
-- 3. Refresh policies. Events may arrive up to job.max_lateness_ms (30 days)
--    late, so each policy re-materializes the last 32 days; only the hours that
--    actually received rows are recomputed.
-- 4. Compression, segmented by terminal (a card has too few rows per daily
--    chunk to make a useful segment) and ordered by event time. Chunks are
--    compressed once they are older than the lateness limit plus the label
--    delay, so late upserts rarely touch a compressed chunk.
-- 5. Retention: raw rows for 400 days, hourly aggregates for 1100 days.
--    These are starting values; change one with
--      SELECT remove_retention_policy('scored_transactions');
--      SELECT add_retention_policy('scored_transactions',
--                                  drop_after => interval 'N days');
--    (and likewise compression with remove_/add_compression_policy, or adjust
--    a schedule with alter_job). Keep drop_after longer than the refresh
--    window so that a refresh never empties buckets whose raw rows were dropped.
--
-- Verified here without TimescaleDB installed: tests/integration/
-- test_migrations.py runs this file inside a transaction against stub
-- functions that record their arguments, then rolls back (see that test for
-- exactly what is and is not checked).

SELECT create_hypertable('rule_hits', 'event_time',
                         chunk_time_interval => interval '1 day',
                         if_not_exists => true, migrate_data => true);
SELECT create_hypertable('drift_metrics', 'window_start',
                         chunk_time_interval => interval '30 days',
                         if_not_exists => true, migrate_data => true);

CREATE MATERIALIZED VIEW IF NOT EXISTS alerts_hourly_by_terminal
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(interval '1 hour', event_time) AS bucket,
    terminal_id,
    count(*)                AS alerts,
    count(DISTINCT card_id) AS cards,
    sum(amount)             AS amount_total,
    avg(risk)               AS mean_risk,
    max(score)              AS max_score
FROM alerts
GROUP BY bucket, terminal_id
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS scores_hourly_by_terminal
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(interval '1 hour', event_time) AS bucket,
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
GROUP BY bucket, terminal_id
WITH NO DATA;

CREATE MATERIALIZED VIEW IF NOT EXISTS rule_hits_hourly_by_rule
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT
    time_bucket(interval '1 hour', event_time) AS bucket,
    rule_id,
    rule_version,
    mode,
    count(*)                    AS hits,
    count(DISTINCT card_id)     AS cards,
    count(DISTINCT terminal_id) AS terminals
FROM rule_hits
GROUP BY bucket, rule_id, rule_version, mode
WITH NO DATA;

SELECT add_continuous_aggregate_policy('alerts_hourly_by_terminal',
    start_offset => interval '32 days', end_offset => interval '1 hour',
    schedule_interval => interval '15 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('scores_hourly_by_terminal',
    start_offset => interval '32 days', end_offset => interval '1 hour',
    schedule_interval => interval '15 minutes', if_not_exists => true);
SELECT add_continuous_aggregate_policy('rule_hits_hourly_by_rule',
    start_offset => interval '32 days', end_offset => interval '1 hour',
    schedule_interval => interval '15 minutes', if_not_exists => true);

ALTER TABLE scored_transactions SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'terminal_id',
    timescaledb.compress_orderby = 'event_time DESC'
);
ALTER TABLE alerts SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'terminal_id',
    timescaledb.compress_orderby = 'event_time DESC'
);
ALTER TABLE rule_hits SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'rule_id',
    timescaledb.compress_orderby = 'event_time DESC'
);
ALTER MATERIALIZED VIEW alerts_hourly_by_terminal SET (timescaledb.compress = true);
ALTER MATERIALIZED VIEW scores_hourly_by_terminal SET (timescaledb.compress = true);
ALTER MATERIALIZED VIEW rule_hits_hourly_by_rule SET (timescaledb.compress = true);

-- Compression must start after the refresh window of the aggregates (32 days).
SELECT add_compression_policy('scored_transactions',
    compress_after => interval '45 days', if_not_exists => true);
SELECT add_compression_policy('alerts',
    compress_after => interval '45 days', if_not_exists => true);
SELECT add_compression_policy('rule_hits',
    compress_after => interval '45 days', if_not_exists => true);
SELECT add_compression_policy('alerts_hourly_by_terminal',
    compress_after => interval '45 days', if_not_exists => true);
SELECT add_compression_policy('scores_hourly_by_terminal',
    compress_after => interval '45 days', if_not_exists => true);
SELECT add_compression_policy('rule_hits_hourly_by_rule',
    compress_after => interval '45 days', if_not_exists => true);

SELECT add_retention_policy('scored_transactions',
    drop_after => interval '400 days', if_not_exists => true);
SELECT add_retention_policy('alerts',
    drop_after => interval '400 days', if_not_exists => true);
SELECT add_retention_policy('rule_hits',
    drop_after => interval '400 days', if_not_exists => true);
SELECT add_retention_policy('alerts_hourly_by_terminal',
    drop_after => interval '1100 days', if_not_exists => true);
SELECT add_retention_policy('scores_hourly_by_terminal',
    drop_after => interval '1100 days', if_not_exists => true);
SELECT add_retention_policy('rule_hits_hourly_by_rule',
    drop_after => interval '1100 days', if_not_exists => true);

-- refresh_continuous_aggregate is a procedure that commits as it goes and so
-- cannot run inside a function; the refresh policies do the work. For an
-- immediate refresh, run outside a transaction block:
--   CALL refresh_continuous_aggregate('scores_hourly_by_terminal', NULL, NULL);
CREATE OR REPLACE FUNCTION txwatch_refresh_aggregates()
RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;

REVOKE ALL ON FUNCTION txwatch_refresh_aggregates() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION txwatch_refresh_aggregates() TO txwatch_writer;
GRANT SELECT
    ON alerts_hourly_by_terminal, scores_hourly_by_terminal, rule_hits_hourly_by_rule
    TO analyst;

COMMENT ON FUNCTION txwatch_refresh_aggregates() IS
    'Returns 0 on TimescaleDB: refresh policies keep the continuous aggregates '
    'current. On plain PostgreSQL it refreshes the materialized views.';

COMMENT ON VIEW alerts_hourly_by_terminal IS
    'Alerts per terminal and UTC hour (continuous aggregate, real-time).';
COMMENT ON COLUMN alerts_hourly_by_terminal.bucket IS 'Start of the UTC hour.';
COMMENT ON COLUMN alerts_hourly_by_terminal.terminal_id IS 'Terminal.';
COMMENT ON COLUMN alerts_hourly_by_terminal.alerts IS 'Alerts raised in the hour.';
COMMENT ON COLUMN alerts_hourly_by_terminal.cards IS
    'Distinct cards alerted in the hour (not additive across hours).';
COMMENT ON COLUMN alerts_hourly_by_terminal.amount_total IS
    'Sum of the alerted amounts, EUR.';
COMMENT ON COLUMN alerts_hourly_by_terminal.mean_risk IS 'Mean risk of the alerts.';
COMMENT ON COLUMN alerts_hourly_by_terminal.max_score IS 'Highest score of the alerts.';

COMMENT ON VIEW scores_hourly_by_terminal IS
    'Scored transactions per terminal and UTC hour: volume, alerts and score '
    'statistics (continuous aggregate, real-time).';
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

COMMENT ON VIEW rule_hits_hourly_by_rule IS
    'Rule hits per rule, rule version, mode and UTC hour (continuous aggregate, '
    'real-time).';
COMMENT ON COLUMN rule_hits_hourly_by_rule.bucket IS 'Start of the UTC hour.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.rule_id IS 'Rule.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.rule_version IS 'Version of the rule.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.mode IS 'active or shadow.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.hits IS 'Hits in the hour.';
COMMENT ON COLUMN rule_hits_hourly_by_rule.cards IS
    'Distinct cards hit in the hour (not additive across hours).';
COMMENT ON COLUMN rule_hits_hourly_by_rule.terminals IS
    'Distinct terminals hit in the hour (not additive across hours).';
