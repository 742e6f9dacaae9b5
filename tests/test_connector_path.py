"""The Flink Kafka connector path: its DDL, the raw batch lines, and batch validation.

Unit tests: the source and dead-letter tables' options follow the settings, Flink's SQL
encodes a record into a batch line Python decodes byte for byte, and a batch becomes the rows
validation defines for each record. The job runs this path end to end against
the real broker in tests/test_ingest_e2e.py and the kill tests.
"""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import orjson
import pytest
from pyflink.common import Row
from pyflink.table import EnvironmentSettings, TableEnvironment

from jobs.ingest import (
    HAS_IDS_SQL,
    ID_COLUMNS_SQL,
    IDS_SQL,
    batch_interval_sql,
    connector_source_ddl,
    dead_letter_sink_ddl,
)
from tidemark.config import load_config
from udfs.connector_records import (
    RAW_BODY_SQL,
    RAW_LINE_SQL,
    ChangeRecordValidator,
    dead_letter_records,
    decode_raw_line,
    validate_batch,
)
from udfs.validation import SourceMeta, ValidationLimits, validate

EVENT = orjson.dumps(
    {
        "message_id": "m-1",
        "tenant_id": "acme",
        "type": "track",
        "event": "Order Completed",
        "user_id": "u-1",
        "timestamp": "2026-11-01T10:00:00.250Z",
        "properties": {"revenue": "19.90", "currency": "EUR"},
    }
)


def test_ddl_follows_settings():
    cfg = load_config(
        overrides=[
            "kafka.topic=orders",
            "kafka.bootstrap_servers=broker-1:9092,broker-2:9092",
            "kafka.start_from=timestamp:1790000000000",
            "kafka.partition_discovery_seconds=30",
        ]
    )
    ddl = connector_source_ddl(cfg)
    assert "'topic' = 'orders'" in ddl
    assert "'properties.bootstrap.servers' = 'broker-1:9092,broker-2:9092'" in ddl
    assert "'scan.startup.mode' = 'timestamp'" in ddl
    assert "'scan.startup.timestamp-millis' = '1790000000000'" in ddl
    assert "'scan.topic-partition-discovery.interval' = '30 s'" in ddl
    assert "`partition` INT METADATA VIRTUAL" in ddl and "`offset` BIGINT METADATA" in ddl
    assert "'properties.isolation.level' = 'read_committed'" in ddl
    latest = connector_source_ddl(load_config(overrides=["kafka.start_from=latest"]))
    assert "'scan.startup.mode' = 'latest-offset'" in latest
    changes = connector_source_ddl(cfg, "t_changes", "dims", start_from="earliest")
    assert "CREATE TEMPORARY TABLE t_changes" in changes and "'topic' = 'dims'" in changes
    assert "'scan.startup.mode' = 'earliest-offset'" in changes


def test_dead_letter_sink_is_transactional_per_job():
    cfg = load_config(overrides=["kafka.dead_letter_topic=bad", "kafka.bootstrap_servers=b:9092"])
    ddl = dead_letter_sink_ddl(cfg, "job-a")
    assert "'topic' = 'bad'" in ddl and "'properties.bootstrap.servers' = 'b:9092'" in ddl
    assert "'sink.delivery-guarantee' = 'exactly-once'" in ddl
    assert "'sink.transactional-id-prefix' = 'job-a-dead-letters'" in ddl
    assert "job-b-dead-letters" in dead_letter_sink_ddl(cfg, "job-b")


def test_change_record_is_passed_raw_or_dead_lettered():
    validator = ChangeRecordValidator("dims")
    at = datetime(2026, 11, 1, tzinfo=UTC)
    bad = validator.map(Row(b"{not json", 0, 3, at))
    assert bad[0] == "dead_letters" and bad[3] == 0
    assert orjson.loads(bad[2])["reason_code"] == "invalid_dimension_change"


def raw_line(partition: int, offset: int, timestamp_ms: int, value: bytes) -> bytes:
    """A raw batch line the way RAW_LINE_SQL builds it (checked against Flink below)."""
    return f"{partition}\t{offset}\t{timestamp_ms}\t{base64.b64encode(value).decode()}".encode()


