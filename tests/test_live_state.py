"""Live state and triggers (udfs/live_state.py, udfs/triggers.py), without Flink.

The store is a dict; `PickledStore` pickles every value on save and unpickles on load, as the
job's MapState of PICKLED_BYTE_ARRAY does, so state that does not survive pickling fails here.
"""

from __future__ import annotations

import pickle
import random
from decimal import Decimal

import orjson
import pytest

from udfs.live_state import (
    LiveCost,
    LiveEngine,
    LiveEvent,
    LiveSettings,
    iso_ms,
    profile_key,
    sequence_key,
    team_key,
)
from udfs.triggers import DEFAULT_RULES, decimal_text, duration_ms, parse_rules

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20.000Z
MIN = 60_000
VIEW, ADD, ORDER = "Product Viewed", "Product Added", "Order Completed"


class DictStore:
    def __init__(self) -> None:
        self.data: dict = {}

    def load(self, key):
        return self.data.get(key)

    def save(self, key, value) -> None:
        self.data[key] = value


class PickledStore(DictStore):
    def load(self, key):
        raw = self.data.get(key)
        return pickle.loads(raw) if raw is not None else None

    def save(self, key, value) -> None:
        self.data[key] = pickle.dumps(value)


def ev(profile, kind, ms, msg, revenue=None, value=None, order_id="", tenant="acme"):
    dec = lambda x: Decimal(str(x)) if x is not None else None  # noqa: E731
    return LiveEvent(tenant, profile, kind, ms, msg, dec(revenue), dec(value), order_id)


def cost(team, currency, ms, msg, billed, effective=None, tenant="acme", index=0):
    effective = billed if effective is None else effective
    return LiveCost(
        tenant, team, currency, ms, msg, index, Decimal(str(billed)), Decimal(str(effective))
    )


def engine(store=None, **live) -> LiveEngine:
    live.setdefault("triggers", {name: None for name in DEFAULT_RULES})  # no rules unless asked
    return LiveEngine(LiveSettings.from_mapping(live), store if store is not None else DictStore())


def only_profile(payload) -> dict:
    [snapshot] = payload["profiles"]
    return snapshot["fields"]


# -- windows and fields


def test_sliding_window_counts_follow_the_profile_clock():
    eng = engine()
    eng.apply_batch([ev("p1", VIEW, T0, "m1"), ev("p1", VIEW, T0 + 10 * MIN, "m2")], [])
    fields = only_profile(eng.apply_batch([ev("p1", "page", T0 + 35 * MIN, "m3")], []))
    # clock T0+35m: 30m window is (T0+5m, T0+35m], 1h window holds all three
    assert fields["events:Product Viewed:30m"] == "1"
    assert fields["events:Product Viewed:1h"] == "2"
    assert fields["events:page:30m"] == "1"
    fields = only_profile(eng.apply_batch([ev("p1", "page", T0 + 61 * MIN, "m4")], []))
    assert "events:Product Viewed:30m" not in fields  # only non-zero counts
    assert fields["events:Product Viewed:1h"] == "1"  # T0 fell out, T0+10m still in
    assert fields["events:page:30m"] == "2"
    assert fields["last_event_at"] == iso_ms(T0 + 61 * MIN) == "2023-11-14T23:14:20.000Z"
    assert fields["last_event_type"] == "page"


def test_window_bounds_are_open_at_the_start_and_closed_at_the_clock():
    eng = engine()
    fields = only_profile(
        eng.apply_batch([ev("p1", VIEW, T0, "m1"), ev("p1", VIEW, T0 + 30 * MIN, "m2")], [])
    )
    assert fields["events:Product Viewed:30m"] == "1"  # T0 == clock - 30m is out
    assert fields["events:Product Viewed:1h"] == "2"


