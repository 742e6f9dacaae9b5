"""tidemark.schema against the real ClickHouse engine (the chDB HTTP server of the fixtures).

Proves that `apply` creates the tables and their *_current views and records each
migration's version and checksum; that applying again applies nothing; that a migration edited
after it was applied, a malformed file name, a repeated version or a bad database name fail with
a ConfigError naming the file or key; that the validator's rows have exactly the tables' columns
and land as JSONEachRow with exact Decimal and DateTime64 values; and that the same row inserted
twice is one row in `events_current` (ReplacingMergeTree + FINAL).
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from tidemark import schema
from tidemark.config import Config, ConfigError
from udfs.enrichment import ENRICHED_COLUMNS
from udfs.validation import Accepted, Rejected, SourceMeta, ValidationLimits, validate

TABLES = (
    "events", "cost_records", "dead_letters", "profiles", "identity_links", "identity_merges",
    "profile_aliases", "cost_allocations", "cost_hourly", "cost_daily",
)  # fmt: skip
VIEWS = (
    "events_current", "cost_records_current", "dead_letters_current", "profiles_current",
    "identity_links_current", "identity_merges_current", "cost_allocations_current",
    "events_resolved", "cost_hourly_current", "cost_daily_current",
)  # fmt: skip
NOW_MS = 1_793_491_260_000  # 2026-11-01 00:01:00 UTC
PRODUCED_MS = 1_793_491_200_500  # 2026-11-01 00:00:00.500 UTC


def with_database(cfg: Config, database: str) -> Config:
    """The same endpoint, another database."""
    return dataclasses.replace(
        cfg, clickhouse=dataclasses.replace(cfg.clickhouse, database=database)
    )


@pytest.fixture
def fresh(clickhouse_cfg: Config) -> Iterator[Config]:
    """Settings naming a database that does not exist yet; dropped afterwards."""
    cfg = with_database(clickhouse_cfg, f"t_schema_{uuid.uuid4().hex[:10]}")
    yield cfg
    client = schema.connect(cfg)
    try:
        client.command(f"DROP DATABASE IF EXISTS {cfg.clickhouse.database}")
    finally:
        client.close()


@pytest.fixture
def client(fresh: Config) -> Iterator[Client]:
    client = schema.connect(fresh)
    yield client
    client.close()


def tables_of(client: Client, database: str) -> dict[str, str]:
    rows = client.query(
        "SELECT name, engine FROM system.tables WHERE database = {db:String}",
        parameters={"db": database},
    ).result_rows
    return dict(rows)


def test_apply_creates_tables_views_and_records_versions(fresh: Config, client: Client) -> None:
    database = fresh.clickhouse.database
    assert database not in client.query("SHOW DATABASES").result_columns[0]

    applied = schema.apply(fresh)

    files = schema.migrations()
    assert [m.version for m in applied] == list(range(1, 10)) == [m.version for m in files]
    engines = tables_of(client, database)
    for table in TABLES:
        assert engines[table] == "ReplacingMergeTree", table
    for view in VIEWS:
        assert engines[view] == "View", view
    assert engines["schema_migrations"] == "ReplacingMergeTree"
    recorded = client.query(
        f"SELECT version, name, checksum FROM {database}.schema_migrations ORDER BY version"
    ).result_rows
    assert recorded == [(m.version, m.name, m.checksum) for m in files]
    assert schema.applied_versions(client, database) == {m.version: m.checksum for m in files}


def test_second_apply_applies_nothing(fresh: Config, client: Client) -> None:
    database = fresh.clickhouse.database
    schema.apply(fresh)
    client.command(f"INSERT INTO {database}.dead_letters (source_topic, raw) VALUES ('t', 'kept')")

    assert schema.apply(fresh) == []

    # Nothing recorded twice, and the tables (with their rows) were left alone.
    assert client.command(f"SELECT count() FROM {database}.schema_migrations") == len(
        schema.migrations()
    )
    assert client.command(f"SELECT raw FROM {database}.dead_letters") == "kept"


def test_migration_changed_after_apply_fails_naming_the_file(
    fresh: Config, client: Client, tmp_path: Path
) -> None:
    directory = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS_DIR, directory)
    assert len(schema.apply(fresh, directory)) == len(schema.migrations())

    # A new migration is how a change ships: it is applied, the others are skipped.
    (directory / "999_extra.sql").write_text(
        "CREATE TABLE IF NOT EXISTS {database}.extra (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
    )
    assert [m.path.name for m in schema.apply(fresh, directory)] == ["999_extra.sql"]
    assert "extra" in tables_of(client, fresh.clickhouse.database)

    edited = directory / "002_cost_records.sql"
    edited.write_text(edited.read_text() + "\n-- an innocent-looking edit\n")
    with pytest.raises(ConfigError, match=r"migration 002_cost_records\.sql changed after"):
        schema.apply(fresh, directory)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["001_events.sql", "2_cost.sql"], "migration file name '2_cost.sql' is not NNN_name.sql"),
        (["001_events.sql", "002_Cost.sql"], "'002_Cost.sql' is not NNN_name.sql"),
        (["001_events.sql", "001_again.sql"], "migration version 001 appears twice"),
    ],
)
def test_bad_migration_files_fail_naming_the_file(
    fresh: Config, tmp_path: Path, names: list[str], message: str
) -> None:
    for name in names:
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(ConfigError) as info:
        schema.apply(fresh, tmp_path)
    assert message in str(info.value)


def test_bad_database_name_names_the_key(clickhouse_cfg: Config) -> None:
    with pytest.raises(ConfigError, match=r"clickhouse\.database: not a valid database name"):
        schema.apply(with_database(clickhouse_cfg, "t; DROP DATABASE tidemark"))


# --- the validator's rows in the real tables ---------------------------------------------------

TRACK = {
    "message_id": "m-1",
    "tenant_id": "acme",
    "type": "track",
    "event": "Order Completed",
    "user_id": "u-1",
    "timestamp": "2026-11-01T00:00:00.123Z",
    "sent_at": "2026-11-01T02:00:01.5+02:00",
    "traits": {"email": "a@example.com"},
    "properties": {"revenue": 59.98, "currency": "usd", "product_ids": ["sku-1", "sku-2"]},
    "context": {"device_id": "dev-1"},
}
COST = {
    "message_id": "c-1",
    "tenant_id": "acme",
    "type": "cost",
    "service": "AmazonEC2",
    "account_id": "123456789012",
    "usage_start": "2026-11-01T00:00:00Z",
    "usage_end": 1_793_494_800_999,  # 2026-11-01 01:00:00.999 UTC, as epoch millis
    "billed_cost": "12345678901234567890.123456789012",  # 32 digits: no float holds it
    "effective_cost": 0.1,  # a float literal, kept exactly as written
    "currency": "USD",
    "usage_quantity": "3.0000000000015",  # 13 decimals: rounded half-even to 12 by tidemark
    "usage_unit": "Hrs",
    "tags": {"team": "checkout", "env": "prod"},
}
CREDIT = {
    **COST,
    "message_id": "c-2",
    "charge_category": "Credit",
    "billed_cost": "-0.000000000001",
    "effective_cost": "-0.000000000001",
    "usage_quantity": None,
    "usage_unit": None,
}


def row_of(payload: bytes, offset: int) -> Accepted | Rejected:
    return validate(
        payload, SourceMeta("tidemark.events", 2, offset, PRODUCED_MS), ValidationLimits(), NOW_MS
    )


def insert_rows(client: Client, table: str, rows: list[dict[str, Any]]) -> None:
    """JSONEachRow, refusing unknown fields: a row key that is no column fails the insert."""
    body = b"\n".join(orjson.dumps(row) for row in rows)
    client.raw_insert(
        table,
        insert_block=body,
        fmt="JSONEachRow",
        settings={"input_format_skip_unknown_fields": 0},
    )


def column_names(client: Client, database: str, table: str) -> set[str]:
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    return {row[0] for row in rows}


def test_validator_rows_land_exactly(fresh: Config, client: Client) -> None:
    schema.apply(fresh)
    database = fresh.clickhouse.database
    track = row_of(orjson.dumps(TRACK), 10)
    cost = row_of(orjson.dumps(COST), 11)
    credit = row_of(orjson.dumps(CREDIT), 12)
    broken = row_of(b'{"tenant_id": "acme", "message_id": "m-9", ', 13)
    binary = row_of(b"\xff\xfe not utf-8", 14)
    assert isinstance(track, Accepted) and track.table == "events", track
    assert isinstance(cost, Accepted) and cost.table == "cost_records", cost
    assert isinstance(credit, Accepted), credit
    assert isinstance(broken, Rejected) and isinstance(binary, Rejected)

    # The rows carry exactly the tables' columns, less the one each table fills itself and
    # those the profile stage adds (udfs/profile_stage.py).
    added = {"ingested_at", "profile_id", *ENRICHED_COLUMNS}
    assert set(track.row) == column_names(client, database, "events") - added
    assert set(cost.row) == column_names(client, database, "cost_records") - {"ingested_at"}
    assert set(broken.row) == column_names(client, database, "dead_letters") - {"dead_at"}

    client.database = database
    insert_rows(client, "events", [track.row])
    insert_rows(client, "cost_records", [cost.row, credit.row])
    insert_rows(client, "dead_letters", [broken.row, binary.row])

    event = client.query(
        "SELECT revenue, currency, product_ids, email, event_time, sent_at, received_at,"
        " produced_at, source_partition, source_offset, ingested_at > event_time FROM events"
    ).result_rows
    assert event == [
        (
            Decimal("59.98"),
            "USD",
            ["sku-1", "sku-2"],
            "a@example.com",
            datetime(2026, 11, 1, 0, 0, 0, 123000),
            datetime(2026, 11, 1, 0, 0, 1, 500000),  # +02:00 converted to UTC
            None,
            datetime(2026, 11, 1, 0, 0, 0, 500000),
            2,
            10,
            True,
        )
    ]
    assert client.command("SELECT toString(revenue) FROM events") == "59.98"

    costs = client.query(
        "SELECT message_id, charge_category, billed_cost, effective_cost, usage_quantity,"
        " usage_start, usage_end, tags FROM cost_records ORDER BY message_id"
    ).result_rows
    assert costs == [
        (
            "c-1",
            "Usage",
            Decimal("12345678901234567890.123456789012"),
            Decimal("0.1"),
            Decimal("3.000000000002"),
            datetime(2026, 11, 1, 0, 0, 0),
            datetime(2026, 11, 1, 1, 0, 0, 999000),
            {"team": "checkout", "env": "prod"},
        ),
        (
            "c-2",
            "Credit",
            Decimal("-0.000000000001"),
            Decimal("-0.000000000001"),
            Decimal("0"),
            datetime(2026, 11, 1, 0, 0, 0),
            datetime(2026, 11, 1, 1, 0, 0, 999000),
            {"team": "checkout", "env": "prod"},
        ),
    ]
    # Sums are exact in the engine too: no binary float anywhere on the way.
    assert client.command("SELECT toString(sum(billed_cost)) FROM cost_records") == (
        "12345678901234567890.123456789011"
    )

    dead = client.query(
        "SELECT source_offset, tenant_id, reason_code, raw, raw_encoding FROM dead_letters"
        " ORDER BY source_offset"
    ).result_rows
    assert dead == [
        (13, "", "malformed_json", '{"tenant_id": "acme", "message_id": "m-9", ', "utf8"),
        (14, "", "bad_encoding", "//4gbm90IHV0Zi04", "base64"),
    ]


def test_events_current_collapses_a_row_inserted_twice(fresh: Config, client: Client) -> None:
    schema.apply(fresh)
    client.database = fresh.clickhouse.database
    # No background merge may collapse the parts behind the test's back.
    client.command("SYSTEM STOP MERGES events")
    track = row_of(orjson.dumps(TRACK), 10)
    other = row_of(orjson.dumps({**TRACK, "message_id": "m-2"}), 11)
    assert isinstance(track, Accepted) and isinstance(other, Accepted)

    insert_rows(client, "events", [track.row])
    # A different block (so insert deduplication does not drop it) holding the same row again,
    # as a replay after a failure would.
    insert_rows(client, "events", [track.row, other.row])

    assert client.command("SELECT count() FROM events") == 3  # physically there twice
    assert client.command("SELECT count() FROM events_current") == 2
    rows = client.query("SELECT message_id, revenue FROM events_current ORDER BY message_id")
    assert rows.result_rows == [("m-1", Decimal("59.98")), ("m-2", Decimal("59.98"))]


def test_dead_letters_keep_their_identity_across_a_broker_restart(
    fresh: Config, client: Client
) -> None:
    """A replayed dead letter collapses onto the first; a different record that a restarted
    broker gave the same topic/partition/offset is kept beside it (migration 008)."""
    schema.apply(fresh)
    client.database = fresh.clickhouse.database
    client.command("SYSTEM STOP MERGES dead_letters")
    meta = SourceMeta("tidemark.events", 0, 0, PRODUCED_MS)
    first = validate(b"not json", meta, ValidationLimits(), NOW_MS)
    replay = validate(b"not json", meta, ValidationLimits(), NOW_MS)
    restarted = SourceMeta("tidemark.events", 0, 0, PRODUCED_MS + 86_400_000)
    after_restart = validate(b"not json either", restarted, ValidationLimits(), NOW_MS)
    assert isinstance(first, Rejected) and isinstance(after_restart, Rejected)
    assert isinstance(replay, Rejected)

    insert_rows(client, "dead_letters", [first.row])
    insert_rows(client, "dead_letters", [replay.row, after_restart.row])

    assert client.command("SELECT count() FROM dead_letters") == 3  # physically
    kept = client.query(
        "SELECT source_offset, raw, record_id FROM dead_letters_current ORDER BY produced_at"
    ).result_rows
    assert kept == [
        (0, "not json", first.row["record_id"]),
        (0, "not json either", after_restart.row["record_id"]),
    ]


def test_events_resolved_moves_early_events_to_the_profile_they_merged_into(
    fresh: Config, client: Client
) -> None:
    """An event written before the identify call that linked it carries the anonymous
    profile's id; once the merge is recorded in profile_aliases, events_resolved counts it
    for the live profile (transitively), with no rewrite of the events table. Rows are what
    the profile stage writes; a replayed older alias row does not win."""
    schema.apply(fresh)
    client.database = fresh.clickhouse.database
    base = {**row_of(orjson.dumps(TRACK), 10).row}  # type: ignore[union-attr]
    events = [
        {**base, "message_id": "anon-1", "profile_id": "p-anon"},  # before the identify
        {**base, "message_id": "anon-2", "profile_id": "p-anon"},
        {**base, "message_id": "tablet-1", "profile_id": "p-tablet"},  # a second device
        {**base, "message_id": "login", "profile_id": "p-user"},
        {**base, "message_id": "other", "profile_id": "p-other"},  # never merged
    ]
    insert_rows(client, "events", events)
    alias = {"tenant_id": "acme"}
    insert_rows(
        client,
        "profile_aliases",
        [
            {**alias, "profile_id": "p-anon", "current_profile_id": "p-user", "version": 5},
            # later, p-user itself loses to p-final: the stage re-keys everything it held
            {**alias, "profile_id": "p-user", "current_profile_id": "p-final", "version": 9},
            {**alias, "profile_id": "p-anon", "current_profile_id": "p-final", "version": 9},
            {**alias, "profile_id": "p-tablet", "current_profile_id": "p-final", "version": 9},
        ],
    )
    # A replay re-sends the first alias row: older version, it must not move p-anon back.
    insert_rows(
        client,
        "profile_aliases",
        [{**alias, "profile_id": "p-anon", "current_profile_id": "p-user", "version": 5}],
    )

    per_profile = client.query(
        "SELECT resolved_profile_id, count() FROM events_resolved "
        "GROUP BY resolved_profile_id ORDER BY resolved_profile_id"
    ).result_rows
    assert per_profile == [("p-final", 4), ("p-other", 1)]
    kept = client.query("SELECT DISTINCT profile_id FROM events ORDER BY profile_id").result_rows
    assert [r[0] for r in kept] == ["p-anon", "p-other", "p-tablet", "p-user"]
