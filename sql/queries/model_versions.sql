-- Which model versions scored the recent traffic, and how did they do? The
-- registry next to what each version scored: volume, alert rate, confirmed
-- fraud among its alerts. Versions seen in the data but never registered are
-- listed too.
--
-- @param days int = 30  how many days back from the latest event
WITH period AS (
    SELECT max(event_time) - make_interval(days => %(days)s::int) AS since_time
    FROM scored_transactions
),
usage AS (
    SELECT s.model_version                           AS version,
           count(*)                                  AS transactions,
           count(*) FILTER (WHERE s.is_alert)        AS alerts,
           count(f.transaction_id) FILTER (WHERE s.is_alert) AS confirmed_alerts,
           min(s.event_time)                         AS first_seen,
           max(s.event_time)                         AS last_seen
    FROM scored_transactions s
    LEFT JOIN fraud_labels f
        ON f.transaction_id = s.transaction_id AND f.event_time = s.event_time
    WHERE s.event_time >= (SELECT since_time FROM period)
    GROUP BY s.model_version
)
SELECT
    coalesce(m.version, u.version)                         AS version,
    m.alias,
    m.registered_at,
    m.threshold,
    m.fraud_threshold,
    coalesce(u.transactions, 0)                            AS transactions,
    coalesce(u.alerts, 0)                                  AS alerts,
    u.alerts::float8 / nullif(u.transactions, 0)           AS alert_rate,
    u.confirmed_alerts::float8 / nullif(u.alerts, 0)       AS alert_precision,
    u.first_seen,
    u.last_seen,
    m.version IS NOT NULL                                  AS registered
FROM model_versions m
FULL JOIN usage u ON u.version = m.version
ORDER BY u.last_seen DESC NULLS LAST, m.registered_at DESC NULLS LAST;
