"""udfs.kafka_reader's SlotConsumer against a real Kafka-protocol broker (Tansu).

Proves the slot rule (partition p belongs to slot p % slots); that each slot reads exactly its
own partitions, in offset order, from the configured start: `earliest` (everything), `latest`
(only records produced after assignment), `timestamp:<ms>` (from the first record at or after
that time; nothing old when no record is that recent); that checkpointed offsets resume exactly
(and partitions missing from the checkpoint start at the earliest offset); that a topic created
after the consumer started is picked up on the next discovery and read from offset 0; and that
`lag()` equals the records not yet polled.

Tansu quirks designed around here (see /work/shared/ENVIRONMENT.md): ListOffsets(LATEST) is
wrong for batched produces, and ListOffsets by timestamp looks at the broker's per-batch append
time; so records that a `latest` or `timestamp:` start must position around are produced one
batch each (linger_ms=0 and a flush per send), with the producer's own clock as timestamp.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from tests.support import wait_until
from tidemark.config import Config
from udfs.kafka_reader import ReaderSettings, SlotConsumer, partitions_of_slot
from udfs.validation import ValidationLimits

Read = dict[int, list[tuple[int, bytes]]]  # partition -> [(offset, value)]


def test_partitions_of_slot_rule() -> None:
    partitions = set(range(10))
    assert partitions_of_slot(partitions, 0, 4) == {0, 4, 8}
    assert partitions_of_slot(partitions, 1, 4) == {1, 5, 9}
    assert partitions_of_slot(partitions, 3, 4) == {3, 7}
    # Every partition has exactly one slot, and more slots than partitions leaves some idle.
    owned = [partitions_of_slot(partitions, slot, 4) for slot in range(4)]
    assert set().union(*owned) == partitions and sum(map(len, owned)) == 10
    assert partitions_of_slot({0, 1}, 5, 8) == set()
    assert partitions_of_slot(partitions, 0, 1) == partitions
    assert partitions_of_slot(set(), 0, 4) == set()


# --- helpers on the real broker ----------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(kafka_cfg: Config) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_cfg.kafka_bootstrap, client_id="t-reader")
    yield client
    client.close()


@pytest.fixture(scope="module")
def producer(kafka_cfg: Config) -> Iterator[KafkaProducer]:
    client = KafkaProducer(bootstrap_servers=kafka_cfg.kafka_bootstrap, linger_ms=0, acks=1)
    yield client
    client.close()


@pytest.fixture
def consumers() -> Iterator[list[SlotConsumer]]:
    opened: list[SlotConsumer] = []
    yield opened
    for consumer in opened:
        consumer.close()


def new_topic(admin: KafkaAdminClient, partitions: int) -> str:
    name = f"t.reader.{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, partitions, 1)])
    return name


def send_each(producer: KafkaProducer, topic: str, values: dict[int, list[bytes]]) -> None:
    """Produce every value as its own batch (see the module docstring: Tansu's ListOffsets)."""
    for partition, items in values.items():
        for value in items:
            producer.send(topic, value=value, partition=partition)
            producer.flush()


def send_batched(producer: KafkaProducer, topic: str, values: dict[int, list[bytes]]) -> None:
    for partition, items in values.items():
        for value in items:
            producer.send(topic, value=value, partition=partition)
    producer.flush()


def slot_consumer(
    kafka_cfg: Config,
    opened: list[SlotConsumer],
    topic: str,
    slot: int = 0,
    slots: int = 1,
    start_from: str = "earliest",
    max_poll_records: int = 500,
) -> SlotConsumer:
    settings = ReaderSettings(
        bootstrap_servers=kafka_cfg.kafka_bootstrap,
        topic=topic,
        reader_slots=slots,
        start_from=start_from,
        max_poll_records=max_poll_records,
        poll_timeout_ms=50,
        fetch_max_bytes=1 << 20,
        partition_discovery_seconds=1,
        idle_poll_interval_ms=50,
        limits=ValidationLimits(),
    )
    consumer = SlotConsumer(settings, slot)
    opened.append(consumer)
    return consumer


def drain(consumer: SlotConsumer, expected: int, timeout: float = 10.0) -> Read:
    """Poll until `expected` records came, then a little longer to catch any extra one."""
    read: Read = {}
    total = 0
    deadline = time.monotonic() + timeout
    settle_until = None
    while time.monotonic() < deadline:
        for tp, records in consumer.poll().items():
            read.setdefault(tp.partition, []).extend((r.offset, r.value) for r in records)
            total += len(records)
        if total >= expected and settle_until is None:
            settle_until = time.monotonic() + 0.3
        if settle_until is not None and time.monotonic() >= settle_until:
            break
    return read


def values(prefix: str, partitions: range, count: int) -> dict[int, list[bytes]]:
    return {p: [f"{prefix}-p{p}-{i}".encode() for i in range(count)] for p in partitions}


def expect(produced: dict[int, list[bytes]], first_offset: int = 0) -> Read:
    """What a reader should return: each value at its offset, from `first_offset` on."""
    return {
        p: [(first_offset + i, v) for i, v in enumerate(items)]
        for p, items in produced.items()
        if items
    }


# --- start positions ---------------------------------------------------------------------------


def test_earliest_reads_everything_each_slot_only_its_partitions(
    kafka_cfg: Config,
    admin: KafkaAdminClient,
    producer: KafkaProducer,
    consumers: list[SlotConsumer],
) -> None:
    topic = new_topic(admin, 4)
    produced = values("e", range(4), 6)
    send_batched(producer, topic, produced)  # earliest does not depend on ListOffsets(LATEST)

    reads = []
    for slot in range(3):  # slot 0 owns {0, 3}, slot 1 {1}, slot 2 {2}
        consumer = slot_consumer(kafka_cfg, consumers, topic, slot=slot, slots=3)
        consumer.refresh_assignment({}, first=True)
        reads.append(drain(consumer, expected=len(partitions_of_slot({0, 1, 2, 3}, slot, 3)) * 6))
        assert consumer.assigned == partitions_of_slot({0, 1, 2, 3}, slot, 3)

    assert reads[0] == {0: expect(produced)[0], 3: expect(produced)[3]}
    assert reads[1] == {1: expect(produced)[1]}
    assert reads[2] == {2: expect(produced)[2]}


def test_latest_reads_only_records_produced_after_assignment(
    kafka_cfg: Config,
    admin: KafkaAdminClient,
    producer: KafkaProducer,
    consumers: list[SlotConsumer],
) -> None:
    topic = new_topic(admin, 2)
    # Own batches: Tansu's ListOffsets(LATEST) is only right when every record is one batch.
    send_each(producer, topic, values("old", range(2), 3))
    consumer = slot_consumer(kafka_cfg, consumers, topic, start_from="latest")
    consumer.refresh_assignment({}, first=True)
    # seek_to_end is resolved lazily; resolve it now so "after assignment" is a definite point.
    for partition in (0, 1):
        assert consumer.consumer.position(TopicPartition(topic, partition)) == 3

    new = values("new", range(2), 2)
    send_each(producer, topic, new)
    assert drain(consumer, expected=4) == expect(new, first_offset=3)


def test_timestamp_starts_at_first_record_at_or_after_it(
    kafka_cfg: Config,
    admin: KafkaAdminClient,
    producer: KafkaProducer,
    consumers: list[SlotConsumer],
) -> None:
    topic = new_topic(admin, 2)
    before = values("before", range(2), 3)
    send_each(producer, topic, before)
    time.sleep(0.05)
    start_ms = int(time.time() * 1000)
    time.sleep(0.05)
    after = {0: [b"after-p0-0", b"after-p0-1"], 1: []}  # partition 1 gets nothing newer
    send_each(producer, topic, after)

    consumer = slot_consumer(kafka_cfg, consumers, topic, start_from=f"timestamp:{start_ms}")
    consumer.refresh_assignment({}, first=True)
    # Partition 0 starts at its first record at/after the time; partition 1 has none that
    # recent, so it starts at its end and none of its old records is read.
    assert drain(consumer, expected=2) == {0: [(3, b"after-p0-0"), (4, b"after-p0-1")]}

    send_each(producer, topic, {1: [b"later-p1"]})
    assert drain(consumer, expected=1) == {1: [(3, b"later-p1")]}


def test_stored_offsets_resume_exactly(
    kafka_cfg: Config,
    admin: KafkaAdminClient,
    producer: KafkaProducer,
    consumers: list[SlotConsumer],
) -> None:
    topic = new_topic(admin, 4)
    produced = values("s", range(4), 10)
    send_batched(producer, topic, produced)

    # Slot 0 of 2 owns partitions 0 and 2; the checkpoint holds their next offsets.
    consumer = slot_consumer(kafka_cfg, consumers, topic, slot=0, slots=2, start_from="latest")
    consumer.refresh_assignment({0: 7, 2: 3}, first=True)
    read = drain(consumer, expected=3 + 7)
    assert read == {0: expect(produced)[0][7:], 2: expect(produced)[2][3:]}

    # A partition missing from the checkpoint (it appeared after it) starts at the earliest
    # offset, whatever start_from says: none of its records may be skipped.
    other = slot_consumer(kafka_cfg, consumers, topic, slot=0, slots=2, start_from="latest")
    other.refresh_assignment({0: 9}, first=True)
    assert drain(other, expected=1 + 10) == {0: expect(produced)[0][9:], 2: expect(produced)[2]}


def test_topic_created_later_is_discovered_and_read_from_offset_zero(
    kafka_cfg: Config,
    admin: KafkaAdminClient,
    producer: KafkaProducer,
    consumers: list[SlotConsumer],
) -> None:
    topic = f"t.reader.late.{uuid.uuid4().hex[:10]}"
    consumer = slot_consumer(kafka_cfg, consumers, topic, start_from="latest")
    consumer.refresh_assignment({}, first=True)
    assert consumer.assigned == set()
    assert consumer.poll() == {}
    assert not consumer.discovery_due()

    admin.create_topics([NewTopic(topic, 3, 1)])
    produced = values("late", range(3), 4)
    send_batched(producer, topic, produced)

    wait_until(consumer.discovery_due, timeout=3, what="partition discovery to fall due", every=0.1)
    consumer.refresh_assignment({}, first=False)
    assert consumer.assigned == {0, 1, 2}
    assert drain(consumer, expected=12) == expect(produced)


def test_lag_counts_records_not_yet_polled(
    kafka_cfg: Config,
    admin: KafkaAdminClient,
    producer: KafkaProducer,
    consumers: list[SlotConsumer],
) -> None:
    topic = new_topic(admin, 2)
    send_batched(producer, topic, values("l", range(2), 10))
    consumer = slot_consumer(kafka_cfg, consumers, topic, max_poll_records=3)
    consumer.refresh_assignment({}, first=True)
    tps = [TopicPartition(topic, p) for p in (0, 1)]

    polled = checks = 0
    deadline = time.monotonic() + 10
    while polled < 20 and time.monotonic() < deadline:
        batch = consumer.poll()
        got = sum(len(records) for records in batch.values())
        assert got <= 3
        polled += got
        if got and all(consumer.consumer.highwater(tp) is not None for tp in tps):
            assert consumer.lag() == 20 - polled
            checks += 1
    assert polled == 20
    assert checks >= 3  # lag was checked part-way, not only at the end
    assert consumer.lag() == 0
