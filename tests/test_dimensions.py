"""Type-2 dimensions (udfs.dimensions), event enrichment (udfs.enrichment) and the sample files
of tidemark.gen_dimensions: as-of lookups across changes and tombstones, idempotent changelog
replays, CSV and Parquet loading with precise errors, and "unknown" for what is missing."""

from __future__ import annotations

import argparse
import csv
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tidemark import gen_dimensions
from tidemark.gen import DEFAULT_START_MS, _Generator
from tidemark.gen_dimensions import write_dimension_files
from udfs.dimensions import (
    DimensionChange,
    Dimensions,
    DimensionTable,
    parse_change,
    parse_valid_from,
)
from udfs.enrichment import enrich_event
from udfs.scd import row_time_ms
from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

T0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
DAY = 86_400_000


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


# --- the table ----------------------------------------------------------------------------------


def test_as_of_lookup_before_at_and_after_a_change() -> None:
    table: DimensionTable[dict[str, str]] = DimensionTable("products")
    table.add("acme\x1fsku-1", T0, {"name": "Trail shoe", "price": "49.99"})
    table.add("acme\x1fsku-1", T0 + 1000, {"name": "Trail shoe", "price": "39.99"})
    assert table.lookup("acme\x1fsku-1", T0 - 1) is None
    assert table.lookup("acme\x1fsku-1", T0) == {"name": "Trail shoe", "price": "49.99"}
    assert table.lookup("acme\x1fsku-1", T0 + 999) == {"name": "Trail shoe", "price": "49.99"}
    assert table.lookup("acme\x1fsku-1", T0 + 1000) == {"name": "Trail shoe", "price": "39.99"}
    assert table.lookup("acme\x1fsku-1", T0 + 10 * DAY) == {"name": "Trail shoe", "price": "39.99"}
    assert table.lookup("acme\x1fsku-2", T0) is None
    assert table.lookup("globex\x1fsku-1", T0) is None


def test_tombstone_ends_a_key_and_a_later_version_revives_it() -> None:
    table: DimensionTable[dict[str, str]] = DimensionTable("accounts")
    table.add("acme", 1000, {"plan": "starter"})
    table.add("acme", 2000, None)
    table.add("acme", 3000, {"plan": "growth"})
    assert [table.lookup("acme", t) for t in (999, 1000, 1999, 2000, 2999, 3000)] == [
        None,
        {"plan": "starter"},
        {"plan": "starter"},
        None,
        None,
        {"plan": "growth"},
    ]


