"""tidemark.topics and tidemark.produce against a real Apache Kafka broker.

Proves that `ensure_topics` creates the source topic with the requested partition count and the
one-partition dead-letter topic, and is idempotent; that `produce` from a newline-delimited file
delivers every non-empty line byte for byte, keyed `tenant_id:message_id` where the line is an
event (unkeyed otherwise), with the produce time as record timestamp and a message's copies on
one partition; that `describe_topic` reports each partition's offsets; and that
`produce --focus` sends a FOCUS CSV or Parquet export (the FinOps sample excerpt in
tests/data) as one `focus` record per row that the validator accepts, refusing a bad file
before connecting. (Dead letters reach their topic through the job's transactional Kafka
sink: tests/test_ingest_e2e.py.)
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from tidemark import cli
from tidemark.config import Config, ConfigError
from tidemark.produce import Progress, file_records, focus_records, key_of, produce
from tidemark.topics import describe_topic, ensure_topics
from udfs.focus_files import count_rows, iter_focus_rows
from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

Record = tuple[int, bytes | None, bytes, int]  # partition, key, value, timestamp


@pytest.fixture
def cfg(kafka_cfg: Config) -> Config:
    """The session broker, with topic names of this test's own."""
    suffix = uuid.uuid4().hex[:10]
    kafka = dataclasses.replace(
        kafka_cfg.kafka, topic=f"t.src.{suffix}", dead_letter_topic=f"t.dlq.{suffix}"
    )
    enrichment = dataclasses.replace(kafka_cfg.enrichment, changelog_topic=f"t.dim.{suffix}")
    return dataclasses.replace(kafka_cfg, kafka=kafka, enrichment=enrichment)


@pytest.fixture
def admin(kafka_cfg: Config) -> Iterator[KafkaAdminClient]:
    client = KafkaAdminClient(bootstrap_servers=kafka_cfg.kafka_bootstrap, client_id="t-topics")
    yield client
    client.close()


def read_all(cfg: Config, topic: str, expected: int, timeout: float = 10.0) -> list[Record]:
    """Every record of every partition of `topic`, read from the beginning without a group."""
    consumer = KafkaConsumer(
        bootstrap_servers=cfg.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=200).items():
                records.extend((tp.partition, r.key, r.value, r.timestamp) for r in batch)
        # Anything beyond `expected` would be a duplicate: give it a moment to show up.
        for tp, batch in consumer.poll(timeout_ms=300).items():
            records.extend((tp.partition, r.key, r.value, r.timestamp) for r in batch)
        return records
    finally:
        consumer.close()


def test_ensure_topics_creates_all_and_is_idempotent(cfg: Config, admin: KafkaAdminClient) -> None:
    source, dead = cfg.kafka.topic, cfg.kafka.dead_letter_topic
    changelog = cfg.enrichment.changelog_topic
    assert source not in admin.list_topics()

    assert ensure_topics(cfg, partitions=3) == [source, dead, changelog]

    assert {source, dead, changelog} <= set(admin.list_topics())
    assert [p.partition for p in describe_topic(cfg, source)] == [0, 1, 2]
    assert [p.partition for p in describe_topic(cfg, dead)] == [0]
    # Again: nothing created, nothing changed (not even with another partition count).
    assert ensure_topics(cfg, partitions=5) == []
    assert ensure_topics(cfg) == []
    assert len(describe_topic(cfg, source)) == 3


def test_ensure_topics_defaults_to_configured_partitions(cfg: Config) -> None:
    assert cfg.kafka.partitions == 4
    ensure_topics(cfg)
    started = time.monotonic()
    infos = describe_topic(cfg, cfg.kafka.topic)
    assert [(i.partition, i.earliest, i.high_water) for i in infos] == [(p, 0, 0) for p in range(4)]
    # Empty partitions answer as fast as full ones (it used to wait out 3 s per partition).
    assert time.monotonic() - started < 3


