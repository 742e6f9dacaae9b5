"""The window-stage reference model (tests/reference_windows.py) on tiny streams worked out by
hand, so that an end-to-end mismatch points at the job, not at the model."""

from __future__ import annotations

import json
import random
from decimal import Decimal

from tests.reference_windows import (
    WindowSettings,
    cost_rows,
    cost_windows,
    decimal_text,
    engagement_windows,
    epoch_millis,
    event_row,
    expected_windows,
    iso_ms,
)

T = "acme"
T0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z, a whole hour
S = 1_000
M = 60_000
H = 3_600_000


def ev(message_id: str, ms: int, event: str = "Product Viewed", tenant: str = T, **props) -> dict:
    """A track event (or page / identify / alias when `event` is one of those types)."""
    doc = {"tenant_id": tenant, "message_id": message_id, "timestamp": ms, "type": "track"}
    if event in ("page", "identify", "alias"):
        doc["type"] = event
        if event == "page":
            doc["name"] = "Home"
    else:
        doc["event"] = event
    if props:
        doc["properties"] = props
    return doc


def cost(message_id: str, ms: int, service: str = "AmazonEC2", tenant: str = T) -> dict:
    return {
        "tenant_id": tenant,
        "message_id": message_id,
        "type": "cost",
        "usage_start": iso_ms(ms),
        "usage_end": iso_ms(ms + H),
        "service": service,
        "currency": "usd",
    }


def alloc(team: str, billed: str, effective: str | None = None, qty: str = "0") -> dict:
    return {
        "team": team,
        "feature": "search",
        "customer": "cust-1",
        "cost_center": "cc",
        "environment": "prod",
        "billed_cost": Decimal(billed),
        "effective_cost": Decimal(effective if effective is not None else billed),
        "usage_quantity": Decimal(qty),
    }


def run(docs, profiles=None, allocations=None, **settings):
    """profiles: message_id -> profile id (tenant T unless the doc says otherwise)."""
    profiles = profiles or {}
    allocations = allocations or {}
    return expected_windows(
        docs,
        {(d["tenant_id"], d["message_id"]): profiles.get(d["message_id"], "") for d in docs},
        {
            (d["tenant_id"], d["message_id"]): allocations[d["message_id"]]
            for d in docs
            if d["type"] == "cost"
        },
        WindowSettings(**settings),
    )


# --- small helpers ------------------------------------------------------------------------------


def test_decimal_text():
    assert decimal_text(Decimal("1.500")) == "1.5"
    assert decimal_text(Decimal("0E-12")) == "0"
    assert decimal_text(Decimal("-0.000")) == "0"
    assert decimal_text(Decimal("1E+2")) == "100"
    assert decimal_text(Decimal("12.000000000000")) == "12"
    assert decimal_text(Decimal("-3.250000")) == "-3.25"
    assert decimal_text(Decimal("1E-7")) == "0.0000001"


def test_time_variants():
    want = T0 + 15 * M + 123
    for value in (
        want,
        "2026-11-01T00:15:00.123Z",
        "2026-11-01T01:15:00.123+01:00",
        "2026-11-01 00:15:00.123+00:00",
        "2026-11-01T00:15:00.1239Z",  # finer digits truncated
    ):
        assert epoch_millis(value) == want, value
    assert epoch_millis("20261101T001500Z") == T0 + 15 * M
    assert epoch_millis("2026-11-01T00:15Z") == T0 + 15 * M
    assert iso_ms(want) == "2026-11-01T00:15:00.123Z"