def test_late_events_count_inside_the_window_and_not_outside():
    eng = engine()
    eng.apply_batch([ev("p1", VIEW, T0 + 60 * MIN, "m1")], [])
    fields = only_profile(
        eng.apply_batch(
            [
                ev("p1", VIEW, T0 + 45 * MIN, "late-in-30m"),
                ev("p1", VIEW, T0 + 20 * MIN, "late-in-1h"),
                ev("p1", VIEW, T0 - 5 * MIN, "late-out", revenue=7),
            ],
            [],
        )
    )
    assert fields["events:Product Viewed:30m"] == "2"
    assert fields["events:Product Viewed:1h"] == "3"
    assert fields["revenue:1h"] == "0"
    assert fields["last_event_at"] == iso_ms(T0 + 60 * MIN)  # late rows never move the clock
    assert fields["last_event_type"] == VIEW


def test_revenue_sums_are_exact_decimal_text():
    eng = engine()
    fields = only_profile(
        eng.apply_batch(
            [
                ev("p1", ORDER, T0, "m1", revenue="10.10"),
                ev("p1", ORDER, T0 + 40 * MIN, "m2", revenue="0.20"),
                ev("p1", "page", T0 + 41 * MIN, "m3"),
                ev("p1", ORDER, T0 + 42 * MIN, "m4", revenue="12345678901234567890.123456"),
            ],
            [],
        )
    )
    assert fields["revenue:30m"] == "12345678901234567890.323456"  # no rounding at 28 digits
    assert fields["revenue:1h"] == "12345678901234567900.423456"


def test_decimal_text_and_iso_ms():
    assert decimal_text(Decimal("1.500")) == "1.5"
    assert decimal_text(Decimal("1E+3")) == "1000"
    assert decimal_text(Decimal("0.000")) == "0"
    assert decimal_text(Decimal("-0")) == "0"
    assert decimal_text(Decimal("-2.50")) == "-2.5"
    assert decimal_text(0) == "0"
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert iso_ms(T0 + 7) == "2023-11-14T22:13:20.007Z"


def test_cart_value_is_reset_by_an_order_and_limited_to_history():
    eng = engine()
    fields = only_profile(
        eng.apply_batch(
            [ev("p1", ADD, T0, "a1", value=50), ev("p1", ADD, T0 + 1, "a2", value=25.5)], []
        )
    )
    assert fields["cart_value"] == "75.5"
    fields = only_profile(eng.apply_batch([ev("p1", ORDER, T0 + 2, "o1", revenue=75.5)], []))
    assert fields["cart_value"] == "0"
    fields = only_profile(eng.apply_batch([ev("p1", ADD, T0 + 3, "a3", value=9)], []))
    assert fields["cart_value"] == "9"
    # an older order arriving late does not reset anything newer than the latest order
    fields = only_profile(eng.apply_batch([ev("p1", ORDER, T0 - 5, "o0")], []))
    assert fields["cart_value"] == "9"
    # a cart event older than the latest order does not count
    fields = only_profile(eng.apply_batch([ev("p1", ADD, T0 + 1, "a-late", value=100)], []))
    assert fields["cart_value"] == "9"
    # history is the last hour (the largest window): the cart row falls out with the clock
    fields = only_profile(eng.apply_batch([ev("p1", ADD, T0 + 3 + 60 * MIN, "a4", value=1)], []))
    assert fields["cart_value"] == "1"


def test_cart_value_without_any_order_sums_all_cart_rows_in_history():
    eng = engine()
    eng.apply_batch([ev("p1", ADD, T0, "a1", value=10), ev("p1", "page", T0 + 50 * MIN, "x")], [])
    fields = only_profile(eng.apply_batch([ev("p1", ADD, T0 + 59 * MIN, "a2", value=1)], []))
    assert fields["cart_value"] == "11"
    assert fields["events:Product Added:30m"] == "1"


