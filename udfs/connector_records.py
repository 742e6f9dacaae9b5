"""The records Flink's Kafka connector reads, handed to Python in batches and validated there.

The job reads Kafka through Flink's SQL Kafka connector (the FLIP-27 KafkaSource, Java):
offsets live in Flink's checkpoints, partitions are discovered and split by Flink, and
records arrive with their partition, offset and timestamp as metadata columns. Java then
drops duplicates (on the raw record's `tenant_id` and `message_id`, pulled out with
JSON_QUERY) and collects each shard's records of one batch window (ingest.batch_max_seconds)
into one byte string (RAW_LINE_SQL per record, newline-joined, UTF-8). Python is entered once
per batch, not once per record: the first thing the batch stage does is `validate_batch`,
which turns those bytes into the rows of each table and the dead letters.

Why one byte string and not an array of rows: PyFlink converts a batch's fields one by one,
so a single value crosses into Python at the cost of one copy, whatever the batch holds. Why
bytes and not a Java String: Flink serializes a String char by char (StringValue) wherever it
crosses between tasks or into Python, and in a JFR profile that was a large share of the
writer thread's time on multi-megabyte batches; a byte[] is copied whole. The batches Python
hands on (BATCH_TYPE) are bytes for the same reason, and the sinks want bytes anyway.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import MapFunction, OutputTag, ProcessFunction

from udfs.dimensions import parse_change
from udfs.validation import Accepted, SourceMeta, ValidationLimits, reject_raw, validate

DEAD_LETTERS_TABLE = "dead_letters"
DIMENSION_CHANGES = "dimension_changes"  # target of a valid dimension-changelog record
INVALID_DIMENSION_CHANGE = "invalid_dimension_change"  # its dead-letter reason code

#: One Kafka record as a line of a raw batch: partition, offset, record timestamp (epoch ms)
#: and the value in base64 (lossless for any bytes, and never holds a tab or a newline),
#: tab-separated. An absent value (a tombstone) is the empty string.
RAW_LINE_SQL = (
    "CONCAT_WS(CHR(9), CAST(`partition` AS STRING), CAST(`offset` AS STRING),"
    " CAST(EXTRACT(EPOCH FROM ts) * 1000 + EXTRACT(MILLISECOND FROM ts) AS STRING),"
    " COALESCE(TO_BASE64(`value`), ''))"
)

#: A raw batch's body: the `line`s of one group (RAW_LINE_SQL), newline-joined, as UTF-8 bytes.
RAW_BODY_SQL = "CAST(ARRAY_JOIN(ARRAY_AGG(line), CHR(10)) AS BYTES)"

#: (table, window_start, body, shard): the batches the writers take (newline-joined JSON rows,
#: UTF-8 bytes).
BATCH_TYPE = Types.ROW_NAMED(
    ["target", "window_start", "body", "shard"],
    [Types.STRING(), Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.INT()],
)

#: The side output carrying each dead letter once more, as (key, value), to the transactional
#: dead-letter topic sink. Dead letters are rare, so one Python output each costs little.
DEAD_LETTER_OUTPUT_ID = "dead-letter-records"
DEAD_LETTER_RECORD_TYPE = Types.ROW_NAMED(
    ["key", "value"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())]
)


def decode_raw_line(line: bytes) -> tuple[int, int, int, bytes]:
    """(partition, offset, timestamp ms, value) of one line built by RAW_LINE_SQL."""
    partition, offset, timestamp_ms, value = line.split(b"\t")
    return int(partition), int(offset), int(timestamp_ms), base64.b64decode(value)


def validate_batch(
    topic: str, body: bytes, limits: ValidationLimits, now_ms: int
) -> dict[str, list[dict[str, Any]]]:
    """The rows of each table (events, cost_records, dead_letters) of one raw batch."""
    tables: dict[str, list[dict[str, Any]]] = {DEAD_LETTERS_TABLE: []}
    for line in body.split(b"\n"):
        partition, offset, timestamp_ms, value = decode_raw_line(line)
        result = validate(value, SourceMeta(topic, partition, offset, timestamp_ms), limits, now_ms)
        table = result.table if isinstance(result, Accepted) else DEAD_LETTERS_TABLE
        tables.setdefault(table, []).append(result.row)
    return tables


def dead_letter_key(row: dict[str, Any]) -> str:
    """The dead-letter topic's message key: the record's identity, for consumers that compact
    or index the topic."""
    return f"{row['source_partition']}:{row['source_offset']}:{row['record_id']}"


def dumps_lines(rows: list[dict[str, Any]]) -> bytes:
    """Rows as newline-joined JSON, ready for FORMAT JSONEachRow."""
    return b"\n".join(map(orjson.dumps, rows))


def table_batches(
    tables: dict[str, list[dict[str, Any]]], window_start: str, shard: int
) -> list[Row]:
    """One (table, window_start, body, shard) batch per table that has rows."""
    return [
        Row(table, window_start, dumps_lines(rows), shard) for table, rows in tables.items() if rows
    ]


def dead_letter_records(rows: list[dict[str, Any]]) -> Iterator[Row]:
    """Each dead letter as a (key, value) record for the dead-letter topic."""
    for row in rows:
        yield Row(dead_letter_key(row), orjson.dumps(row))


def epoch_millis(instant: Any) -> int:
    """Epoch millis of a TIMESTAMP_LTZ value, which reaches Python as a Java Instant in thread
    mode, a PyFlink Instant in process mode, or a datetime."""
    if isinstance(instant, datetime):
        return int(instant.timestamp() * 1000)
    if hasattr(instant, "toEpochMilli"):
        return int(instant.toEpochMilli())
    return int(instant.to_epoch_milli())


class BatchValidation(ProcessFunction):
    """Raw batch -> one batch per table, and each dead letter to the dead-letter side output.

    The job's whole Python stage when `ingest.profile_stage` is false; with the profile stage
    on, ProfileStage validates its batches itself (udfs/profile_stage.py).
    """

    def __init__(self, topic: str, limits: ValidationLimits) -> None:
        self.topic = topic
        self.limits = limits

    def open(self, runtime_context: Any) -> None:
        # Built on the worker: a tag built on the client cannot be pickled (profile_stage.py)
        self.dead_letter_output = OutputTag(DEAD_LETTER_OUTPUT_ID)

    def process_element(self, value: Row, ctx: Any) -> Iterator[Any]:
        window_start, body, shard = value[0], value[1], value[2]
        tables = validate_batch(self.topic, body, self.limits, int(time.time() * 1000))
        yield from table_batches(tables, window_start, shard)
        for record in dead_letter_records(tables[DEAD_LETTERS_TABLE]):
            yield self.dead_letter_output, record


def to_change_row(value: bytes, meta: SourceMeta) -> Row:
    """A dimension-changelog record as a batch row of one: (dimension_changes, "", the raw
    change, 0) if it parses, else (dead_letters, "", the dead letter, 0)."""
    try:
        parse_change(value)
    except ValueError as exc:
        rejected = reject_raw(value, meta, INVALID_DIMENSION_CHANGE, str(exc))
        return Row(DEAD_LETTERS_TABLE, "", orjson.dumps(rejected.row), 0)
    return Row(DIMENSION_CHANGES, "", value, 0)


class ChangeRecordValidator(MapFunction):
    """A dimension-changelog record from the connector -> change row or dead letter (a low
    volume topic, so one Python call per record is fine here)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic

    def map(self, value: Row) -> Row:
        payload, partition, offset = value[0], value[1], value[2]
        meta = SourceMeta(self.topic, partition, offset, epoch_millis(value[3]))
        return to_change_row(payload or b"", meta)
