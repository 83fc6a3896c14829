-- Which cards were the riskiest on one UTC day? Ranked by alerts, then by
-- mean risk, with their rule hits and the confirmed fraud known so far.
--
-- @param day date = null  UTC day to rank; null means the latest day with data
-- @param top int = 20  how many cards to list
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
    (SELECT day FROM bounds)               AS day,
    s.card_id,
    count(*)                               AS transactions,
    count(*) FILTER (WHERE s.is_alert)     AS alerts,
    avg(s.risk)                            AS mean_risk,
    max(s.risk)                            AS max_risk,
    max(s.score)                           AS max_score,
    sum(s.amount)                          AS amount_total,
    count(DISTINCT s.terminal_id)          AS terminals,
    sum(jsonb_array_length(s.rule_hits))   AS rule_hits,
    count(f.transaction_id)                AS confirmed_fraud,
    min(s.event_time)                      AS first_seen,
    max(s.event_time)                      AS last_seen
FROM scored_transactions s
LEFT JOIN fraud_labels f
    ON f.transaction_id = s.transaction_id AND f.event_time = s.event_time
WHERE s.event_time >= (SELECT day_start FROM bounds)
  AND s.event_time < (SELECT day_end FROM bounds)
GROUP BY s.card_id
ORDER BY alerts DESC, mean_risk DESC, s.card_id
LIMIT %(top)s;
