"""Write batches of JSON rows to ClickHouse, idempotently.

Rows reach this sink already batched by a Java operator (a one-second processing-time window
that collects each table's rows), so the Python side never buffers rows between calls: a
buffer held in a Python object would be lost if a checkpoint completed while it was pending.
Each call writes its batch synchronously, before the next checkpoint barrier can pass.

Idempotence, in two layers:
- every insert carries an `insert_deduplication_token` derived from the chunk's content, so
  a retried insert whose first attempt did land adds nothing;
- the tables are ReplacingMergeTree on the row's identity, so rows replayed after a failure
  (possibly batched differently) collapse to one, and readers use FINAL or the *_current views.

After a cost_allocations batch, the hours and days it touched are recomputed into cost_hourly /
cost_daily from cost_allocations FINAL (sinks/cost_history.py): absolute rows, so a replay
cannot count twice what FINAL collapses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pyflink.common import Row
from pyflink.datastream import MapFunction, RuntimeContext

from sinks import cost_history
from sinks.retry import retry_with_backoff
from tidemark.config import Config
from udfs.busy_time import BusyTime


@dataclass(frozen=True)
class ClickHouseSettings:
    """Connection and batching settings, captured on the client and shipped with the job."""

    host: str
    port: int
    database: str
    username: str
    password: str
    connect_timeout_seconds: int
    batch_max_rows: int
    insert_retries: int
    insert_backoff_max_seconds: int

    @classmethod
    def from_config(cls, cfg: Config) -> ClickHouseSettings:
        """The settings resolved from tidemark's configuration (on the client)."""
        c = cfg.clickhouse
        return cls(
            host=c.host,
            port=cfg.clickhouse_port,
            database=c.database,
            username=c.username,
            password=c.password,
            connect_timeout_seconds=c.connect_timeout_seconds,
            batch_max_rows=cfg.ingest.batch_max_rows,
            insert_retries=cfg.ingest.insert_retries,
            insert_backoff_max_seconds=cfg.ingest.insert_backoff_max_seconds,
        )


def connect(settings: ClickHouseSettings, use_database: bool = True):  # -> clickhouse Client
    """A clickhouse-connect client for the configured endpoint (and database, unless it may
    not exist yet). No compression: the server is local, and lz4 costs the job's CPU."""
    import clickhouse_connect

    return clickhouse_connect.get_client(
        host=settings.host,
        port=settings.port,
        username=settings.username,
        password=settings.password,
        database=settings.database if use_database else None,
        connect_timeout=settings.connect_timeout_seconds,
        autogenerate_session_id=False,
        compress=False,
    )


def chunks(lines: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    """Consecutive slices of at most `size` lines."""
    for start in range(0, len(lines), size):
        yield lines[start : start + size]


def dedup_token(table: str, window_start: object, index: int, body: bytes) -> str:
    """A token that is equal exactly when the same chunk of the same table is inserted again.

    `window_start` is a datetime, or a Java LocalDateTime in thread mode: str() suits both.
    """
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    return f"{table}:{window_start}:{index}:{digest}"


class ClickHouseBatchWriter(MapFunction):
    """Insert each incoming (table, window_start, newline-joined rows) batch; emit the count."""

    def __init__(self, settings: ClickHouseSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        self.client = connect(self.settings)
        metrics = runtime_context.get_metrics_group().add_group("tidemark_clickhouse")
        self.rows_written = metrics.counter("rows_written")
        self.inserts = metrics.counter("inserts")
        self.busy_time = BusyTime(metrics)

    def close(self) -> None:
        self.client.close()

    def insert_lines(self, table: str, window_start: object, lines: Sequence[bytes]) -> None:
        """Insert JSONEachRow lines in chunks of at most batch_max_rows, retrying each chunk."""
        for index, chunk in enumerate(chunks(lines, self.settings.batch_max_rows)):
            body = b"\n".join(chunk)
            token = dedup_token(table, window_start, index, body)
            retry_with_backoff(
                lambda body=body, token=token: self.client.raw_insert(
                    table,
                    insert_block=body,
                    fmt="JSONEachRow",
                    settings={"insert_deduplication_token": token},
                ),
                what=f"insert of {len(chunk)} rows into {table}",
                attempts=self.settings.insert_retries,
                max_backoff_seconds=self.settings.insert_backoff_max_seconds,
            )
            self.inserts.inc()

    def refresh_cost_history(self, lines: Sequence[bytes]) -> None:
        """Recompute the cost_hourly / cost_daily buckets the allocations just inserted touch.

        Runs after the insert, in the same call: a failure in between is replayed by Flink,
        which re-inserts (collapsing) and recomputes (idempotent)."""
        buckets = cost_history.touched_buckets(lines)
        retry_with_backoff(
            lambda: cost_history.refresh(self.client, buckets),
            what=f"cost history refresh of {sum(map(len, buckets.values()))} hours",
            attempts=self.settings.insert_retries,
            max_backoff_seconds=self.settings.insert_backoff_max_seconds,
        )

    def map(self, value: Row) -> int:
        # One byte string per batch (udfs/connector_records.py says why not rows or a String)
        with self.busy_time.measure():
            table, window_start, lines = value[0], value[1], value[2].split(b"\n")
            self.insert_lines(table, window_start, lines)
            if table == cost_history.ALLOCATIONS_TABLE:
                self.refresh_cost_history(lines)
            self.rows_written.inc(len(lines))
        return len(lines)