def test_produce_from_file_keys_every_parseable_record(cfg: Config, tmp_path: Path) -> None:
    ensure_topics(cfg, partitions=3)
    events = [
        {"tenant_id": "acme", "message_id": f"m-{i}", "type": "track", "event": "E"}
        for i in range(8)
    ]
    lines = [orjson.dumps(e) for e in events]
    lines += [
        lines[2],  # a re-send of m-2: must land on m-2's partition
        b'{"tenant_id": "acme", "message_id": broken',  # malformed: no key
        b'{"message_id": "m-x", "type": "track"}',  # no tenant_id: no key
        b"\xff\xfe not utf-8",  # not even text: no key, bytes kept as they are
        b'{"tenant_id": "globex", "message_id": "g-1"}',
    ]
    path = tmp_path / "events.ndjson"
    path.write_bytes(b"\n".join(lines[:5]) + b"\n\n" + b"\n".join(lines[5:]) + b"\n")

    started_ms = int(time.time() * 1000)
    report = produce(cfg, file_records(path))
    finished_ms = int(time.time() * 1000)

    assert report.records == len(lines) == 13  # the empty line is skipped
    read = read_all(cfg, cfg.kafka.topic, expected=13)
    expected_keys = [key_of(line) for line in lines]
    assert expected_keys[:8] == [f"acme:m-{i}".encode() for i in range(8)]
    assert expected_keys[9:12] == [None, None, None]
    assert expected_keys[12] == b"globex:g-1"
    assert Counter((key, value) for _, key, value, _ in read) == Counter(
        zip(expected_keys, lines, strict=True)
    )
    assert all(started_ms - 1000 <= ts <= finished_ms + 1000 for *_, ts in read)
    copies = {partition for partition, key, _, _ in read if key == b"acme:m-2"}
    assert len(copies) == 1

    # describe_topic sees the same records, partition by partition.
    per_partition = Counter(partition for partition, *_ in read)
    infos = describe_topic(cfg, cfg.kafka.topic)
    assert [(i.partition, i.earliest, i.high_water) for i in infos] == [
        (p, 0, per_partition[p]) for p in range(3)
    ]


def test_every_event_of_a_tenant_lands_on_one_partition_in_order(cfg: Config) -> None:
    """Identity resolution applies a tenant's events in Kafka order: one partition each."""
    ensure_topics(cfg, partitions=4)
    tenants = ["acme", "globex", "initech", "umbrella-retail", "hooli.shop", "wonka"]
    records = [
        (f"{t}:m-{i}".encode(), orjson.dumps({"tenant_id": t, "message_id": f"m-{i}"}))
        for i in range(50)
        for t in tenants
    ]
    produce(cfg, records)
    read = read_all(cfg, cfg.kafka.topic, expected=len(records))
    partitions: dict[str, set[int]] = {}
    order: dict[str, list[str]] = {}
    for partition, key, _, _ in read:
        tenant, message = key.decode().split(":", 1)
        partitions.setdefault(tenant, set()).add(partition)
        order.setdefault(tenant, []).append(message)
    assert {t: len(p) for t, p in partitions.items()} == dict.fromkeys(tenants, 1)
    assert all(order[t] == [f"m-{i}" for i in range(50)] for t in tenants)
    assert len(set().union(*partitions.values())) > 1  # tenants still spread over partitions


def test_produce_to_another_topic(cfg: Config) -> None:
    ensure_topics(cfg, partitions=1)
    records = [(b"k", b"v1"), (None, b"v2")]
    assert produce(cfg, records, topic=cfg.kafka.dead_letter_topic).records == 2
    read = read_all(cfg, cfg.kafka.dead_letter_topic, expected=2)
    assert [(key, value) for _, key, value, _ in read] == records
    assert describe_topic(cfg, cfg.kafka.topic)[0].high_water == 0


# --- produce --focus ----------------------------------------------------------------------------

FOCUS_EXCERPT = Path(__file__).parent / "data" / "focus_1_0_sample_excerpt.csv"
PRODUCE_NOW_MS = 1_793_491_260_000  # 2026-11-01: after every charge period of the sample


