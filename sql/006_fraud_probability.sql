-- The supervised stage's fraud probability, beside the anomaly score, on every
-- scored transaction and every alert, and its threshold on every model version.
--
-- A model with a supervised stage alerts on this probability (or on an active
-- rule); a model without one leaves it null and alerts on its anomaly score.
-- Nullable columns without a default rewrite nothing, on partitioned tables
-- and hypertables alike.

ALTER TABLE scored_transactions ADD COLUMN IF NOT EXISTS fraud_probability
    double precision;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS fraud_probability double precision;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS fraud_threshold double precision;

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
    IF NOT EXISTS (
        SELECT FROM pg_constraint
        WHERE conname = 'model_versions_fraud_threshold_check'
          AND conrelid = 'model_versions'::regclass
    ) THEN
        ALTER TABLE model_versions ADD CONSTRAINT model_versions_fraud_threshold_check
            CHECK (fraud_threshold IS NULL
                   OR (fraud_threshold > 0 AND fraud_threshold <= 1));
    END IF;
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
COMMENT ON COLUMN model_versions.fraud_threshold IS
    'Alert threshold on fraud_probability of the version''s supervised stage: '
    'with one, a transaction alerts when fraud_probability >= fraud_threshold '
    '(or an active rule fired) and threshold is not used. Null when the version '
    'has no supervised stage.';
COMMENT ON COLUMN model_versions.threshold IS
    'Alert threshold on the anomaly score (score >= threshold), for versions '
    'without a supervised stage (fraud_threshold null); for the others it only '
    'marks the anomaly scores the forest alone would have alerted on.';
