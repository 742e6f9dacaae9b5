"""Validate the records Flink's own Kafka connector reads, into the job's record rows.

The job reads Kafka through Flink's SQL Kafka connector (the FLIP-27 KafkaSource, Java):
offsets live in Flink's checkpoints, partitions are discovered and split by Flink, and
records arrive with their partition, offset and timestamp as metadata columns. Python sees
each record once, here, to validate it against the event contract and shape it as the row
the rest of the job works on: (target table, dedup key, JSON line).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import MapFunction

from udfs.dimensions import parse_change
from udfs.validation import Accepted, SourceMeta, ValidationLimits, reject_raw, validate

#: Fields of the record rows, one per Kafka record: `target` is the ClickHouse table
#: (events, cost_records or dead_letters), `dedup_key` is `tenant_id US message_id` (empty
#: for dead letters) and `line` is the table row as JSON, ready for FORMAT JSONEachRow.
RECORD_FIELDS = ["target", "dedup_key", "line"]
RECORD_TYPE = Types.ROW_NAMED(RECORD_FIELDS, [Types.STRING()] * 3)
KEY_SEPARATOR = "\x1f"  # ASCII US: tenant ids cannot hold it (see schemas/EVENTS.md)
DEAD_LETTERS_TABLE = "dead_letters"
DIMENSION_CHANGES = "dimension_changes"  # target of a valid dimension-changelog record
INVALID_DIMENSION_CHANGE = "invalid_dimension_change"  # its dead-letter reason code


def to_output_row(value: bytes, meta: SourceMeta, limits: ValidationLimits, now_ms: int) -> Row:
    """Validate one Kafka record and shape it as a record row."""
    result = validate(value, meta, limits, now_ms)
    line = orjson.dumps(result.row).decode()
    if isinstance(result, Accepted):
        return Row(result.table, f"{result.tenant_id}{KEY_SEPARATOR}{result.message_id}", line)
    return Row(DEAD_LETTERS_TABLE, "", line)


def to_change_row(value: bytes, meta: SourceMeta) -> Row:
    """A dimension-changelog record: passed on raw if it parses, else a dead letter."""
    try:
        parse_change(value)
    except ValueError as exc:
        rejected = reject_raw(value, meta, INVALID_DIMENSION_CHANGE, str(exc))
        return Row(DEAD_LETTERS_TABLE, "", orjson.dumps(rejected.row).decode())
    return Row(DIMENSION_CHANGES, "", value.decode())


def epoch_millis(instant: Any) -> int:
    """Epoch millis of a TIMESTAMP_LTZ value, which reaches Python as a Java Instant in thread
    mode, a PyFlink Instant in process mode, or a datetime."""
    if isinstance(instant, datetime):
        return int(instant.timestamp() * 1000)
    if hasattr(instant, "toEpochMilli"):
        return int(instant.toEpochMilli())
    return int(instant.to_epoch_milli())


class ConnectorRecordValidator(MapFunction):
    """(value, partition, offset, timestamp) from the connector -> record row."""

    def __init__(self, topic: str, limits: ValidationLimits) -> None:
        self.topic = topic
        self.limits = limits

    def map(self, value: Row) -> Row:
        payload, partition, offset = value[0], value[1], value[2]
        meta = SourceMeta(self.topic, partition, offset, epoch_millis(value[3]))
        return to_output_row(payload or b"", meta, self.limits, int(time.time() * 1000))


class ChangeRecordValidator(MapFunction):
    """A dimension-changelog record from the connector -> change row or dead letter."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def map(self, value: Row) -> Row:
        payload, partition, offset = value[0], value[1], value[2]
        meta = SourceMeta(self.topic, partition, offset, epoch_millis(value[3]))
        return to_change_row(payload or b"", meta)
