"""The reference models themselves (tests/reference_identity.py, tests/reference_enrichment.py)
on small literal cases, so that an end-to-end mismatch points at the job, not at them."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from tests.reference_enrichment import (
    clear_cache,
    expected_allocations,
    expected_enrichment,
    split_amount,
)
from tests.reference_identity import (
    DAY_MS,
    DEFAULT_TYPES,
    IdentifierRule,
    IdentityRules,
    Merge,
    e164,
    event_identifiers,
    expected_identity,
    is_blocked,
)

T = "acme"
P_ANON_1 = "13c1a9f5-9e79-5d0f-bce1-817b04eca4af"  # uuid5 of "acme\x1fanonymous_id\x1fanon-1"
P_D1 = "76980e04-5194-5038-9e9a-321d93d35920"  # "acme\x1fdevice_id\x1fd1"
P_D2 = "d4413819-eb57-5ffb-985b-d1e061e5c82c"  # "acme\x1fdevice_id\x1fd2"
P_U1 = "e84485d8-fd54-5cf8-8163-80e1e3cb6182"  # "acme\x1fuser_id\x1fu1"
P_U2 = "1ab0a35f-f4c3-5123-91e8-efa03ecb8569"  # "acme\x1fuser_id\x1fu2"


def ev(message_id: str, ts: object, kind: str = "track", **fields: object) -> dict:
    doc = {"type": kind, "tenant_id": T, "message_id": message_id, "timestamp": ts}
    if kind == "track":
        doc["event"] = "Product Viewed"
    device_id = fields.pop("device_id", None)
    if device_id is not None:
        doc["context"] = {"device_id": device_id, "ip": "203.0.113.9"}
    doc.update(fields)
    return doc


# --- identity -----------------------------------------------------------------------------------


def test_anonymous_then_identify():
    out = expected_identity(
        [
            ev("m1", "1970-01-01T00:00:01.000Z", anonymous_id=" anon-1 "),  # trimmed, case kept
            ev(
                "m2",
                3000,
                "identify",
                anonymous_id="anon-1",
                user_id=" U-Ana ",
                traits={"email": " Ana@Mail.Example ", "phone": "+1 (555) 010-0199"},
            ),
            ev("m3", "1970-01-01T01:00:02+01:00", user_id="U-Ana"),  # = 2000 ms
        ]
    )
    assert out.resolved == {"m1": P_ANON_1, "m2": P_ANON_1, "m3": P_ANON_1}
    assert out.resolved_by_key[(T, "m2")] == P_ANON_1
    profile = out.profiles[(T, P_ANON_1)]
    assert profile.identifiers == {
        "anonymous_id": {"anon-1"},
        "user_id": {"U-Ana"},
        "email": {"ana@mail.example"},
        "phone": {"+15550100199"},
    }
    assert (profile.first_seen_ms, profile.last_seen_ms) == (1000, 3000)
    assert profile.merged_into == "" and profile.merges == 0
    assert out.links == {
        (T, "anonymous_id", "anon-1"): P_ANON_1,
        (T, "user_id", "U-Ana"): P_ANON_1,
        (T, "email", "ana@mail.example"): P_ANON_1,
        (T, "phone", "+15550100199"): P_ANON_1,
    }
    assert out.merges == []


def test_context_traits_and_alias_previous_id():
    doc = ev(
        "m1",
        1000,
        "alias",
        user_id="u1",
        previous_id="Prev-9",
        anonymous_id="a2",
        context={"device_id": "D1", "traits": {"email": "X@Y.example"}},
    )
    merge_alias = IdentityRules(alias="merge_unidentified")
    assert event_identifiers(doc, merge_alias) == [
        ("user_id", "u1"),
        ("email", "x@y.example"),
        ("device_id", "D1"),  # ids are exact; only emails are lower-cased
        ("anonymous_id", "Prev-9"),
        ("anonymous_id", "a2"),
    ]
    # by default (Segment Unify) alias does not merge: previous_id is no identifier
    assert ("anonymous_id", "Prev-9") not in event_identifiers(doc)
    # traits.email wins over context.traits.email
    doc["traits"] = {"email": "first@y.example"}
    assert ("email", "first@y.example") in event_identifiers(doc)


def test_two_devices_then_login_merges_into_the_user_profile():
    out = expected_identity(
        [
            ev("m1", 1000, anonymous_id="a1", device_id="d1"),
            ev("m2", 2000, anonymous_id="a2", device_id="d2"),
            ev("m3", 3000, "identify", user_id="u1", anonymous_id="a2", device_id="d2"),
            ev("m4", 4000, user_id="u1", anonymous_id="a1", device_id="d1"),
        ]
    )
    assert out.resolved == {"m1": P_D1, "m2": P_D2, "m3": P_D2, "m4": P_D2}
    # P_D1 is older but P_D2 carries the user_id, so P_D2 wins
    assert out.merges == [Merge(T, P_D2, P_D1, "device_id:d1", "m4")]
    winner = out.profiles[(T, P_D2)]
    assert winner.identifiers == {
        "user_id": {"u1"},
        "device_id": {"d1", "d2"},
        "anonymous_id": {"a1", "a2"},
    }
    assert (winner.first_seen_ms, winner.last_seen_ms, winner.merges) == (1000, 4000, 1)
    loser = out.profiles[(T, P_D1)]
    assert loser.merged_into == P_D2
    assert out.current_profile(T, P_D1) == P_D2
    assert out.current_profile(T, P_D2) == P_D2
    assert set(out.links.values()) == {P_D2}
    assert list(out.live_profiles()) == [(T, P_D2)]


def test_merge_chain_oldest_wins_without_user_id_then_user_profile_wins():
    out = expected_identity(
        [
            ev("m1", 1000, device_id="d1"),
            ev("m2", 2000, device_id="d2"),
            ev("m3", 2500, anonymous_id="a9", device_id="d2"),
            ev("m4", 2600, "identify", anonymous_id="a9", traits={"email": "z@z.example"}),
            ev("m5", 2700, anonymous_id="a7", device_id="d1"),
            ev("m6", 2800, device_id="d2", anonymous_id="a7"),  # d2 -> P_D2, a7 -> P_D1
            ev("m7", 3000, user_id="u1"),
            ev("m8", 3500, user_id="u1", device_id="d2"),
        ]
    )
    assert out.merges == [
        Merge(T, P_D1, P_D2, "device_id:d2", "m6"),  # same: oldest first_seen wins
        Merge(T, P_U1, P_D1, "device_id:d2", "m8"),
    ]
    assert out.resolved["m6"] == P_D1 and out.resolved["m8"] == P_U1
    assert out.current_profile(T, P_D2) == P_U1
    assert out.current_profile(T, "") == ""
    top = out.profiles[(T, P_U1)]
    assert (top.first_seen_ms, top.last_seen_ms, top.merges) == (1000, 3500, 2)
    assert top.identifiers == {
        "user_id": {"u1"},
        "email": {"z@z.example"},
        "device_id": {"d1", "d2"},
        "anonymous_id": {"a7", "a9"},
    }


SHARED_TABLET = [
    ev("m1", 1000, user_id="u1", device_id="tablet"),
    ev("m2", 2000, user_id="u2", device_id="tablet", anonymous_id="a2"),
    ev("m3", 3000, device_id="tablet"),
]


def test_shared_device_follows_the_most_recent_identified_user():
    out = expected_identity(SHARED_TABLET)
    # m2 identifies u2 on the tablet after u1 was: the tablet moves to u2, nothing merges,
    # and the later tablet-only event m3 goes to u2 (Segment: most recent identified user)
    assert out.resolved == {"m1": P_U1, "m2": P_U2, "m3": P_U2}
    assert out.profiles[(T, P_U1)].identifiers == {"user_id": {"u1"}}
    assert out.profiles[(T, P_U2)].identifiers == {
        "user_id": {"u2"},
        "device_id": {"tablet"},
        "anonymous_id": {"a2"},
    }
    assert out.links[(T, "device_id", "tablet")] == P_U2
    assert out.merges == []


def test_shared_device_by_event_time_not_arrival():
    late = [SHARED_TABLET[1], SHARED_TABLET[0], SHARED_TABLET[2]]  # u1's (older) identify last
    out = expected_identity(late)
    assert out.links[(T, "device_id", "tablet")] == P_U2
    assert out.profiles[(T, P_U1)].identifiers == {"user_id": {"u1"}}


def test_shared_device_with_two_user_ids_does_not_merge():
    types = dict(DEFAULT_TYPES, device_id=IdentifierRule(3, 5), anonymous_id=IdentifierRule(4, 5))
    out = expected_identity(SHARED_TABLET, IdentityRules(types=types))
    # without moves, m2: {u2, tablet, a2} would join u1's profile -> drop tablet (the
    # identifier causing it), keep a2 with u2
    assert out.resolved == {"m1": P_U1, "m2": P_U2, "m3": P_U1}
    assert out.profiles[(T, P_U2)].identifiers == {"user_id": {"u2"}, "anonymous_id": {"a2"}}
    assert out.profiles[(T, P_U1)].identifiers == {"user_id": {"u1"}, "device_id": {"tablet"}}
    assert out.links[(T, "anonymous_id", "a2")] == P_U2
    assert out.merges == []


def test_sixth_email_is_dropped():
    events = [
        ev(f"m{i}", 1000 * i, "identify", user_id="u1", traits={"email": f"e{i}@x.example"})
        for i in range(1, 7)
    ]
    out = expected_identity(events)
    assert set(out.resolved.values()) == {P_U1}
    profile = out.profiles[(T, P_U1)]
    assert profile.identifiers["email"] == {f"e{i}@x.example" for i in range(1, 6)}
    assert (T, "email", "e6@x.example") not in out.links
    assert profile.last_seen_ms == 6000


def test_limit_with_a_period_counts_values_linked_within_it():
    weekly = IdentityRules(types=dict(DEFAULT_TYPES, email=IdentifierRule(1, 2, 7 * DAY_MS)))
    events = [
        ev("m1", 0, "identify", user_id="u1", traits={"email": "a@x.example"}),
        ev("m2", DAY_MS, "identify", user_id="u1", traits={"email": "b@x.example"}),
        ev("m3", 2 * DAY_MS, "identify", user_id="u1", traits={"email": "c@x.example"}),
        ev("m4", 9 * DAY_MS, "identify", user_id="u1", traits={"email": "d@x.example"}),
        # late: three days in, a and b are within a week of it (d is six days after: counts)
        ev("m5", 3 * DAY_MS, "identify", user_id="u1", traits={"email": "e@x.example"}),
    ]
    out = expected_identity(events, weekly)
    assert out.profiles[(T, P_U1)].identifiers["email"] == {"a@x.example", "b@x.example",
                                                            "d@x.example"}  # fmt: skip
    assert set(out.resolved.values()) == {P_U1}
    assert out.profiles[(T, P_U1)].linked_at[("email", "d@x.example")] == 9 * DAY_MS


def test_merge_budget_rule():
    rules = IdentityRules(max_merges=1)
    out = expected_identity(
        [
            ev("m1", 1000, anonymous_id="a1"),
            ev("m2", 2000, anonymous_id="a2"),
            ev("m3", 3000, anonymous_id="a3"),
            ev("m4", 4000, anonymous_id="a1", device_id="d9"),
            ev("m5", 5000, anonymous_id="a2", device_id="d9"),  # 0 + 0 + 1 merges: ok
            ev("m6", 6000, anonymous_id="a3", device_id="d9"),  # 1 + 0 + 1 > 1: drop a3
        ],
        rules,
    )
    assert len(out.merges) == 1
    assert out.resolved["m6"] == out.resolved["m4"]
    assert out.links[(T, "anonymous_id", "a3")] == out.resolved["m3"] != out.resolved["m4"]


def test_blocked_values_never_become_identifiers():
    for value in [
        "",
        "null",
        "NULL",
        "undefined",
        "Anonymous",
        "0",
        "-1",
        "None",
        "nil",
        "N/A",
        "unknown",
        "000",
        "0-0",
        "--",
        "00000000-0000-0000-0000-000000000000",
    ]:
        assert is_blocked(value), value
    for value in ["a", "0a", "10", "+15550100199", "-2"]:
        assert not is_blocked(value), value
    doc = ev(
        "m1",
        1000,
        user_id="  undefined ",
        anonymous_id="00000000-0000-0000-0000-000000000000",
        traits={"email": " N/A ", "phone": "0"},
        device_id=" Unknown ",
    )
    assert event_identifiers(doc) == []
    out = expected_identity([doc, ev("m2", 1000, user_id="   ", anonymous_id="null")])
    assert out.resolved == {"m1": "", "m2": ""}
    assert out.profiles == {} and out.links == {}


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("+15550100199", "+15550100199"),
        ("+1 (555) 010-0199", "+15550100199"),
        ("555.010.0199", "+15550100199"),
        ("(555) 010 0199", "+15550100199"),
        ("15550100199", "+15550100199"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+44 20 7946 0958", "+442079460958"),
        ("25550100199", ""),
        ("12345", ""),
        ("+1 555 CALL NOW", ""),
        ("+", ""),
        ("", ""),
    ],
)
def test_e164(raw, want):
    assert e164(raw) == want


def test_identifier_order_and_dedup():
    doc = ev("m1", 1000, user_id="U", anonymous_id="X", previous_id=" X", device_id="X")
    doc["type"] = "alias"
    merge_alias = IdentityRules(alias="merge_unidentified")
    assert event_identifiers(doc, merge_alias) == [
        ("user_id", "U"),
        ("device_id", "X"),
        ("anonymous_id", "X"),
    ]
    doc["previous_id"] = "x"  # case differs: a different anonymous id
    assert event_identifiers(doc, merge_alias)[2:] == [("anonymous_id", "X"), ("anonymous_id", "x")]


# --- enrichment ---------------------------------------------------------------------------------

PRODUCTS = [
    ["tenant_id", "sku", "name", "category", "price", "valid_from", "deleted"],
    ["acme", "sku-1", "Trail shoe", "shoes", "49.99", "1000", ""],
    ["acme", "sku-1", "Trail shoe v2", "footwear", "59.99", "1970-01-01T00:00:02Z", ""],
    ["acme", "sku-1", "", "", "", "3000", "true"],
    ["acme", "sku-2", "Urban hat", "hats", "9.99", "0", "false"],
    ["globex", "sku-1", "Other shoe", "shoes", "1", "0", ""],
]
CAMPAIGNS = [
    ["tenant_id", "campaign_id", "name", "channel", "valid_from"],
    ["acme", "cmp-1", "Black Friday", "email", "0"],
    ["acme", "cmp-1", "Black Friday", "paid_social", "2000"],
]
ACCOUNTS = [
    ["tenant_id", "plan", "region", "valid_from"],
    ["acme", "starter", "us", "0"],
    ["acme", "enterprise", "us", "1970-01-01T00:00:02.000+00:00"],
]


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def write_parquet(path: Path, rows: list[list[str]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    header, *body = rows
    columns = {name: [row[i] for row in body] for i, name in enumerate(header)}
    if all(value.isdigit() for value in columns["valid_from"]):  # an int64 column
        columns["valid_from"] = [int(value) for value in columns["valid_from"]]
    if "deleted" in columns:
        columns["deleted"] = [value == "true" for value in columns["deleted"]]
    pq.write_table(pa.table(columns), path)


@pytest.fixture(params=["csv", "parquet"])
def dims(request, tmp_path) -> Path:
    clear_cache()
    writer = write_csv if request.param == "csv" else write_parquet
    for stem, rows in (("products", PRODUCTS), ("campaigns", CAMPAIGNS), ("accounts", ACCOUNTS)):
        writer(tmp_path / f"{stem}.{request.param}", rows)
    return tmp_path


def product_event(ts: int, tenant: str = "acme", **properties) -> dict:
    return {
        "type": "track",
        "tenant_id": tenant,
        "message_id": "m",
        "timestamp": ts,
        "event": "Product Viewed",
        "properties": properties,
    }


def test_as_of_before_at_and_after_a_change(dims):
    def names(ts):
        got = expected_enrichment(product_event(ts, product_id="sku-1"), dims)
        return got["product_names"], got["product_categories"]

    assert names(999) == (["unknown"], ["unknown"])  # before the first version
    assert names(1000) == (["Trail shoe"], ["shoes"])  # at it
    assert names(1999) == (["Trail shoe"], ["shoes"])
    assert names(2000) == (["Trail shoe v2"], ["footwear"])  # at the change
    assert names(2999) == (["Trail shoe v2"], ["footwear"])
    assert names(3000) == (["unknown"], ["unknown"])  # deleted
    assert names(9999) == (["unknown"], ["unknown"])


def test_enrichment_row(dims):
    doc = product_event(1500, product_ids=["sku-2", "sku-404", "sku-1"], campaign_id="cmp-1")
    assert expected_enrichment(doc, dims) == {
        "product_names": ["Urban hat", "unknown", "Trail shoe"],
        "product_categories": ["hats", "unknown", "shoes"],
        "campaign_name": "Black Friday",
        "campaign_channel": "email",
        "account_plan": "starter",
        "account_region": "us",
    }
    doc = product_event("1970-01-01T00:00:02.500Z", campaign_id="cmp-1")
    got = expected_enrichment(doc, dims)
    assert got["product_names"] == [] and got["campaign_channel"] == "paid_social"
    assert got["account_plan"] == "enterprise"
    got = expected_enrichment(product_event(5000, "globex", product_id="sku-1"), dims)
    assert got == {
        "product_names": ["Other shoe"],
        "product_categories": ["shoes"],
        "campaign_name": "",
        "campaign_channel": "",
        "account_plan": "unknown",
        "account_region": "unknown",
    }
    got = expected_enrichment(product_event(5000, campaign_id="cmp-404"), dims)
    assert (got["campaign_name"], got["campaign_channel"]) == ("unknown", "unknown")


# --- attribution --------------------------------------------------------------------------------

RULES = [
    [
        "rule_id",
        "tenant_id",
        "precedence",
        "match_field",
        "match_value",
        "team",
        "feature",
        "customer",
        "cost_center",
        "environment",
        "split",
        "valid_from",
    ],
    [
        "r01",
        "*",
        "10",
        "tag:team",
        "*",
        "{value}",
        "{tag:feature}",
        "{tag:customer}",
        "",
        "{tag:env}",
        "",
        "0",
    ],
    ["r02", "*", "20", "service", "AmazonEC2", "platform", "compute", "", "cc-100", "", "", "0"],
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
        "even:growth|ml|data",
        "0",
    ],
    ["r04", "*", "30", "untagged", "", "shared", "", "", "cc-shared", "prod", "", "0"],
    ["r05", "*", "1", "resource_id", "res-old", "legacy", "", "", "", "", "", "0"],
    ["r05", "*", "1", "-", "", "", "", "", "", "", "", "5000"],
    [
        "r10",
        "*",
        "5",
        "service",
        "AmazonS3",
        "storage",
        "",
        "",
        "",
        "",
        "weights:storage=3|data=1",
        "1970-01-01T00:00:10Z",
    ],
    ["r9", "*", "5", "service", "AmazonS3", "", "blobs", "", "", "", "", "0"],
]


@pytest.fixture(params=["csv", "parquet"])
def rules_path(request, tmp_path) -> Path:
    clear_cache()
    path = tmp_path / f"attribution_rules.{request.param}"
    if request.param == "csv":
        write_csv(path, RULES)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        header, *body = RULES
        columns = {name: [row[i] for row in body] for i, name in enumerate(header)}
        columns["precedence"] = [int(v) for v in columns["precedence"]]
        pq.write_table(pa.table(columns), path)
    return path


def cost(usage_start: object, tenant: str = "acme", **fields) -> dict:
    doc = {
        "type": "cost",
        "tenant_id": tenant,
        "message_id": "c",
        "usage_start": usage_start,
        "service": "AmazonEC2",
        "account_id": "999",
        "currency": "USD",
        "billed_cost": "1",
        "effective_cost": "1",
    }
    doc.update(fields)
    return doc


def dims_of(rows: list[dict]) -> list[tuple]:
    return [
        (r["team"], r["feature"], r["customer"], r["cost_center"], r["environment"]) for r in rows
    ]


def test_precedence_templates_and_even_split(rules_path):
    doc = cost(
        1000,
        account_id="111",
        tags={"team": "checkout", "env": "prod", "feature": "cart"},
        billed_cost="0.000000000010",
        effective_cost=0.5,
        usage_quantity="3",
    )
    rows = expected_allocations(doc, rules_path)
    assert dims_of(rows) == [
        ("growth", "cart", "unallocated", "cc-acme", "prod"),
        ("ml", "cart", "unallocated", "cc-acme", "prod"),
        ("data", "cart", "unallocated", "cc-acme", "prod"),
    ]
    assert [r["billed_cost"] for r in rows] == [
        Decimal("4E-12"),
        Decimal("3E-12"),
        Decimal("3E-12"),
    ]
    assert sum(r["billed_cost"] for r in rows) == Decimal("0.000000000010")
    assert [r["effective_cost"] for r in rows] == [
        Decimal("0.166666666667"),
        Decimal("0.166666666667"),
        Decimal("0.166666666666"),
    ]
    assert [r["usage_quantity"] for r in rows] == [Decimal(1), Decimal(1), Decimal(1)]
    # another tenant: r03 does not apply, the team tag does
    rows = expected_allocations(
        cost(1000, "globex", account_id="111", tags={"team": "ml"}), rules_path
    )
    assert dims_of(rows) == [("ml", "compute", "unallocated", "cc-100", "unallocated")]
    assert rows[0]["billed_cost"] == Decimal(1) and rows[0]["usage_quantity"] == Decimal(0)


def test_untagged_tombstone_and_versions(rules_path):
    rows = expected_allocations(cost(1000, service="AmazonRDS", tags={}), rules_path)
    assert dims_of(rows) == [("shared", "unallocated", "unallocated", "cc-shared", "prod")]
    rows = expected_allocations(cost(1000, service="AmazonRDS"), rules_path)  # no tags at all
    assert dims_of(rows)[0][0] == "shared"
    # r05 until its tombstone at 5000
    assert (
        dims_of(expected_allocations(cost(4999, resource_id="res-old"), rules_path))[0][0]
        == "legacy"
    )
    assert (
        dims_of(expected_allocations(cost(5000, resource_id="res-old"), rules_path))[0][0]
        == "platform"
    )
    # r10 exists only from 10 s; r9 has no team but sets the feature (same precedence, "r10"
    # sorts before "r9")
    before = expected_allocations(cost(9999, service="AmazonS3", tags={"env": "dev"}), rules_path)
    assert dims_of(before) == [
        ("unallocated", "blobs", "unallocated", "unallocated", "unallocated")
    ]
    after = expected_allocations(
        cost("1970-01-01T00:00:10Z", service="AmazonS3", tags={"team": "search"}), rules_path
    )
    assert dims_of(after) == [
        ("storage", "blobs", "unallocated", "unallocated", "unallocated"),
        ("data", "blobs", "unallocated", "unallocated", "unallocated"),
    ]


def test_negative_credit_split(rules_path):
    doc = cost(
        "1970-01-01T00:00:20Z",
        service="AmazonS3",
        charge_category="Credit",
        billed_cost="-10.000000000001",
        effective_cost="-0.0000000000005",
    )
    doc.pop("account_id")
    rows = expected_allocations(doc, rules_path)
    assert [r["team"] for r in rows] == ["storage", "data"]
    assert [r["billed_cost"] for r in rows] == [Decimal("-7.500000000001"), Decimal("-2.5")]
    assert sum(r["billed_cost"] for r in rows) == Decimal("-10.000000000001")
    # -0.0000000000005 rounds half-even to 0 at 12 decimals
    assert [r["effective_cost"] for r in rows] == [Decimal(0), Decimal(0)]


def test_split_amount_units():
    third = split_amount(Decimal("0.000000000010"), [1, 1, 1])
    assert third == [Decimal("4e-12"), Decimal("3e-12"), Decimal("3e-12")]
    assert split_amount(Decimal("-0.000000000005"), [1, 1]) == [
        Decimal("-3e-12"),
        Decimal("-2e-12"),
    ]
    # shares 1.4 / 2.8 / 2.8: the two largest remainders get the 2 units left
    assert split_amount(Decimal("0.000000000007"), [1, 2, 2]) == [
        Decimal("1e-12"),
        Decimal("3e-12"),
        Decimal("3e-12"),
    ]