def test_last_orders_newest_first_limited_and_tie_broken_by_message_id():
    eng = engine(last_orders=3)
    rows = [
        ev("p1", ORDER, T0 + 5, "m-b", revenue="1.50", order_id="o2"),
        ev("p1", ORDER, T0 + 5, "m-c", revenue=2, order_id="o3"),
        ev("p1", ORDER, T0 + 1, "m-a", order_id="o1"),
        ev("p1", ORDER, T0 + 9, "m-d", revenue=4, order_id="o4"),
        ev("p1", ORDER, T0 + 3, "m-e", revenue=5, order_id="o5"),  # older than the top 3
    ]
    fields = only_profile(eng.apply_batch(rows, []))
    orders = orjson.loads(fields["last_orders"])
    assert [o["order_id"] for o in orders] == ["o4", "o3", "o2"]
    assert orders[0] == {
        "order_id": "o4",
        "revenue": "4",
        "event_time": iso_ms(T0 + 9),
        "message_id": "m-d",
    }
    assert orders[2]["revenue"] == "1.5"
    assert fields["last_orders"].startswith('[{"order_id":"o4","revenue":"4","event_time"')


def test_last_orders_keeps_orders_older_than_history_and_empty_is_a_list():
    eng = engine(last_orders=2)
    fields = only_profile(eng.apply_batch([ev("p1", "page", T0 + 120 * MIN, "x")], []))
    assert fields["last_orders"] == "[]" and fields["cart_value"] == "0"
    fields = only_profile(eng.apply_batch([ev("p1", ORDER, T0, "o", order_id="old")], []))
    assert [o["order_id"] for o in orjson.loads(fields["last_orders"])] == ["old"]
    assert "events:Order Completed:1h" not in fields  # but it is in no window


def test_last_event_type_is_that_of_the_greatest_time_then_message_id():
    eng = engine()
    fields = only_profile(
        eng.apply_batch([ev("p1", "page", T0, "m2"), ev("p1", "screen", T0, "m1")], [])
    )
    assert fields["last_event_type"] == "page"
    fields = only_profile(eng.apply_batch([ev("p1", "identify", T0, "m3")], []))
    assert fields["last_event_type"] == "identify"


def test_events_without_a_profile_are_skipped_and_not_sequenced():
    store = DictStore()
    eng = engine(store)
    payload = eng.apply_batch([ev("", VIEW, T0, "m1"), ev("p1", VIEW, T0, "m2")], [])
    assert [p["version"] for p in payload["profiles"]] == [1]
    assert store.data[sequence_key("acme")] == 1


def test_team_sums_per_currency_and_window():
    eng = engine()
    payload = eng.apply_batch(
        [],
        [
            cost("core", "USD", T0, "c1", "10.5", "9"),
            cost("core", "EUR", T0, "c2", 3),
            cost("core", "USD", T0 + 40 * MIN, "c3", "1.25", "1"),
            cost("core", "USD", T0 + 10 * MIN, "c4", 2, index=1),  # late, inside 1h only
        ],
    )
    teams = {(t["team"], t["currency"]): t for t in payload["teams"]}
    assert list(teams) == [("core", "USD"), ("core", "EUR")]  # order of first touch
    assert teams["core", "USD"]["fields"] == {
        "billed_cost:30m": "1.25",
        "effective_cost:30m": "1",
        "billed_cost:1h": "13.75",
        "effective_cost:1h": "12",
    }
    assert teams["core", "EUR"]["fields"]["billed_cost:1h"] == "3"
    assert teams["core", "USD"]["tenant_id"] == "acme"


# -- versions


