"""cost_hourly / cost_daily (migration 009, sinks/cost_history.py) against the real ClickHouse
engine (the chDB HTTP server of the fixtures).

Proves that a FOCUS file loaded out of time order (the FinOps Foundation sample excerpt, in its
published order, then shuffled) lands in full in the hourly and daily tables, by each row's own
charge period, with sums equal to an expectation computed straight from the CSV with Decimal;
that a Flink-style replay (the same allocations again, batched differently so no insert token
matches) changes nothing; and that a record re-attributed to another team moves its cost,
leaving no stale row for the old team. Rows reach ClickHouse through ClickHouseBatchWriter,
opened as Flink opens it, from the job's own validator and attribution code.
"""

from __future__ import annotations

import csv
import dataclasses
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from pyflink.common import Row

from sinks.clickhouse import ClickHouseBatchWriter, ClickHouseSettings
from tidemark import schema
from tidemark.config import Config
from udfs.attribution import AttributionRules
from udfs.focus import focus_record
from udfs.focus_files import iter_focus_rows
from udfs.profile_stage import ProfileStage
from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

EXCERPT = Path(__file__).parent / "data" / "focus_1_0_sample_excerpt.csv"
NOW_MS = 1_793_491_260_000  # 2026-11-01, after every charge period of the sample
TEAM_TAG = "application"  # the rule below: team = the record's `application` tag
RULES = [
    {
        "rule_id": "team-by-application",
        "tenant_id": "*",
        "precedence": 1,
        "match_field": f"tag:{TEAM_TAG}",
        "match_value": "*",
        "team": "{value}",
        "valid_from": 0,
    }
]
Key = tuple[str, str, str]  # (bucket, team, service)


class _Metrics:
    """Stands in for Flink's metric group (all the writer's open() touches)."""

    def add_group(self, name: str) -> _Metrics:
        return self

    def counter(self, name: str) -> _Metrics:
        return self

    def inc(self, value: int = 1) -> None:
        pass


class _RuntimeContext:
    def get_metrics_group(self) -> _Metrics:
        return _Metrics()


@pytest.fixture
def database(clickhouse_cfg: Config) -> Iterator[tuple[Config, Client]]:
    name = f"t_history_{uuid.uuid4().hex[:10]}"
    cfg = dataclasses.replace(
        clickhouse_cfg, clickhouse=dataclasses.replace(clickhouse_cfg.clickhouse, database=name)
    )
    schema.apply(cfg)
    client = schema.connect(cfg)
    client.database = name
    yield cfg, client
    client.command(f"DROP DATABASE IF EXISTS {name}")
    client.close()


@pytest.fixture
def writer(database: tuple[Config, Client]) -> Iterator[ClickHouseBatchWriter]:
    cfg, _ = database
    settings = dataclasses.replace(
        ClickHouseSettings.from_config(cfg), batch_max_rows=7, insert_backoff_max_seconds=1
    )
    writer = ClickHouseBatchWriter(settings)
    writer.open(_RuntimeContext())  # type: ignore[arg-type]
    yield writer
    writer.close()


def allocation_rows(
    rules: list[dict[str, Any]] = RULES, tenant: str = "acme"
) -> list[dict[str, Any]]:
    """The job's path for the file: focus records -> validator -> attribution rows."""
    stage = ProfileStage.__new__(ProfileStage)  # only allocate_costs, which needs the rules
    stage.attribution = AttributionRules.from_rows(rules)
    records = []
    for offset, row in enumerate(iter_focus_rows(EXCERPT)):
        meta = SourceMeta("tidemark.events", 0, offset, NOW_MS)
        result = validate(orjson.dumps(focus_record(row, tenant)), meta, ValidationLimits(), NOW_MS)
        assert isinstance(result, Accepted), result
        records.append(result.row)
    return stage.allocate_costs(records)


def write(writer: ClickHouseBatchWriter, rows: list[dict[str, Any]], batch: int, tag: str) -> None:
    """Send rows in batches of `batch`, as the job's 1 s windows would (one window each)."""
    for start in range(0, len(rows), batch):
        body = b"\n".join(orjson.dumps(r) for r in rows[start : start + batch])
        writer.map(Row("cost_allocations", f"{tag}-{start}", body))


