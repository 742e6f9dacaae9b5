"""sinks.clickhouse and sinks.retry against the real ClickHouse engine (the chDB HTTP server).

Proves that ClickHouseBatchWriter, opened as Flink opens it, writes every line of a batch in
chunks of `batch_max_rows` (one part per chunk); that inserting the very same chunk again adds
no physical row because of its insert_deduplication_token (while the same lines under another
token do add rows, so the token is what deduplicates); that a replay chunked differently leaves
exactly one row per key under FINAL; that a failing insert is retried and then raised; and that
retry_with_backoff retries with capped exponential backoff and re-raises after the last attempt.

Background merges are stopped on each test's table so physical row and part counts are exact.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from pyflink.common import Row

from sinks.clickhouse import (
    ClickHouseBatchWriter,
    ClickHouseSettings,
    chunks,
    connect,
    dedup_token,
)
from sinks.retry import retry_with_backoff
from tidemark import schema
from tidemark.config import Config
from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

WINDOW = datetime(2026, 11, 1, 0, 0, 1)
NOW_MS = 1_793_491_260_000  # 2026-11-01 00:01:00 UTC


class _Counter:
    """Stands in for a Flink metric counter: counts what the writer reports."""

    def __init__(self) -> None:
        self.count = 0

    def inc(self, value: int = 1) -> None:
        self.count += value


class _MetricGroup:
    """Stands in for Flink's metric group (the only part of the runtime context open() uses)."""

    def __init__(self) -> None:
        self.counters: dict[str, _Counter] = {}
        self.groups: list[str] = []

    def add_group(self, name: str) -> _MetricGroup:
        self.groups.append(name)
        return self

    def counter(self, name: str) -> _Counter:
        return self.counters.setdefault(name, _Counter())


class _RuntimeContext:
    def __init__(self) -> None:
        self.metrics = _MetricGroup()

    def get_metrics_group(self) -> _MetricGroup:
        return self.metrics


@pytest.fixture
def database(clickhouse_cfg: Config) -> Iterator[tuple[Config, Client]]:
    """A fresh database with tidemark's schema and merges stopped on `events`; dropped after."""
    name = f"t_sink_{uuid.uuid4().hex[:10]}"
    cfg = dataclasses.replace(
        clickhouse_cfg, clickhouse=dataclasses.replace(clickhouse_cfg.clickhouse, database=name)
    )
    schema.apply(cfg)
    client = schema.connect(cfg)
    client.command(f"SYSTEM STOP MERGES {name}.events")
    yield cfg, client
    client.command(f"DROP DATABASE IF EXISTS {name}")
    client.close()


def settings_for(cfg: Config, batch_max_rows: int, insert_retries: int = 3) -> ClickHouseSettings:
    return dataclasses.replace(
        ClickHouseSettings.from_config(cfg),
        batch_max_rows=batch_max_rows,
        insert_retries=insert_retries,
        insert_backoff_max_seconds=1,
    )


@pytest.fixture
def open_writers() -> Iterator[list[ClickHouseBatchWriter]]:
    writers: list[ClickHouseBatchWriter] = []
    yield writers
    for writer in writers:
        writer.close()


def opened(
    writers: list[ClickHouseBatchWriter], settings: ClickHouseSettings
) -> tuple[ClickHouseBatchWriter, _MetricGroup]:
    """A writer opened the way Flink opens it, with a stand-in runtime context."""
    writer = ClickHouseBatchWriter(settings)
    context = _RuntimeContext()
    writer.open(context)  # type: ignore[arg-type]
    writers.append(writer)
    assert context.metrics.groups == ["tidemark_clickhouse"]
    return writer, context.metrics


def event_lines(count: int) -> list[bytes]:
    """Real validator rows for `count` distinct track events, as JSONEachRow lines."""
    lines = []
    for i in range(count):
        payload = {
            "message_id": f"m-{i:03d}",
            "tenant_id": "acme",
            "type": "track",
            "event": "Product Viewed",
            "user_id": f"u-{i % 4}",
            "timestamp": 1_793_491_200_000 + i,
        }
        meta = SourceMeta("tidemark.events", i % 4, i, 1_793_491_200_500 + i)
        result = validate(orjson.dumps(payload), meta, ValidationLimits(), NOW_MS)
        assert isinstance(result, Accepted), result
        lines.append(orjson.dumps(result.row))
    return lines


def physical_rows(client: Client, cfg: Config) -> int:
    return int(client.command(f"SELECT count() FROM {cfg.clickhouse.database}.events"))


def final_keys(client: Client, cfg: Config) -> list[tuple[Any, ...]]:
    return client.query(
        f"SELECT message_id, count() FROM {cfg.clickhouse.database}.events FINAL"
        " GROUP BY message_id ORDER BY message_id"
    ).result_rows


def part_sizes(client: Client, cfg: Config) -> list[int]:
    rows = client.query(
        "SELECT rows FROM system.parts WHERE database = {db:String} AND table = 'events'"
        " AND active ORDER BY rows DESC",
        parameters={"db": cfg.clickhouse.database},
    ).result_rows
    return [row[0] for row in rows]


def test_chunks_are_consecutive_slices() -> None:
    assert [list(c) for c in chunks(list("abcdefg"), 3)] == [
        ["a", "b", "c"],
        ["d", "e", "f"],
        ["g"],
    ]
    assert list(chunks([], 3)) == []


