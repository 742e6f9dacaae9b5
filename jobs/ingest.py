"""tidemark ingest job: Kafka -> validate -> dedup -> enrich + resolve identity -> ClickHouse
and Redis (+ dead letters).

Submit to a cluster the way operators do (`tidemark run ingest` builds this command):

    flink run -d -py jobs/ingest.py -pyfs tidemark-job.zip -- --config flink-conf/tidemark.yaml

or run it on a local mini-cluster for a quick try: `python -m jobs.ingest --local`.

The graph, and why each stage runs where it does (Python is the slow part, so Python touches
each event once and everything stateful per event runs in Java):

    Flink's Kafka connector (KafkaSource, Java; offsets in checkpoints, read_committed)
      -> dedup on the raw record's (tenant_id, message_id) (JSON_QUERY), keep first, state
         TTL = horizon; records without both ids pass undeduplicated (Flink SQL, Java)
      -> processing-time window of ingest.batch_max_seconds (1 s by default) collecting each
         identity shard's raw records into one byte string (Flink SQL, Java)
      -> ProfileStage (Python, once per batch, keyed by shard, dimension changes broadcast to
         it from a second reader on the changelog topic): validate (bad records become dead
         letters), enrich, resolve identities, attribute cost; then, in the same call, the
         WindowStage (udfs/window_stage.py): judge lateness, fold panes, live state and
         triggers; state in keyed MapState (ingest.profile_stage=false: BatchValidation
         only validates; windows.enabled=false skips the windows)
      -> dead letters, on a side output -> the dead-letter topic (Flink's KafkaSink, Java,
         exactly-once transactions)
      -> ClickHouseBatchWriter (Python): one idempotent insert per table per window (events,
         identity tables, allocations, panes, late events, window progress)
      -> RedisProfileWriter (Python, on the stage's side output of identity batches):
       versioned identity lookups and profile hashes
      -> RedisLiveWriter (Python, on the stage's side output of live payloads): versioned
       live-state hashes and exactly-once trigger notifications (Redis Streams)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import DataStream, OutputTag, StreamExecutionEnvironment
from pyflink.datastream.connectors import Sink
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment, Table

from jobs.environment import create_environment
from jobs.preflight import preflight, publish_window_specs, windows_active
from sinks.clickhouse import ClickHouseBatchWriter, ClickHouseSettings
from sinks.redis_live import LiveSinkSettings, RedisLiveWriter
from sinks.redis_profiles import TABLES as REDIS_TABLES
from sinks.redis_profiles import RedisProfileWriter, RedisSettings
from tidemark import jars
from tidemark.config import Config, ConfigError, load_config
from udfs.connector_records import (
    BATCH_TYPE,
    DEAD_LETTER_OUTPUT_ID,
    DEAD_LETTER_RECORD_TYPE,
    DEAD_LETTERS_TABLE,
    DIMENSION_CHANGES,
    RAW_BODY_SQL,
    RAW_LINE_SQL,
    BatchValidation,
    ChangeRecordValidator,
    dead_letter_key,
)
from udfs.contract import MAX_MESSAGE_ID_CHARS
from udfs.profile_stage import (
    CHANGES_DESCRIPTOR,
    LIVE_OUTPUT_ID,
    SIDE_OUTPUT_ID,
    ProfileStage,
    ProfileStageSettings,
)
from udfs.validation import ValidationLimits
from udfs.window_stage import WindowStageSettings

JOB_NAME = "tidemark-ingest"


def validation_limits(cfg: Config) -> ValidationLimits:
    """The record validator's limits, resolved on the client."""
    return ValidationLimits(
        max_event_bytes=cfg.ingest.max_event_bytes,
        max_future_seconds=cfg.ingest.max_future_seconds,
    )


def clickhouse_settings(cfg: Config) -> ClickHouseSettings:
    """The sink's settings, resolved on the client."""
    return ClickHouseSettings.from_config(cfg)


def profile_stage_settings(cfg: Config) -> ProfileStageSettings:
    """The profile stage's settings, resolved on the client."""
    directory = cfg.dimensions_dir
    return ProfileStageSettings(
        topic=cfg.kafka.topic,
        limits=validation_limits(cfg),
        dimensions_dir=str(directory) if directory else "",
        identity_rules=dict(cfg.identity.rules),
        cache_entries=cfg.identity.cache_entries,
        side_output_tables=REDIS_TABLES,
        windows=window_stage_settings(cfg) if windows_active(cfg) else None,
    )


def window_stage_settings(cfg: Config) -> WindowStageSettings:
    """The window stage's settings, resolved on the client."""
    w = cfg.windows
    return WindowStageSettings(
        specs=w.specs,
        out_of_orderness_ms=w.out_of_orderness_ms,
        allowed_lateness_ms=w.allowed_lateness_ms,
        live=dataclasses.asdict(cfg.live),
        live_ttl_ms=cfg.live.ttl_seconds * 1000,
        cache_entries=cfg.identity.cache_entries,
    )


