-- Feedback and rule bookkeeping, the same on both paths.
--
-- fraud_labels    confirmed fraud, one row per fraudulent transaction
-- rule_hits       one row per rule that fired on a transaction
-- drift_metrics   population stability index (PSI) of each feature per window
-- model_versions  the registry of models that have scored transactions
--
-- On TimescaleDB, 004_analytics.timescale.sql turns rule_hits and
-- drift_metrics into hypertables before building continuous aggregates on
-- them; both primary keys already include their time column, as hypertables
-- require. On plain PostgreSQL they stay ordinary tables: rule hits are a small
-- fraction of the scored rows and drift metrics a few rows per window.
--
-- The last part documents the tables of 001 and the runner's version table
-- where they carry no comment yet, so that every relation of the schema has
-- one without overwriting wording set elsewhere.

CREATE TABLE IF NOT EXISTS fraud_labels (
    transaction_id text        NOT NULL,
    event_time     timestamptz NOT NULL,
    card_id        text,
    terminal_id    text        NOT NULL,
    known_at       timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT fraud_labels_pkey PRIMARY KEY (transaction_id, event_time)
);

CREATE TABLE IF NOT EXISTS rule_hits (
    transaction_id text        NOT NULL,
    event_time     timestamptz NOT NULL,
    rule_id        text        NOT NULL,
    rule_version   integer     NOT NULL,
    mode           text        NOT NULL,
    severity       text        NOT NULL,
    reason         text        NOT NULL,
    card_id        text        NOT NULL,
    terminal_id    text        NOT NULL,
    CONSTRAINT rule_hits_pkey PRIMARY KEY (transaction_id, event_time, rule_id),
    CONSTRAINT rule_hits_mode_check CHECK (mode IN ('active', 'shadow')),
    CONSTRAINT rule_hits_severity_check
        CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    CONSTRAINT rule_hits_rule_version_check CHECK (rule_version >= 1)
);

CREATE TABLE IF NOT EXISTS drift_metrics (
    window_start      timestamptz      NOT NULL,
    window_end        timestamptz      NOT NULL,
    feature           text             NOT NULL,
    psi               double precision NOT NULL,
    reference_version text             NOT NULL,
    rows              bigint           NOT NULL,
    computed_at       timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT drift_metrics_pkey
        PRIMARY KEY (window_start, feature, reference_version),
    CONSTRAINT drift_metrics_psi_check CHECK (psi >= 0),
    CONSTRAINT drift_metrics_rows_check CHECK (rows >= 0),
    CONSTRAINT drift_metrics_window_check CHECK (window_end > window_start)
);

CREATE TABLE IF NOT EXISTS model_versions (
    version       text             NOT NULL,
    alias         text,
    registered_at timestamptz      NOT NULL DEFAULT now(),
    threshold     double precision,
    notes         text,
    CONSTRAINT model_versions_pkey PRIMARY KEY (version),
    CONSTRAINT model_versions_alias_key UNIQUE (alias),
    CONSTRAINT model_versions_threshold_check CHECK (threshold > 0 AND threshold <= 1)
);

CREATE INDEX IF NOT EXISTS fraud_labels_terminal_idx
    ON fraud_labels (terminal_id, event_time DESC);
CREATE INDEX IF NOT EXISTS fraud_labels_card_idx
    ON fraud_labels (card_id, event_time DESC);
CREATE INDEX IF NOT EXISTS rule_hits_rule_idx ON rule_hits (rule_id, event_time DESC);
CREATE INDEX IF NOT EXISTS rule_hits_card_idx ON rule_hits (card_id, event_time DESC);

COMMENT ON TABLE fraud_labels IS
    'Confirmed fraud: one row per transaction known to be fraudulent. A scored '
    'transaction without a row here is genuine as far as is known so far; labels '
    'arrive late (chargebacks), so recent transactions are not yet settled.';
COMMENT ON COLUMN fraud_labels.transaction_id IS
    'Identifier of the fraudulent transaction, as in scored_transactions.';
COMMENT ON COLUMN fraud_labels.event_time IS
    'Event time of the fraudulent transaction (UTC); with transaction_id, the key '
    'of the scored row.';