def test_dedup_token_differs_exactly_when_the_chunk_differs() -> None:
    token = dedup_token("events", WINDOW, 0, b"a\nb")
    assert token == dedup_token("events", WINDOW, 0, b"a\nb")
    assert token.startswith("events:2026-11-01 00:00:01:0:")
    others = {
        dedup_token("cost_records", WINDOW, 0, b"a\nb"),
        dedup_token("events", datetime(2026, 11, 1, 0, 0, 2), 0, b"a\nb"),
        dedup_token("events", WINDOW, 1, b"a\nb"),
        dedup_token("events", WINDOW, 0, b"a\nc"),
    }
    assert token not in others and len(others) == 4


def test_writes_every_line_in_chunks_of_batch_max_rows(
    database: tuple[Config, Client], open_writers: list[ClickHouseBatchWriter]
) -> None:
    cfg, client = database
    writer, metrics = opened(open_writers, settings_for(cfg, batch_max_rows=5))
    lines = event_lines(23)

    written = writer.map(Row("events", WINDOW, b"\n".join(lines)))  # one batch's bytes

    assert written == 23
    assert metrics.counters["rows_written"].count == 23
    assert metrics.counters["inserts"].count == 5
    assert part_sizes(client, cfg) == [5, 5, 5, 5, 3]  # one insert, one part, per chunk
    assert physical_rows(client, cfg) == 23
    assert final_keys(client, cfg) == [(f"m-{i:03d}", 1) for i in range(23)]


def test_same_chunk_again_adds_no_physical_rows(
    database: tuple[Config, Client], open_writers: list[ClickHouseBatchWriter]
) -> None:
    cfg, client = database
    writer, metrics = opened(open_writers, settings_for(cfg, batch_max_rows=4))
    lines = event_lines(10)
    writer.insert_lines("events", WINDOW, lines)
    assert physical_rows(client, cfg) == 10

    # A retried or replayed insert of the same chunks: the server drops them by token.
    writer.insert_lines("events", WINDOW, lines)
    writer.insert_lines("events", WINDOW, lines[:4])  # the first chunk alone, same index
    assert metrics.counters["inserts"].count == 3 + 3 + 1
    assert physical_rows(client, cfg) == 10
    assert part_sizes(client, cfg) == [4, 4, 2]

    # Control: the same lines under another window give other tokens and do land again,
    # so it is the token, not luck, that kept the rows above from doubling.
    writer.insert_lines("events", datetime(2026, 11, 1, 0, 0, 2), lines)
    assert physical_rows(client, cfg) == 20
    assert final_keys(client, cfg) == [(f"m-{i:03d}", 1) for i in range(10)]


def test_replay_with_other_chunking_leaves_one_row_per_key(
    database: tuple[Config, Client], open_writers: list[ClickHouseBatchWriter]
) -> None:
    cfg, client = database
    lines = event_lines(23)
    first, _ = opened(open_writers, settings_for(cfg, batch_max_rows=5))
    first.insert_lines("events", WINDOW, lines[:12])  # the job failed after 12 rows...

    # ...and after the restore the records are batched differently: other chunks, other tokens.
    replay, _ = opened(open_writers, settings_for(cfg, batch_max_rows=7))
    replay.insert_lines("events", datetime(2026, 11, 1, 0, 0, 3), lines)

    assert physical_rows(client, cfg) == 12 + 23  # duplicates are physically present
    assert final_keys(client, cfg) == [(f"m-{i:03d}", 1) for i in range(23)]
    current = client.command(f"SELECT count() FROM {cfg.clickhouse.database}.events_current")
    assert current == 23


def test_failing_insert_is_retried_then_raised(
    database: tuple[Config, Client], open_writers: list[ClickHouseBatchWriter]
) -> None:
    cfg, _ = database
    writer, metrics = opened(open_writers, settings_for(cfg, batch_max_rows=5, insert_retries=2))
    with pytest.raises(DatabaseError, match="no_such_table"):
        writer.insert_lines("no_such_table", WINDOW, event_lines(3))
    assert metrics.counters["inserts"].count == 0


def test_writer_connects_to_the_configured_database(database: tuple[Config, Client]) -> None:
    cfg, _ = database
    client = connect(settings_for(cfg, batch_max_rows=5))
    try:
        assert client.command("SELECT currentDatabase()") == cfg.clickhouse.database
    finally:
        client.close()


# --- retry_with_backoff (pure) -----------------------------------------------------------------


class Flaky:
    """Fails `failures` times, then returns "ok"; counts calls."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} failed")
        return "ok"


def test_retry_retries_then_succeeds() -> None:
    action, sleeps = Flaky(failures=2), []
    result = retry_with_backoff(action, "test write", 5, 30, sleep=sleeps.append)
    assert result == "ok"
    assert action.calls == 3
    assert sleeps == [0.2, 0.4]


def test_retry_reraises_after_the_last_attempt() -> None:
    action, sleeps = Flaky(failures=10), []
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        retry_with_backoff(action, "test write", 3, 30, sleep=sleeps.append)
    assert action.calls == 3
    assert sleeps == [0.2, 0.4]  # no sleep after the last attempt


def test_retry_backoff_is_capped() -> None:
    action, sleeps = Flaky(failures=5), []
    retry_with_backoff(
        action, "test write", 6, max_backoff_seconds=3, first_backoff_seconds=1, sleep=sleeps.append
    )
    assert sleeps == [1, 2, 3, 3, 3]


def test_retry_single_attempt_does_not_retry() -> None:
    action, sleeps = Flaky(failures=1), []
    with pytest.raises(ConnectionError):
        retry_with_backoff(action, "test write", 1, 30, sleep=sleeps.append)
    assert action.calls == 1 and sleeps == []