def startup_options(start_from: str) -> str:
    """The connector's startup options for `kafka.start_from` (used when no checkpoint or
    savepoint holds offsets: a restored job resumes from its checkpointed offsets)."""
    if start_from == "earliest":
        return "'scan.startup.mode' = 'earliest-offset'"
    if start_from == "latest":
        return "'scan.startup.mode' = 'latest-offset'"
    millis = start_from.removeprefix("timestamp:")
    return f"'scan.startup.mode' = 'timestamp', 'scan.startup.timestamp-millis' = '{millis}'"


def connector_source_ddl(
    cfg: Config, table: str = "tidemark_kafka", topic: str = "", start_from: str = ""
) -> str:
    """DDL of a table over Flink's SQL Kafka connector, with the record position as metadata.

    `read_committed`: records of aborted transactions (a dead-letter or notification writer
    that failed over, or any transactional producer) are never read.
    """
    k = cfg.kafka
    return f"""
        CREATE TEMPORARY TABLE {table} (
          `value` BYTES,
          `partition` INT METADATA VIRTUAL,
          `offset` BIGINT METADATA VIRTUAL,
          `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
          `pt` AS PROCTIME()
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{topic or k.topic}',
          'properties.bootstrap.servers' = '{cfg.kafka_bootstrap}',
          'properties.group.id' = '{k.consumer_group}',
          'properties.isolation.level' = 'read_committed',
          'properties.max.poll.records' = '{k.max_poll_records}',
          'properties.fetch.max.bytes' = '{k.fetch_max_bytes}',
          'scan.topic-partition-discovery.interval' = '{k.partition_discovery_seconds} s',
          {startup_options(start_from or k.start_from)},
          'format' = 'raw'
        )"""


def use_connector_jar(t_env: StreamTableEnvironment, cfg: Config) -> None:
    """Ship Flink's Kafka connector with the job: `kafka.connector_jar`, else the pinned one
    bootstrap fetched (flink-conf/jars.lock)."""
    jar = Path(cfg.kafka.connector_jar) if cfg.kafka.connector_jar else jars.connector_jar()
    t_env.get_config().set("pipeline.jars", jar.resolve().as_uri())


def dimension_changes(t_env: StreamTableEnvironment, cfg: Config) -> DataStream:
    """Records of the dimension changelog topic, as batch rows of one:
    (dimension_changes | dead_letters, "", raw change | dead letter, 0).

    Always read from the earliest offset: a dimension version is never stale (as-of lookups
    pick the version valid at each event's time).
    """
    topic = cfg.enrichment.changelog_topic
    t_env.execute_sql(
        connector_source_ddl(cfg, "tidemark_dimension_changes", topic, start_from="earliest")
    )
    positioned = t_env.sql_query(
        "SELECT `value`, `partition`, `offset`, ts FROM tidemark_dimension_changes"
    )
    return (
        t_env.to_data_stream(positioned)
        .map(ChangeRecordValidator(topic), output_type=BATCH_TYPE)
        .set_parallelism(1)
        .uid("dimension-changelog-validate")
        .name("dimension-changelog: validate")
    )


#: The record's two ids as one small JSON object, from a single parse of `value`.
IDS_SQL = "JSON_QUERY(CAST(`value` AS STRING), '$[''tenant_id'',''message_id'']')"

#: Each id of IDS_SQL's `ids` as JSON in a one-element array (`["m-1"]`, `[1234567]`,
#: `[""]`, NULL if absent): a parse of the small object only, and it lets SQL tell a
#: non-empty string, the only kind of id validation accepts, from anything else.
ID_COLUMNS_SQL = (
    "JSON_QUERY(ids, '$.tenant_id' WITH UNCONDITIONAL ARRAY WRAPPER) AS tenant_id,"
    " JSON_QUERY(ids, '$.message_id' WITH UNCONDITIONAL ARRAY WRAPPER) AS message_id"
)

#: True when both ids (as ID_COLUMNS_SQL gives them) are non-empty strings and the
#: message_id is not over its limit (escapes count, so an id with many escaped characters
#: near the limit skips dedup).
HAS_IDS_SQL = (
    "(SUBSTR(tenant_id, 1, 2) = '[\"' AND tenant_id <> '[\"\"]'"
    " AND SUBSTR(message_id, 1, 2) = '[\"' AND message_id <> '[\"\"]'"
    f" AND CHAR_LENGTH(message_id) <= {MAX_MESSAGE_ID_CHARS + 4})"
)


def batch_interval_sql(seconds: float) -> str:
    """The batching window as a Flink SQL interval, to the millisecond (Flink's SQL has no
    MILLISECOND interval unit; fractional seconds it takes)."""
    return f"INTERVAL '{seconds:.3f}' SECOND"


