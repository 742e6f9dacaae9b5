-- Valid, de-duplicated customer events (track / identify / alias / page), one row each.
-- ReplacingMergeTree on the event's identity: a replay after a Flink failure re-inserts rows
-- with the same sorting key, which collapse to one; readers use FINAL (or the events_current
-- view) for exact counts before background merges run.
-- Sorting key: dashboards filter by tenant and time range first, then type / event name.
CREATE TABLE IF NOT EXISTS {database}.events
(
    tenant_id        LowCardinality(String),
    message_id       String,
    type             LowCardinality(String),
    event            String,
    anonymous_id     String,
    user_id          String,
    previous_id      String,
    email            String,
    phone            String,
    device_id        String,
    campaign_id      String,
    revenue          Nullable(Decimal(18, 6)),
    currency         LowCardinality(String),
    product_ids      Array(String),
    traits           String CODEC(ZSTD(3)),
    properties       String CODEC(ZSTD(3)),
    context          String CODEC(ZSTD(3)),
    event_time       DateTime64(3, 'UTC'),
    sent_at          Nullable(DateTime64(3, 'UTC')),
    received_at      Nullable(DateTime64(3, 'UTC')),
    source_partition UInt32,
    source_offset    UInt64,
    produced_at      DateTime64(3, 'UTC'),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant_id, toStartOfHour(event_time), type, event, message_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {database}.events_current AS
SELECT * FROM {database}.events FINAL;
