-- How precise is each rule, and the model, against the confirmed fraud? For
-- each detector: hits, confirmed fraud among them, precision, and recall (the
-- share of all confirmed fraud in the period that it caught). Labels arrive
-- late, so precision over the last days (label delay) is an underestimate.
--
-- @param since timestamptz = null  start of the period; null means 30 days before until
-- @param until timestamptz = null  end of the period; null means the latest event
WITH latest AS (
    SELECT coalesce(%(until)s::timestamptz, max(event_time)) AS until_time
    FROM scored_transactions
),
period AS (
    SELECT coalesce(%(since)s::timestamptz, until_time - interval '30 days')
               AS since_time,
           until_time
    FROM latest
),
labelled AS (
    SELECT count(*) AS frauds
    FROM fraud_labels
    WHERE event_time >= (SELECT since_time FROM period)
      AND event_time <= (SELECT until_time FROM period)
),
detections AS (
    SELECT 'rule' AS kind, h.rule_id AS detector, h.mode,
           h.transaction_id, h.event_time
    FROM rule_hits h
    WHERE h.event_time >= (SELECT since_time FROM period)
      AND h.event_time <= (SELECT until_time FROM period)
    UNION ALL
    SELECT 'model', s.model_version, 'active', s.transaction_id, s.event_time
    FROM scored_transactions s
    WHERE s.is_alert
      AND s.event_time >= (SELECT since_time FROM period)
      AND s.event_time <= (SELECT until_time FROM period)
),
combined AS (
    -- A transaction flagged by the model or by any active rule, counted once.
    SELECT DISTINCT 'combined' AS kind, 'model or active rule' AS detector,
           'active' AS mode, transaction_id, event_time
    FROM detections
    WHERE mode = 'active'
)
SELECT
    d.kind,
    d.detector,
    d.mode,
    count(*)                                          AS hits,
    count(f.transaction_id)                           AS confirmed_fraud,
    count(f.transaction_id)::float8 / count(*)        AS precision,
    count(f.transaction_id)::float8 / nullif(l.frauds, 0) AS recall,
    l.frauds                                          AS frauds_in_period
FROM (SELECT * FROM detections UNION ALL SELECT * FROM combined) d
LEFT JOIN fraud_labels f
    ON f.transaction_id = d.transaction_id AND f.event_time = d.event_time
CROSS JOIN labelled l
GROUP BY d.kind, d.detector, d.mode, l.frauds
ORDER BY d.kind DESC, precision DESC, d.detector, d.mode;