def test_same_valid_from_replaces_and_out_of_order_versions_sort() -> None:
    table: DimensionTable[str] = DimensionTable("t")
    table.add("k", 3000, "c")
    table.add("k", 1000, "a")
    table.add("k", 2000, "b")
    table.add("k", 2000, "b2")  # an upsert of the same version
    table.add("k", 2000, "b2")  # a replay of it
    assert table.history("k") == [(1000, "a"), (2000, "b2"), (3000, "c")]
    assert len(table) == 1 and "k" in table and "x" not in table


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_764_000_000_000, 1_764_000_000_000),
        ("1764000000000", 1_764_000_000_000),
        ("2026-11-22T00:00:00Z", 1_795_305_600_000),
        ("2026-11-22T01:00:00.123456+01:00", 1_795_305_600_123),
        ("20261122T000000Z", 1_795_305_600_000),
        (0, 0),
    ],
)
def test_valid_from_forms(value: object, expected: int) -> None:
    assert parse_valid_from(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-11-22T00:00:00", "has no time zone (add 'Z' or an offset): '2026-11-22T00:00:00'"),
        (
            "yesterday",
            "must be integer epoch millis or an ISO-8601 time with a zone, got 'yesterday'",
        ),
        (1.5e12, "must be integer epoch millis or an ISO-8601 time with a zone, got float"),
        (True, "must be integer epoch millis or an ISO-8601 time with a zone, got boolean"),
        ("", "must be integer epoch millis or an ISO-8601 time with a zone, got ''"),
        (10_413_792_000_000, "is after 2299-12-31: 10413792000000"),
    ],
)
def test_bad_valid_from(value: object, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_valid_from(value)
    assert str(caught.value) == reason


def test_row_time_reads_the_validators_utc_text() -> None:
    assert row_time_ms("2026-11-01 00:00:00.000") == T0
    assert row_time_ms("2026-11-01 10:15:00.123") == T0 + 36_900_123
    assert row_time_ms("2026-11-01T01:00:00+01:00") == T0
    assert row_time_ms(T0) == T0


# --- the changelog ------------------------------------------------------------------------------


def test_changelog_round_trip_and_idempotent_apply() -> None:
    raw = (
        b'{"dimension":"products","op":"upsert","key":{"tenant_id":"acme","sku":"sku-1"},'
        b'"valid_from":"2026-11-22T00:00:00Z","attributes":{"name":"Trail shoe",'
        b'"category":"shoes","price":49.99,"color":"red"}}'
    )
    change = parse_change(raw)
    assert change == DimensionChange(
        "products",
        "upsert",
        {"tenant_id": "acme", "sku": "sku-1"},
        1_795_305_600_000,
        {"name": "Trail shoe", "category": "shoes", "price": "49.99"},  # unknown "color" dropped
    )
    assert change.key_string == "acme\x1fsku-1"
    assert change.to_json() == (
        b'{"dimension":"products","op":"upsert","key":{"tenant_id":"acme","sku":"sku-1"},'
        b'"valid_from":1795305600000,"attributes":{"name":"Trail shoe","category":"shoes",'
        b'"price":"49.99"}}'
    )
    assert parse_change(change.to_json()) == change

    dims = Dimensions()
    delete = DimensionChange.delete("products", {"tenant_id": "acme", "sku": "sku-1"}, T0 + DAY)
    for _ in range(3):  # a replayed changelog is harmless
        dims.apply(change)
        dims.apply(delete)
    assert dims.products.history("acme\x1fsku-1") == [
        (T0 + DAY, None),
        (1_795_305_600_000, {"name": "Trail shoe", "category": "shoes", "price": "49.99"}),
    ]
    assert dims.lookup("products", ("acme", "sku-1"), T0 + DAY) is None
    assert dims.lookup("products", ("acme", "sku-1"), 1_795_305_600_000)["price"] == "49.99"
    assert delete.to_json() == (
        b'{"dimension":"products","op":"delete","key":{"tenant_id":"acme","sku":"sku-1"},'
        b'"valid_from":1793577600000}'
    )


def test_upsert_helper_checks_like_the_parser() -> None:
    change = DimensionChange.upsert(
        "accounts", {"tenant_id": "acme"}, T0, {"plan": "growth", "region": "eu"}
    )
    assert change.attributes == {"plan": "growth", "region": "eu"}
    with pytest.raises(ValueError, match=r"^missing required field 'attributes.region'$"):
        DimensionChange.upsert("accounts", {"tenant_id": "acme"}, T0, {"plan": "growth"})


GOOD = {
    "dimension": "campaigns",
    "op": "upsert",
    "key": {"tenant_id": "acme", "campaign_id": "cmp-1"},
    "valid_from": T0,
    "attributes": {"name": "Black Friday", "channel": "paid_social"},
}


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        (
            {"dimension": "prodcuts"},
            "unknown dimension 'prodcuts' (expected one of: products,"
            " accounts, campaigns, attribution_rules)",
        ),
        ({"dimension": None}, "missing required field 'dimension'"),
        ({"dimension": 7}, "field 'dimension' must be a string, got integer"),
        ({"op": "insert"}, "field 'op' must be 'upsert' or 'delete', got 'insert'"),
        ({"op": None}, "missing required field 'op'"),
        (
            {"key": {"tenant_id": "acme"}},
            "missing key field 'key.campaign_id' (campaigns is keyed by tenant_id, campaign_id)",
        ),
        (
            {"key": {"tenant_id": "acme", "campaign_id": "c", "sku": "s"}},
            "unexpected key field 'key.sku' (campaigns is keyed by tenant_id, campaign_id)",
        ),
        (
            {"key": {"tenant_id": "acme", "campaign_id": ""}},
            "field 'key.campaign_id' must not be empty",
        ),
        (
            {"key": {"tenant_id": 5, "campaign_id": "c"}},
            "field 'key.tenant_id' must be a string, got integer",
        ),
        ({"key": ["acme"]}, "field 'key' must be an object, got array"),
        ({"valid_from": None}, "missing required field 'valid_from'"),
        (
            {"valid_from": "2026-11-22"},
            "field 'valid_from' has no time zone (add 'Z' or an offset): '2026-11-22'",
        ),
        (
            {"valid_from": 1.5},
            "field 'valid_from' must be integer epoch millis or an ISO-8601"
            " time with a zone, got float",
        ),
        ({"attributes": None}, "missing required field 'attributes' (an upsert needs them)"),
        ({"attributes": {"name": "Black Friday"}}, "missing required field 'attributes.channel'"),
        (
            {"attributes": {"name": ["x"], "channel": "email"}},
            "field 'attributes.name' must be a string, got array",
        ),
    ],
)
def test_changelog_parse_errors(patch: dict[str, object], reason: str) -> None:
    doc = {**GOOD, **patch}
    with pytest.raises(ValueError) as caught:
        parse_change(orjson.dumps(doc))
    assert str(caught.value) == reason


