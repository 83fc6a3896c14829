-- Which terminals were the riskiest on one UTC day? Ranked by alerts, then by
-- mean risk, with the confirmed fraud known so far.
--
-- @param day date = null  UTC day to rank; null means the latest day with data
-- @param top int = 20  how many terminals to list
WITH chosen AS (
    SELECT coalesce(
        %(day)s::date,
        (SELECT (max(event_time) AT TIME ZONE 'UTC')::date FROM scored_transactions)
    ) AS day
),
bounds AS (
    SELECT day,
           day::timestamp AT TIME ZONE 'UTC'       AS day_start,
           (day + 1)::timestamp AT TIME ZONE 'UTC' AS day_end
    FROM chosen
)
SELECT
    (SELECT day FROM bounds)                              AS day,
    s.terminal_id,
    count(*)                                              AS transactions,
    count(*) FILTER (WHERE s.is_alert)                    AS alerts,
    (count(*) FILTER (WHERE s.is_alert))::float8 / count(*) AS alert_rate,
    avg(s.risk)                                           AS mean_risk,
    max(s.risk)                                           AS max_risk,
    avg(s.score)                                          AS mean_score,
    count(DISTINCT s.card_id)                             AS cards,
    count(f.transaction_id)                               AS confirmed_fraud,
    sum(s.amount)                                         AS amount_total
FROM scored_transactions s
LEFT JOIN fraud_labels f
    ON f.transaction_id = s.transaction_id AND f.event_time = s.event_time
WHERE s.event_time >= (SELECT day_start FROM bounds)
  AND s.event_time < (SELECT day_end FROM bounds)
GROUP BY s.terminal_id
ORDER BY alerts DESC, mean_risk DESC, s.terminal_id
LIMIT %(top)s;
