"""The Flink Kafka connector path: its DDL, and the per-record validation it runs.

Unit tests: the source and dead-letter tables' options follow the settings, and a connector
record becomes the row validation defines for it. The job runs this path end to end against
the real broker in tests/test_ingest_e2e.py and the kill tests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
from pyflink.common import Row

from jobs.ingest import connector_source_ddl, dead_letter_sink_ddl
from tidemark.config import load_config
from udfs.connector_records import (
    ChangeRecordValidator,
    ConnectorRecordValidator,
    epoch_millis,
    to_output_row,
)
from udfs.validation import SourceMeta, ValidationLimits

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
    assert bad[0] == "dead_letters"
    assert orjson.loads(bad[2])["reason_code"] == "invalid_dimension_change"


def test_connector_record_becomes_the_readers_row():
    limits = ValidationLimits()
    validator = ConnectorRecordValidator("orders", limits)
    produced = datetime(2026, 11, 1, 10, 0, 1, tzinfo=UTC)
    row = validator.map(Row(EVENT, 3, 42, produced))
    assert row[0] == "events"
    assert row[1] == "acme\x1fm-1"
    line = orjson.loads(row[2])
    assert (line["source_partition"], line["source_offset"]) == (3, 42)
    assert line["produced_at"] == "2026-11-01 10:00:01.000"
    assert line["revenue"] == "19.90"
    now_ms = int(time.time() * 1000)
    same = to_output_row(EVENT, SourceMeta("orders", 3, 42, epoch_millis(produced)), limits, now_ms)
    assert tuple(row)[:2] == tuple(same)[:2]
    assert orjson.loads(row[2]) == orjson.loads(same[2])


def test_connector_dead_letter_keeps_position():
    row = ConnectorRecordValidator("orders", ValidationLimits()).map(
        Row(b"{oops", 1, 7, datetime(2026, 11, 1, tzinfo=UTC))
    )
    assert row[0] == "dead_letters" and row[1] == ""
    line = orjson.loads(row[2])
    assert (line["source_topic"], line["source_partition"], line["source_offset"]) == (
        "orders",
        1,
        7,
    )
    assert line["reason_code"] == "malformed_json"
