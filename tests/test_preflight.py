"""jobs.preflight against a real Apache Kafka broker, the real ClickHouse engine (chDB server) and a
real Redis.

Proves that preflight passes when the systems answer and the schema is applied; and that each
way of being unusable fails fast with a ConfigError naming the setting to fix: no broker at
`kafka.bootstrap_servers` (within ~6 s), no ClickHouse at `clickhouse.host/clickhouse.port`, a
database that lacks the tables (telling to run `tidemark schema apply`), and no Redis at
`redis.host/redis.port` (only when the profile stage, which writes there, is on).
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest

from jobs.preflight import check_clickhouse, check_kafka, preflight
from tests.support import free_ports
from tidemark import schema
from tidemark.config import Config, ConfigError


@pytest.fixture
def cfg(kafka_cfg: Config, clickhouse_cfg: Config, redis_cfg: Config) -> Config:
    """Settings naming the fixtures' endpoints: broker, ClickHouse and Redis of each."""
    kafka = dataclasses.replace(clickhouse_cfg.kafka, bootstrap_servers=kafka_cfg.kafka_bootstrap)
    redis = dataclasses.replace(clickhouse_cfg.redis, port=redis_cfg.redis_port)
    return dataclasses.replace(clickhouse_cfg, kafka=kafka, redis=redis)


def with_kafka(cfg: Config, bootstrap: str) -> Config:
    return dataclasses.replace(
        cfg, kafka=dataclasses.replace(cfg.kafka, bootstrap_servers=bootstrap)
    )


def with_clickhouse(cfg: Config, **changes: object) -> Config:
    return dataclasses.replace(cfg, clickhouse=dataclasses.replace(cfg.clickhouse, **changes))


def test_preflight_passes_on_working_systems(cfg: Config) -> None:
    preflight(cfg)


def test_unreachable_broker_names_bootstrap_servers(cfg: Config) -> None:
    (dead_port,) = free_ports(1)
    bad = with_kafka(cfg, f"127.0.0.1:{dead_port}")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        preflight(bad)
    elapsed = time.monotonic() - started
    message = str(info.value)
    assert message.startswith(
        f"kafka.bootstrap_servers: no Kafka broker answers at 127.0.0.1:{dead_port}"
    )
    assert elapsed < 8, f"preflight took {elapsed:.1f}s to give up on a dead broker"


def test_unreachable_redis_names_host_and_port_when_the_profile_stage_is_on(cfg: Config) -> None:
    (dead_port,) = free_ports(1)
    bad = dataclasses.replace(cfg, redis=dataclasses.replace(cfg.redis, port=dead_port))
    with pytest.raises(ConfigError) as info:
        preflight(bad)
    assert str(info.value).startswith(
        f"redis.host/redis.port: no Redis answers at 127.0.0.1:{dead_port}"
    )
    ingest_only = dataclasses.replace(
        bad, ingest=dataclasses.replace(bad.ingest, profile_stage=False)
    )
    preflight(ingest_only)  # without the stage the job never touches Redis


def test_unreachable_clickhouse_names_host_and_port(cfg: Config) -> None:
    (dead_port,) = free_ports(1)
    bad = with_clickhouse(cfg, port=dead_port)
    check_kafka(bad)  # the broker is fine: the failure below is ClickHouse's alone
    with pytest.raises(ConfigError) as info:
        preflight(bad)
    assert str(info.value).startswith(
        f"clickhouse.host/clickhouse.port: no ClickHouse server answers at "
        f"http://127.0.0.1:{dead_port}"
    )


def test_database_without_schema_says_to_apply_it(cfg: Config) -> None:
    name = f"t_pre_{uuid.uuid4().hex[:10]}"
    bare = with_clickhouse(cfg, database=name)
    with pytest.raises(ConfigError) as info:
        preflight(bare)
    message = str(info.value)
    assert message.startswith(f"clickhouse.database: '{name}' at http://127.0.0.1:")
    assert "lacks table(s) events, cost_records, dead_letters" in message
    assert message.endswith("run `tidemark schema apply`")

    # After the schema is applied, the same settings pass.
    schema.apply(bare)
    try:
        check_clickhouse(bare)
    finally:
        client = schema.connect(bare)
        client.command(f"DROP DATABASE IF EXISTS {name}")
        client.close()


def test_partly_created_schema_names_the_missing_tables(cfg: Config) -> None:
    name = f"t_pre_{uuid.uuid4().hex[:10]}"
    partial = with_clickhouse(cfg, database=name)
    client = schema.connect(partial)
    try:
        client.command(f"CREATE DATABASE {name}")
        client.command(f"CREATE TABLE {name}.events (x UInt8) ENGINE = MergeTree ORDER BY x")
        missing = (
            "cost_records, dead_letters, profiles, identity_links, identity_merges, "
            "profile_aliases, cost_allocations, cost_panes, engagement_panes, profile_panes, "
            "late_events, window_progress, window_specs: run"
        )
        with pytest.raises(ConfigError, match=rf"lacks table\(s\) {missing}"):
            check_clickhouse(partial)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {name}")
        client.close()