def test_versions_are_the_tenants_live_sequence_per_family_across_batches():
    store = DictStore()
    eng = engine(store)
    payload = eng.apply_batch(
        [
            ev("p1", VIEW, T0, "m1"),
            ev("p2", VIEW, T0, "m2"),
            ev("q1", VIEW, T0, "m3", tenant="globex"),
            ev("p1", VIEW, T0 + 1, "m4"),
        ],
        [cost("core", "USD", T0, "c1", 1)],
    )
    versions = {(p["tenant_id"], p["profile_id"]): p["version"] for p in payload["profiles"]}
    assert versions == {("acme", "p1"): 3, ("acme", "p2"): 2, ("globex", "q1"): 1}
    assert payload["teams"][0]["version"] == 1  # cost rows have their own sequence
    payload = eng.apply_batch([ev("p2", VIEW, T0 + 2, "m5")], [cost("core", "USD", T0, "c2", 1)])
    assert payload["profiles"][0]["version"] == 4
    assert payload["teams"][0]["version"] == 2
    assert store.data[sequence_key("acme")] == 4 and store.data[sequence_key("globex")] == 1
    assert profile_key("acme", "p1") in store.data
    assert team_key("acme", "core", "USD") in store.data


# -- triggers


def views(profile, start_ms, n, prefix="v"):
    return [ev(profile, VIEW, start_ms + i, f"{prefix}{i}") for i in range(n)]


def test_browse_abandon_crosses_once_then_again_after_an_order_unholds_it():
    eng = engine(triggers={})  # the defaults
    payload = eng.apply_batch(views("p1", T0, 6), [])
    [note] = payload["notifications"]
    assert note == {
        "tenant_id": "acme",
        "rule": "browse_abandon",
        "entity_type": "profile",
        "entity_id": "p1",
        "crossing": 1,
        "event_time": iso_ms(T0 + 3),
        "message_id": "v3",  # the 4th view: count > 3
        "values": {"count:Product Viewed:30m": "4", "count:Order Completed:30m": "0"},
    }
    assert eng.apply_batch(views("p1", T0 + 10, 3, "w"), [])["notifications"] == []  # holding
    # an order un-holds it; once it is more than 30 minutes old, more views cross again
    assert eng.apply_batch([ev("p1", ORDER, T0 + 20, "o1")], [])["notifications"] == []
    assert eng.apply_batch(views("p1", T0 + 10 * MIN, 5, "x"), [])["notifications"] == []
    payload = eng.apply_batch(views("p1", T0 + 31 * MIN, 1, "y"), [])
    [note] = payload["notifications"]
    assert (note["crossing"], note["message_id"]) == (2, "y0")
    assert note["values"] == {"count:Product Viewed:30m": "6", "count:Order Completed:30m": "0"}


def test_rules_are_judged_after_each_row_not_at_the_end_of_the_batch():
    eng = engine(triggers={})
    # it holds after the 4th view and stops holding at the order, all inside one batch
    rows = [*views("p1", T0, 4), ev("p1", ORDER, T0 + 10, "o1")]
    payload = eng.apply_batch(rows, [])
    assert [n["message_id"] for n in payload["notifications"]] == ["v3"]


def test_big_cart_crossing_values_and_reset_by_order():
    eng = engine(triggers={"browse_abandon": None, "team_cost_hour": None})
    rows = [
        ev("p1", ADD, T0, "a1", value=150),
        ev("p1", ADD, T0 + 1, "a2", value="50.00"),  # 200: not > 200
        ev("p1", ADD, T0 + 2, "a3", value="0.01"),
        ev("p1", ADD, T0 + 3, "a4", value=10),  # still holding
        ev("p1", ORDER, T0 + 4, "o1"),  # cart 0: un-holds
        ev("p1", ADD, T0 + 5, "a5", value=201),
    ]
    notes = eng.apply_batch(rows, [])["notifications"]
    assert [(n["rule"], n["crossing"], n["message_id"]) for n in notes] == [
        ("big_cart", 1, "a3"),
        ("big_cart", 2, "a5"),
    ]
    assert notes[0]["values"] == {"cart_value": "200.01"}


