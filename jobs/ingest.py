"""tidemark ingest job: Kafka -> validate -> dedup -> enrich + resolve identity -> ClickHouse
and Redis (+ dead letters).

Submit to a cluster the way operators do (`tidemark run ingest` builds this command):

    flink run -d -py jobs/ingest.py -pyfs tidemark-job.zip -- --config flink-conf/tidemark.yaml

or run it on a local mini-cluster for a quick try: `python -m jobs.ingest --local`.

The graph, and why each stage runs where it does (Python is the slow part, so Python touches
each event once and everything stateful per event runs in Java):

    Flink's Kafka connector (KafkaSource, Java; offsets in checkpoints, read_committed)
      -> ConnectorRecordValidator (Python, once per record): validate, to JSON row
      -> dedup on (tenant_id, message_id), keep first, state TTL = horizon (Flink SQL, Java)
      -> union with dead letters -> 1 s processing-time window collecting each table's rows
         into one string per (table, identity shard) (Flink SQL, Java)
      -> ProfileStage (Python, keyed by shard, dimension changes broadcast to it from a second
         reader on the changelog topic): enrich, resolve identities, attribute cost; then, in
         the same call, the WindowStage (udfs/window_stage.py): judge lateness, fold panes,
         live state and triggers; state in keyed MapState (ingest.profile_stage=false skips
         it all, windows.enabled=false the windows)
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

from pyflink.common import Types
from pyflink.datastream import DataStream, OutputTag, StreamExecutionEnvironment
from pyflink.datastream.connectors import Sink
from pyflink.java_gateway import get_gateway
from pyflink.table import DataTypes, Schema, StreamTableEnvironment, Table

from jobs.environment import create_environment
from jobs.preflight import preflight, publish_window_specs, windows_active
from sinks.clickhouse import ClickHouseBatchWriter, ClickHouseSettings
from sinks.redis_live import LiveSinkSettings, RedisLiveWriter
from sinks.redis_profiles import TABLES as REDIS_TABLES
from sinks.redis_profiles import RedisProfileWriter, RedisSettings
from tidemark import jars
from tidemark.config import Config, ConfigError, load_config
from udfs.connector_records import (
    DEAD_LETTERS_TABLE,
    DIMENSION_CHANGES,
    RECORD_TYPE,
    ChangeRecordValidator,
    ConnectorRecordValidator,
)
from udfs.profile_stage import (
    BATCH_TYPE,
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
          `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
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


def kafka_records(t_env: StreamTableEnvironment, cfg: Config) -> DataStream:
    """Validated records from the source topic: (target, dedup_key, line) per record."""
    t_env.execute_sql(connector_source_ddl(cfg))
    positioned = t_env.sql_query("SELECT `value`, `partition`, `offset`, ts FROM tidemark_kafka")
    return (
        t_env.to_data_stream(positioned)
        .map(
            ConnectorRecordValidator(cfg.kafka.topic, validation_limits(cfg)),
            output_type=RECORD_TYPE,
        )
        .uid("kafka-validate")
        .name("validate, to row")
    )


def dimension_changes(t_env: StreamTableEnvironment, cfg: Config) -> DataStream:
    """Records of the dimension changelog topic: (dimension_changes | dead_letters, "", line).

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
        .map(ChangeRecordValidator(topic), output_type=RECORD_TYPE)
        .set_parallelism(1)
        .uid("dimension-changelog-validate")
        .name("dimension-changelog: validate")
    )


def with_proctime(t_env: StreamTableEnvironment, stream: DataStream, columns: list[str]) -> Table:
    """A table of string columns over `stream`, plus a fresh processing-time attribute `pt`."""
    builder = Schema.new_builder()
    for column in columns:
        builder.column(column, DataTypes.STRING())
    return t_env.from_data_stream(stream, builder.column_by_expression("pt", "PROCTIME()").build())


