"""`tidemark topics create | describe`: the source and dead-letter topics.

`describe` reports the high-water marks a consumer sees in fetch responses (with transactional
writers these include commit markers, so they can exceed the count of readable records).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from tidemark.config import Config, ConfigError, load_config


@dataclass(frozen=True)
class PartitionInfo:
    """Where one partition starts and ends, as a consumer sees it."""

    partition: int
    earliest: int
    high_water: int


def admin_client(
    cfg: Config,
    bootstrap_timeout_seconds: float = 5.0,
    request_timeout_seconds: float = 10.0,
    client_id: str = "tidemark-topics",
):
    """A Kafka admin client with short timeouts, so a dead broker fails fast, naming the key."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        return KafkaAdminClient(
            bootstrap_servers=cfg.kafka_bootstrap.split(","),
            request_timeout_ms=int(request_timeout_seconds * 1000),
            bootstrap_timeout_ms=int(bootstrap_timeout_seconds * 1000),
            client_id=client_id,
        )
    except (KafkaError, OSError, ValueError) as exc:
        raise unreachable_broker(cfg, exc) from exc


def unreachable_broker(cfg: Config, exc: Exception) -> ConfigError:
    """The error an operator sees when the configured broker does not answer."""
    return ConfigError(
        f"kafka.bootstrap_servers: no Kafka broker answers at {cfg.kafka_bootstrap} "
        f"({type(exc).__name__}: {exc})"
    )


def topic_names(cfg: Config) -> tuple[str, str, str]:
    """The job's topics: source, dead letters, dimension changelog."""
    return cfg.kafka.topic, cfg.kafka.dead_letter_topic, cfg.enrichment.changelog_topic


def ensure_topics(cfg: Config, partitions: int | None = None) -> list[str]:
    """Create the source, dead-letter and dimension-changelog topics if missing; return the
    names created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    source, dead_letters, changelog = topic_names(cfg)
    wanted = {
        source: partitions or cfg.kafka.partitions,
        dead_letters: 1,
        changelog: 1,  # one partition: changes apply in publish order
    }
    admin = admin_client(cfg)
    try:
        existing = set(admin.list_topics())
        created = []
        for name, count in wanted.items():
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, count, 1)])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        wait_until_listed(admin, set(wanted))
        return created
    finally:
        admin.close()


def wait_until_listed(admin, names: set[str], timeout_s: float = 30.0) -> None:
    """Wait until the broker's metadata lists `names`.

    Why: Kafka answers CreateTopics once the controller has the topic, before every broker's
    metadata cache does; a producer or a Flink job started at once could see no topic.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        missing = names - set(admin.list_topics())
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"topics not in the broker's metadata after {timeout_s:.0f} s: "
                f"{', '.join(sorted(missing))}"
            )
        time.sleep(0.1)


def describe_topic(cfg: Config, topic: str, timeout_ms: int = 3000) -> list[PartitionInfo]:
    """Each partition's earliest offset and high-water mark (read with a short fetch)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=cfg.kafka_bootstrap.split(","),
        enable_auto_commit=False,
        group_id=None,
        max_poll_records=1,
        fetch_max_wait_ms=100,  # an empty partition's fetch answers after this
    )
    try:
        partitions = sorted(consumer.partitions_for_topic(topic))
        infos = []
        for partition in partitions:
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            earliest = consumer.beginning_offsets([tp])[tp]
            consumer.seek_to_beginning(tp)
            # Poll until a fetch response brings the high-water mark: one long poll would wait
            # out the whole timeout on an empty partition (3 s each, for nothing).
            deadline = time.monotonic() + timeout_ms / 1000
            while consumer.highwater(tp) is None and time.monotonic() < deadline:
                consumer.poll(timeout_ms=50, max_records=1)
            high = consumer.highwater(tp)
            infos.append(PartitionInfo(partition, earliest, high if high is not None else earliest))
        return infos
    finally:
        consumer.close()


def _cmd_create(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    created = ensure_topics(cfg, args.partitions)
    for name in created:
        print(f"created {name}")
    print(f"topics ready: {', '.join(topic_names(cfg))}")
    return 0


def _cmd_describe(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    for topic in args.topics or [cfg.kafka.topic, cfg.kafka.dead_letter_topic]:
        infos = describe_topic(cfg, topic)
        total = sum(i.high_water - i.earliest for i in infos)
        print(f"{topic}: {len(infos)} partitions, {total} records")
        for info in infos:
            print(f"  partition {info.partition}: offsets {info.earliest}..{info.high_water}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("topics", help="create or describe the Kafka topics")
    sub = parser.add_subparsers(dest="topics_command", required=True)
    create = sub.add_parser("create", help="create the source and dead-letter topics")
    create.add_argument("--partitions", type=int, help="source topic partitions (default: config)")
    create.set_defaults(func=_cmd_create)
    describe = sub.add_parser("describe", help="partitions and offsets")
    describe.add_argument("topics", nargs="*", help="topics (default: source and dead-letter)")
    describe.set_defaults(func=_cmd_describe)
