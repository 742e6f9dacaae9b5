"""Read Kafka from Python with the read offsets held in Flink's checkpointed state.

PyFlink has no Python Source API and the official Kafka connector jar cannot be had here, so
the job reads Kafka from a keyed Python function. It is keyed by reader slot; partition p
belongs to slot `p % reader_slots`. Each slot drives itself with processing-time timers: a
timer polls the slot's partitions once (at most max_poll_records), validates every record,
emits the results, stores the next offset of each partition in keyed MapState and arms the
next timer: at once while the slot is behind (a full poll, or lag left after it), after the
poll interval when it is not (little CPU on an idle topic). A slow stream of "ticks" from
Java's datagen only arms a slot's first timer (and re-arms one that went missing).

Why this is exactly-once: timers fire on the task thread, between records and checkpoint
barriers, and Flink finishes the Python bundle before it forwards a barrier; so the offsets
in a checkpoint are exactly those after the last record emitted before it. Timers are part
of the checkpoint too. A restore rebuilds the function, whose consumers seek to the restored
offsets: records after the checkpoint are read again and nothing before it is.

Why timers rather than one poll per tick: datagen emits each second's ticks in one burst, and
work done per tick would either stall barriers behind a burst or leave most of each second
idle. One bounded poll per timer keeps barriers fast and the reader busy while there is data.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from udfs.busy_time import BusyTime
from udfs.dimensions import parse_change
from udfs.validation import Accepted, SourceMeta, ValidationLimits, reject_raw, validate

#: Fields of the rows the reader emits, one per record: `target` is the ClickHouse table
#: (events, cost_records or dead_letters), `dedup_key` is `tenant_id US message_id` (empty
#: for dead letters) and `line` is the table row as JSON, ready for FORMAT JSONEachRow.
#: Measured: joining a poll's records into one string and splitting it in Java SQL
#: (SPLIT + UNNEST) was 7x slower than one row per record.
READER_OUTPUT_FIELDS = ["target", "dedup_key", "line"]
READER_OUTPUT_TYPE = Types.ROW_NAMED(READER_OUTPUT_FIELDS, [Types.STRING()] * 3)
KEY_SEPARATOR = "\x1f"  # ASCII US: tenant ids cannot hold it (see schemas/EVENTS.md)
DEAD_LETTERS_TABLE = "dead_letters"
DIMENSION_CHANGES = "dimension_changes"  # target of a valid dimension-changelog record
INVALID_DIMENSION_CHANGE = "invalid_dimension_change"  # its dead-letter reason code


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
    idle_poll_interval_ms: int
    limits: ValidationLimits
    payload: str = "events"  # events | dimension_changes: how each record is checked


def to_output_row(value: bytes, meta: SourceMeta, limits: ValidationLimits, now_ms: int) -> Row:
    """Validate one Kafka record and shape it as the reader's output row."""
    result = validate(value, meta, limits, now_ms)
    line = orjson.dumps(result.row).decode()
    if isinstance(result, Accepted):
        return Row(result.table, f"{result.tenant_id}{KEY_SEPARATOR}{result.message_id}", line)
    return Row(DEAD_LETTERS_TABLE, "", line)


def to_change_row(value: bytes, meta: SourceMeta, limits: ValidationLimits, now_ms: int) -> Row:
    """A dimension-changelog record: passed on raw if it parses, else a dead letter."""
    try:
        parse_change(value)
    except ValueError as exc:
        rejected = reject_raw(value, meta, INVALID_DIMENSION_CHANGE, str(exc))
        return Row(DEAD_LETTERS_TABLE, "", orjson.dumps(rejected.row).decode())
    return Row(DIMENSION_CHANGES, "", value.decode())


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
            # No record that recent: Kafka answers offset -1 (None here); Tansu answers
            # offset 0 with timestamp -1, which would re-read the whole partition.
            if hit is None or hit.timestamp < 0:
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
    """Keyed by reader slot: poll, validate and emit on timers; offsets live in keyed MapState."""

    #: A pending timer older than this is presumed lost and a tick re-arms the slot.
    REARM_AFTER_MS = 10_000

    def __init__(self, settings: ReaderSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.offsets = runtime_context.get_map_state(
            MapStateDescriptor("kafka-offsets", Types.INT(), Types.LONG())
        )
        self.armed = runtime_context.get_state(ValueStateDescriptor("poll-timer", Types.LONG()))
        self.consumers: dict[int, SlotConsumer] = {}
        self.lag_by_slot: dict[int, int] = {}
        metrics = runtime_context.get_metrics_group().add_group("tidemark_kafka")
        # The lag is a counter moved by the change, not a gauge: Flink reads a Python gauge by
        # calling into the interpreter from its metrics thread, and in thread mode a read that
        # races a task's teardown crashed the TaskManager (SIGSEGV in pemja, seen in CI).
        # A counter lives in Java and is read there.
        self.records_lag = metrics.counter("records_lag")
        self.records_in = metrics.counter("records_in")
        self.dead_letters_out = metrics.counter("dead_letters_out")
        self.busy_time = BusyTime(metrics)  # polling and shaping records

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()
        self.consumers.clear()

    def _arm(self, ctx: KeyedProcessFunction.Context, delay_ms: int) -> None:
        at = ctx.timer_service().current_processing_time() + delay_ms
        ctx.timer_service().register_processing_time_timer(at)
        self.armed.update(at)

    def _slot_consumer(self, slot: int) -> SlotConsumer:
        consumer = self.consumers.get(slot)
        if consumer is None:
            consumer = self.consumers[slot] = SlotConsumer(self.settings, slot)
            consumer.refresh_assignment(dict(self.offsets.items()), first=True)
        elif consumer.discovery_due():
            consumer.refresh_assignment(dict(self.offsets.items()), first=False)
        return consumer

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Iterator[Row]:
        pending = self.armed.value()
        now = ctx.timer_service().current_processing_time()
        if pending is None or pending < now - self.REARM_AFTER_MS:
            self._arm(ctx, 0)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Row]:
        with self.busy_time.measure():
            slot = ctx.get_current_key()
            consumer = self._slot_consumer(slot)
            batches = consumer.poll()
            limits = self.settings.limits
            shape = to_output_row if self.settings.payload == "events" else to_change_row
            now_ms = int(time.time() * 1000)
            polled = dead = 0
            for tp, records in batches.items():
                topic, partition = tp.topic, tp.partition
                for record in records:
                    meta = SourceMeta(topic, partition, record.offset, record.timestamp)
                    row = shape(record.value or b"", meta, limits, now_ms)
                    dead += row[0] == DEAD_LETTERS_TABLE
                    yield row
                self.offsets.put(partition, records[-1].offset + 1)
                polled += len(records)
            if polled:
                self.records_in.inc(polled)
            if dead:
                self.dead_letters_out.inc(dead)
            lag = consumer.lag()
            self.records_lag.inc(lag - self.lag_by_slot.get(slot, 0))
            self.lag_by_slot[slot] = lag
        backlog = polled >= self.settings.max_poll_records or lag > 0
        self._arm(ctx, 0 if backlog else self.settings.idle_poll_interval_ms)