def batches(t_env: StreamTableEnvironment, records: DataStream, cfg: Config) -> Table:
    """Dedup accepted rows, union dead letters, and collect each table's rows per window.

    One batch per (table, shard): tenants hash to `identity.shards` shards (Java's
    String.hashCode, stable across runs), the key of the profile stage's state.
    """
    shards = cfg.identity.shards
    t_env.get_config().set("table.exec.state.ttl", f"{cfg.ingest.dedup_horizon_seconds} s")
    t_env.create_temporary_view(
        "tidemark_parsed", with_proctime(t_env, records, ["target", "dedup_key", "line"])
    )
    t_env.execute_sql(
        f"""
        CREATE TEMPORARY VIEW tidemark_rows AS
        SELECT target, line, pt, shard FROM (
          SELECT target, line, pt,
                 MOD(ABS(HASH_CODE(SPLIT_INDEX(dedup_key, CHR(31), 0))), {shards}) AS shard,
                 ROW_NUMBER() OVER (PARTITION BY dedup_key ORDER BY pt ASC) AS rn
          FROM tidemark_parsed WHERE target <> '{DEAD_LETTERS_TABLE}')
        WHERE rn = 1
        UNION ALL
        SELECT target, line, pt, 0 AS shard
        FROM tidemark_parsed WHERE target = '{DEAD_LETTERS_TABLE}'
        """
    )
    return t_env.sql_query(
        f"""
        SELECT target, CAST(window_start AS STRING) AS window_start,
               ARRAY_JOIN(ARRAY_AGG(line), CHR(10)) AS body, shard
        FROM TABLE(TUMBLE(TABLE tidemark_rows, DESCRIPTOR(pt),
                          INTERVAL '{cfg.ingest.batch_max_seconds}' SECOND))
        GROUP BY target, shard, window_start, window_end
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


def publish_dead_letters(t_env: StreamTableEnvironment, cfg: Config, job_name: str) -> None:
    """Route every dead letter of `tidemark_parsed` to the dead-letter topic, in Java."""
    t_env.execute_sql(dead_letter_sink_ddl(cfg, job_name))
    statements = t_env.create_statement_set()
    statements.add_insert_sql(
        f"""
        INSERT INTO tidemark_dead_letter_topic
        SELECT CAST(CONCAT(JSON_VALUE(line, '$.source_partition'), ':',
                           JSON_VALUE(line, '$.source_offset'), ':',
                           JSON_VALUE(line, '$.record_id')) AS BYTES),
               CAST(line AS BYTES)
        FROM tidemark_parsed WHERE target = '{DEAD_LETTERS_TABLE}'
        """
    )
    statements.attach_as_datastream()


def discard(stream: DataStream, uid: str) -> None:
    """End a branch whose work is done in its last function (Flink needs a sink)."""
    j_sink = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink()
    stream.sink_to(Sink(j_sink)).uid(uid).name(uid)


def profiled(batched: DataStream, changes: DataStream, cfg: Config) -> DataStream:
    """Send the batches through the profile stage (dead letters pass through it unchanged)."""
    broadcast = (
        changes.filter(lambda r: r[0] == DIMENSION_CHANGES)
        .set_parallelism(1)
        .uid("valid-dimension-changes")
        .broadcast(CHANGES_DESCRIPTOR)
    )
    return (
        batched.key_by(lambda b: b[3], key_type=Types.INT())
        .connect(broadcast)
        .process(ProfileStage(profile_stage_settings(cfg)), output_type=BATCH_TYPE)
        .uid("profile-stage")
        .name("profile-stage: enrich, resolve identity, attribute cost")
    )


def build(
    env: StreamExecutionEnvironment,
    t_env: StreamTableEnvironment,
    cfg: Config,
    job_name: str = JOB_NAME,
) -> None:
    """Wire the ingest graph onto `env`."""
    use_connector_jar(t_env, cfg)
    records = kafka_records(t_env, cfg)
    changes = dimension_changes(t_env, cfg) if cfg.ingest.profile_stage else None
    if changes is not None:  # a malformed dimension change is dead-lettered like any record
        records = records.union(
            changes.filter(lambda r: r[0] == DEAD_LETTERS_TABLE)
            .set_parallelism(1)
            .uid("invalid-dimension-changes")
        )
    writer = ClickHouseBatchWriter(clickhouse_settings(cfg))
    batched = t_env.to_data_stream(batches(t_env, records, cfg))
    publish_dead_letters(t_env, cfg, job_name)
    if changes is not None:
        batched = profiled(batched, changes, cfg)
    written = (
        batched.map(writer, output_type=Types.INT())
        .start_new_chain()  # a slow insert must not stall the window operator
        .uid("clickhouse-writer")
        .name("clickhouse-writer: idempotent batch inserts")
    )
    discard(written, "discard")
    if changes is not None:
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
