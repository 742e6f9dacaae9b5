"""Cost attribution (udfs.attribution): rule precedence and matching, templates, versions and
tombstones, changelog upserts, precise load errors, and shared-cost splits whose parts sum
exactly to the original amount. Expected values are literals."""

from __future__ import annotations

import csv
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tidemark.gen import generate
from tidemark.gen_dimensions import write_dimension_files
from udfs.attribution import (
    RULE_COLUMNS,
    Allocation,
    AttributionRules,
    quantize_amount,
    split_amount,
)
from udfs.dimensions import DimensionChange, parse_change
from udfs.validation import Accepted, SourceMeta, ValidationLimits, validate

T0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
D = Decimal


def rule(rule_id: str, precedence: int, match_field: str, match_value: str = "", **cells: Any):
    row = dict.fromkeys(RULE_COLUMNS, "")
    row.update(
        rule_id=rule_id,
        tenant_id="*",
        precedence=precedence,
        match_field=match_field,
        match_value=match_value,
        valid_from=0,
    )
    row.update(cells)
    return row


def cost(tags: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    """A cost_records row shaped as udfs.validation writes it."""
    row = {
        "tenant_id": "acme",
        "message_id": "c-1",
        "resource_id": "arn:aws:ec2:us-east-1:111:instance/i-1",
        "service": "AmazonEC2",
        "account_id": "111",
        "region": "us-east-1",
        "charge_category": "Usage",
        "usage_start": "2026-11-01 00:00:00.000",
        "usage_end": "2026-11-01 01:00:00.000",
        "billed_cost": "1.000000000000",
        "effective_cost": "0.72",
        "currency": "USD",
        "usage_quantity": "1",
        "usage_unit": "Hrs",
        "tags": tags if tags is not None else {},
    }
    row.update(fields)
    return row


def dims_of(allocation: Allocation) -> tuple[str, str, str, str, str, str]:
    a = allocation
    return a.team, a.feature, a.customer, a.cost_center, a.environment, a.rule_id


# --- exact splits -------------------------------------------------------------------------------


def test_three_way_even_split_of_an_amount_not_divisible_by_three() -> None:
    assert split_amount("10", [1, 1, 1]) == [
        D("3.333333333334"),
        D("3.333333333333"),
        D("3.333333333333"),
    ]
    assert split_amount("0.1", [1, 1, 1]) == [
        D("0.033333333334"),
        D("0.033333333333"),
        D("0.033333333333"),
    ]


def test_negative_credit_splits_into_negative_parts() -> None:
    parts = split_amount("-0.05", [1, 1, 1])
    assert parts == [D("-0.016666666667"), D("-0.016666666667"), D("-0.016666666666")]
    assert sum(parts) == D("-0.05")


def test_amount_smaller_than_the_number_of_parts() -> None:
    assert split_amount("0.000000000002", [1, 1, 1]) == [D("1E-12"), D("1E-12"), D("0")]
    assert split_amount("0.000000000001", [1, 2]) == [D("0"), D("1E-12")]  # larger remainder
    assert split_amount("0.000000000001", [1, 1]) == [D("1E-12"), D("0")]  # tie: earlier part
    assert split_amount("-0.000000000001", [1, 1, 1]) == [D("-1E-12"), D("0"), D("0")]
    assert split_amount("0", [3, 1]) == [D("0"), D("0")]


def test_weighted_split_and_quantizing_half_even_first() -> None:
    assert split_amount("1.00", [3, 1]) == [D("0.75"), D("0.25")]
    assert split_amount("100", [2, 1, 1]) == [D("50"), D("25"), D("25")]
    assert split_amount("0.000000000010", [3, 1]) == [D("8E-12"), D("2E-12")]  # 7.5 -> 8 by rem
    # digits beyond 12 decimals are rounded half-even before splitting
    assert quantize_amount("0.0000000000005") == D("0")
    assert quantize_amount("0.0000000000015") == D("0.000000000002")
    assert split_amount("-7.0000000000015", [1, 1]) == [D("-3.500000000001"), D("-3.500000000001")]


def test_widest_cost_column_splits_exactly() -> None:
    amount = "12345678901234567890123456.123456789013"  # 26 integer digits, Decimal(38, 12)
    parts = split_amount(amount, [1, 1, 1])
    assert parts == [
        D("4115226300411522630041152.041152263005"),
        D("4115226300411522630041152.041152263004"),
        D("4115226300411522630041152.041152263004"),
    ]
    with localcontext() as wide:
        wide.prec = 60  # the default 28 digits would round the sum itself
        assert sum(parts) == D(amount)
    with pytest.raises(ValueError, match="positive"):
        split_amount("1", [1, 0])


# --- matching and precedence --------------------------------------------------------------------

RULES = [
    rule("tag-team", 10, "tag:team", "*", team="{value}"),
    rule("tag-env", 10, "tag:env", "*", environment="{value}"),
    rule("tag-feature", 10, "tag:feature", "*", feature="{value}", customer="{tag:customer}"),
    rule("cc-checkout", 20, "tag:team", "checkout", cost_center="cc-commerce"),
    rule("ec2-default", 30, "service", "AmazonEC2", team="platform", cost_center="cc-platform"),
    rule("pinned-db", 1, "resource_id", "db-1", team="data", feature="reporting"),
    rule("acct-222", 40, "account_id", "222", customer="cust-222", environment="prod"),
    rule("untagged", 50, "untagged", "", environment="unknown-env"),
    rule("b-team", 5, "tag:owner", "*", team="{value}"),
    rule("a-team", 5, "tag:owner", "*", team="owner-{value}"),  # a literal: not a template
]


@pytest.fixture(scope="module")
def rules() -> AttributionRules:
    return AttributionRules.from_rows(RULES)


def test_tags_templates_and_cost_center_by_team(rules: AttributionRules) -> None:
    tags = {"team": "checkout", "env": "prod", "feature": "cart", "customer": "cust-9"}
    [a] = rules.allocate(cost(tags))
    assert dims_of(a) == ("checkout", "cart", "cust-9", "cc-commerce", "prod", "tag-team")
    assert (a.share, a.billed_cost, a.effective_cost, a.usage_quantity) == (
        D("1"),
        D("1"),
        D("0.72"),
        D("1"),
    )
    # {tag:customer} without the tag sets nothing: the next rule setting customer wins (and
    # cost_center, which no tag rule sets for "search", comes from the EC2 rule)
    [a] = rules.allocate(cost({"team": "search", "feature": "cart"}, account_id="222"))
    assert dims_of(a) == ("search", "cart", "cust-222", "cc-platform", "prod", "tag-team")


def test_precedence_then_rule_id_and_each_dimension_independent(rules: AttributionRules) -> None:
    # precedence 1 wins team and feature; environment still comes from a later rule
    [a] = rules.allocate(cost({"team": "checkout", "env": "dev"}, resource_id="db-1"))
    assert dims_of(a) == ("data", "reporting", "unallocated", "cc-commerce", "dev", "pinned-db")
    # two rules at precedence 5: rule_id "a-team" sorts before "b-team"
    [a] = rules.allocate(cost({"owner": "ml", "team": "search"}))
    assert dims_of(a) == (
        "owner-{value}",
        "unallocated",
        "unallocated",
        "cc-platform",
        "unallocated",
        "a-team",
    )


def test_field_matches_and_any_value_needs_a_value(rules: AttributionRules) -> None:
    [a] = rules.allocate(cost({"env": "staging"}))  # tagged, but no team tag: the service rule
    assert dims_of(a) == (
        "platform",
        "unallocated",
        "unallocated",
        "cc-platform",
        "staging",
        "ec2-default",
    )
    [a] = rules.allocate(cost({"team": ""}, service="AmazonS3"))  # an empty tag is no tag value
    assert dims_of(a) == ("unallocated",) * 5 + ("",)


def test_untagged_is_matched_and_otherwise_unallocated(rules: AttributionRules) -> None:
    for row in (cost({}, service="AmazonS3"), cost(None, service="AmazonS3")):
        [a] = rules.allocate(row)
        assert dims_of(a) == ("unallocated",) * 4 + ("unknown-env", "")
        assert a.billed_cost == D("1")  # never dropped
    row = cost(service="AmazonS3")
    del row["tags"]
    assert dims_of(rules.allocate(row)[0])[4] == "unknown-env"


def test_tenant_scoped_rules_and_other_tenants() -> None:
    rules = AttributionRules.from_rows(
        [
            rule("all", 10, "service", "*", team="shared"),
            {**rule("acme-only", 5, "service", "*", team="acme-team"), "tenant_id": "acme"},
        ]
    )
    assert rules.allocate(cost())[0].team == "acme-team"
    assert rules.allocate(cost(tenant_id="globex"))[0].team == "shared"
    assert [r.rule_id for r in rules.active_rules("acme", T0)] == ["acme-only", "all"]
    assert [r.rule_id for r in rules.active_rules("globex", T0)] == ["all"]


# --- splits through rules -----------------------------------------------------------------------


def test_weighted_split_rows_carry_the_same_other_dimensions() -> None:
    rules = AttributionRules.from_rows(
        [
            rule("tag-env", 10, "tag:env", "*", environment="{value}"),
            rule(
                "shared-acct",
                50,
                "account_id",
                "111",
                team="shared",
                cost_center="cc-shared",
                split="weights:platform=3|data=1",
            ),
        ]
    )
    allocations = rules.allocate(
        cost(
            {"env": "prod"},
            billed_cost="0.000000000003",
            effective_cost="-10",
            usage_quantity="1.5",
        )
    )
    assert allocations == [
        Allocation(
            "platform",
            "unallocated",
            "unallocated",
            "cc-shared",
            "prod",
            D("0.75"),
            D("2E-12"),
            D("-7.5"),
            D("1.125"),
            "shared-acct",
        ),
        Allocation(
            "data",
            "unallocated",
            "unallocated",
            "cc-shared",
            "prod",
            D("0.25"),
            D("1E-12"),
            D("-2.5"),
            D("0.375"),
            "shared-acct",
        ),
    ]
    assert str(allocations[0].share) == "0.750000000000"


def test_even_split_of_a_service_and_shares_at_12_decimals() -> None:
    rules = AttributionRules.from_rows(
        [rule("cdn", 5, "service", "AmazonCloudFront", team="cdn", split="even:a|b|c")]
    )
    allocations = rules.allocate(cost(service="AmazonCloudFront", billed_cost="0.01"))
    assert [(a.team, a.share, a.billed_cost) for a in allocations] == [
        ("a", D("0.333333333333"), D("0.003333333334")),
        ("b", D("0.333333333333"), D("0.003333333333")),
        ("c", D("0.333333333333"), D("0.003333333333")),
    ]
    assert sum(a.billed_cost for a in allocations) == D("0.01")


def test_split_only_from_the_rule_that_wins_team() -> None:
    rules = AttributionRules.from_rows(
        [
            rule("tag-team", 10, "tag:team", "*", team="{value}"),
            rule("acct", 20, "account_id", "*", team="shared", split="even:x|y"),
        ]
    )
    assert [a.team for a in rules.allocate(cost({"team": "ml"}))] == ["ml"]
    assert [a.team for a in rules.allocate(cost({}))] == ["x", "y"]


# --- versions, tombstones and the changelog ------------------------------------------------------


def test_rule_versions_and_tombstone_by_usage_start() -> None:
    rules = AttributionRules.from_rows(
        [
            rule("r1", 10, "service", "*", team="old", valid_from="2026-11-01T00:00:00Z"),
            rule("r1", 10, "service", "*", team="new", valid_from="2026-11-01T01:00:00Z"),
            rule("r1", 0, "-", valid_from="2026-11-01T02:00:00Z"),
        ]
    )

    def team(usage_start: str) -> str:
        return rules.allocate(cost(usage_start=usage_start))[0].team

    assert team("2026-10-31 23:59:59.999") == "unallocated"
    assert team("2026-11-01 00:00:00.000") == "old"
    assert team("2026-11-01 00:59:59.999") == "old"
    assert team("2026-11-01 01:00:00.000") == "new"
    assert team("2026-11-01 02:00:00.000") == "unallocated"
    assert rules.allocate(cost(), at_ms=T0 + 3_600_000)[0].team == "new"


def test_changelog_upserts_and_deletes_rules_idempotently() -> None:
    rules = AttributionRules.from_rows([rule("tag-team", 10, "tag:team", "*", team="{value}")])
    upsert = parse_change(
        orjson.dumps(
            {
                "dimension": "attribution_rules",
                "op": "upsert",
                "key": {"rule_id": "ec2"},
                "valid_from": "2026-11-01T00:30:00Z",
                "attributes": {
                    "tenant_id": "acme",
                    "precedence": 1,
                    "match_field": "service",
                    "match_value": "AmazonEC2",
                    "team": "compute",
                },
            }
        )
    )
    delete = DimensionChange.delete("attribution_rules", {"rule_id": "ec2"}, T0 + 7_200_000)
    for _ in range(2):
        rules.apply(upsert)
        rules.apply(delete)
    at = {"usage_start": "2026-11-01 00:30:00.000", "tags": {"team": "ml"}}
    assert rules.allocate(cost(**at))[0].team == "compute"
    assert rules.allocate(cost(**{**at, "usage_start": "2026-11-01 00:29:59.999"}))[0].team == "ml"
    assert rules.allocate(cost(**{**at, "usage_start": "2026-11-01 02:00:00.000"}))[0].team == "ml"
    assert len(rules) == 2
    with pytest.raises(ValueError, match="not 'attribution_rules'"):
        rules.apply(DimensionChange.delete("accounts", {"tenant_id": "acme"}, 0))


@pytest.mark.parametrize(
    ("attributes", "reason"),
    [
        (
            {"split": "thirds:a|b"},
            "field 'attributes.split' must be empty, 'even:a|b' or"
            " 'weights:a=3|b=1', got 'thirds:a|b'",
        ),
        (
            {"split": "weights:a=3|b=0"},
            "field 'attributes.split' weight of 'b' must be a positive integer: 'weights:a=3|b=0'",
        ),
        ({"split": "even:a|a"}, "field 'attributes.split' names team 'a' twice: 'even:a|a'"),
        (
            {"match_field": "tags:team"},
            "field 'attributes.match_field' must be tag:<name>,"
            " account_id, resource_id, service, untagged or '-' (tombstone), got 'tags:team'",
        ),
        ({"precedence": "high"}, "field 'attributes.precedence' must be an integer, got 'high'"),
        (
            {"team": "{vaule}"},
            "field 'attributes.team' must be a literal, '{value}' or '{tag:<name>}', got '{vaule}'",
        ),
        (
            {"match_value": ""},
            "field 'attributes.match_value' must not be empty (use '*' for any non-empty value)",
        ),
        (
            {"tenant_id": "acme corp"},
            "field 'attributes.tenant_id' must be '*' or a tenant id"
            " (A-Z a-z 0-9 _ . -), got 'acme corp'",
        ),
        ({"match_field": None}, "missing required field 'attributes.match_field'"),
    ],
)
def test_rule_changes_are_checked_at_parse_time(attributes: dict[str, Any], reason: str) -> None:
    doc = {
        "dimension": "attribution_rules",
        "op": "upsert",
        "key": {"rule_id": "r1"},
        "valid_from": 0,
        "attributes": {
            "tenant_id": "*",
            "precedence": 1,
            "match_field": "service",
            "match_value": "AmazonEC2",
            "team": "compute",
            **attributes,
        },
    }
    with pytest.raises(ValueError) as caught:
        parse_change(orjson.dumps(doc))
    assert str(caught.value) == reason


# --- files --------------------------------------------------------------------------------------

FILE_ROWS = [
    list(RULE_COLUMNS),
    ["r01", "*", "10", "tag:team", "*", "{value}", "{tag:feature}", "", "", "{tag:env}", "", "0"],
    [
        "r03",
        "acme",
        "5",
        "account_id",
        "111",
        "growth",
        "",
        "",
        "cc-acme",
        "",
        "even:growth|ml",
        "2026-11-01T00:00:00Z",
    ],
    ["r04", "*", "30", "untagged", "", "", "", "", "cc-shared", "prod", "", "0"],
    ["r05", "*", "1", "resource_id", "res-old", "legacy", "", "", "", "", "", "0"],
    ["r05", "", "", "-", "", "", "", "", "", "", "", "1000"],
]


def write_rules(path: Path, rows: list[list[str]]) -> Path:
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)
    else:
        header, *body = rows
        columns: dict[str, Any] = {name: [r[i] for r in body] for i, name in enumerate(header)}
        columns["precedence"] = [int(v) if v else None for v in columns["precedence"]]
        pq.write_table(pa.table(columns), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_rules_file_loads(tmp_path: Path, suffix: str) -> None:
    rules = AttributionRules.load(write_rules(tmp_path / f"attribution_rules{suffix}", FILE_ROWS))
    assert [r.rule_id for r in rules.active_rules("acme", T0)] == ["r03", "r01", "r04"]
    assert [r.rule_id for r in rules.active_rules("acme", T0 - 1)] == ["r01", "r04"]
    assert [r.rule_id for r in rules.active_rules("acme", 999)] == ["r05", "r01", "r04"]
    allocations = rules.allocate(cost({"team": "ml", "feature": "cart"}, billed_cost="-0.01"))
    assert [(*dims_of(a), a.billed_cost) for a in allocations] == [
        ("growth", "cart", "unallocated", "cc-acme", "unallocated", "r03", D("-0.005")),
        ("ml", "cart", "unallocated", "cc-acme", "unallocated", "r03", D("-0.005")),
    ]


def test_rules_file_errors_name_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "attribution_rules.csv"
    cases = [
        (
            (1, 10),
            "even:",
            "column 'split': must be empty, 'even:a|b' or 'weights:a=3|b=1', got 'even:'",
        ),
        (
            (2, 10),
            "even:x",
            "column 'split': needs the team column set: only the rule that wins team splits",
        ),
        (
            (3, 11),
            "2026-11-01",
            "column 'valid_from': has no time zone (add 'Z' or an offset): '2026-11-01'",
        ),
        ((3, 5), "{value}", "column 'team': '{value}' needs a matched value; untagged has none"),
        ((4, 0), "", "column 'rule_id': must not be empty"),
        (
            (1, 5),
            "",
            "column 'team': the rule sets none of team, feature, customer,"
            " cost_center, environment",
        ),
    ]
    for (row, column), value, reason in cases:
        rows = [r[:] for r in FILE_ROWS]
        if row == 2 and column == 10:
            rows[row][5] = ""
        if row == 1 and column == 5:
            rows[row][6] = rows[row][9] = ""
        rows[row][column] = value
        write_rules(path, rows)
        with pytest.raises(ValueError) as caught:
            AttributionRules.load(path)
        assert str(caught.value) == f"{path} row {row} {reason}"
    write_rules(path, [[c for c in r if c != "split"] for r in FILE_ROWS[:1]])
    with pytest.raises(ValueError) as caught:
        AttributionRules.load(path)
    assert str(caught.value) == f"{path}: missing required column 'split'"


# --- the sample rules on generator data ---------------------------------------------------------


def test_sample_rules_attribute_generator_costs_exactly(tmp_path: Path) -> None:
    written = write_dimension_files(tmp_path, seed=11, start_ms=T0, change_after_ms=100_000)
    rules = AttributionRules.load(written.paths["attribution_rules"])
    meta = SourceMeta("t", 0, 0, T0)
    teams: set[str] = set()
    splits = unallocated_untagged = 0
    for record in generate(11, 20_000, start_ms=T0):
        if record.truth.table != "cost_records" or record.truth.duplicate_of is not None:
            continue
        result = validate(record.value, meta, ValidationLimits(), record.truth.emit_ms)
        assert isinstance(result, Accepted)
        row = result.row
        allocations = rules.allocate(row)
        for field in ("billed_cost", "effective_cost", "usage_quantity"):
            assert sum(getattr(a, field) for a in allocations) == D(row[field])
        teams.update(a.team for a in allocations)
        splits += len(allocations) > 1
        if not row["tags"] and allocations[0].team == "unallocated":
            unallocated_untagged += 1
            assert dims_of(allocations[0]) == ("unallocated",) * 5 + ("",)
    assert splits > 0 and unallocated_untagged > 0
    assert teams >= {"checkout", "search", "growth", "data", "platform", "ml", "unallocated"}