def test_event_columns():
    settings = WindowSettings()
    row = event_row(
        ev("m1", T0, "Order Completed", revenue="59.9850005", campaign_id="c1", order_id="o1"),
        "p1",
        settings,
    )
    assert (row.event_type, row.campaign_id, row.order_id) == ("Order Completed", "c1", "o1")
    assert row.revenue == Decimal("59.985000")  # 6 places, half-even
    assert row.value == 0  # only cart events have a value
    cart = event_row(ev("m2", T0, "Product Added", price=Decimal("19.9")), "p1", settings)
    assert (cart.value, cart.revenue, cart.campaign_id) == (Decimal("19.9"), None, "")
    assert event_row(ev("m3", T0, "Product Added", price="n/a"), "", settings).value == 0
    assert event_row(ev("m4", T0, "page"), "", settings).event_type == "page"
    assert event_row(ev("m5", T0, "alias"), "", settings).event_type == "alias"


# --- lateness -----------------------------------------------------------------------------------


def test_late_beyond_and_within_lateness():
    clock = T0 + 20 * M
    limit = clock - 5 * S - 10 * M  # watermark - allowed lateness
    out = run(
        [
            ev("e1", clock),
            ev("e2", limit - 1),  # beyond: 1 ms past the limit
            ev("e3", limit),  # exactly at the limit: counts
            ev("o1", T0, tenant="other"),  # another tenant has its own clock
            cost("c1", T0 - H),  # the cost family has its own clock
        ],
        profiles={"e1": "p1", "e2": "p1", "e3": "p1"},
        allocations={"c1": [alloc("a", "1"), alloc("b", "2")]},
    )
    assert out.late == {(T, "events", "e2", 0)}
    detail = out.late_details[(T, "events", "e2", 0)]
    assert detail.watermark == clock - 5 * S
    assert detail.lateness_ms == 10 * M + 1
    assert out.progress == {(T, "events"): clock, ("other", "events"): T0, (T, "cost"): T0 - H}
    # the late row is nowhere else: not in panes, windows, live state
    assert sum(v["events"] for k, v in out.engagement_panes.items() if k[0] == T) == 2
    assert sum(v["events"] for k, v in out.profile_panes.items()) == 2
    assert out.profile_live[(T, "p1")]["events:Product Viewed:1h"] == "2"
    assert out.profile_versions[(T, "p1")] == 2


def test_late_judged_before_the_clock_moves_and_per_allocation():
    out = run(
        [
            cost("c1", T0),
            cost("c2", T0 + 2 * H),  # moves the clock two hours
            cost("c3", T0),  # now far behind: both allocation rows late
            cost("c4", T0 + 2 * H - 10 * M - 5 * S),  # exactly at the limit: counts
        ],
        allocations={
            "c1": [alloc("a", "1")],
            "c2": [alloc("a", "1")],
            "c3": [alloc("a", "1"), alloc("b", "2")],
            "c4": [alloc("a", "1")],
        },
    )
    assert out.late == {(T, "cost", "c3", 0), (T, "cost", "c3", 1)}
    assert out.progress == {(T, "cost"): T0 + 2 * H}
    assert out.team_versions == {(T, "a", "USD"): 3}  # c1, c2, c4


# --- panes and windows --------------------------------------------------------------------------


def test_sliding_membership():
    t = T0 + 12_345
    out = run([ev("e1", t)], profiles={"e1": "p1"})
    short = sorted(k[4] for k in out.engagement_windows if k[0] == "5m/10s")
    long = sorted(k[4] for k in out.engagement_windows if k[0] == "1h/1m")
    assert short == [T0 + 10 * S - i * 10 * S for i in range(29, -1, -1)]  # 30 windows
    assert long == [T0 - i * M for i in range(59, -1, -1)]  # 60 windows
    assert all(
        v == {"events": 1, "revenue": 0, "profiles": frozenset({"p1"})}
        for v in out.engagement_windows.values()
    )
    assert list(out.engagement_panes) == [(T, "", "Product Viewed", T0 + 10 * S)]
    assert list(out.profile_panes) == [(T, "p1", "Product Viewed", T0 + 10 * S)]


def test_window_end_is_exclusive():
    out = run([ev("e1", T0 + 5 * M)])
    starts = {k[4] for k in out.engagement_windows if k[0] == "5m/10s"}
    assert T0 not in starts  # [T0, T0 + 5m) ends just before the row
    assert T0 + 10 * S in starts and T0 + 5 * M in starts
    assert len(starts) == 30