def test_team_cost_hour_crosses_per_team_and_currency():
    eng = engine(triggers={"browse_abandon": None, "big_cart": None})
    payload = eng.apply_batch(
        [ev("p1", ADD, T0, "a1", value=1000)],  # profile rows never judge team rules
        [
            cost("core", "USD", T0, "c1", 60),
            cost("core", "EUR", T0, "c2", 200),
            cost("core", "USD", T0 + 30 * MIN, "c3", "40.000001", index=2),
            cost("core", "USD", T0 + 31 * MIN, "c4", 5),
        ],
    )
    notes = payload["notifications"]
    assert [(n["entity_id"], n["message_id"], n["crossing"]) for n in notes] == [
        ("core|EUR", "c2", 1),
        ("core|USD", "c3", 1),
    ]
    assert notes[1]["entity_type"] == "team"
    assert notes[1]["values"] == {"sum:billed_cost:1h": "100.000001"}
    assert notes[1]["event_time"] == iso_ms(T0 + 30 * MIN)
    # the hour slides past the first 60: no longer holding; back above 100 crosses again
    payload = eng.apply_batch([], [cost("core", "USD", T0 + 61 * MIN, "c5", 1)])
    assert payload["notifications"] == []
    payload = eng.apply_batch([], [cost("core", "USD", T0 + 62 * MIN, "c6", 60)])
    assert [(n["entity_id"], n["crossing"]) for n in payload["notifications"]] == [("core|USD", 2)]


def test_a_sum_rule_with_an_event_filter_and_a_longer_window_than_the_live_ones():
    rules = {
        "whale": {
            "entity": "profile",
            "when": [
                {
                    "metric": "sum",
                    "field": "revenue",
                    "event": ORDER,
                    "window": "1d",
                    "op": ">=",
                    "value": 100,
                }
            ],
        }
    }
    eng = engine(triggers={**{n: None for n in DEFAULT_RULES}, **rules})
    assert eng.horizon == 86_400_000
    rows = [
        ev("p1", ORDER, T0, "o1", revenue=60),
        ev("p1", "refund", T0 + 1, "r1", revenue=100),  # not an order: not summed
        ev("p1", ORDER, T0 + 5 * 3_600_000, "o2", revenue=40),
    ]
    [note] = eng.apply_batch(rows, [])["notifications"]
    assert note["message_id"] == "o2"
    assert note["values"] == {"sum:revenue:Order Completed:1d": "100"}


# -- determinism and state


def mixed_rows():
    events = [
        *views("p1", T0, 5),
        ev("p2", ADD, T0 + 1, "a1", value=300),
        ev("p1", ORDER, T0 + 2 * MIN, "o1", revenue="9.99", order_id="A"),
        ev("p1", VIEW, T0 - 1, "late"),
        ev("q1", VIEW, T0, "g1", tenant="globex"),
        *views("p1", T0 + 40 * MIN, 4, "x"),
        ev("p2", ORDER, T0 + 3 * MIN, "o2", order_id="B"),
        ev("p2", ADD, T0 + 4 * MIN, "a2", value=250),
    ]
    costs = [
        cost("core", "USD", T0, "c1", 70),
        cost("core", "USD", T0 + 10 * MIN, "c2", 40),
        cost("ml", "USD", T0, "c3", "0.5"),
        cost("core", "USD", T0 + 75 * MIN, "c4", 101),
    ]
    return events, costs


def run(batches, store) -> tuple[dict, dict, list]:
    eng = engine(store, triggers={})
    profiles, teams, notes = {}, {}, []
    for events, costs in batches:
        payload = eng.apply_batch(events, costs)
        for p in payload["profiles"]:
            profiles[p["tenant_id"], p["profile_id"]] = p
        for t in payload["teams"]:
            teams[t["tenant_id"], t["team"], t["currency"]] = t
        notes.extend(payload["notifications"])
    return profiles, teams, notes


