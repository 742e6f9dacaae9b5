"""Window specs, event clocks and the pane fold: fast unit tests of the window stage's parts.

Sliding assignment, partial values then the final one, late rows within and beyond the
allowed lateness, a quiet tenant beside a busy one, several tenants at once. (The views that
turn panes into windows are tested against the real engine in test_window_views.py, the
whole stage end to end in test_profile_e2e.py.)
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from udfs.cached_state import CachedMap, MemoryMapState
from udfs.event_clock import EventClocks, Lateness
from udfs.panes import COST_PANES, ENGAGEMENT_PANES, PROFILE_PANES, Panes, cost_grouping_sets
from udfs.window_specs import WindowSpec, pane_ms, pane_start, parse_spec, parse_specs

T0 = 1_793_491_200_000  # 2026-11-01T00:00:00Z
SECOND, MINUTE = 1_000, 60_000


# -- specs and sliding assignment


def test_specs_parse_and_share_the_gcd_of_their_slides_as_pane():
    specs = parse_specs("1h/1m, 5m/10s")
    assert specs == (WindowSpec("1h/1m", 3_600_000, 60_000), WindowSpec("5m/10s", 300_000, 10_000))
    assert pane_ms(specs) == 10_000
    assert pane_ms(parse_specs("1h/15m,12m/6m")) == 3 * MINUTE


@pytest.mark.parametrize(
    ("text", "message"),
    [("1h", "expected size/slide"), ("1h/7m", "multiple of the slide"), ("0m/1m", "positive"),
     ("1h/1x", "1x"), ("1h/1m,1h/1m", "duplicate")],
)  # fmt: skip
def test_bad_specs_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_specs(text)


def test_a_row_lies_in_size_over_slide_windows_of_each_spec():
    at = T0 + 4 * MINUTE + 55 * SECOND  # the last 10 s of the 5-minute window from T0
    five = parse_spec("5m/10s").windows_of(at)
    hour = parse_spec("1h/1m").windows_of(at)
    assert len(five) == 30 and len(hour) == 60
    assert five[0] == T0 and five[-1] == T0 + 4 * MINUTE + 50 * SECOND
    assert all(start <= at < start + 5 * MINUTE for start in five)
    assert hour[-1] == T0 + 4 * MINUTE and hour[0] == T0 + 4 * MINUTE - 59 * MINUTE
    # the window end is exclusive: a row at T0 + 5m is not in the window starting at T0
    assert T0 not in parse_spec("5m/10s").windows_of(T0 + 5 * MINUTE)


def test_pane_start_floors_also_before_1970():
    assert pane_start(T0 + 12_345, 10_000) == T0 + 10_000
    assert pane_start(-1, 10_000) == -10_000


# -- event clocks: lateness per tenant and family


def clocks(out_of_orderness=5 * SECOND, allowed=MINUTE) -> EventClocks:
    return EventClocks(CachedMap(MemoryMapState(), 1_000), Lateness(out_of_orderness, allowed))


def test_late_within_the_allowed_lateness_counts_and_beyond_is_refused_with_its_watermark():
    c = clocks()
    assert c.observe("acme", "events", T0 + 10 * MINUTE) is None  # first row: clock set
    watermark = T0 + 10 * MINUTE - 5 * SECOND
    assert c.observe("acme", "events", watermark - MINUTE) is None  # exactly at the limit
    assert c.observe("acme", "events", watermark - MINUTE - 1) == watermark  # beyond
    assert c.observe("acme", "events", T0) == watermark  # far beyond
    assert c.end_batch() == {("acme", "events"): T0 + 10 * MINUTE}  # late rows never move it


def test_clocks_are_per_tenant_and_family_so_a_quiet_tenant_holds_back_no_one():
    c = clocks()
    c.observe("acme", "events", T0 + 60 * MINUTE)
    # globex has been quiet for an hour of acme's time: its rows are judged by its own clock
    assert c.observe("globex", "events", T0) is None
    assert c.observe("globex", "events", T0 + SECOND) is None
    # cost rows run an hour behind the events of the same tenant, on their own clock
    assert c.observe("acme", "cost", T0 - 60 * MINUTE) is None
    assert c.end_batch() == {
        ("acme", "events"): T0 + 60 * MINUTE,
        ("globex", "events"): T0 + SECOND,
        ("acme", "cost"): T0 - 60 * MINUTE,
    }


def test_only_clocks_that_moved_make_progress_rows():
    c = clocks()
    c.observe("acme", "cost", T0)
    assert c.end_batch() == {("acme", "cost"): T0}
    c.observe("acme", "cost", T0)  # the same hour's usage_start again: the clock stays
    c.observe("acme", "cost", T0 - MINUTE)
    assert c.end_batch() == {}
    c.observe("acme", "cost", T0 + 60 * MINUTE)
    assert c.end_batch() == {("acme", "cost"): T0 + 60 * MINUTE}


def test_clocks_survive_the_batch_in_state_and_decide_the_same_after_a_restore():
    state = MemoryMapState()
    first = EventClocks(CachedMap(state, 1_000), Lateness(0, MINUTE))
    first.observe("acme", "events", T0 + 5 * MINUTE)
    first.end_batch()
    first.store.flush()
    restored = EventClocks(CachedMap(state, 1_000), Lateness(0, MINUTE))  # empty cache
    assert restored.observe("acme", "events", T0 + 3 * MINUTE) == T0 + 5 * MINUTE


# -- panes: partial values, then the final one


def engagement_rows(tables):
    return {(r["tenant_id"], r["campaign_id"], r["event_type"], r["pane_start"]): r
            for r in tables[ENGAGEMENT_PANES]}  # fmt: skip


def test_a_pane_is_emitted_in_every_batch_that_changes_it_with_a_growing_version():
    panes = Panes(CachedMap(MemoryMapState(), 1_000), 10 * SECOND)
    panes.add_event("acme", "c1", "Order Completed", T0 + 1, Decimal("10.5"), "p1")
    first = engagement_rows(panes.end_batch())
    key = ("acme", "c1", "Order Completed", "2026-11-01 00:00:00.000")
    assert first[key]["events"] == 1 and first[key]["version"] == 1  # a partial value
    panes.add_event("acme", "c1", "Order Completed", T0 + 2, Decimal("1"), "p2")
    panes.add_event("acme", "c1", "Order Completed", T0 + 3, None, "p1")
    second = engagement_rows(panes.end_batch())
    assert second[key] == {
        "tenant_id": "acme", "campaign_id": "c1", "event_type": "Order Completed",
        "pane_start": "2026-11-01 00:00:00.000", "events": 3, "revenue": "11.5",
        "profiles": ["p1", "p2"], "version": 3,
    }  # fmt: skip
    assert panes.end_batch() == {COST_PANES: [], ENGAGEMENT_PANES: [], PROFILE_PANES: []}


def test_a_late_row_within_lateness_re_emits_its_old_pane_corrected():
    panes = Panes(CachedMap(MemoryMapState(), 1_000), 10 * SECOND)
    panes.add_event("acme", "", "page", T0 + 1, None, "p1")
    panes.end_batch()
    panes.add_event("acme", "", "page", T0 + 9 * MINUTE, None, "p1")
    panes.add_event("acme", "", "page", T0 + 5, None, "p2")  # late, into the first pane
    rows = engagement_rows(panes.end_batch())
    old = rows[("acme", "", "page", "2026-11-01 00:00:00.000")]
    assert old["events"] == 2 and old["profiles"] == ["p1", "p2"] and old["version"] == 2


def test_profile_panes_keep_counts_revenue_and_the_last_event_time_per_profile():
    panes = Panes(CachedMap(MemoryMapState(), 1_000), 10 * SECOND)
    panes.add_event("acme", "", "Order Completed", T0 + 7, Decimal("2"), "p1")
    panes.add_event("acme", "", "Order Completed", T0 + 3, Decimal("3"), "p1")
    panes.add_event("acme", "", "Order Completed", T0 + 4, Decimal("3"), "")  # no profile
    [row] = panes.end_batch()[PROFILE_PANES]
    assert (row["events"], row["revenue"], row["last_event_at"]) == (
        2, "5", "2026-11-01 00:00:00.007"
    )  # fmt: skip


def test_cost_rows_fold_into_six_grouping_sets_per_tenant_and_currency():
    assert cost_grouping_sets("t", "f", "c", "s") == (
        ("t", "f", "c", "s"), ("*", "f", "c", "s"), ("t", "*", "c", "s"),
        ("t", "f", "*", "s"), ("t", "f", "c", "*"), ("*", "*", "*", "*"),
    )  # fmt: skip
    panes = Panes(CachedMap(MemoryMapState(), 1_000), 10 * SECOND)
    one = (Decimal("1.000000000001"), Decimal("0.5"), Decimal("2"))
    panes.add_cost("acme", ("core", "search", "c1", "ec2"), "USD", T0, one)
    panes.add_cost("acme", ("ml", "search", "c1", "ec2"), "USD", T0, one)
    panes.add_cost("globex", ("core", "search", "c1", "ec2"), "EUR", T0, one)
    rows = panes.end_batch()[COST_PANES]
    by_key = {(r["tenant_id"], r["team"], r["feature"], r["customer"], r["service"],
               r["currency"]): r for r in rows}  # fmt: skip
    assert len(rows) == 6 + 4 + 6  # the second acme row shares the team- and all-rolled-up
    shared = by_key[("acme", "*", "search", "c1", "ec2", "USD")]
    assert shared["billed_cost"] == "2.000000000002" and shared["allocations"] == 2
    assert by_key[("globex", "*", "*", "*", "*", "EUR")]["version"] == 1


def test_the_cache_writes_state_once_per_batch_and_reads_it_back_after_a_restore():
    state = MemoryMapState()
    panes = Panes(CachedMap(state, 1_000), 10 * SECOND)
    for i in range(100):
        panes.add_event("acme", "c1", "page", T0 + i, None, f"p{i % 7}")
    panes.end_batch()
    panes.store.flush()
    assert state.put_alls == 1
    restored = Panes(CachedMap(state, 1_000), 10 * SECOND)
    restored.add_event("acme", "c1", "page", T0 + 5, None, "p-new")
    [row] = engagement_rows(restored.end_batch()).values()
    assert row["events"] == 101 and len(row["profiles"]) == 8 and row["version"] == 101