def test_changelog_errors_outside_the_object() -> None:
    with pytest.raises(ValueError, match=r"^changelog record is not valid JSON: "):
        parse_change(b'{"dimension": "products"')
    with pytest.raises(ValueError, match=r"^changelog record must be a JSON object, got array$"):
        parse_change(b"[]")
    # a delete needs no attributes, and ignores any it has
    change = parse_change(orjson.dumps({**GOOD, "op": "delete"}))
    assert change.attributes is None
    with pytest.raises(ValueError, match="not a lookup dimension"):
        Dimensions().apply(
            parse_change(
                b'{"dimension":"attribution_rules","op":"delete","key":{"rule_id":"r1"},'
                b'"valid_from":0}'
            )
        )


# --- files --------------------------------------------------------------------------------------

PRODUCTS = [
    ["tenant_id", "sku", "name", "category", "price", "valid_from", "deleted", "note"],
    ["acme", "sku-1", "Trail shoe", "shoes", "49.99", "1793491200000", "", "launch"],
    ["acme", "sku-1", "Trail shoe", "sale", "39.99", "2026-11-01T00:01:40Z", "false", ""],
    ["acme", "sku-1", "", "", "", "2026-11-02T00:00:00Z", "true", "discontinued"],
    ["acme", "sku-2", "Urban hat", "hats", "0100", "0", "", ""],
]


def test_csv_load_with_versions_tombstones_and_text_cells(tmp_path: Path) -> None:
    write_csv(tmp_path / "products.csv", PRODUCTS)
    dims = Dimensions.load(tmp_path)
    assert len(dims.products) == 2 and len(dims.accounts) == 0 and len(dims.campaigns) == 0
    shoe = ("acme", "sku-1")
    assert dims.lookup("products", shoe, T0 - 1) is None
    assert dims.lookup("products", shoe, T0) == {
        "name": "Trail shoe",
        "category": "shoes",
        "price": "49.99",
    }
    assert dims.lookup("products", shoe, T0 + 100_000)["category"] == "sale"
    assert dims.lookup("products", shoe, T0 + DAY) is None
    assert dims.lookup("products", ("acme", "sku-2"), T0)["price"] == "0100"  # text, not 100


def test_parquet_load_converts_typed_columns(tmp_path: Path) -> None:
    pq.write_table(
        pa.table(
            {
                "tenant_id": ["acme", "acme", "globex"],
                "campaign_id": ["cmp-1", "cmp-1", "cmp-1"],
                "name": ["Black Friday", None, "Welcome"],
                "channel": ["paid_social", None, "email"],
                "valid_from": pa.array(
                    [
                        datetime(2026, 11, 1, tzinfo=UTC),
                        datetime(2026, 11, 2, tzinfo=UTC),
                        datetime(2026, 10, 1, tzinfo=UTC),
                    ],
                    pa.timestamp("us", tz="UTC"),
                ),
                "deleted": [False, True, None],
            }
        ),
        tmp_path / "campaigns.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "tenant_id": ["acme"],
                "plan": ["growth"],
                "region": ["us-east"],
                "valid_from": pa.array([T0], pa.int64()),
            }
        ),
        tmp_path / "accounts.parquet",
    )
    dims = Dimensions.load(tmp_path)
    assert dims.lookup("campaigns", ("acme", "cmp-1"), T0) == {
        "name": "Black Friday",
        "channel": "paid_social",
    }
    assert dims.lookup("campaigns", ("acme", "cmp-1"), T0 + DAY) is None
    assert dims.lookup("campaigns", ("globex", "cmp-1"), T0)["channel"] == "email"
    assert dims.lookup("accounts", ("acme",), T0) == {"plan": "growth", "region": "us-east"}
    assert dims.lookup("accounts", ("acme",), T0 - 1) is None