def test_the_same_rows_in_other_batchings_give_the_same_snapshots_and_notifications():
    events, costs = mixed_rows()
    whole = run([(events, costs)], DictStore())
    # cuts keep the sequence order (events of a batch before its costs) so versions agree too
    one_by_one = run([*(([e], []) for e in events), *(([], [c]) for c in costs)], DictStore())
    uneven = run([(events[:3], []), (events[3:11], []), (events[11:], costs[:1]), ([], costs[1:])],
                 PickledStore())  # fmt: skip
    assert whole == one_by_one == uneven
    profiles, teams, notes = whole
    assert profiles["acme", "p2"]["fields"]["cart_value"] == "250"
    assert profiles["acme", "p1"]["version"] == 12  # its last row, the 12th of acme
    assert teams["acme", "core", "USD"]["fields"]["billed_cost:1h"] == "101"
    assert [(n["rule"], n["entity_id"], n["crossing"]) for n in notes] == [
        ("browse_abandon", "p1", 1),
        ("big_cart", "p2", 1),
        ("browse_abandon", "p1", 2),
        ("big_cart", "p2", 2),
        ("team_cost_hour", "core|USD", 1),
    ]


def test_state_survives_a_pickle_round_trip_of_the_store_values():
    events, costs = mixed_rows()
    plain, pickled = DictStore(), PickledStore()
    assert run([(events[:7], costs[:2])], plain) == run([(events[:7], costs[:2])], pickled)
    assert all(isinstance(v, bytes) for v in pickled.data.values())
    assert run([(events[7:], costs[2:])], plain) == run([(events[7:], costs[2:])], pickled)
    state = pickle.loads(pickled.data[profile_key("acme", "p1")])
    assert state.triggers == {"browse_abandon": (True, 2)}
    assert all(row[0] > state.clock - 3_600_000 for row in state.history)  # pruned to horizon


# -- settings and rule parsing


def test_settings_defaults_and_config_shapes():
    s = LiveSettings.from_mapping({})
    assert s.windows == (("30m", 1_800_000), ("1h", 3_600_000))
    assert (s.last_orders, s.order_event, s.cart_event) == (10, ORDER, ADD)
    assert [r.rule_id for r in s.rules] == ["browse_abandon", "big_cart", "team_cost_hour"]
    config_shape = {"windows": "10s, 1d", "triggers": {}, "ttl_seconds": 1, "stream_maxlen": 2}
    s = LiveSettings.from_mapping(config_shape)
    assert s.windows == (("10s", 10_000), ("1d", 86_400_000))
    assert len(s.rules) == 3
    s = LiveSettings.from_mapping({"triggers": {"big_cart": None}})
    assert [r.rule_id for r in s.rules] == ["browse_abandon", "team_cost_hour"]


def test_duration_ms():
    assert [duration_ms(t) for t in ("10s", "30m", "1h", "1d")] == [
        10_000,
        1_800_000,
        3_600_000,
        86_400_000,
    ]
    for bad in ("", "0m", "1.5h", "1 h", "1w", "h", 5):
        with pytest.raises(ValueError):
            duration_ms(bad)


def test_default_rules_parse():
    rules = parse_rules(DEFAULT_RULES)
    assert [c.label for r in rules for c in r.when] == [
        "count:Product Viewed:30m",
        "count:Order Completed:30m",
        "cart_value",
        "sum:billed_cost:1h",
    ]


def rule_with(condition: dict, entity: str = "profile") -> dict:
    return {"big_cart": {"entity": entity, "when": [condition]}}


