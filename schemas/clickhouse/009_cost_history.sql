-- Cost history (issue 9): cost per hour and per UTC day, by the cost row's own charge period,
-- whatever the stream's lateness rules did with it. The live windows (cost_panes, migration
-- 006) count a row only while its windows are open; a cost file loaded out of time order, or a
-- month loaded late, goes to late_events there. Here every allocation counts, in the hour and
-- day of its usage_start (FOCUS ChargePeriodStart): a daily FOCUS row lands whole in the hour
-- its period starts, it is not spread over the period.
--
-- Why absolute rows rather than a SummingMergeTree fed by a materialized view: a view sees
-- every insert, and a Flink replay re-inserts cost_allocations rows batched differently (so
-- the inserts are not deduplicated by token), as does a file loaded again after the dedup
-- horizon. cost_allocations collapses the copies (ReplacingMergeTree + FINAL); a view would
-- add them twice. So the ClickHouse writer (sinks/cost_history.py), after each
-- cost_allocations insert, recomputes the touched (tenant, hour) buckets from
-- cost_allocations FINAL and the touched days from cost_hourly FINAL and writes them as
-- absolute rows: ReplacingMergeTree(version), version = the newest ingested_at (ms) among the
-- bucket's allocations, which only grows. A replay recomputes the same sums; a key that lost
-- all its allocations (a record re-attributed to another team) is rewritten with zero sums and
-- allocations = 0, and the *_current views hide it.
CREATE TABLE IF NOT EXISTS {database}.cost_hourly
(
    tenant_id      LowCardinality(String),
    hour           DateTime('UTC'),
    currency       LowCardinality(String),
    team           LowCardinality(String),
    feature        LowCardinality(String),
    customer       LowCardinality(String),
    service        LowCardinality(String),
    billed_cost    Decimal(38, 12),
    effective_cost Decimal(38, 12),
    usage_quantity Decimal(38, 12),
    allocations    UInt64,
    version        UInt64,
    updated_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, currency, team, feature, customer, service);

CREATE TABLE IF NOT EXISTS {database}.cost_daily
(
    tenant_id      LowCardinality(String),
    day            Date,
    currency       LowCardinality(String),
    team           LowCardinality(String),
    feature        LowCardinality(String),
    customer       LowCardinality(String),
    service        LowCardinality(String),
    billed_cost    Decimal(38, 12),
    effective_cost Decimal(38, 12),
    usage_quantity Decimal(38, 12),
    allocations    UInt64,
    version        UInt64,
    updated_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, currency, team, feature, customer, service);

CREATE VIEW IF NOT EXISTS {database}.cost_hourly_current AS
SELECT tenant_id, hour, currency, team, feature, customer, service,
       billed_cost, effective_cost, usage_quantity, allocations
FROM {database}.cost_hourly FINAL
WHERE allocations > 0;

CREATE VIEW IF NOT EXISTS {database}.cost_daily_current AS
SELECT tenant_id, day, currency, team, feature, customer, service,
       billed_cost, effective_cost, usage_quantity, allocations
FROM {database}.cost_daily FINAL
WHERE allocations > 0;

-- Backfill from the allocations stored before this migration (same rule as the writer's).
INSERT INTO {database}.cost_hourly
    (tenant_id, hour, currency, team, feature, customer, service,
     billed_cost, effective_cost, usage_quantity, allocations, version)
SELECT tenant_id, toStartOfHour(usage_start) AS hour, currency, team, feature, customer,
       service, sum(billed_cost), sum(effective_cost), sum(usage_quantity), count(),
       max(toUInt64(toUnixTimestamp64Milli(max(ingested_at))))
           OVER (PARTITION BY tenant_id, hour)
FROM {database}.cost_allocations FINAL
GROUP BY tenant_id, hour, currency, team, feature, customer, service;

INSERT INTO {database}.cost_daily
    (tenant_id, day, currency, team, feature, customer, service,
     billed_cost, effective_cost, usage_quantity, allocations, version)
SELECT tenant_id, toDate(hour) AS day, currency, team, feature, customer, service,
       sum(billed_cost), sum(effective_cost), sum(usage_quantity), sum(allocations),
       max(max(version)) OVER (PARTITION BY tenant_id, day)
FROM {database}.cost_hourly FINAL
GROUP BY tenant_id, day, currency, team, feature, customer, service;