def test_file_errors_name_file_row_and_column(tmp_path: Path) -> None:
    bad = [row[:] for row in PRODUCTS]
    bad[2][5] = "2026-11-01 00:01:40"  # row 2: no zone
    path = write_csv(tmp_path / "products.csv", bad)
    with pytest.raises(ValueError) as caught:
        Dimensions.load(tmp_path)
    assert str(caught.value) == (
        f"{path} row 2 column 'valid_from': has no time zone (add 'Z' or an offset):"
        " '2026-11-01 00:01:40'"
    )

    bad = [row[:] for row in PRODUCTS]
    bad[3][6] = "yes"
    write_csv(path, bad)
    with pytest.raises(ValueError) as caught:
        Dimensions.load(tmp_path)
    assert str(caught.value) == (
        f"{path} row 3 column 'deleted': must be true, false, 1, 0 or empty, got 'yes'"
    )

    bad = [row[:] for row in PRODUCTS]
    bad[4][1] = ""
    write_csv(path, bad)
    with pytest.raises(ValueError) as caught:
        Dimensions.load(tmp_path)
    assert str(caught.value) == f"{path} row 4 column 'sku': must not be empty"

    write_csv(path, [[c for c in row if c != "category"] for row in PRODUCTS[:1]])
    with pytest.raises(ValueError) as caught:
        Dimensions.load(tmp_path)
    assert str(caught.value) == f"{path}: missing required column 'category'"

    path.unlink()
    accounts = tmp_path / "accounts.parquet"
    naive = pa.array([datetime(2026, 11, 1)], pa.timestamp("ms"))
    pq.write_table(
        pa.table({"tenant_id": ["a"], "plan": ["p"], "region": ["r"], "valid_from": naive}),
        accounts,
    )
    with pytest.raises(ValueError) as caught:
        Dimensions.load(tmp_path)
    assert str(caught.value) == (
        f"{accounts} row 1 column 'valid_from': a timestamp without a time zone"
        " (write UTC with tz='UTC')"
    )

    write_csv(tmp_path / "accounts.csv", [["tenant_id", "plan", "region", "valid_from"]])
    with pytest.raises(ValueError) as caught:
        Dimensions.load(tmp_path)
    assert (
        str(caught.value) == f"{tmp_path}: both accounts.csv and accounts.parquet exist; keep one"
    )


# --- enrichment ---------------------------------------------------------------------------------


def event_row(properties: dict[str, object], tenant_id: str = "acme") -> dict[str, object]:
    """A real validated events row, as the job would hand it over."""
    raw = orjson.dumps(
        {
            "type": "track",
            "event": "Order Completed",
            "message_id": "m-1",
            "tenant_id": tenant_id,
            "user_id": "u-1",
            "timestamp": "2026-11-01T00:00:00Z",
            "properties": properties,
        }
    )
    result = validate(raw, SourceMeta("t", 0, 0, T0), ValidationLimits(), T0)
    assert isinstance(result, Accepted)
    return result.row


@pytest.fixture()
def dims(tmp_path: Path) -> Dimensions:
    write_csv(tmp_path / "products.csv", PRODUCTS)
    write_csv(
        tmp_path / "campaigns.csv",
        [
            ["tenant_id", "campaign_id", "name", "channel", "valid_from"],
            ["acme", "cmp-1", "Black Friday", "paid_social", "0"],
        ],
    )
    write_csv(
        tmp_path / "accounts.csv",
        [
            ["tenant_id", "plan", "region", "valid_from"],
            ["acme", "growth", "us-east", "0"],
            ["acme", "enterprise", "us-east", "2026-11-01T00:01:40Z"],
        ],
    )
    return Dimensions.load(tmp_path)


def test_enrich_event_adds_aligned_columns(dims: Dimensions) -> None:
    row = event_row({"product_ids": ["sku-2", "sku-404", "sku-1"], "campaign_id": "cmp-1"})
    assert enrich_event(row, dims, T0) == 1
    assert {k: row[k] for k in row if k.startswith(("product_", "campaign_", "account_"))} == {
        "campaign_id": "cmp-1",
        "product_ids": ["sku-2", "sku-404", "sku-1"],
        "product_names": ["Urban hat", "unknown", "Trail shoe"],
        "product_categories": ["hats", "unknown", "shoes"],
        "campaign_name": "Black Friday",
        "campaign_channel": "paid_social",
        "account_plan": "growth",
        "account_region": "us-east",
    }
    # the same event processed as of later: new versions and a tombstone
    assert enrich_event(row, dims, T0 + DAY) == 2
    assert row["product_categories"] == ["hats", "unknown", "unknown"]
    assert row["account_plan"] == "enterprise"