CART = {"metric": "cart_value", "op": ">", "value": 200}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            rule_with({**CART, "op": "=>"}),
            "live.triggers.big_cart.when[0].op: unknown operator '=>'",
        ),
        (
            rule_with({**CART, "value": "lots"}),
            "live.triggers.big_cart.when[0].value: expected a number",
        ),
        (
            rule_with({**CART, "value": True}),
            "live.triggers.big_cart.when[0].value: expected a number",
        ),
        (
            rule_with({**CART, "metric": "avg"}),
            "live.triggers.big_cart.when[0].metric: expected one of",
        ),
        (rule_with({**CART, "window": "1h"}), "live.triggers.big_cart.when[0].window: unknown key"),
        (
            rule_with(CART, entity="team"),
            "live.triggers.big_cart.when[0].metric: expected one of sum",
        ),
        (rule_with(CART, entity="user"), "live.triggers.big_cart.entity: expected one of"),
        (
            rule_with({"metric": "count", "event": VIEW, "window": "5x", "op": ">", "value": 1}),
            "live.triggers.big_cart.when[0].window: invalid duration '5x'",
        ),
        (
            rule_with({"metric": "count", "window": "5m", "op": ">", "value": 1}),
            "live.triggers.big_cart.when[0].event: required for metric count",
        ),
        (
            rule_with(
                {"metric": "sum", "field": "billed_cost", "window": "1h", "op": ">", "value": 1}
            ),
            "live.triggers.big_cart.when[0].field: expected one of revenue, value",
        ),
        (
            rule_with(
                {
                    "metric": "sum",
                    "field": "billed_cost",
                    "event": VIEW,
                    "window": "1h",
                    "op": ">",
                    "value": 1,
                },
                entity="team",
            ),
            "live.triggers.big_cart.when[0].event: team sums have no event filter",
        ),
        (
            {"big_cart": {"entity": "profile", "when": []}},
            "live.triggers.big_cart.when: expected a non-empty",
        ),
        (
            {"big_cart": {"entity": "profile", "when": [CART], "if": 1}},
            "live.triggers.big_cart.if: unknown key",
        ),
        ({"big_cart": "yes"}, "live.triggers.big_cart: expected a mapping"),
        ({"a|b": {"entity": "profile", "when": [CART]}}, "live.triggers: rule id 'a|b'"),
    ],
)
def test_rule_errors_name_the_key(rules, message):
    with pytest.raises(ValueError) as caught:
        parse_rules(rules)
    assert str(caught.value).startswith(message), str(caught.value)


def test_settings_errors_name_the_key():
    with pytest.raises(ValueError, match=r"^live\.windows\[1\]: invalid duration '2y'"):
        LiveSettings.from_mapping({"windows": ["1h", "2y"]})
    with pytest.raises(ValueError, match=r"^live\.last_orders: "):
        LiveSettings.from_mapping({"last_orders": -1})
    with pytest.raises(ValueError, match=r"^live\.triggers\.big_cart\.when\[0\]\.op: "):
        LiveSettings.from_mapping({"triggers": rule_with({**CART, "op": "~"})})


# -- the incremental aggregates against a brute-force reading of the spec


