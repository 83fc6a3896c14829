-- How long do fraud labels take to arrive? Per UTC day of the transactions:
-- confirmed frauds and the median, 90th percentile and longest label delay
-- (known_at minus event_time) in hours. It tells how far back precision and
-- recall can be trusted.
--
-- @param days int = 60  how many days back from the latest labelled transaction
WITH period AS (
    SELECT max(event_time) - make_interval(days => %(days)s::int) AS since_time
    FROM fraud_labels
)
SELECT
    (event_time AT TIME ZONE 'UTC')::date AS day,
    count(*)                              AS frauds,
    percentile_cont(0.5) WITHIN GROUP (
        ORDER BY extract(epoch FROM known_at - event_time) / 3600)
                                          AS median_delay_hours,
    percentile_cont(0.9) WITHIN GROUP (
        ORDER BY extract(epoch FROM known_at - event_time) / 3600)
                                          AS p90_delay_hours,
    max(extract(epoch FROM known_at - event_time) / 3600)::float8
                                          AS max_delay_hours
FROM fraud_labels
WHERE event_time > (SELECT since_time FROM period)
GROUP BY 1
ORDER BY 1;
