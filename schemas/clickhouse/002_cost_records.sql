-- Valid, de-duplicated cloud cost / usage records (tidemark's own JSON or FOCUS 1.x rows).
-- Money is Decimal(38, 12): FOCUS costs carry many decimals and sums must be exact.
CREATE TABLE IF NOT EXISTS {database}.cost_records
(
    tenant_id        LowCardinality(String),
    message_id       String,
    resource_id      String,
    service          LowCardinality(String),
    account_id       String,
    region           LowCardinality(String),
    charge_category  LowCardinality(String),
    usage_start      DateTime64(3, 'UTC'),
    usage_end        DateTime64(3, 'UTC'),
    billed_cost      Decimal(38, 12),
    effective_cost   Decimal(38, 12),
    currency         LowCardinality(String),
    usage_quantity   Decimal(38, 12),
    usage_unit       LowCardinality(String),
    tags             Map(String, String),
    source_partition UInt32,
    source_offset    UInt64,
    produced_at      DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(usage_start)
ORDER BY (tenant_id, toStartOfHour(usage_start), service, message_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {database}.cost_records_current AS
SELECT * FROM {database}.cost_records FINAL;