COMMENT ON COLUMN fraud_labels.card_id IS
    'Card of the transaction; null when the feedback did not name it.';
COMMENT ON COLUMN fraud_labels.terminal_id IS 'Terminal of the transaction.';
COMMENT ON COLUMN fraud_labels.known_at IS
    'When the fraud became known (chargeback or investigation), UTC; known_at '
    'minus event_time is the label delay.';
COMMENT ON COLUMN fraud_labels.recorded_at IS 'When this row was written, UTC.';

COMMENT ON TABLE rule_hits IS
    'Rule hits: one row per rule that fired on a transaction, active or shadow. '
    'Shadow hits are recorded for evaluation and never raise an alert.';
COMMENT ON COLUMN rule_hits.transaction_id IS 'Transaction the rule fired on.';
COMMENT ON COLUMN rule_hits.event_time IS 'Event time of that transaction (UTC).';
COMMENT ON COLUMN rule_hits.rule_id IS 'Identifier of the rule, as in the rule pack.';
COMMENT ON COLUMN rule_hits.rule_version IS
    'Version of the rule in force when it fired (1 or more).';
COMMENT ON COLUMN rule_hits.mode IS
    'active (may alert) or shadow (recorded only) at the time of the hit.';
COMMENT ON COLUMN rule_hits.severity IS
    'Severity of the rule: low, medium, high or critical.';
COMMENT ON COLUMN rule_hits.reason IS
    'Why the rule fired, in words, with the values seen.';
COMMENT ON COLUMN rule_hits.card_id IS 'Card of the transaction.';
COMMENT ON COLUMN rule_hits.terminal_id IS 'Terminal of the transaction.';

COMMENT ON TABLE drift_metrics IS
    'Feature drift: population stability index of each feature over one window '
    'of event time, against the reference distribution of one model version. '
    'Rule of thumb: below 0.1 stable, 0.1 to 0.25 moderate, above 0.25 major.';
COMMENT ON COLUMN drift_metrics.window_start IS 'Start of the window, inclusive (UTC).';
COMMENT ON COLUMN drift_metrics.window_end IS 'End of the window, exclusive (UTC).';
COMMENT ON COLUMN drift_metrics.feature IS
    'Feature name, as in scored_transactions.features.';
COMMENT ON COLUMN drift_metrics.psi IS
    'Population stability index of the window against the reference (0 or more).';
COMMENT ON COLUMN drift_metrics.reference_version IS
    'Model version whose training data is the reference distribution.';
COMMENT ON COLUMN drift_metrics.rows IS 'Transactions in the window.';
COMMENT ON COLUMN drift_metrics.computed_at IS 'When the index was computed, UTC.';

COMMENT ON TABLE model_versions IS
    'Registry of model versions: one row per model that has been deployed or '
    'registered for scoring.';
COMMENT ON COLUMN model_versions.version IS
    'Model version, as in scored_transactions.model_version.';
COMMENT ON COLUMN model_versions.alias IS
    'Role of the version (for example champion or challenger); unique, optional.';
COMMENT ON COLUMN model_versions.registered_at IS
    'When the version was registered, UTC.';
COMMENT ON COLUMN model_versions.threshold IS
    'Alert threshold on the score: an alert is raised when score >= threshold.';
COMMENT ON COLUMN model_versions.notes IS 'Free text: training data, changes, caveats.';

GRANT SELECT, INSERT, UPDATE ON fraud_labels, rule_hits, drift_metrics, model_versions
    TO txwatch_writer;
GRANT SELECT ON fraud_labels, rule_hits, drift_metrics, model_versions TO analyst;

-- Comments for relations created before this migration, only where missing.
DO $$
DECLARE
    item record;
    current_comment text;