def expected_from_csv(
    bucket: str, team_tag: str | None = TEAM_TAG
) -> dict[Key, tuple[Decimal, Decimal, int]]:
    """Independently of tidemark's code: the sample's costs summed by charge-period hour or
    day (zone-less times are UTC), team tag (else, or with no rules, 'unallocated') and
    service."""
    sums: dict[Key, list[Any]] = defaultdict(lambda: [Decimal(0), Decimal(0), 0])
    with EXCERPT.open(newline="") as handle:
        for row in csv.DictReader(handle):
            start = datetime.strptime(row["ChargePeriodStart"], "%Y-%m-%d %H:%M:%S")
            when = start.strftime("%Y-%m-%d %H:00:00" if bucket == "hour" else "%Y-%m-%d")
            tags = {} if row["Tags"] == "NULL" else orjson.loads(row["Tags"])
            team = (tags.get(team_tag) if team_tag else None) or "unallocated"
            key = (when, team, row["ServiceName"])
            entry = sums[key]
            entry[0] += Decimal(row["BilledCost"])
            entry[1] += Decimal(row["EffectiveCost"])
            entry[2] += 1
    return {key: (b, e, n) for key, (b, e, n) in sums.items()}


def stored(
    client: Client, bucket: str, tenant: str = "acme"
) -> dict[Key, tuple[Decimal, Decimal, int]]:
    table = "cost_hourly_current" if bucket == "hour" else "cost_daily_current"
    rows = client.query(
        f"SELECT toString({bucket}), team, service, billed_cost, effective_cost, allocations"
        f" FROM {table} WHERE tenant_id = {{tenant:String}}",
        parameters={"tenant": tenant},
    ).result_rows
    assert len(rows) == len({tuple(r[:3]) for r in rows}), "one row per key"
    return {(w, t, s): (b, e, n) for w, t, s, b, e, n in rows}


def total_of(client: Client, table: str) -> Decimal:
    return client.query(f"SELECT sum(billed_cost) FROM {table}").result_rows[0][0]


def test_out_of_order_focus_file_lands_fully_in_hourly_and_daily_tables(
    database: tuple[Config, Client], writer: ClickHouseBatchWriter
) -> None:
    _, client = database
    rows = allocation_rows()
    starts = [r["usage_start"] for r in rows]
    assert starts != sorted(starts), "the published file is in no time order"
    write(writer, rows, batch=9, tag="load")

    hourly, daily = expected_from_csv("hour"), expected_from_csv("day")
    assert stored(client, "hour") == hourly
    assert stored(client, "day") == daily
    total = sum(b for b, _, _ in daily.values())
    assert total_of(client, "cost_daily_current") == total
    assert sum(n for _, _, n in hourly.values()) == 41
    negative = [k for k, (b, _, _) in hourly.items() if b < 0]
    assert negative, "the Azure rows' negative costs are counted, not rejected"


def test_replay_batched_differently_changes_nothing(
    database: tuple[Config, Client], writer: ClickHouseBatchWriter
) -> None:
    _, client = database
    rows = allocation_rows()
    write(writer, rows, batch=9, tag="load")
    before = stored(client, "hour"), stored(client, "day")
    replay = rows[5:] + rows[:12]  # the tail after a restore, overlapping what was written
    random.Random(7).shuffle(replay)
    write(writer, replay, batch=4, tag="replay")
    assert (stored(client, "hour"), stored(client, "day")) == before
    assert stored(client, "day") == expected_from_csv("day")


