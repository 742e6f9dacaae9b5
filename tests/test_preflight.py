"""jobs.preflight against a real broker (Tansu) and the real ClickHouse engine (chDB server).

Proves that preflight passes when both systems answer and the schema is applied; and that each
way of being unusable fails fast with a ConfigError naming the setting to fix: no broker at
`kafka.bootstrap_servers` (within ~6 s), no ClickHouse at `clickhouse.host/clickhouse.port`, and
a database that lacks the tables (telling to run `tidemark schema apply`).
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
def cfg(kafka_cfg: Config, clickhouse_cfg: Config) -> Config:
    """Settings naming both fixtures' endpoints: the broker of one, the ClickHouse of the other."""
    kafka = dataclasses.replace(clickhouse_cfg.kafka, bootstrap_servers=kafka_cfg.kafka_bootstrap)
    return dataclasses.replace(clickhouse_cfg, kafka=kafka)


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
        with pytest.raises(ConfigError, match=r"lacks table\(s\) cost_records, dead_letters:"):
            check_clickhouse(partial)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {name}")
        client.close()