def test_produce_focus_sends_each_row_as_published_and_the_job_accepts_all(cfg: Config) -> None:
    """A FOCUS CSV is one `focus` record per row, keyed tenant:message_id, its columns as in
    the file (NULL included); the validator, the job's single FOCUS reader, accepts them all."""
    ensure_topics(cfg, partitions=2)
    report = produce(cfg, focus_records(FOCUS_EXCERPT, "acme"), total=41)
    assert report.records == 41
    read = read_all(cfg, cfg.kafka.topic, expected=41)
    assert len(read) == 41
    rows = list(iter_focus_rows(FOCUS_EXCERPT))
    records = [orjson.loads(value) for _, _, value, _ in read]
    assert sorted(orjson.dumps(r["focus"], option=orjson.OPT_SORT_KEYS) for r in records) == sorted(
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS) for row in rows
    )
    for partition, key, value, timestamp in read:
        record = orjson.loads(value)
        assert key == f"acme:{record['message_id']}".encode()
        assert (record["type"], record["tenant_id"]) == ("focus", "acme")
        result = validate(
            value, SourceMeta(cfg.kafka.topic, partition, 0, timestamp), ValidationLimits(),
            PRODUCE_NOW_MS,
        )  # fmt: skip
        assert isinstance(result, Accepted), result
    assert len({p for p, *_ in read}) == 1  # one tenant, one partition, file order kept


def test_produce_focus_reads_parquet(cfg: Config, tmp_path: Path) -> None:
    ensure_topics(cfg, partitions=1)
    table = pa_csv.read_csv(
        FOCUS_EXCERPT,
        convert_options=pa_csv.ConvertOptions(
            column_types={"BilledCost": pa.decimal128(38, 11), "EffectiveCost": pa.float64()},
            null_values=["NULL"],
            strings_can_be_null=True,
        ),
    )
    path = tmp_path / "focus.parquet"
    pq.write_table(table, path)
    assert count_rows(path) == 41
    produce(cfg, focus_records(path, "acme"))
    read = read_all(cfg, cfg.kafka.topic, expected=41)
    results = [
        validate(value, SourceMeta(cfg.kafka.topic, 0, 0, ts), ValidationLimits(), PRODUCE_NOW_MS)
        for _, _, value, ts in read
    ]
    assert all(isinstance(r, Accepted) for r in results), results
    csv_costs = sorted(Decimal(r["BilledCost"]) for r in iter_focus_rows(FOCUS_EXCERPT))
    assert sorted(Decimal(r.row["billed_cost"]) for r in results) == csv_costs


def test_produce_focus_refuses_a_bad_file_or_tenant_before_connecting(tmp_path: Path) -> None:
    no_cost = tmp_path / "no_cost.csv"
    no_cost.write_text("ChargePeriodStart,ServiceName\n2024-09-01 00:00:00,EC2\n")
    with pytest.raises(ConfigError, match="missing required FOCUS column 'BilledCost'"):
        focus_records(no_cost, "acme")
    with pytest.raises(ConfigError, match="tenant_id must be"):
        focus_records(FOCUS_EXCERPT, "acme corp")
    assert count_rows(FOCUS_EXCERPT) == 41


def test_progress_bar_counts_to_the_row_total(capsys: pytest.CaptureFixture[str]) -> None:
    progress = Progress(count_rows(FOCUS_EXCERPT), enabled=True)
    progress.update(41, final=True)
    line = capsys.readouterr().err
    assert "[" + "#" * 30 + "] 41/41" in line


def test_produce_file_points_a_focus_export_to_focus(capsys: pytest.CaptureFixture[str]) -> None:
    """`produce --file focus.csv` used to send one malformed_json dead letter per line."""
    assert cli.main(["produce", "--file", str(FOCUS_EXCERPT)]) == 2
    assert "is a FOCUS cost export" in capsys.readouterr().err
    assert cli.main(["produce", "--focus", str(FOCUS_EXCERPT)]) == 2
    assert "needs --tenant" in capsys.readouterr().err
