"""The contract against the ClickHouse DDL and EVENTS.md, and the FOCUS 1.x mapping."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from udfs import contract
from udfs.focus import FocusFormatError, focus_record, focus_row_to_record, message_id_for
from udfs.focus_files import iter_focus_records, iter_focus_rows
from udfs.validation import Accepted, Rejected, SourceMeta, ValidationLimits, validate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "schemas" / "samples" / "focus_sample.csv"
NOW_MS = 1_793_577_600_000  # 2026-11-02T00:00:00Z, after every sample charge period
META = SourceMeta("tidemark.costs", 0, 0, NOW_MS)


def check(record: dict[str, Any]) -> Accepted | Rejected:
    return validate(orjson.dumps(record), META, ValidationLimits(), NOW_MS)


# --- contract vs DDL and docs -------------------------------------------------------------------


def ddl_columns(file_name: str, *later: str) -> tuple[str, ...]:
    """Column names of the CREATE TABLE in a schema file, without server-side defaults, then
    the ones the `later` migrations add to it (ALTER TABLE ... ADD COLUMN), in order."""
    directory = ROOT / "schemas" / "clickhouse"
    text = (directory / file_name).read_text()
    create = text[text.index("CREATE TABLE") :]
    body = create[create.index("(") + 1 : create.index("\n)\nENGINE")]
    columns = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("--") or " DEFAULT " in line:
            continue
        columns.append(line.split()[0])
    for name in later:
        columns += re.findall(r"ADD COLUMN IF NOT EXISTS (\w+)", (directory / name).read_text())
    return tuple(columns)


@pytest.mark.parametrize(
    ("files", "columns"),
    [
        (("001_events.sql",), contract.EVENTS_COLUMNS),
        (("002_cost_records.sql", "007_cost_focus_columns.sql"), contract.COST_COLUMNS),
        (("003_dead_letters.sql", "008_dead_letter_identity.sql"), contract.DEAD_LETTER_COLUMNS),
    ],
)
def test_contract_columns_match_the_ddl(files: tuple[str, ...], columns: tuple[str, ...]) -> None:
    assert ddl_columns(*files) == columns


def test_events_md_documents_every_reason_code_and_field() -> None:
    text = (ROOT / "schemas" / "EVENTS.md").read_text()
    for code in contract.REASON_CODES:
        assert re.search(rf"^\| `{code}` \|", text, re.MULTILINE), code
    for field in (*contract.EVENTS_COLUMNS, *contract.COST_COLUMNS, "timestamp", "traits"):
        assert f"`{field}`" in text, field
    assert "32768" in text and "newline-delimited" in text


def test_contract_constants_are_consistent() -> None:
    assert set(contract.CUSTOMER_TYPES) | {contract.COST_TYPE, contract.FOCUS_TYPE} == set(
        contract.EVENT_TYPES
    )
    assert contract.NEGATIVE_COST_CATEGORIES <= contract.CHARGE_CATEGORIES
    assert contract.DEFAULT_CHARGE_CATEGORY in contract.CHARGE_CATEGORIES
    start = datetime.fromtimestamp(contract.MIN_EVENT_TIME_MS / 1000, UTC)
    assert start == datetime(2000, 1, 1, tzinfo=UTC)


# --- FOCUS: the sample file ---------------------------------------------------------------------


def test_sample_has_realistic_size_and_every_row_validates() -> None:
    records = list(iter_focus_records(SAMPLE, "acme"))
    assert 10 <= len(records) <= 20
    results = [check(record) for record in records]
    assert all(isinstance(result, Accepted) for result in results), [
        result.reason for result in results if isinstance(result, Rejected)
    ]
    categories = {result.row["charge_category"] for result in results}
    assert categories == {"Usage", "Purchase", "Tax", "Credit"}


def test_sample_first_row_maps_exactly() -> None:
    first = next(iter_focus_records(SAMPLE, "acme"))
    assert first == {
        "type": "cost",
        "message_id": first["message_id"],
        "tenant_id": "acme",
        "resource_id": "arn:aws:ec2:us-east-1:512093847561:instance/i-0a1b2c3d4e5f60718",
        "service": "Amazon Elastic Compute Cloud",
        "account_id": "512093847561",
        "region": "us-east-1",
        "charge_category": "Usage",
        "usage_start": "2026-11-01T00:00:00Z",
        "usage_end": "2026-11-01T01:00:00Z",
        "billed_cost": "0.096",
        "effective_cost": "0.06912",
        "currency": "USD",
        "usage_quantity": "1",
        "usage_unit": "Hours",
        "tags": {"team": "checkout", "env": "prod", "feature": "cart"},
        "billing_account_id": "394857201934",
        "provider": "AWS",
    }
    assert re.fullmatch(r"focus-[0-9a-f]{40}", first["message_id"])


def test_sample_tax_credit_and_key_only_tag() -> None:
    by_category: dict[str, list[dict[str, Any]]] = {}
    for record in iter_focus_records(SAMPLE, "acme"):
        by_category.setdefault(record.get("charge_category", ""), []).append(record)
    (tax,) = by_category["Tax"]
    assert "usage_quantity" not in tax and "resource_id" not in tax and "tags" not in tax
    (credit,) = by_category["Credit"]
    assert credit["billed_cost"] == "-25.00"
    assert check(credit).row["billed_cost"] == "-25.00"
    nat = next(r for r in by_category["Usage"] if "natgateway" in r.get("resource_id", ""))
    assert nat["tags"]["owner"] == ""  # null tag value


def test_message_ids_are_deterministic_unique_and_tenant_scoped() -> None:
    first = [r["message_id"] for r in iter_focus_records(SAMPLE, "acme")]
    again = [r["message_id"] for r in iter_focus_records(SAMPLE, "acme")]
    other = [r["message_id"] for r in iter_focus_records(SAMPLE, "globex")]
    assert first == again
    assert len(set(first)) == len(first)
    assert not set(first) & set(other)


def test_many_decimal_costs_survive_exactly_up_to_the_column_scale() -> None:
    ebs = next(r for r in iter_focus_records(SAMPLE, "acme") if "vol-" in r.get("resource_id", ""))
    assert ebs["billed_cost"] == "0.012054794520547945"  # passed through as written
    row = check(ebs).row
    assert row["billed_cost"] == "0.012054794521"  # Decimal(38, 12), half-even
    assert row["usage_quantity"] == "0.136986301370"


def test_compressed_csv_reads_the_same(tmp_path: Path) -> None:
    target = tmp_path / "focus.csv.gz"
    with pa.output_stream(str(target), compression="gzip") as stream:
        stream.write(SAMPLE.read_bytes())
    assert list(iter_focus_records(target, "acme")) == list(iter_focus_records(SAMPLE, "acme"))


# --- FOCUS: errors and fallbacks ----------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    lines = [",".join(header), *(",".join(row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


MINIMAL = {
    "BilledCost": "1.5",
    "BillingAccountId": "111111111111",
    "BillingCurrency": "USD",
    "ChargeCategory": "Usage",
    "ChargePeriodEnd": "2026-11-01T01:00:00Z",
    "ChargePeriodStart": "2026-11-01T00:00:00Z",
    "EffectiveCost": "1.2",
    "ServiceName": "AmazonS3",
    "PricingQuantity": "10",
    "PricingUnit": "GB-Mo",
}


@pytest.mark.parametrize("column", ["BilledCost", "ChargePeriodStart", "BillingCurrency"])
def test_missing_required_column_is_named(tmp_path: Path, column: str) -> None:
    header = [name for name in MINIMAL if name != column]
    path = write_csv(tmp_path / "f.csv", header, [[MINIMAL[name] for name in header]])
    with pytest.raises(FocusFormatError, match=f"missing required FOCUS column '{column}'"):
        next(iter_focus_records(path, "acme"))


def test_missing_quantity_columns_are_named(tmp_path: Path) -> None:
    header = [name for name in MINIMAL if not name.startswith("Pricing")]
    path = write_csv(tmp_path / "f.csv", header, [[MINIMAL[name] for name in header]])
    with pytest.raises(FocusFormatError, match="'ConsumedQuantity' \\(or 'PricingQuantity'\\)"):
        next(iter_focus_records(path, "acme"))


def test_unreadable_file_and_bad_tenant(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FocusFormatError):
        next(iter_focus_records(empty, "acme"))
    with pytest.raises(ValueError, match="tenant_id"):
        next(iter_focus_records(SAMPLE, "acme corp"))


def test_fallbacks_for_account_region_and_quantity() -> None:
    record = focus_row_to_record(
        {
            **MINIMAL,
            "SubAccountId": None,
            "RegionId": "",
            "RegionName": "Europe (Ireland)",
            "ConsumedQuantity": None,
            "ConsumedUnit": "GB",
        },
        "acme",
    )
    assert record["account_id"] == "111111111111"
    assert record["region"] == "Europe (Ireland)"
    assert (record["usage_quantity"], record["usage_unit"]) == ("10", "GB-Mo")  # as a pair
    consumed = focus_row_to_record({**MINIMAL, "ConsumedQuantity": "3", "ConsumedUnit": "GB"}, "a")
    assert (consumed["usage_quantity"], consumed["usage_unit"]) == ("3", "GB")


def test_bad_cells_pass_through_to_a_precise_dead_letter() -> None:
    record = focus_row_to_record({**MINIMAL, "BilledCost": "NaN", "Tags": "team=x"}, "acme")
    assert (record["billed_cost"], record["tags"]) == ("NaN", "team=x")
    result = check(record)
    assert (result.reason_code, result.reason) == (
        "invalid_value",
        "field 'billed_cost' must be a finite number, got 'NaN'",
    )
    missing = focus_row_to_record({**MINIMAL, "ServiceName": ""}, "acme")
    assert check(missing).reason == "missing required field 'service'"


def test_message_id_ignores_column_order() -> None:
    reordered = dict(reversed(list(MINIMAL.items())))
    assert message_id_for(MINIMAL, "acme") == message_id_for(reordered, "acme")
    assert message_id_for(MINIMAL, "acme") != message_id_for(
        {**MINIMAL, "BilledCost": "1.6"}, "acme"
    )


# --- FOCUS: Parquet with native types -----------------------------------------------------------


def test_parquet_with_typed_columns(tmp_path: Path) -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    table = pa.table(
        {
            "BillingAccountId": pa.array(["111111111111", "111111111111"]),
            "SubAccountId": pa.array(["222222222222", None]),
            "ChargePeriodStart": pa.array([start, start], pa.timestamp("ms", tz="UTC")),
            "ChargePeriodEnd": pa.array(
                [datetime(2026, 11, 1, 1), datetime(2026, 11, 1, 1)], pa.timestamp("us")
            ),
            "ChargeCategory": pa.array(["Usage", "Credit"]),
            "BilledCost": pa.array(
                [Decimal("0.123456789012345678"), Decimal("-2.5")], pa.decimal128(38, 18)
            ),
            "EffectiveCost": pa.array([0.1, -2.5], pa.float64()),
            "BillingCurrency": pa.array(["USD", "USD"]),
            "ServiceName": pa.array(["AmazonEC2", "AmazonEC2"]),
            "ResourceId": pa.array(["i-1", None]),
            "RegionId": pa.array(["us-east-1", None]),
            "ConsumedQuantity": pa.array([Decimal("1"), None], pa.decimal128(20, 6)),
            "ConsumedUnit": pa.array(["Hours", None]),
            "PricingQuantity": pa.array([1.0, None]),
            "PricingUnit": pa.array(["Hours", None]),
            "Tags": pa.array(
                [[("team", "search"), ("env", None)], None], pa.map_(pa.string(), pa.string())
            ),
        }
    )
    path = tmp_path / "focus.parquet"
    pq.write_table(table, path)
    usage, credit = list(iter_focus_records(path, "acme"))
    assert usage["usage_start"] == "2026-11-01T00:00:00.000Z"
    assert usage["usage_end"] == "2026-11-01T01:00:00.000Z"  # zone-less Parquet time is UTC
    assert usage["billed_cost"] == "0.123456789012345678"
    assert usage["effective_cost"] == "0.1"
    assert (usage["usage_quantity"], usage["usage_unit"]) == ("1.000000", "Hours")
    assert usage["tags"] == {"team": "search", "env": ""}
    assert usage["account_id"] == "222222222222"
    assert credit["account_id"] == "111111111111"
    assert "tags" not in credit and "usage_quantity" not in credit
    rows = [check(record).row for record in (usage, credit)]
    assert rows[0]["billed_cost"] == "0.123456789012"
    assert rows[1]["billed_cost"] == "-2.500000000000"  # decimal128(38, 18) cut to 12 places


# --- FOCUS: the FinOps Foundation's sample data, as published -----------------------------------

FINOPS_EXCERPT = ROOT / "tests" / "data" / "focus_1_0_sample_excerpt.csv"


def test_finops_sample_rows_are_all_accepted_as_focus_records() -> None:
    """The published sample as a new user loads it: every row is a valid cost record."""
    rows = list(iter_focus_rows(FINOPS_EXCERPT))
    assert len(rows) == 41
    results = [check(focus_record(row, "acme")) for row in rows]
    rejected = [r.reason for r in results if isinstance(r, Rejected)]
    assert not rejected
    stored = [r.row for r in results]
    negative_usage = [
        r for r in stored if r["charge_category"] == "Usage" and r["billed_cost"].startswith("-")
    ]
    assert len(negative_usage) == 12 and {r["provider"] for r in negative_usage} == {"Microsoft"}
    null_tags = sum(row["Tags"] == "NULL" for row in rows)
    assert null_tags == 9 and sum(r["tags"] == {} for r in stored) == null_tags
    assert "NULL" not in {r["resource_id"] for r in stored}
    assert all(r["charge_class"] == "" for r in stored)  # ChargeClass NULL throughout
    assert {r["provider"] for r in stored} == {"AWS", "Microsoft", "Oracle"}
    assert all(r["billing_account_id"] for r in stored)
    first = stored[0]
    assert (first["usage_start"], first["usage_end"]) == (
        "2024-09-18 22:00:00.000",  # '2024-09-18 22:00:00' read as UTC
        "2024-09-18 23:00:00.000",
    )


def test_focus_record_carries_the_row_as_exported() -> None:
    row = next(iter_focus_rows(FINOPS_EXCERPT))
    record = focus_record(row, "acme")
    assert record["type"] == "focus" and record["tenant_id"] == "acme"
    assert record["focus"] == row  # CSV cells are text: carried as written, NULL included
    assert record["message_id"] == message_id_for(row, "acme")
    assert orjson.loads(orjson.dumps(record)) == record
