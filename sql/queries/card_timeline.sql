-- What happened on one card? Its transactions in event-time order with score,
-- risk, the alert reasons, the rule hits and the fraud label if any.
--
-- @param card_id text  the card to follow
-- @param since timestamptz = null  first event time; null means 30 days before until
-- @param until timestamptz = null  last event time; null means the card's last event
WITH last_seen AS (
    SELECT max(event_time) AS last_time
    FROM scored_transactions
    WHERE card_id = %(card_id)s
),
bounds AS (
    SELECT coalesce(%(until)s::timestamptz, last_time) AS until_time
    FROM last_seen
),
window_bounds AS (
    SELECT coalesce(%(since)s::timestamptz, until_time - interval '30 days')
               AS since_time,
           until_time
    FROM bounds
)
SELECT
    s.event_time,
    s.transaction_id,
    s.terminal_id,
    s.amount,
    s.currency,
    s.is_late,
    s.score,
    s.risk,
    s.is_alert,
    s.model_version,
    (SELECT string_agg(r.reason ->> 'text', '; ' ORDER BY r.position)
     FROM jsonb_array_elements(a.reasons) WITH ORDINALITY AS r (reason, position)
    ) AS reasons,
    (SELECT string_agg(
                (h.hit ->> 'rule_id') || ' [' || (h.hit ->> 'mode') || ', '
                || (h.hit ->> 'severity') || ']: ' || (h.hit ->> 'reason'),
                '; ' ORDER BY h.position)
     FROM jsonb_array_elements(s.rule_hits) WITH ORDINALITY AS h (hit, position)
    ) AS rule_hits,
    f.known_at AS fraud_known_at
FROM scored_transactions s
LEFT JOIN alerts a
    ON a.transaction_id = s.transaction_id AND a.event_time = s.event_time
LEFT JOIN fraud_labels f
    ON f.transaction_id = s.transaction_id AND f.event_time = s.event_time
WHERE s.card_id = %(card_id)s
  AND s.event_time >= (SELECT since_time FROM window_bounds)
  AND s.event_time <= (SELECT until_time FROM window_bounds)
ORDER BY s.event_time, s.transaction_id;
