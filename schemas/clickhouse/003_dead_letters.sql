-- Every input the ingest job could not accept, with the reason and where it came from.
-- Keyed by source position, so a replay re-inserts the same keys and they collapse.
-- raw holds the payload as text; raw_encoding is 'base64' when it was not valid UTF-8.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    produced_at      DateTime64(3, 'UTC'),
    tenant_id        String,
    message_id       String,
    reason_code      LowCardinality(String),
    reason           String,
    raw              String CODEC(ZSTD(3)),
    raw_encoding     LowCardinality(String),
    dead_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(produced_at)
ORDER BY (source_topic, source_partition, source_offset)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS {database}.dead_letters_current AS
SELECT * FROM {database}.dead_letters FINAL;