def test_cost_row_in_540_windows():
    out = run([cost("c1", T0 + 7 * S)], allocations={"c1": [alloc("a", "1.5")]})
    assert len(out.cost_windows) == 6 * (30 + 60)
    assert len(out.cost_panes) == 6
    assert all(
        v["allocations"] == 1 and v["billed_cost"] == Decimal("1.5")
        for v in out.cost_windows.values()
    )


def test_grouping_sets_six_rows_per_allocation():
    out = run(
        [cost("c1", T0 + 25 * S, service="S3")],
        allocations={"c1": [alloc("a", "1.25", "1", "2"), alloc("b", "0.75", "0.5", "3")]},
    )
    p = T0 + 20 * S
    one_a = {
        "billed_cost": Decimal("1.25"),
        "effective_cost": Decimal("1"),
        "usage_quantity": Decimal("2"),
        "allocations": 1,
        "version": 1,
    }
    one_b = {
        "billed_cost": Decimal("0.75"),
        "effective_cost": Decimal("0.5"),
        "usage_quantity": Decimal("3"),
        "allocations": 1,
        "version": 1,
    }
    both = {
        "billed_cost": Decimal("2"),
        "effective_cost": Decimal("1.5"),
        "usage_quantity": Decimal("5"),
        "allocations": 2,
        "version": 2,
    }
    assert out.cost_panes == {
        (T, "a", "search", "cust-1", "S3", "USD", p): one_a,
        (T, "b", "search", "cust-1", "S3", "USD", p): one_b,
        (T, "*", "search", "cust-1", "S3", "USD", p): both,
        (T, "a", "*", "cust-1", "S3", "USD", p): one_a,
        (T, "b", "*", "cust-1", "S3", "USD", p): one_b,
        (T, "a", "search", "*", "S3", "USD", p): one_a,
        (T, "b", "search", "*", "S3", "USD", p): one_b,
        (T, "a", "search", "cust-1", "*", "USD", p): one_a,
        (T, "b", "search", "cust-1", "*", "USD", p): one_b,
        (T, "*", "*", "*", "*", "USD", p): both,
    }
    window = out.cost_windows[("1h/1m", T, "*", "*", "*", "*", "USD", T0)]
    assert window == {k: v for k, v in both.items() if k != "version"}


def test_unique_profiles_and_revenue():
    out = run(
        [
            ev("e1", T0 + 1 * S, "Order Completed", campaign_id="c1", revenue=Decimal("10.10")),
            ev("e2", T0 + 2 * S, "Order Completed", campaign_id="c1", revenue="5"),
            ev("e3", T0 + 3 * S, "Order Completed", campaign_id="c1", revenue=7),
            ev("e4", T0 + 4 * S, "Order Completed", campaign_id="c1"),  # no revenue, no profile
            ev("e5", T0 + 12 * S, "Order Completed", campaign_id="c1", revenue="1"),
        ],
        profiles={"e1": "p1", "e2": "p1", "e3": "p2", "e5": "p3"},
    )
    key = (T, "c1", "Order Completed", T0)
    assert out.engagement_panes[key] == {
        "events": 4,
        "revenue": Decimal("22.1"),
        "profiles": frozenset({"p1", "p2"}),
        "version": 4,
    }
    assert out.profile_panes[(T, "p1", "Order Completed", T0)] == {
        "events": 2,
        "revenue": Decimal("15.1"),
        "last_event_at": T0 + 2 * S,
        "version": 2,
    }
    assert not any(k[1] == "" for k in out.profile_panes)
    window = out.engagement_windows[("5m/10s", T, "c1", "Order Completed", T0)]
    assert window == {
        "events": 5,
        "revenue": Decimal("23.1"),
        "profiles": frozenset({"p1", "p2", "p3"}),
    }
    later = out.engagement_windows[("5m/10s", T, "c1", "Order Completed", T0 + 10 * S)]
    assert later == {"events": 1, "revenue": Decimal("1"), "profiles": frozenset({"p3"})}


