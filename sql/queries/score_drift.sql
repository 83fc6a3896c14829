-- Is the score distribution drifting? Daily quantiles of the score and the
-- alert rate, next to the population stability index (PSI) of the features
-- from drift_metrics for windows starting that day (empty when none).
--
-- @param days int = 30  how many UTC days to show, ending with the latest day
WITH bounds AS (
    SELECT ((max(event_time) AT TIME ZONE 'UTC')::date - (%(days)s::int - 1))::timestamp
               AT TIME ZONE 'UTC' AS since_time
    FROM scored_transactions
),
daily AS (
    SELECT (event_time AT TIME ZONE 'UTC')::date AS day,
           count(*)                              AS transactions,
           avg(is_alert::int)::float8            AS alert_rate,
           avg(score)                            AS mean_score,
           percentile_cont(ARRAY[0.05, 0.25, 0.5, 0.75, 0.95, 0.99])
               WITHIN GROUP (ORDER BY score)     AS q
    FROM scored_transactions
    WHERE event_time >= (SELECT since_time FROM bounds)
    GROUP BY 1
),
drift AS (
    SELECT (window_start AT TIME ZONE 'UTC')::date    AS day,
           avg(psi)                                   AS mean_psi,
           max(psi)                                   AS max_psi,
           (array_agg(feature ORDER BY psi DESC))[1]  AS most_drifted_feature
    FROM drift_metrics
    WHERE window_start >= (SELECT since_time FROM bounds)
    GROUP BY 1
)
SELECT
    d.day,
    d.transactions,
    d.alert_rate,
    d.mean_score,
    d.q[1] AS p05_score,
    d.q[2] AS p25_score,
    d.q[3] AS median_score,
    d.q[4] AS p75_score,
    d.q[5] AS p95_score,
    d.q[6] AS p99_score,
    r.mean_psi,
    r.max_psi,
    r.most_drifted_feature
FROM daily d
LEFT JOIN drift r USING (day)
ORDER BY d.day;
