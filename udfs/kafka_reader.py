"""Read Kafka from Python with the read offsets held in Flink's checkpointed state.

PyFlink has no Python Source API and the official Kafka connector jar cannot be had here, so
the job reads Kafka from a keyed Python function driven by a rate-limited stream of "ticks"
(a Java datagen source). Each tick carries a reader slot; partition p belongs to slot
`p % reader_slots`. On a tick the slot's consumer polls its partitions once, validates every
record, emits the results and stores the next offset of each partition in keyed MapState.

Why this is exactly-once: Flink finishes the Python bundle before it forwards a checkpoint
barrier, so the offsets in a checkpoint are exactly the offsets after the last record emitted
before that barrier. A restore rebuilds the function, whose consumers seek to the restored
offsets: records after the checkpoint are read again and nothing before it is.

Why ticks carry their creation time: under backpressure ticks queue up in network buffers,
and a checkpoint barrier waits behind them. A tick that is already stale when it arrives is
skipped without polling, so queued ticks drain in microseconds and barriers stay fast, while
throughput stays the same (the next fresh tick polls again).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

#: Fields of the rows the reader emits; `target` is the ClickHouse table: events, cost_records
#: or dead_letters; `line` is the row as JSON, ready for FORMAT JSONEachRow.
READER_OUTPUT_FIELDS = ["target", "tenant_id", "message_id", "line"]
READER_OUTPUT_TYPE = Types.ROW_NAMED(
    READER_OUTPUT_FIELDS, [Types.STRING(), Types.STRING(), Types.STRING(), Types.STRING()]
)
DEAD_LETTERS_TABLE = "dead_letters"


@dataclass(frozen=True)
class ReaderSettings:
    """What a reader needs, captured on the client and shipped to the workers with the job."""

    bootstrap_servers: str
    topic: str
    reader_slots: int
    start_from: str  # earliest | latest | timestamp:<ms>
    max_poll_records: int
    poll_timeout_ms: int
    fetch_max_bytes: int
    partition_discovery_seconds: int
    stale_tick_ms: int
    limits: ValidationLimits


def epoch_millis(instant: Any) -> int:
    """Epoch millis of a tick's creation time.

    TIMESTAMP_LTZ reaches Python as a Java Instant in thread mode, a PyFlink Instant in
    process mode, and a datetime where a conversion applies; accept each.
    """
    if isinstance(instant, datetime):
        return int(instant.timestamp() * 1000)
    if hasattr(instant, "toEpochMilli"):
        return int(instant.toEpochMilli())
    return int(instant.to_epoch_milli())


def partitions_of_slot(partitions: set[int], slot: int, slots: int) -> set[int]:
    """The partitions one reader slot owns: a fixed rule, so a restore never moves them."""
    return {p for p in partitions if p % slots == slot}


def resolve_start(consumer: Any, partitions: list[Any], start_from: str) -> None:
    """Seek partitions that have no checkpointed offset to the configured start position."""
    if not partitions:
        return
    if start_from == "earliest":
        consumer.seek_to_beginning(*partitions)
    elif start_from == "latest":
        consumer.seek_to_end(*partitions)
    else:
        timestamp_ms = int(start_from.removeprefix("timestamp:"))
        found = consumer.offsets_for_times({tp: timestamp_ms for tp in partitions})
        for tp in partitions:
            hit = found.get(tp)
            if hit is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, hit.offset)


class SlotConsumer:
    """One kafka-python consumer for one reader slot, with manual assignment (no group)."""

    def __init__(self, settings: ReaderSettings, slot: int) -> None:
        from kafka import KafkaConsumer  # imported on the worker, not when the job is planned

        self.settings = settings
        self.slot = slot
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers.split(","),
            enable_auto_commit=False,
            group_id=None,
            auto_offset_reset="earliest",  # an offset lost to retention restarts at the oldest
            max_poll_records=settings.max_poll_records,
            fetch_max_bytes=settings.fetch_max_bytes,
            max_partition_fetch_bytes=max(1 << 20, settings.fetch_max_bytes // 4),
            metadata_max_age_ms=settings.partition_discovery_seconds * 1000,
            client_id=f"tidemark-reader-{slot}",
            check_crcs=True,  # fast with the crc32c C package
        )
        self.assigned: set[int] = set()
        self.next_discovery = 0.0

    def discovery_due(self) -> bool:
        """Whether the partition list should be looked at again."""
        return time.monotonic() >= self.next_discovery

    def refresh_assignment(self, stored_offsets: dict[int, int], first: bool) -> None:
        """Pick up the slot's partitions (new ones included) and seek each to where it resumes.

        Partitions with a checkpointed offset resume there. Others start at `start_from` on a
        fresh job; partitions that appear while the job runs start at the earliest offset, so
        no record of a new partition is skipped.
        """
        from kafka import TopicPartition

        self.next_discovery = time.monotonic() + self.settings.partition_discovery_seconds
        topic = self.settings.topic
        owned = partitions_of_slot(
            self.consumer.partitions_for_topic(topic), self.slot, self.settings.reader_slots
        )
        if owned <= self.assigned:
            return
        self.assigned = owned
        tps = {p: TopicPartition(topic, p) for p in sorted(owned)}
        self.consumer.assign(list(tps.values()))
        fresh = []
        for partition, tp in tps.items():
            if partition in stored_offsets:
                self.consumer.seek(tp, stored_offsets[partition])
            else:
                fresh.append(tp)
        if first and not stored_offsets:
            resolve_start(self.consumer, fresh, self.settings.start_from)
        elif fresh:
            self.consumer.seek_to_beginning(*fresh)

    def poll(self) -> dict[Any, list[Any]]:
        """One bounded poll of the slot's partitions."""
        if not self.assigned:
            return {}
        return self.consumer.poll(
            timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_poll_records
        )

    def lag(self) -> int:
        """Records behind the partitions' high-water marks, from the last fetch responses."""
        total = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                total += max(0, high - self.consumer.position(tp))
        return total

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class KafkaReaderFunction(KeyedProcessFunction):
    """Keyed by reader slot: poll, validate and emit; offsets live in keyed MapState."""

    def __init__(self, settings: ReaderSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.offsets = runtime_context.get_map_state(
            MapStateDescriptor("kafka-offsets", Types.INT(), Types.LONG())
        )
        self.consumers: dict[int, SlotConsumer] = {}
        self.lag = 0
        metrics = runtime_context.get_metrics_group().add_group("tidemark_kafka")
        metrics.gauge("records_lag", lambda: self.lag)
        self.records_in = metrics.counter("records_in")
        self.dead_letters_out = metrics.counter("dead_letters_out")
        self.stale_ticks = metrics.counter("stale_ticks_skipped")

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()
        self.consumers.clear()

    def _slot_consumer(self, slot: int) -> SlotConsumer:
        consumer = self.consumers.get(slot)
        if consumer is None:
            consumer = self.consumers[slot] = SlotConsumer(self.settings, slot)
            consumer.refresh_assignment(dict(self.offsets.items()), first=True)
        elif consumer.discovery_due():
            consumer.refresh_assignment(dict(self.offsets.items()), first=False)
        return consumer

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        now = time.time()
        if now * 1000 - epoch_millis(value[1]) > self.settings.stale_tick_ms:
            self.stale_ticks.inc()
            return
        consumer = self._slot_consumer(ctx.get_current_key())
        batches = consumer.poll()
        limits = self.settings.limits
        now_ms = int(now * 1000)
        dumps = orjson.dumps
        for tp, records in batches.items():
            topic, partition = tp.topic, tp.partition
            dead = 0
            for record in records:
                meta = SourceMeta(topic, partition, record.offset, record.timestamp)
                result = validate(record.value or b"", meta, limits, now_ms)
                line = dumps(result.row).decode()
                if isinstance(result, Accepted):
                    yield Row(result.table, result.tenant_id, result.message_id, line)
                else:
                    dead += 1
                    yield Row(DEAD_LETTERS_TABLE, "", f"{partition}:{record.offset}", line)
            self.offsets.put(partition, records[-1].offset + 1)
            self.records_in.inc(len(records))
            if dead:
                self.dead_letters_out.inc(dead)
        self.lag = sum(c.lag() for c in self.consumers.values())