def test_windows_by_slide_equal_windows_row_by_row():
    """The fast window computation (folding per slide instant) equals the literal one."""
    rng = random.Random(4)
    settings = WindowSettings(specs="1h/1m,5m/10s,90s/30s")
    specs = settings.window_specs()
    events = []
    costs = []
    for i in range(300):
        t = T0 + rng.randrange(0, 2 * H)
        doc = ev(
            f"e{i}",
            t,
            rng.choice(["Product Viewed", "Order Completed"]),
            tenant=rng.choice(["a", "b"]),
            campaign_id=rng.choice(["", "c1"]),
            revenue=Decimal(rng.randrange(-500, 5000)) / 100,
        )
        events.append(event_row(doc, rng.choice(["", "p1", "p2", "p3"]), settings))
        record = cost(f"c{i}", t, service=rng.choice(["S3", "EC2"]))
        costs += cost_rows(record, [alloc(rng.choice("xy"), str(rng.randrange(1, 999)))] * 2)
    assert engagement_windows(events, specs) == engagement_windows(events, specs, by_slide=False)
    assert cost_windows(costs, specs) == cost_windows(costs, specs, by_slide=False)


# --- live state ---------------------------------------------------------------------------------


def test_live_fields_and_versions():
    docs = [
        ev("m1", T0),
        ev("m2", T0 + 10 * M, "Order Completed", revenue="59.980", order_id="o1"),
        ev("x1", T0 + 11 * M),  # no profile: fed nowhere, no sequence number
        ev("y1", T0 + 12 * M),  # another profile
        ev("m3", T0 + 20 * M, "Product Added", price=Decimal("19.9")),
        ev("m4", T0 + 45 * M),
        ev("m6", T0 + 50 * M, "identify"),
        ev("m5", T0 + 50 * M, "page"),  # same ms: the greater message id is the last type
        ev("m7", T0 + 40 * M, "Email Opened"),  # late but within lateness: clock stays
    ]
    profiles = {m: "p1" for m in ("m1", "m2", "m3", "m4", "m5", "m6", "m7")} | {"y1": "p2"}
    out = run(docs, profiles)
    assert out.profile_live[(T, "p1")] == {
        # 30m = (00:20, 00:50]: m3 at exactly 00:20 is out
        "events:Product Viewed:30m": "1",
        "events:identify:30m": "1",
        "events:page:30m": "1",
        "events:Email Opened:30m": "1",
        "revenue:30m": "0",
        "events:Product Viewed:1h": "2",
        "events:Order Completed:1h": "1",
        "events:Product Added:1h": "1",
        "events:identify:1h": "1",
        "events:page:1h": "1",
        "events:Email Opened:1h": "1",
        "revenue:1h": "59.98",
        "last_event_at": "2026-11-01T00:50:00.000Z",
        "last_event_type": "identify",
        "cart_value": "19.9",
        "last_orders": '[{"order_id":"o1","revenue":"59.98",'
        '"event_time":"2026-11-01T00:10:00.000Z","message_id":"m2"}]',
    }
    assert out.profile_versions == {(T, "p1"): 8, (T, "p2"): 3}
    assert out.profile_live[(T, "p2")]["last_orders"] == "[]"
    assert out.profile_live[(T, "p2")]["cart_value"] == "0"


