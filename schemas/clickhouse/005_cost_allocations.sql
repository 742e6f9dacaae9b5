-- Cost records attributed to team / feature / customer / cost center / environment by the
-- rules in attribution_rules (issue 3). One row per allocation: a shared cost split across
-- teams gives one row per team, and its parts sum exactly to the record's cost. Cost no rule
-- claims is attributed to 'unallocated', never dropped.
-- Keyed by (record, allocation index), not by team: a replay re-inserts the same keys and
-- they collapse, even if the rules changed in between (a re-attributed row replaces the old).
CREATE TABLE IF NOT EXISTS {database}.cost_allocations
(
    tenant_id        LowCardinality(String),
    message_id       String,
    allocation_index UInt16,
    team             LowCardinality(String),
    feature          LowCardinality(String),
    customer         LowCardinality(String),
    cost_center      LowCardinality(String),
    environment      LowCardinality(String),
    rule_id          LowCardinality(String),
    share            Decimal(38, 12),
    billed_cost      Decimal(38, 12),
    effective_cost   Decimal(38, 12),
    usage_quantity   Decimal(38, 12),
    currency         LowCardinality(String),
    service          LowCardinality(String),
    account_id       String,
    resource_id      String,
    usage_start      DateTime64(3, 'UTC'),
    usage_end        DateTime64(3, 'UTC'),
    source_partition UInt32,
    source_offset    UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(usage_start)
ORDER BY (tenant_id, toStartOfHour(usage_start), message_id, allocation_index)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {database}.cost_allocations_current AS
SELECT * FROM {database}.cost_allocations FINAL;
