-- FOCUS columns a cost report groups by beside the charge itself (issue 9): the billing
-- account (account_id holds the sub-account when there is one), the provider, and ChargeClass
-- ('Correction' for a correction to an invoiced billing period, else empty). Rows written
-- before this migration read them as ''.
ALTER TABLE {database}.cost_records
    ADD COLUMN IF NOT EXISTS billing_account_id String,
    ADD COLUMN IF NOT EXISTS provider LowCardinality(String),
    ADD COLUMN IF NOT EXISTS charge_class LowCardinality(String);

-- A view's SELECT * is expanded when the view is created: re-create it to show the new columns.
CREATE OR REPLACE VIEW {database}.cost_records_current AS
SELECT * FROM {database}.cost_records FINAL;
