"""`tidemark produce`: load events into Kafka from a file, a FOCUS cost export or the generator.

Records are keyed `tenant_id:message_id` (as the generator does, and as producers should) and
partitioned by the tenant part of the key alone: every event of a tenant lands on one
partition, in order, which is the order identity resolution applies them in (see
udfs/profile_stage.py); duplicates of one message land together too. Every record carries
the produce time as its Kafka timestamp, which the ingest job stores as `produced_at` and the
benchmark uses to measure latency.

`--focus FILE --tenant T` loads a FinOps FOCUS 1.x export (CSV, optionally compressed, or
Parquet) as it was published: one `focus` record per row, the row's columns unchanged. The
job, not this command, maps FOCUS rows to cost records (udfs/focus.py), so a FOCUS row that any
other producer puts on the topic is read by the same rules. This command only reads the file
(udfs/focus_files.py) and refuses one that lacks a required FOCUS column before sending a row.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from tidemark.config import Config, ConfigError, load_config


@dataclass(frozen=True)
class ProduceReport:
    """What one produce run did."""

    records: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def key_of(value: bytes) -> bytes | None:
    """`tenant_id:message_id` of a JSON event, or None when the payload has neither."""
    try:
        event = orjson.loads(value)
        return f"{event['tenant_id']}:{event['message_id']}".encode()
    except Exception:
        return None


def file_records(path: Path) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per line of a newline-delimited file (lines are bytes, any encoding)."""
    with path.open("rb") as handle:
        for line in handle:
            value = line.rstrip(b"\n")
            if value:
                yield key_of(value), value


def focus_records(path: Path, tenant_id: str) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per row of a FOCUS export: a `focus` record keyed `tenant_id:message_id`.

    Raises ConfigError naming the file and column at once (before any broker is contacted) if
    the file is not a usable FOCUS export, or the tenant is not a valid tenant_id.
    """
    from udfs.focus import FocusFormatError, focus_record
    from udfs.focus_files import check_tenant, iter_focus_rows

    try:
        check_tenant(tenant_id)
        rows = iter_focus_rows(path)
        first = next(rows, None)
    except (FocusFormatError, ValueError) as exc:
        raise ConfigError(f"--focus: {exc}") from exc

    def keyed() -> Iterator[tuple[bytes | None, bytes]]:
        try:
            for row in itertools.chain(() if first is None else (first,), rows):
                record = focus_record(row, tenant_id)
                yield f"{tenant_id}:{record['message_id']}".encode(), orjson.dumps(record)
        except FocusFormatError as exc:  # a malformed line halfway through the file
            raise ConfigError(f"--focus: {exc}") from exc

    return keyed()


def looks_like_focus(path: Path) -> bool:
    """Whether a file handed to --file is a FOCUS export (Parquet, or a CSV whose header names
    FOCUS columns) rather than newline-delimited JSON: sent line by line, each CSV line would
    become a malformed_json dead letter."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    if head.startswith(b"PAR1"):
        return True
    first = head.split(b"\n", 1)[0].lstrip(b"\xef\xbb\xbf \t")
    return not first.startswith(b"{") and b"BilledCost" in first and b"ChargePeriodStart" in first


class RateLimiter:
    """Spread sends evenly at `rate` per second (0: unlimited)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = time.perf_counter()

    def wait(self) -> None:
        if not self.interval:
            return
        self.next_at += self.interval
        delay = self.next_at - time.perf_counter()
        if delay > 0.002:
            time.sleep(delay)


class Progress:
    """A one-line progress report on stderr, refreshed at most every half second."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.started = self.shown_at = time.perf_counter()

    def update(self, done: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.shown_at < 0.5):
            return
        self.shown_at = now
        rate = done / max(now - self.started, 1e-9)
        if self.total:
            width = 30
            filled = int(width * done / self.total)
            bar = "#" * filled + "-" * (width - filled)
            line = f"\r[{bar}] {done}/{self.total} {rate:,.0f} ev/s"
        else:
            line = f"\r{done} records {rate:,.0f} ev/s"
        sys.stderr.write(line + ("\n" if final else ""))
        sys.stderr.flush()


def tenant_partition(key: bytes | None, partitions: int) -> int | None:
    """The partition of a `tenant_id:message_id` key: Kafka's murmur2 of the tenant part."""
    if key is None:
        return None
    from kafka.partitioner.default import murmur2

    return (murmur2(key.split(b":", 1)[0]) & 0x7FFFFFFF) % partitions