def test_cart_value_after_latest_order_and_history_horizon():
    docs = [
        ev("a1", T0 + 1 * M, "Product Added", price=10),
        ev("o1", T0 + 2 * M, "Order Completed", revenue=10),
        ev("a2", T0 + 3 * M, "Product Added", price=25),
        ev("a3", T0 + 5 * M, "Product Added", price=Decimal("5.5")),
    ]
    assert (
        run(docs, dict.fromkeys(["a1", "o1", "a2", "a3"], "p1")).profile_live[(T, "p1")][
            "cart_value"
        ]
        == "30.5"
    )
    # an order arriving out of order (event time 00:04) is still the latest order ever
    docs.append(ev("o2", T0 + 4 * M, "Order Completed"))
    out = run(docs, dict.fromkeys(["a1", "o1", "a2", "a3", "o2"], "p1"))
    assert out.profile_live[(T, "p1")]["cart_value"] == "5.5"
    # no order: every cart event still in history (clock - 1h < event_ms)
    docs = [
        ev("b1", T0, "Product Added", price=150),
        ev("b2", T0 + 30 * M, "Product Added", price=60),
        ev("b3", T0 + H, "Product Viewed"),  # clock 01:00: b1 (00:00) leaves history
    ]
    out = run(docs, dict.fromkeys(["b1", "b2", "b3"], "p1"))
    assert out.profile_live[(T, "p1")]["cart_value"] == "60"
    assert [(n["rule"], n["crossing"], n["message_id"]) for n in out.notifications[T]] == [
        ("big_cart", 1, "b2")
    ]


def test_last_orders_newest_first_capped():
    docs = [
        ev("o1", T0 - 2 * H, "Order Completed", order_id="A", revenue="10.50"),
        ev("o2", T0 + 1 * M, "Order Completed", order_id="B", revenue=7),
        ev("o4", T0 + 3 * M, "Order Completed", order_id="D"),
        ev("o3", T0 + 3 * M, "Order Completed", order_id="C", revenue=Decimal("1.000")),
        ev("o0", T0 - 1 * M, "Order Completed", order_id="E", revenue="2"),  # out of order
    ]
    profiles = dict.fromkeys(["o0", "o1", "o2", "o3", "o4"], "p1")
    out = run(docs, profiles, last_orders=3)
    assert json.loads(out.profile_live[(T, "p1")]["last_orders"]) == [
        {
            "order_id": "D",
            "revenue": None,
            "event_time": "2026-11-01T00:03:00.000Z",
            "message_id": "o4",
        },
        {
            "order_id": "C",
            "revenue": "1",
            "event_time": "2026-11-01T00:03:00.000Z",
            "message_id": "o3",
        },
        {
            "order_id": "B",
            "revenue": "7",
            "event_time": "2026-11-01T00:01:00.000Z",
            "message_id": "o2",
        },
    ]
    # orders are kept beyond the history horizon: o1 is 2 h older than the clock
    out = run(docs, profiles, last_orders=10)
    orders = json.loads(out.profile_live[(T, "p1")]["last_orders"])
    assert [o["order_id"] for o in orders] == ["D", "C", "B", "E", "A"]
    assert orders[-1] == {
        "order_id": "A",
        "revenue": "10.5",
        "event_time": "2026-10-31T22:00:00.000Z",
        "message_id": "o1",
    }


def test_team_live_and_team_cost_hour_crossings():
    docs = [
        cost("c1", T0),
        cost("c2", T0),
        cost("c3", T0 + H),
        cost("c4", T0 + H),
    ]
    allocations = {
        "c1": [alloc("checkout", "60", "50")],
        "c2": [alloc("checkout", "50", "40")],  # 110 > 100: crossing 1
        "c3": [alloc("checkout", "10", "9")],  # 1h = (00:00, 01:00]: 10, stops holding
        "c4": [alloc("checkout", "95.5", "90"), alloc("search", "200")],  # 105.5: crossing 2
    }
    out = run(docs, allocations=allocations)
    assert out.notifications[T] == [
        {
            "tenant_id": T,
            "rule": "team_cost_hour",
            "entity_type": "team",
            "entity_id": "checkout|USD",
            "crossing": 1,
            "event_time": "2026-11-01T00:00:00.000Z",
            "message_id": "c2",
            "values": {"sum:billed_cost:1h": "110"},
        },
        {
            "tenant_id": T,
            "rule": "team_cost_hour",
            "entity_type": "team",
            "entity_id": "checkout|USD",
            "crossing": 2,
            "event_time": "2026-11-01T01:00:00.000Z",
            "message_id": "c4",
            "values": {"sum:billed_cost:1h": "105.5"},
        },
        {
            "tenant_id": T,
            "rule": "team_cost_hour",
            "entity_type": "team",
            "entity_id": "search|USD",
            "crossing": 1,
            "event_time": "2026-11-01T01:00:00.000Z",
            "message_id": "c4",
            "values": {"sum:billed_cost:1h": "200"},
        },
    ]
    assert out.team_live[(T, "checkout", "USD")] == {
        "billed_cost:30m": "105.5",
        "effective_cost:30m": "99",
        "billed_cost:1h": "105.5",
        "effective_cost:1h": "99",
    }
    assert out.team_versions == {(T, "checkout", "USD"): 4, (T, "search", "USD"): 5}


