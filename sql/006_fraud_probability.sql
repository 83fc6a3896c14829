-- The supervised stage's fraud probability, beside the anomaly score, on every
-- scored transaction and every alert.
--
-- A model with a supervised stage alerts on this probability (or on an active
-- rule); a model without one leaves it null and alerts on its anomaly score.
-- Nullable columns without a default rewrite nothing, on partitioned tables
-- and hypertables alike.

ALTER TABLE scored_transactions ADD COLUMN IF NOT EXISTS fraud_probability
    double precision;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS fraud_probability double precision;

DO $$
DECLARE
    parent text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['scored_transactions', 'alerts'] LOOP
        IF NOT EXISTS (
            SELECT FROM pg_constraint
            WHERE conname = parent || '_fraud_probability_check'
              AND conrelid = parent::regclass
        ) THEN
            EXECUTE format(
                'ALTER TABLE %I ADD CONSTRAINT %I CHECK (fraud_probability IS NULL '
                'OR (fraud_probability >= 0 AND fraud_probability <= 1))',
                parent, parent || '_fraud_probability_check');
        END IF;
    END LOOP;
END
$$;

COMMENT ON COLUMN scored_transactions.fraud_probability IS
    'Fraud probability in [0, 1] from the model''s supervised stage (a random '
    'forest trained on delayed labels, with the anomaly score among its inputs); '
    'an alert when it reaches the stage''s threshold (model_versions). Null when '
    'the model has no supervised stage: then the anomaly score decides.';
COMMENT ON COLUMN alerts.fraud_probability IS
    'Fraud probability of the alerting transaction from the model''s supervised '
    'stage; null when the model has none.';
