-- How has one terminal behaved hour by hour? Volume, alerts and score
-- statistics from the hourly aggregate scores_hourly_by_terminal. On plain
-- PostgreSQL the aggregate is as fresh as its last txwatch_refresh_aggregates().
--
-- @param terminal_id text  the terminal
-- @param days int = 7  how many days back from the terminal's latest hour
WITH period AS (
    SELECT max(bucket) - make_interval(days => %(days)s::int) AS since_time
    FROM scores_hourly_by_terminal
    WHERE terminal_id = %(terminal_id)s
)
SELECT
    bucket AS hour,
    transactions,
    alerts,
    alerts::float8 / nullif(transactions, 0) AS alert_rate,
    mean_score,
    p95_score,
    max_score,
    mean_risk,
    late
FROM scores_hourly_by_terminal
WHERE terminal_id = %(terminal_id)s
  AND bucket > (SELECT since_time FROM period)
ORDER BY bucket;