def test_reattributed_record_moves_its_cost_and_leaves_no_stale_key(
    database: tuple[Config, Client], writer: ClickHouseBatchWriter
) -> None:
    _, client = database
    rows = allocation_rows()
    write(writer, rows, batch=50, tag="load")

    def key_of(row: dict[str, Any]) -> Key:
        return (row["usage_start"][:13] + ":00:00", row["team"], row["service"])

    keys = [key_of(r) for r in rows]
    moved = next(r for r in rows if r["team"] != "unallocated" and keys.count(key_of(r)) == 1)
    old_key = key_of(moved)
    rerun = allocation_rows([{**RULES[0], "team": "platform"}])  # the rules changed
    changed = next(r for r in rerun if r["message_id"] == moved["message_id"])
    assert changed["team"] == "platform"
    write(writer, [changed], batch=1, tag="rerun")

    hourly = stored(client, "hour")
    assert hourly[(old_key[0], "platform", moved["service"])] == (
        Decimal(moved["billed_cost"]),
        Decimal(moved["effective_cost"]),
        1,
    )
    assert old_key not in hourly  # its only allocation moved: rewritten as a zero row, hidden
    zero = client.query(
        "SELECT billed_cost, allocations FROM cost_hourly FINAL WHERE toString(hour) = {h:String}"
        " AND team = {t:String} AND service = {s:String}",
        parameters={"h": old_key[0], "t": old_key[1], "s": old_key[2]},
    ).result_rows
    assert zero == [(Decimal(0), 0)]
    total = sum(b for b, _, _ in expected_from_csv("day").values())
    assert total_of(client, "cost_hourly_current") == total
    assert total_of(client, "cost_daily_current") == total
    day = old_key[0][:10]
    assert (day, "platform", moved["service"]) in stored(client, "day")


def test_migration_backfills_history_from_existing_allocations(
    clickhouse_cfg: Config, tmp_path: Path
) -> None:
    """A database that had allocations before migration 009 gets its history on apply."""
    name = f"t_backfill_{uuid.uuid4().hex[:10]}"
    cfg = dataclasses.replace(
        clickhouse_cfg, clickhouse=dataclasses.replace(clickhouse_cfg.clickhouse, database=name)
    )
    before = tmp_path / "before"
    before.mkdir()
    for migration in schema.migrations():
        if migration.version < 9:
            (before / migration.path.name).write_text(migration.text)
    schema.apply(cfg, before)
    client = schema.connect(cfg)
    client.database = name
    try:
        body = "\n".join(orjson.dumps(r).decode() for r in allocation_rows())
        client.raw_insert("cost_allocations", insert_block=body.encode(), fmt="JSONEachRow")
        assert [m.version for m in schema.apply(cfg)] == [9]
        assert stored(client, "hour") == expected_from_csv("hour")
        assert stored(client, "day") == expected_from_csv("day")
    finally:
        client.command(f"DROP DATABASE IF EXISTS {name}")
        client.close()


def test_tenants_in_one_batch_are_refreshed_apart(
    database: tuple[Config, Client], writer: ClickHouseBatchWriter
) -> None:
    """One refresh statement covers every tenant of a batch: the same hours of two tenants,
    interleaved in the same batches, must each sum to their own file, and a re-attribution
    in one tenant must zero that tenant's old key only."""
    _, client = database
    acme, globex = allocation_rows(), allocation_rows(tenant="globex")
    mixed = [row for pair in zip(acme, globex, strict=True) for row in pair]
    write(writer, mixed, batch=10, tag="load")
    for tenant in ("acme", "globex"):
        assert stored(client, "hour", tenant) == expected_from_csv("hour"), tenant
        assert stored(client, "day", tenant) == expected_from_csv("day"), tenant

    rerun = allocation_rows([{**RULES[0], "team": "platform"}], tenant="globex")
    write(writer, [*acme[:3], *rerun], batch=len(rerun) + 3, tag="rerun")  # one batch, both
    assert stored(client, "hour", "acme") == expected_from_csv("hour")
    for bucket in ("hour", "day"):
        assert stored(client, bucket, "globex") == all_tagged_to(
            expected_from_csv(bucket), "platform"
        )


def all_tagged_to(
    expected: dict[Key, tuple[Decimal, Decimal, int]], team: str
) -> dict[Key, tuple[Decimal, Decimal, int]]:
    """The expectation once every tagged record is attributed to `team` (untagged ones stay
    'unallocated')."""
    sums: dict[Key, list[Any]] = defaultdict(lambda: [Decimal(0), Decimal(0), 0])
    for (when, old_team, service), values in expected.items():
        entry = sums[(when, old_team if old_team == "unallocated" else team, service)]
        for i, value in enumerate(values):
            entry[i] += value
    return {key: (b, e, n) for key, (b, e, n) in sums.items()}
