-- Shadow scoring: what the challenger model made of each scored transaction,
-- beside the champion's score, the same on both paths.
--
-- The columns are null when no challenger was in force for the row's batch.
-- Adding nullable columns without a default rewrites nothing, on a
-- partitioned table (the partitions follow) as on a hypertable (compressed
-- chunks included).

ALTER TABLE scored_transactions ADD COLUMN IF NOT EXISTS challenger_score
    double precision;
ALTER TABLE scored_transactions ADD COLUMN IF NOT EXISTS challenger_version text;
ALTER TABLE scored_transactions ADD COLUMN IF NOT EXISTS challenger_alert boolean;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conname = 'scored_transactions_challenger_check'
          AND conrelid = 'scored_transactions'::regclass
    ) THEN
        ALTER TABLE scored_transactions
            ADD CONSTRAINT scored_transactions_challenger_check CHECK (
                (challenger_version IS NULL
                 AND challenger_score IS NULL AND challenger_alert IS NULL)
                OR (challenger_version IS NOT NULL
                    AND challenger_score IS NOT NULL AND challenger_alert IS NOT NULL
                    AND challenger_score > 0 AND challenger_score <= 1)
            );
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS scored_transactions_challenger_idx
    ON scored_transactions (challenger_version, event_time DESC)
    WHERE challenger_version IS NOT NULL;

COMMENT ON COLUMN scored_transactions.challenger_score IS
    'Anomaly score of the challenger model in (0, 1], scored in shadow on the same '
    'features; null when no challenger was in force. Never raises an alert.';
COMMENT ON COLUMN scored_transactions.challenger_version IS
    'Version of the challenger model that scored the row in shadow; null when none.';
COMMENT ON COLUMN scored_transactions.challenger_alert IS
    'Whether the challenger would have alerted in the champion''s place: its score '
    'reaches its own threshold, or an active rule fired. Recorded only; is_alert '
    'alone decides. Null when no challenger was in force.';