# --- triggers -----------------------------------------------------------------------------------


def test_browse_abandon_crosses_twice_with_an_order_in_between():
    views = [ev(f"v{i}", T0 + i * S) for i in range(1, 6)]  # 4th view crosses, 5th holds
    order = [ev("o1", T0 + 6 * S, "Order Completed", revenue=1)]  # stops holding
    later = [ev(f"w{i}", T0 + 31 * M + i * S) for i in range(1, 5)]  # order out of 30m
    docs = views + order + later
    out = run(docs, {d["message_id"]: "p1" for d in docs})
    assert out.notifications == {
        T: [
            {
                "tenant_id": T,
                "rule": "browse_abandon",
                "entity_type": "profile",
                "entity_id": "p1",
                "crossing": 1,
                "event_time": "2026-11-01T00:00:04.000Z",
                "message_id": "v4",
                "values": {"count:Product Viewed:30m": "4", "count:Order Completed:30m": "0"},
            },
            {
                "tenant_id": T,
                "rule": "browse_abandon",
                "entity_type": "profile",
                "entity_id": "p1",
                "crossing": 2,
                "event_time": "2026-11-01T00:31:04.000Z",
                "message_id": "w4",
                "values": {"count:Product Viewed:30m": "4", "count:Order Completed:30m": "0"},
            },
        ]
    }


def test_big_cart_crosses_again_after_the_cart_drops():
    docs = [
        ev("b1", T0, "Product Added", price=150),
        ev("b2", T0 + 30 * M, "Product Added", price=60),  # 210: crossing 1
        ev("b3", T0 + H, "Product Viewed"),  # b1 leaves history: 60
        ev("b4", T0 + H + S, "Product Added", price=Decimal("140.01")),  # 200.01: crossing 2
    ]
    out = run(docs, dict.fromkeys(["b1", "b2", "b3", "b4"], "p1"))
    got = [(n["crossing"], n["message_id"], n["values"]) for n in out.notifications[T]]
    assert got == [(1, "b2", {"cart_value": "210"}), (2, "b4", {"cart_value": "200.01"})]


def test_custom_rule_sum_with_event_filter():
    triggers = {
        "big_spender": {
            "entity": "profile",
            "when": [
                {
                    "metric": "sum",
                    "field": "revenue",
                    "event": "Order Completed",
                    "window": "1h",
                    "op": ">=",
                    "value": "100",
                }
            ],
        }
    }
    docs = [
        ev("o1", T0, "Order Completed", revenue=60),
        ev("r1", T0 + S, "Email Opened", revenue=60),  # not an order: not summed
        ev("o2", T0 + 2 * S, "Order Completed", revenue=40),
    ]
    out = run(docs, dict.fromkeys(["o1", "r1", "o2"], "p1"), triggers=triggers)
    assert [(n["message_id"], n["values"]) for n in out.notifications[T]] == [
        ("o2", {"sum:revenue:Order Completed:1h": "100"})
    ]
