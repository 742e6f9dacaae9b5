-- Dead letters keep their identity across broker restarts (issue 9). They were keyed by
-- (topic, partition, offset) alone, so after a broker restart or a topic re-creation, whose
-- offsets start again at 0, a new dead letter replaced an old one at the same position.
-- record_id is a hash of the Kafka record timestamp and the payload: a Flink replay reads the
-- same record again (same key, the copies collapse), a different record at a reused position
-- gets another key and is kept. ClickHouse allows only a column added in the same statement,
-- without a default expression, to extend the sorting key; older rows read it as ''.
ALTER TABLE {database}.dead_letters
    ADD COLUMN IF NOT EXISTS record_id String,
    MODIFY ORDER BY (source_topic, source_partition, source_offset, record_id);

-- A view's SELECT * is expanded when the view is created: re-create it to show record_id.
CREATE OR REPLACE VIEW {database}.dead_letters_current AS
SELECT * FROM {database}.dead_letters FINAL;