def test_enrich_event_counts_every_missing_lookup(dims: Dimensions) -> None:
    row = event_row({"product_id": "sku-9", "campaign_id": "cmp-404"}, tenant_id="globex")
    assert enrich_event(row, dims, T0) == 3
    assert (row["product_names"], row["product_categories"]) == (["unknown"], ["unknown"])
    assert (row["campaign_name"], row["campaign_channel"]) == ("unknown", "unknown")
    assert (row["account_plan"], row["account_region"]) == ("unknown", "unknown")

    row = event_row({}, tenant_id="globex")  # no products, no campaign: only the account
    assert enrich_event(row, dims, T0) == 1
    assert row["product_names"] == [] and row["product_categories"] == []
    assert (row["campaign_name"], row["campaign_channel"]) == ("", "")

    # a dimension version arriving later only affects events processed after it
    dims.apply(
        DimensionChange.upsert(
            "accounts", {"tenant_id": "globex"}, 0, {"plan": "starter", "region": "eu-west"}
        )
    )
    assert row["account_plan"] == "unknown"
    assert enrich_event(row, dims, T0) == 0 and row["account_plan"] == "starter"


# --- sample files from the generator ------------------------------------------------------------


def test_sample_files_load_and_cover_the_generator(tmp_path: Path) -> None:
    written = write_dimension_files(tmp_path, seed=7, start_ms=T0, change_after_ms=100_000)
    assert {name: path.name for name, path in written.paths.items()} == {
        "products": "products.csv",
        "campaigns": "campaigns.parquet",
        "accounts": "accounts.csv",
        "attribution_rules": "attribution_rules.csv",
    }
    with open(written.paths["products"], encoding="utf-8") as handle:
        assert handle.readline() == "tenant_id,sku,name,category,price,valid_from\n"
    with open(written.paths["accounts"], encoding="utf-8") as handle:
        assert handle.readline() == "tenant_id,plan,region,valid_from\n"
    assert pq.read_schema(written.paths["campaigns"]).names == [
        "tenant_id",
        "campaign_id",
        "name",
        "channel",
        "valid_from",
    ]
    assert written.change_ms == T0 + 100_000

    dims = Dimensions.load(tmp_path)
    world = _Generator(7, T0, 1000.0)
    missing_campaigns = set(written.missing_campaigns)
    assert len(missing_campaigns) == len(world.tenants) == 8
    changed = set(written.changed_skus)
    skus = 0
    for tenant in world.tenants:
        for sku, name, cents, category in tenant.products:
            skus += 1
            first = dims.lookup("products", (tenant.name, sku), T0)
            assert first is not None and (first["name"], first["category"]) == (name, category)
            price = str(cents) if tenant.currency == "JPY" else f"{cents / 100:.2f}"
            assert first["price"] == price
            later = dims.lookup("products", (tenant.name, sku), written.change_ms)
            assert (later != first) == ((tenant.name, sku) in changed)
        assert sum(1 for t, _ in missing_campaigns if t == tenant.name) == 1
        for campaign_id in tenant.campaigns:
            found = dims.lookup("campaigns", (tenant.name, campaign_id), T0)
            assert (found is None) == ((tenant.name, campaign_id) in missing_campaigns)
        account = dims.lookup("accounts", (tenant.name,), T0)
        assert (account is None) == (tenant.name == written.missing_account)
    assert 0.08 * skus <= len(changed) <= 0.12 * skus
    black_friday = next(c for c in world.tenants[0].campaigns if "black-friday" in c)
    if ("acme", black_friday) not in missing_campaigns:
        assert dims.lookup("campaigns", ("acme", black_friday), T0) == {
            "name": "Black Friday 2026",
            "channel": "paid_social",
        }
    # the same seed writes the same bytes
    again = write_dimension_files(tmp_path / "again", seed=7, start_ms=T0, change_after_ms=100_000)
    for name in ("products", "accounts", "attribution_rules"):
        assert again.paths[name].read_bytes() == written.paths[name].read_bytes()


def test_gen_dimensions_command(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    gen_dimensions.register(parser.add_subparsers())
    args = parser.parse_args(["gen-dimensions", "--dir", str(tmp_path), "--seed", "3"])
    assert (args.start, args.change_after_seconds) == (DEFAULT_START_MS, 100)
    assert args.func(args) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "accounts.csv",
        "attribution_rules.csv",
        "campaigns.parquet",
        "products.csv",
    ]
    args = parser.parse_args(
        [
            "gen-dimensions",
            "--dir",
            str(tmp_path),
            "--seed",
            "3",
            "--start",
            "2026-11-22T00:00:00Z",
            "--change-after-seconds",
            "5",
        ]
    )
    assert (args.start, args.change_after_seconds) == (1_795_305_600_000, 5)
