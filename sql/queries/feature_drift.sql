-- Which features drifted most in the latest drift window? PSI of each feature
-- against each reference, the previous window's PSI, and a level: stable
-- (below 0.1), moderate (0.1 to 0.25) or major (above 0.25).
--
-- @param window_start timestamptz = null  the window; null means the latest one
WITH chosen AS (
    SELECT coalesce(%(window_start)s::timestamptz, max(window_start)) AS window_start
    FROM drift_metrics
),
with_previous AS (
    SELECT m.*,
           lag(psi) OVER (PARTITION BY feature, reference_version
                          ORDER BY window_start) AS previous_psi
    FROM drift_metrics m
    WHERE window_start <= (SELECT window_start FROM chosen)
)
SELECT
    window_start,
    window_end,
    reference_version,
    feature,
    psi,
    previous_psi,
    CASE WHEN psi < 0.1 THEN 'stable'
         WHEN psi <= 0.25 THEN 'moderate'
         ELSE 'major' END AS level,
    rows
FROM with_previous
WHERE window_start = (SELECT window_start FROM chosen)
ORDER BY psi DESC, feature, reference_version;
