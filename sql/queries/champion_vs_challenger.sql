-- Would the challenger alert better than the champion? On the transactions the
-- challenger scored in shadow, one row per model and pairing: alerts at each
-- model's own threshold (active rules included, as in the job), confirmed
-- fraud among them, precision, recall, the alerts and frauds caught by that
-- model only, and the mean score of fraud and of genuine transactions. Labels
-- arrive late, so over the last days (label delay) both precisions are
-- underestimates, equally.
--
-- @param since timestamptz = null  start of the period; null means 30 days before until
-- @param until timestamptz = null  end of the period; null means the latest shadow-scored event
WITH latest AS (
    SELECT coalesce(%(until)s::timestamptz, max(event_time)) AS until_time
    FROM scored_transactions
    WHERE challenger_version IS NOT NULL
),
period AS (
    SELECT coalesce(%(since)s::timestamptz, until_time - interval '30 days')
               AS since_time,
           until_time
    FROM latest
),
shadowed AS (
    SELECT s.model_version, s.challenger_version, s.is_alert, s.challenger_alert,
           s.score, s.challenger_score, f.transaction_id IS NOT NULL AS fraud
    FROM scored_transactions s
    LEFT JOIN fraud_labels f
        ON f.transaction_id = s.transaction_id AND f.event_time = s.event_time
    WHERE s.challenger_version IS NOT NULL
      AND s.event_time >= (SELECT since_time FROM period)
      AND s.event_time <= (SELECT until_time FROM period)
),
per_model AS (
    SELECT 'champion' AS role, model_version AS version,
           challenger_version AS compared_with, is_alert AS alert,
           challenger_alert AS other_alert, score, fraud
    FROM shadowed
    UNION ALL
    SELECT 'challenger', challenger_version, model_version, challenger_alert,
           is_alert, challenger_score, fraud
    FROM shadowed
)
SELECT
    role,
    version,
    compared_with,
    count(*)                                                  AS transactions,
    count(*) FILTER (WHERE fraud)                             AS frauds,
    count(*) FILTER (WHERE alert)                             AS alerts,
    count(*) FILTER (WHERE alert AND fraud)                   AS confirmed_alerts,
    (count(*) FILTER (WHERE alert AND fraud))::float8
        / nullif(count(*) FILTER (WHERE alert), 0)            AS precision,
    (count(*) FILTER (WHERE alert AND fraud))::float8
        / nullif(count(*) FILTER (WHERE fraud), 0)            AS recall,
    (count(*) FILTER (WHERE alert))::float8 / count(*)        AS alert_rate,
    count(*) FILTER (WHERE alert AND NOT other_alert)         AS alerts_only_here,
    count(*) FILTER (WHERE alert AND NOT other_alert AND fraud)
                                                              AS frauds_only_here,
    avg(score) FILTER (WHERE fraud)                           AS mean_score_fraud,
    avg(score) FILTER (WHERE NOT fraud)                       AS mean_score_genuine
FROM per_model
GROUP BY role, version, compared_with
ORDER BY least(version, compared_with), greatest(version, compared_with),
         role DESC;