def tenant_partitioner():  # -> kafka.partitioner.Partitioner
    """kafka-python's partitioner interface over tenant_partition (random when keyless)."""
    from kafka.partitioner.default import DefaultPartitioner

    class TenantPartitioner(DefaultPartitioner):
        def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
            partitions = sorted(cluster.partitions_for_topic(topic) or ())
            index = tenant_partition(serialized_key, len(partitions)) if partitions else None
            if index is None:
                return super().partition(
                    topic, key, serialized_key, value, serialized_value, cluster
                )
            return partitions[index]

    return TenantPartitioner()


def producer(cfg: Config):
    """A throughput-oriented producer: big batches, a short linger, leader acks."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        return KafkaProducer(
            bootstrap_servers=cfg.kafka_bootstrap.split(","),
            linger_ms=20,
            batch_size=512 * 1024,
            max_request_size=8 * 1024 * 1024,
            acks=1,
            partitioner=tenant_partitioner(),
            client_id="tidemark-produce",
        )
    except (KafkaError, OSError) as exc:
        raise ConfigError(
            f"kafka.bootstrap_servers: no Kafka broker answers at {cfg.kafka_bootstrap} ({exc})"
        ) from exc


def produce(
    cfg: Config,
    records: Iterable[tuple[bytes | None, bytes]],
    rate: float = 0.0,
    total: int | None = None,
    topic: str | None = None,
    show_progress: bool = False,
) -> ProduceReport:
    """Send (key, value) records to the source topic; wait until all are acknowledged."""
    kafka = producer(cfg)
    limiter = RateLimiter(rate)
    progress = Progress(total, show_progress)
    target = topic or cfg.kafka.topic
    started = time.perf_counter()
    sent = 0
    try:
        for key, value in records:
            limiter.wait()
            kafka.send(target, key=key, value=value)
            sent += 1
            if sent % 1000 == 0:
                progress.update(sent)
        kafka.flush()
    finally:
        kafka.close(timeout=30)
    progress.update(sent, final=True)
    return ProduceReport(sent, time.perf_counter() - started)


def _cmd_produce(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.tenant and not args.focus:
        raise ConfigError("--tenant: only used with --focus (other records carry tenant_id)")
    if args.focus:
        path = Path(args.focus)
        if not path.is_file():
            raise ConfigError(f"--focus: no such file: {path}")
        if not args.tenant:
            raise ConfigError("--focus: needs --tenant (FOCUS rows carry no tenant)")
        from udfs.focus_files import count_rows

        total = count_rows(path)
        records: Iterable[tuple[bytes | None, bytes]] = focus_records(path, args.tenant)
    elif args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ConfigError(f"--file: no such file: {path}")
        if looks_like_focus(path):
            raise ConfigError(
                f"--file: {path} is a FOCUS cost export, not newline-delimited JSON;"
                " load it with --focus FILE --tenant TENANT"
            )
        records = file_records(path)
        total = None
    else:
        from tidemark.gen import generate

        records = ((r.key, r.value) for r in generate(seed=args.seed, count=args.count))
        total = args.count
    topic = args.topic or cfg.kafka.topic
    report = produce(cfg, records, rate=args.rate, total=total, topic=topic, show_progress=True)
    print(
        f"produced {report.records} records to {topic} in {report.seconds:.1f}s "
        f"({report.rate:,.0f}/s)"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("produce", help="load events into Kafka")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", help="newline-delimited events (e.g. from `tidemark gen`)")
    source.add_argument(
        "--focus",
        metavar="FILE",
        help="a FinOps FOCUS 1.x cost export (CSV, .csv.gz, or Parquet), one record per row",
    )
    source.add_argument("--gen", action="store_true", help="use the generator (default)")
    parser.add_argument("--tenant", help="with --focus: the tenant_id the cost rows belong to")
    parser.add_argument("--seed", type=int, default=1, help="generator seed")
    parser.add_argument("--count", type=int, default=10_000, help="generator record count")
    parser.add_argument("--rate", type=float, default=0.0, help="records per second (0: max)")
    parser.add_argument(
        "--topic",
        help="another topic than kafka.topic, e.g. enrichment.changelog_topic for a file of "
        "dimension changes",
    )
    parser.set_defaults(func=_cmd_produce)