def test_random_rows_match_a_brute_force_reading_of_the_spec():
    rng = random.Random(4)
    kinds = [VIEW, VIEW, "page", ADD, ORDER]
    fed: dict[str, list] = {}
    eng = engine(PickledStore(), last_orders=3)
    horizon = eng.horizon
    for batch in range(60):
        rows = []
        for i in range(rng.randrange(1, 40)):
            profile = f"p{rng.randrange(4)}"
            kind = rng.choice(kinds)
            clock = max((r.event_ms for r in fed.get(profile, [])), default=T0)
            ms = clock + rng.randrange(-80 * MIN, 10 * MIN)  # many late, some beyond history
            revenue = rng.choice([None, "1.5", "0.25", "100"]) if kind == ORDER else None
            value = rng.choice([None, "19.99", "5"]) if kind == ADD else None
            row = ev(profile, kind, ms, f"m{batch:03d}-{i:02d}", revenue, value, f"o{i}")
            rows.append(row)
            fed.setdefault(profile, []).append(row)
        for snapshot in eng.apply_batch(rows, [])["profiles"]:
            all_rows = fed[snapshot["profile_id"]]
            clock = max(r.event_ms for r in all_rows)
            expected = {}
            for name, size in eng.settings.windows:
                inside = [r for r in all_rows if r.event_ms > clock - size]
                for kind in sorted({r.event_type for r in inside}):
                    count = sum(r.event_type == kind for r in inside)
                    expected[f"events:{kind}:{name}"] = str(count)
                revenue = sum((r.revenue for r in inside if r.revenue is not None), Decimal(0))
                expected[f"revenue:{name}"] = decimal_text(revenue)
            last = max(all_rows, key=lambda r: (r.event_ms, r.message_id))
            expected["last_event_at"] = iso_ms(clock)
            expected["last_event_type"] = last.event_type
            orders = [r for r in all_rows if r.event_type == ORDER]
            after = max((r.event_ms for r in orders), default=None)
            cart = [
                r.value
                for r in all_rows
                if r.event_type == ADD
                and r.value is not None
                and r.event_ms > clock - horizon
                and (after is None or r.event_ms > after)
            ]
            expected["cart_value"] = decimal_text(sum(cart, Decimal(0)))
            newest = sorted(orders, key=lambda r: (r.event_ms, r.message_id), reverse=True)[:3]
            expected["last_orders"] = orjson.dumps(
                [
                    {
                        "order_id": r.order_id,
                        "revenue": decimal_text(r.revenue) if r.revenue is not None else None,
                        "event_time": iso_ms(r.event_ms),
                        "message_id": r.message_id,
                    }
                    for r in newest
                ]
            ).decode()
            assert snapshot["fields"] == expected


def test_random_costs_match_a_brute_force_sum_and_a_rebuild():
    rng = random.Random(7)
    store = PickledStore()
    eng = engine(store)
    fed: dict[tuple, list] = {}
    for batch in range(40):
        rows = []
        for i in range(rng.randrange(1, 30)):
            team, currency = rng.choice(["a", "b"]), rng.choice(["USD", "EUR"])
            clock = max((c.usage_ms for c in fed.get((team, currency), [])), default=T0)
            ms = clock + rng.randrange(-70 * MIN, 15 * MIN)
            amount = Decimal(rng.randrange(-500, 100_000)) / 1000
            row = cost(team, currency, ms, f"c{batch}-{i}", amount, amount / 2)
            rows.append(row)
            fed.setdefault((team, currency), []).append(row)
        for snapshot in eng.apply_batch([], rows)["teams"]:
            all_rows = fed[snapshot["team"], snapshot["currency"]]
            clock = max(c.usage_ms for c in all_rows)
            for name, size in eng.settings.windows:
                inside = [c for c in all_rows if c.usage_ms > clock - size]
                billed = sum((c.billed for c in inside), Decimal(0))
                effective = sum((c.effective for c in inside), Decimal(0))
                assert snapshot["fields"][f"billed_cost:{name}"] == decimal_text(billed)
                assert snapshot["fields"][f"effective_cost:{name}"] == decimal_text(effective)
    state = store.load(team_key("acme", "a", "USD"))
    windows = {size: list(sums) for size, sums in state.windows.items()}
    state.rebuild(state.basis)
    assert state.windows == windows


def test_state_built_for_other_settings_is_rebuilt_on_load():
    store = DictStore()
    engine(store).apply_batch(
        [ev("p1", VIEW, T0, "m1"), ev("p1", VIEW, T0 + 20 * MIN, "m2")],
        [cost("core", "USD", T0, "c1", 5)],
    )
    eng = engine(store, windows=["10m", "1h"])
    payload = eng.apply_batch([ev("p1", "page", T0 + 21 * MIN, "m3")], [])
    fields = payload["profiles"][0]["fields"]
    assert fields["events:Product Viewed:10m"] == "1" and fields["events:Product Viewed:1h"] == "2"
    payload = eng.apply_batch([], [cost("core", "USD", T0 + 5 * MIN, "c2", 1)])
    assert payload["teams"][0]["fields"]["billed_cost:10m"] == "6"
