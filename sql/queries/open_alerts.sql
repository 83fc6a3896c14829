-- Which alerts should an investigator look at first? Recent alerts with no
-- fraud label yet, most probably fraud first (the supervised stage's fraud
-- probability; alerts of a model without one follow, by anomaly risk), with
-- reasons, rule hits and how many alerts the same card raised in the period.
--
-- @param days int = 1  how many days back from the latest alert
-- @param top int = 50  how many alerts to list
WITH period AS (
    SELECT max(event_time) - make_interval(days => %(days)s::int) AS since_time
    FROM alerts
),
recent AS (
    SELECT a.*,
           count(*) OVER (PARTITION BY a.card_id) AS card_alerts
    FROM alerts a
    WHERE a.event_time > (SELECT since_time FROM period)
)
SELECT
    r.event_time,
    r.transaction_id,
    r.card_id,
    r.terminal_id,
    r.amount,
    r.fraud_probability,
    r.score,
    r.risk,
    r.card_alerts,
    (SELECT string_agg(x.reason ->> 'text', '; ' ORDER BY x.position)
     FROM jsonb_array_elements(r.reasons) WITH ORDINALITY AS x (reason, position)
    ) AS reasons,
    (SELECT string_agg(y.hit ->> 'rule_id', ', ' ORDER BY y.position)
     FROM jsonb_array_elements(r.rule_hits) WITH ORDINALITY AS y (hit, position)
    ) AS rules
FROM recent r
WHERE NOT EXISTS (
    SELECT 1 FROM fraud_labels f
    WHERE f.transaction_id = r.transaction_id AND f.event_time = r.event_time
)
ORDER BY r.fraud_probability DESC NULLS LAST, r.risk DESC, r.score DESC,
         r.event_time DESC
LIMIT %(top)s;