def raw_batches(t_env: StreamTableEnvironment, cfg: Config) -> Table:
    """The source topic, deduplicated, as one raw batch per identity shard per window.

    Dedup runs here, in Java, before validation, on the ids of the raw record: a record whose
    `tenant_id` and `message_id` are non-empty JSON strings is kept only if no earlier record
    within `ingest.dedup_horizon_seconds` had the same pair. Any other record (an id missing,
    empty or not a string, so invalid, or a FOCUS row sent without a message_id) passes
    undeduplicated, so repeated junk ids never hide a dead letter. Shards: tenants hash to
    `identity.shards` shards (Java's String.hashCode, stable across runs), the key of the
    profile stage's state.
    """
    shards = cfg.identity.shards
    t_env.get_config().set("table.exec.state.ttl", f"{cfg.ingest.dedup_horizon_seconds} s")
    t_env.execute_sql(connector_source_ddl(cfg))
    # Both ids in one parse of the record (JSON_QUERY builds the whole document, so a second
    # call would parse it again; in a JFR profile, parsing was most of the source task's
    # CPU), as a small object such as {"message_id":"m-1","tenant_id":"acme"}. (REGEXP_EXTRACT
    # on it was tried: it compiles its pattern on every call.)
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY VIEW tidemark_ids AS
        SELECT line, pt, {ID_COLUMNS_SQL}
        FROM (SELECT {RAW_LINE_SQL} AS line, pt, {IDS_SQL} AS ids FROM tidemark_kafka)
        """
    )
    shard = f"MOD(ABS(HASH_CODE(COALESCE(tenant_id, ''))), {shards})"
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY VIEW tidemark_rows AS
        SELECT line, pt, {shard} AS shard
        FROM (
          SELECT line, pt, tenant_id,
                 ROW_NUMBER() OVER (PARTITION BY tenant_id, message_id ORDER BY pt ASC) AS rn
          FROM tidemark_ids WHERE {HAS_IDS_SQL})
        WHERE rn = 1
        UNION ALL
        SELECT line, pt, {shard} AS shard
        FROM tidemark_ids WHERE NOT COALESCE({HAS_IDS_SQL}, FALSE)
        """
    )
    return t_env.sql_query(
        f"""
        SELECT CAST(window_start AS STRING) AS window_start,
               {RAW_BODY_SQL} AS body, shard
        FROM TABLE(TUMBLE(TABLE tidemark_rows, DESCRIPTOR(pt),
                          {batch_interval_sql(cfg.ingest.batch_max_seconds)}))
        GROUP BY shard, window_start, window_end
        """
    )


def dead_letter_sink_ddl(cfg: Config, job_name: str) -> str:
    """DDL of the dead-letter topic as a transactional Kafka sink (Flink's KafkaSink, Java).

    Exactly-once: each checkpoint commits one Kafka transaction per writer, so a consumer
    reading `read_committed` sees every dead letter once, even across a failover (records
    written after the last checkpoint are aborted and written again). The transactional-id
    prefix is the job's name, so that two jobs never fence each other's transactions.
    The key is the record's identity (`partition:offset:record_id`), for consumers that
    compact or index the topic.
    """
    return f"""
        CREATE TEMPORARY TABLE tidemark_dead_letter_topic (
          `key` BYTES,
          `value` BYTES
        ) WITH (
          'connector' = 'kafka',
          'topic' = '{cfg.kafka.dead_letter_topic}',
          'properties.bootstrap.servers' = '{cfg.kafka_bootstrap}',
          'properties.transaction.timeout.ms' = '900000',
          'sink.delivery-guarantee' = 'exactly-once',
          'sink.transactional-id-prefix' = '{job_name}-dead-letters',
          'key.format' = 'raw',
          'key.fields' = 'key',
          'value.format' = 'raw',
          'value.fields-include' = 'EXCEPT_KEY'
        )"""


def publish_dead_letters(
    t_env: StreamTableEnvironment, cfg: Config, job_name: str, records: DataStream
) -> None:
    """Write the (key, value) dead-letter records to the dead-letter topic, in Java."""
    t_env.execute_sql(dead_letter_sink_ddl(cfg, job_name))
    t_env.create_temporary_view("tidemark_dead_letters", t_env.from_data_stream(records))
    statements = t_env.create_statement_set()
    statements.add_insert_sql(
        "INSERT INTO tidemark_dead_letter_topic"
        " SELECT CAST(`key` AS BYTES), CAST(`value` AS BYTES) FROM tidemark_dead_letters"
    )
    statements.attach_as_datastream()


def discard(stream: DataStream, uid: str) -> None:
    """End a branch whose work is done in its last function (Flink needs a sink)."""
    j_sink = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()
    stream.sink_to(Sink(j_sink)).uid(uid).name(uid)