BEGIN
    FOR item IN
        SELECT * FROM (VALUES
            ('schema_migrations', NULL,
             'Applied migrations, one row each; written by the migration tool.'),
            ('schema_migrations', 'version',
             'Number of the migration (NNN in its file name).'),
            ('schema_migrations', 'name', 'Name of the migration (after NNN_).'),
            ('schema_migrations', 'variant',
             'Path the database took: timescaledb or postgresql.'),
            ('schema_migrations', 'applied_at', 'When the migration was applied, UTC.'),
            ('scored_transactions', NULL,
             'Every transaction the job scored: amount, features, score, risk and '
             'rule hits. Upserted by the job, keyed by transaction id and event time.'),
            ('scored_transactions', 'transaction_id', 'Identifier of the transaction.'),
            ('scored_transactions', 'event_time',
             'When the transaction happened (event time, UTC).'),
            ('scored_transactions', 'card_id', 'Card that paid.'),
            ('scored_transactions', 'terminal_id', 'Terminal that took the payment.'),
            ('scored_transactions', 'amount',
             'Amount in the reporting currency (EUR).'),
            ('scored_transactions', 'original_amount',
             'Amount in the original currency.'),
            ('scored_transactions', 'currency', 'ISO code of the original currency.'),
            ('scored_transactions', 'is_late',
             'True when the event arrived after the watermark had passed it.'),
            ('scored_transactions', 'score',
             'Anomaly score in (0, 1]; higher means more anomalous.'),
            ('scored_transactions', 'risk',
             'Share of training transactions less anomalous than this one, 0 to 1.'),
            ('scored_transactions', 'is_alert',
             'True when score >= the model threshold.'),
            ('scored_transactions', 'model_version',
             'Version of the model that scored it.'),
            ('scored_transactions', 'features',
             'Feature values the model saw, as a JSON object keyed by feature name.'),
            ('scored_transactions', 'rule_hits',
             'Rule hits on this transaction, as a JSON array of objects with rule_id, '
             'version, severity, mode and reason.'),
            ('scored_transactions', 'scored_at', 'When the row was written, UTC.'),
            ('alerts', NULL,
             'Transactions whose score reached the threshold, with the reasons: the '
             'features that pushed the score up most.'),
            ('alerts', 'transaction_id', 'Identifier of the transaction.'),
            ('alerts', 'event_time',
             'When the transaction happened (event time, UTC).'),
            ('alerts', 'card_id', 'Card that paid.'),
            ('alerts', 'terminal_id', 'Terminal that took the payment.'),
            ('alerts', 'amount', 'Amount in the reporting currency (EUR).'),
            ('alerts', 'score',
             'Anomaly score in (0, 1]; higher means more anomalous.'),
            ('alerts', 'risk',
             'Share of training transactions less anomalous than this one, 0 to 1.'),
            ('alerts', 'model_version', 'Version of the model that raised the alert.'),
            ('alerts', 'reasons',
             'Reasons, most anomalous first: JSON array of objects with feature, '
             'value, contribution and text.'),
            ('alerts', 'rule_hits', 'Rule hits on this transaction (JSON array).'),
            ('alerts', 'alerted_at', 'When the alert was written, UTC.'),
            ('scored_transactions_default', NULL,
             'Rows of scored_transactions for days without a daily partition.'),
            ('alerts_default', NULL,
             'Rows of alerts for days without a daily partition.')
        ) AS comments (relation, column_name, description)
    LOOP
        CONTINUE WHEN to_regclass(item.relation) IS NULL;
        IF item.column_name IS NULL THEN
            current_comment := obj_description(to_regclass(item.relation), 'pg_class');
            IF current_comment IS NULL THEN
                EXECUTE format('COMMENT ON TABLE %I IS %L',
                               item.relation, item.description);
            END IF;
        ELSE
            SELECT col_description(a.attrelid, a.attnum) INTO current_comment
            FROM pg_attribute a
            WHERE a.attrelid = to_regclass(item.relation)
              AND a.attname = item.column_name;
            IF FOUND AND current_comment IS NULL THEN
                EXECUTE format('COMMENT ON COLUMN %I.%I IS %L',
                               item.relation, item.column_name, item.description);
            END IF;
        END IF;
    END LOOP;

    IF obj_description('txwatch_ensure_partitions(date, date)'::regprocedure, 'pg_proc')
            IS NULL THEN
        COMMENT ON FUNCTION txwatch_ensure_partitions(date, date) IS
            'Creates the daily partitions of scored_transactions and alerts for '
            'first_day..last_day; returns how many were new (0 on TimescaleDB).';
    END IF;
END
$$;
