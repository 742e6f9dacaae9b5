"""Fixtures that start real components on free ports, each in a private state directory.

- `kafka_cfg`: an Apache Kafka broker alone (seconds), for topic and producer tests;
- `clickhouse_cfg`: the chDB-backed ClickHouse HTTP server alone, schema applied;
- `redis_cfg`: a Redis server alone, for the Redis sink's tests;
- `stack_cfg`: the whole local stack with two TaskManagers (a killed one fails over to the
  other), shared by the end-to-end and failure tests of one session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import stack_overrides
from tidemark import schema
from tidemark.config import Config, load_config
from tidemark.stack import clickhouse, kafka, redis
from tidemark.stack.commands import start_stack, stop_stack


@pytest.fixture(scope="session")
def kafka_cfg(tmp_path_factory) -> Iterator[Config]:
    """Settings pointing at a fresh Apache Kafka broker (KRaft, one node)."""
    cfg = load_config(overrides=stack_overrides(tmp_path_factory.mktemp("kafka-stack")))
    kafka.start(cfg)
    yield cfg
    kafka.stop(cfg)


@pytest.fixture(scope="session")
def clickhouse_cfg(tmp_path_factory) -> Iterator[Config]:
    """Settings pointing at a fresh ClickHouse (chDB) server with tidemark's schema applied."""
    cfg = load_config(overrides=stack_overrides(tmp_path_factory.mktemp("clickhouse-stack")))
    clickhouse.start(cfg)
    schema.apply(cfg)
    yield cfg
    clickhouse.stop(cfg)


@pytest.fixture(scope="session")
def redis_cfg(tmp_path_factory) -> Iterator[Config]:
    """Settings pointing at a fresh Redis server."""
    cfg = load_config(overrides=stack_overrides(tmp_path_factory.mktemp("redis-stack")))
    redis.start(cfg)
    yield cfg
    redis.stop(cfg)


@pytest.fixture(scope="session")
def stack_cfg(tmp_path_factory) -> Iterator[Config]:
    """The whole local stack, with two single-slot TaskManagers."""
    state_dir = tmp_path_factory.mktemp("full-stack")
    cfg = load_config(overrides=stack_overrides(state_dir, taskmanagers=2))
    try:
        start_stack(cfg)
        schema.apply(cfg)
        yield cfg
    finally:
        stop_stack(cfg)