def profiled(batched: DataStream, changes: DataStream, cfg: Config) -> DataStream:
    """Send the raw batches through the profile stage, keyed by shard."""
    broadcast = (
        changes.filter(lambda r: r[0] == DIMENSION_CHANGES)
        .set_parallelism(1)
        .uid("valid-dimension-changes")
        .broadcast(CHANGES_DESCRIPTOR)
    )
    return (
        batched.key_by(lambda b: b[2], key_type=Types.INT())
        .connect(broadcast)
        .process(ProfileStage(profile_stage_settings(cfg)), output_type=BATCH_TYPE)
        .uid("profile-stage")
        .name("profile-stage: validate, enrich, resolve identity, attribute cost")
    )


def validated(batched: DataStream, cfg: Config) -> DataStream:
    """Validate the raw batches, and nothing else (`ingest.profile_stage=false`)."""
    return (
        batched.process(
            BatchValidation(cfg.kafka.topic, validation_limits(cfg)), output_type=BATCH_TYPE
        )
        .uid("batch-validation")
        .name("validate batches")
    )


def invalid_change_records(changes: DataStream) -> tuple[DataStream, DataStream]:
    """The dimension changelog's dead letters: as batches of one for ClickHouse, and as
    (key, value) records for the dead-letter topic."""
    invalid = (
        changes.filter(lambda r: r[0] == DEAD_LETTERS_TABLE)
        .set_parallelism(1)
        .uid("invalid-dimension-changes")
    )
    records = (
        invalid.map(
            lambda r: Row(dead_letter_key(orjson.loads(r[2])), r[2]),
            output_type=DEAD_LETTER_RECORD_TYPE,
        )
        .set_parallelism(1)
        .uid("invalid-dimension-change-records")
    )
    return invalid, records


def build(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    cfg: Config,
    job_name: str = JOB_NAME,
) -> None:
    """Wire the ingest graph onto `env`."""
    use_connector_jar(t_env, cfg)
    raw = t_env.to_data_stream(raw_batches(t_env, cfg))
    dead_letter_tag = OutputTag(DEAD_LETTER_OUTPUT_ID, DEAD_LETTER_RECORD_TYPE)
    if cfg.ingest.profile_stage:
        changes = dimension_changes(t_env, cfg)
        batched = profiled(raw, changes, cfg)
        invalid_changes, invalid_change_letters = invalid_change_records(changes)
        to_clickhouse = batched.union(invalid_changes)
        dead_letters = batched.get_side_output(dead_letter_tag).union(invalid_change_letters)
    else:
        batched = validated(raw, cfg)
        to_clickhouse = batched
        dead_letters = batched.get_side_output(dead_letter_tag)
    publish_dead_letters(t_env, cfg, job_name, dead_letters)
    writer = ClickHouseBatchWriter(clickhouse_settings(cfg))
    written = (
        to_clickhouse.map(writer, output_type=Types.INT())
        .start_new_chain()  # a slow insert must not stall the window operator
        .uid("clickhouse-writer")
        .name("clickhouse-writer: idempotent batch inserts")
    )
    discard(written, "discard")
    if cfg.ingest.profile_stage:
        redis_written = (
            batched.get_side_output(OutputTag(SIDE_OUTPUT_ID, BATCH_TYPE))
            .map(RedisProfileWriter(RedisSettings.from_config(cfg)), output_type=Types.INT())
            .uid("redis-writer")
            .name("redis-writer: versioned identity lookups and profiles")
        )
        discard(redis_written, "discard-redis")
        if windows_active(cfg):
            live_written = (
                batched.get_side_output(OutputTag(LIVE_OUTPUT_ID, BATCH_TYPE))
                .map(
                    RedisLiveWriter(
                        RedisSettings.from_config(cfg), LiveSinkSettings.from_config(cfg)
                    ),
                    output_type=Types.INT(),
                )
                .uid("redis-live-writer")
                .name("redis-live-writer: live state and trigger notifications")
            )
            discard(live_written, "discard-redis-live")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobs.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="tidemark settings file")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--job-name", default=JOB_NAME)
    parser.add_argument("--skip-preflight", action="store_true")
    parser.add_argument(
        "--detached", action="store_true", help="return once submitted (local: run in background)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if not args.skip_preflight:
            preflight(cfg)
        if windows_active(cfg):
            publish_window_specs(cfg)
    except ConfigError as exc:
        print(f"tidemark ingest: configuration error: {exc}", file=sys.stderr)
        return 2
    env, t_env = create_environment(cfg, args.job_name)
    build(env, t_env, cfg, args.job_name)
    if args.detached:
        client = env.execute_async(args.job_name)
        print(f"submitted {args.job_name}: job id {client.get_job_id()}")
    else:
        env.execute(args.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