def test_raw_body_sql_is_what_python_decodes():
    """Flink's SQL builds the lines and joins them into the batch's bytes; Python's decoder
    must get each record's exact bytes back, including newlines and bytes that are not UTF-8,
    and an absent value as empty."""
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    value = b'{"a":\n"\xff"}'
    t_env.create_temporary_view(
        "kafka",
        t_env.sql_query(
            "SELECT CAST(X'7b2261223a0a22ff227d' AS BYTES) AS `value`, 3 AS `partition`,"
            " CAST(42 AS BIGINT) AS `offset`, TO_TIMESTAMP_LTZ(1793527200250, 3) AS ts"
            " UNION ALL SELECT CAST(NULL AS BYTES), 0, CAST(1 AS BIGINT), TO_TIMESTAMP_LTZ(0, 3)"
        ),
    )
    query = f"SELECT {RAW_BODY_SQL} FROM (SELECT {RAW_LINE_SQL} AS line FROM kafka)"
    (body,) = next(iter(t_env.execute_sql(query).collect()))
    assert isinstance(body, bytes | bytearray), type(body)
    decoded = sorted(decode_raw_line(line) for line in body.split(b"\n"))
    assert decoded == [(0, 1, 0, b""), (3, 42, 1793527200250, value)]


def test_batch_is_validated_into_tables_with_positions():
    limits = ValidationLimits()
    now_ms = int(time.time() * 1000)
    body = b"\n".join(
        [raw_line(3, 42, 1793527201000, EVENT), raw_line(1, 7, 1793527200000, b"{oops")]
    )
    tables = validate_batch("orders", body, limits, now_ms)
    (event,) = tables["events"]
    assert (event["source_partition"], event["source_offset"]) == (3, 42)
    assert event["produced_at"] == "2026-11-01 10:00:01.000"
    assert event["revenue"] == "19.90"
    same = validate(EVENT, SourceMeta("orders", 3, 42, 1793527201000), limits, now_ms)
    assert event == same.row
    (dead,) = tables["dead_letters"]
    assert (dead["source_topic"], dead["source_partition"], dead["source_offset"]) == (
        "orders",
        1,
        7,
    )
    assert dead["reason_code"] == "malformed_json"
    ((key, value),) = [tuple(r) for r in dead_letter_records(tables["dead_letters"])]
    assert key == f"1:7:{dead['record_id']}"
    assert orjson.loads(value) == dead


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (b'{"tenant_id":"acme","message_id":"m-1"}', ('["acme"]', '["m-1"]', True)),
        (
            b'{"message_id":"m-1","x":{"tenant_id":"no"},"tenant_id":"acme"}',
            ('["acme"]', '["m-1"]', True),
        ),
        (b'{"tenant_id":"acme","message_id":1234567}', ('["acme"]', "[1234567]", False)),
        (b'{"tenant_id":"acme","message_id":"1234567"}', ('["acme"]', '["1234567"]', True)),
        (b'{"tenant_id":"acme","message_id":""}', ('["acme"]', '[""]', False)),
        (b'{"tenant_id":"acme","message_id":null}', ('["acme"]', None, None)),
        (b'{"tenant_id":"acme"}', ('["acme"]', None, None)),
        (
            b'{"tenant_id":"acme","message_id":"' + b"m" * 129 + b'"}',
            ('["acme"]', '["' + "m" * 129 + '"]', False),
        ),
        (  # a quoted id inside the other id's value is not taken for it
            b'{"message_id":"x\\",\\"tenant_id\\":\\"evil","tenant_id":"t"}',
            ('["t"]', '["x\\",\\"tenant_id\\":\\"evil"]', True),
        ),
        (b"{oops", (None, None, None)),
        (b"[1, 2]", (None, None, None)),
    ],
)
def test_dedup_ids_are_non_empty_json_strings_only(value, ids):
    """Java dedups on these two columns only when HAS_IDS_SQL holds: a missing, empty,
    non-string or over-long id must fail it (that record skips dedup, so it is validated and
    dead-lettered), and nothing nested or quoted may pass for an id."""
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    literal = "X'" + value.hex() + "'"
    query = (
        f"SELECT tenant_id, message_id, {HAS_IDS_SQL} FROM (SELECT {ID_COLUMNS_SQL} FROM"
        f" (SELECT {IDS_SQL} AS ids FROM (SELECT CAST({literal} AS BYTES) AS `value`)))"
    )
    (row,) = list(t_env.execute_sql(query).collect())
    assert tuple(row) == ids


@pytest.mark.parametrize(("seconds", "width_ms"), [(0.25, 250), (1.0, 1000), (2.5, 2500)])
def test_batch_interval_sql_gives_windows_of_that_width(seconds: float, width_ms: int):
    """ingest.batch_max_seconds may be a fraction; Flink must make windows that wide."""
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.create_temporary_view(
        "single_row", t_env.sql_query("SELECT TO_TIMESTAMP_LTZ(1793527200100, 3) AS ts")
    )
    query = (
        "SELECT window_start, window_end, COUNT(*) FROM TABLE(TUMBLE(TABLE single_row,"
        f" DESCRIPTOR(ts), {batch_interval_sql(seconds)})) GROUP BY window_start, window_end"
    )
    ((start, end, count),) = [tuple(r) for r in t_env.execute_sql(query).collect()]
    assert count == 1 and (end - start).total_seconds() * 1000 == width_ms
