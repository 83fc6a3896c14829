-- How many transactions and alerts were there in each hour of one UTC day?
-- Hours without traffic are listed with zeros.
--
-- @param day date = null  UTC day; null means the latest day with data
WITH chosen AS (
    SELECT coalesce(
        %(day)s::date,
        (SELECT (max(event_time) AT TIME ZONE 'UTC')::date FROM scored_transactions)
    ) AS day
),
bounds AS (
    SELECT day::timestamp AT TIME ZONE 'UTC'       AS day_start,
           (day + 1)::timestamp AT TIME ZONE 'UTC' AS day_end
    FROM chosen
),
per_hour AS (
    SELECT date_bin(interval '1 hour', event_time, (SELECT day_start FROM bounds))
               AS hour,
           count(*)                         AS transactions,
           count(*) FILTER (WHERE is_alert) AS alerts,
           avg(risk)                        AS mean_risk,
           max(score)                       AS max_score
    FROM scored_transactions
    WHERE event_time >= (SELECT day_start FROM bounds)
      AND event_time < (SELECT day_end FROM bounds)
    GROUP BY 1
),
hits_per_hour AS (
    SELECT date_bin(interval '1 hour', event_time, (SELECT day_start FROM bounds))
               AS hour,
           count(*) FILTER (WHERE mode = 'active') AS active_rule_hits,
           count(*) FILTER (WHERE mode = 'shadow') AS shadow_rule_hits
    FROM rule_hits
    WHERE event_time >= (SELECT day_start FROM bounds)
      AND event_time < (SELECT day_end FROM bounds)
    GROUP BY 1
)
SELECT
    hours.hour,
    coalesce(p.transactions, 0)                     AS transactions,
    coalesce(p.alerts, 0)                           AS alerts,
    p.alerts::float8 / nullif(p.transactions, 0)    AS alert_rate,
    p.mean_risk,
    p.max_score,
    coalesce(h.active_rule_hits, 0)                 AS active_rule_hits,
    coalesce(h.shadow_rule_hits, 0)                 AS shadow_rule_hits
FROM bounds b
CROSS JOIN LATERAL generate_series(
    b.day_start, b.day_end - interval '1 hour', interval '1 hour') AS hours (hour)
LEFT JOIN per_hour p ON p.hour = hours.hour
LEFT JOIN hits_per_hour h ON h.hour = hours.hour
ORDER BY hours.hour;
