"""Validate records read by Flink's own Kafka connector (used when its jar is supplied).

With `kafka.connector_jar` set, the job reads Kafka through Flink's SQL Kafka connector
(FLIP-27 KafkaSource) instead of the Python reader: offsets, partition discovery and
exactly-once positions are then Flink's. Python only validates each record, through the same
`to_output_row` as the Python reader, so both paths emit identical rows.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from pyflink.common import Row
from pyflink.datastream import MapFunction

from udfs.kafka_reader import to_output_row
from udfs.validation import SourceMeta, ValidationLimits


def epoch_millis(instant: Any) -> int:
    """Epoch millis of a TIMESTAMP_LTZ value, which reaches Python as a Java Instant in thread
    mode, a PyFlink Instant in process mode, or a datetime."""
    if isinstance(instant, datetime):
        return int(instant.timestamp() * 1000)
    if hasattr(instant, "toEpochMilli"):
        return int(instant.toEpochMilli())
    return int(instant.to_epoch_milli())


class ConnectorRecordValidator(MapFunction):
    """(value, partition, offset, timestamp) from the connector -> reader output row."""

    def __init__(self, topic: str, limits: ValidationLimits) -> None:
        self.topic = topic
        self.limits = limits

    def map(self, value: Row) -> Row:
        payload, partition, offset = value[0], value[1], value[2]
        meta = SourceMeta(self.topic, partition, offset, epoch_millis(value[3]))
        return to_output_row(payload or b"", meta, self.limits, int(time.time() * 1000))
