"""The window stage end to end: what ClickHouse and Redis must hold, computed independently.

The expectation comes from tests/reference_windows.py, a plain model written from the spec
without the job's code, fed the valid first occurrences in produce order, the profile ids of
tests/reference_identity.py and the allocations of tests/reference_enrichment.py. The
windows it computes come straight from the counted rows, not from panes, so comparing them
with ClickHouse's window views checks the pane fold and the views together.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import redis

from tests import reference_enrichment, reference_windows
from tests.ingest_flow import IngestCase
from tests.profile_flow import ProfileExpectation, mismatch, query
from tidemark.config import Config

PICO = Decimal("1e-12")
MICRO = Decimal("1e-6")


def settings_of(cfg: Config) -> reference_windows.WindowSettings:
    """The model's settings, the same knobs the job was given."""
    w, live = cfg.windows, cfg.live
    return reference_windows.WindowSettings(
        specs=w.specs,
        out_of_orderness_ms=w.out_of_orderness_ms,
        allowed_lateness_ms=w.allowed_lateness_ms,
        live_windows=live.windows,
        last_orders=live.last_orders,
        order_event=live.order_event,
        cart_event=live.cart_event,
        triggers=live.triggers or reference_windows.DEFAULT_TRIGGERS,
    )


def expectation(
    case: IngestCase, dimensions_dir: Path, identity: ProfileExpectation
) -> reference_windows.WindowsOutcome:
    """The model's outcome for the stream of `case`."""
    docs: list[dict] = []
    seen: set[tuple[str, str]] = set()
    for key, value, valid in case.truths:
        if valid and key not in seen:
            seen.add(key)
            docs.append(json.loads(value, parse_float=Decimal))
    rules_path = next(dimensions_dir.glob("attribution_rules.*"))
    allocations = {
        (d["tenant_id"], d["message_id"]): reference_enrichment.expected_allocations(d, rules_path)
        for d in docs
        if d["type"] == "cost"
    }
    return reference_windows.expected_windows(
        docs, identity.identity.resolved_by_key, allocations, settings_of(case.cfg)
    )


def ms(value: object) -> int:
    """A DateTime64 from clickhouse-connect as epoch millis."""
    return round(value.timestamp() * 1000)  # type: ignore[attr-defined]


def assert_late_and_progress(cfg: Config, want: reference_windows.WindowsOutcome) -> None:
    db = cfg.clickhouse.database
    sql = f"SELECT tenant_id, family, message_id, allocation_index FROM {db}.late_events FINAL"
    late = set(query(cfg, sql))
    assert late == want.late, mismatch("late_events", late, want.late)
    clocks = {
        (t, f): ms(c)
        for t, f, c in query(
            cfg, f"SELECT tenant_id, family, event_clock FROM {db}.window_progress FINAL"
        )
    }
    assert clocks == want.progress, mismatch("window_progress", clocks, want.progress)


def assert_panes(cfg: Config, want: reference_windows.WindowsOutcome) -> None:
    """Every pane of the three families: keys, values and versions."""
    db = cfg.clickhouse.database
    cost = {
        (t, team, f, c, s, cur, ms(p)): {
            "billed_cost": Decimal(b).quantize(PICO),
            "effective_cost": Decimal(e).quantize(PICO),
            "usage_quantity": Decimal(u).quantize(PICO),
            "allocations": n,
            "version": v,
        }
        for t, team, f, c, s, cur, p, b, e, u, n, v in query(
            cfg,
            "SELECT tenant_id, team, feature, customer, service, currency, pane_start, "
            "toString(billed_cost), toString(effective_cost), toString(usage_quantity), "
            f"allocations, version FROM {db}.cost_panes FINAL",
        )
    }
    want_cost = {
        k: {**v, **{a: v[a].quantize(PICO) for a in ("billed_cost", "effective_cost",
                                                     "usage_quantity")}}
        for k, v in want.cost_panes.items()
    }  # fmt: skip
    assert cost == want_cost, mismatch("cost_panes", cost, want_cost)
    engagement = {
        (t, c, e, ms(p)): {
            "events": n, "revenue": Decimal(r).quantize(MICRO), "profiles": frozenset(pr),
            "version": v,
        }
        for t, c, e, p, n, r, pr, v in query(
            cfg,
            "SELECT tenant_id, campaign_id, event_type, pane_start, events, toString(revenue), "
            f"profiles, version FROM {db}.engagement_panes FINAL",
        )
    }  # fmt: skip
    want_engagement = {
        k: {**v, "revenue": v["revenue"].quantize(MICRO)} for k, v in want.engagement_panes.items()
    }
    assert engagement == want_engagement, mismatch("engagement_panes", engagement, want_engagement)
    profiles = {
        (t, pid, e, ms(p)): {
            "events": n, "revenue": Decimal(r).quantize(MICRO), "last_event_at": ms(last),
            "version": v,
        }
        for t, pid, e, p, n, r, last, v in query(
            cfg,
            "SELECT tenant_id, profile_id, event_type, pane_start, events, toString(revenue), "
            f"last_event_at, version FROM {db}.profile_panes FINAL",
        )
    }  # fmt: skip
    want_profiles = {
        k: {**v, "revenue": v["revenue"].quantize(MICRO)} for k, v in want.profile_panes.items()
    }
    assert profiles == want_profiles, mismatch("profile_panes", profiles, want_profiles)


def assert_window_views(cfg: Config, want: reference_windows.WindowsOutcome) -> None:
    """The dashboards' views: one row per window x key, equal to windows computed directly."""
    db = cfg.clickhouse.database
    cost = {
        (w, t, team, f, c, s, cur, ms(start)): (
            Decimal(b).quantize(PICO), Decimal(e).quantize(PICO), n
        )
        for w, t, team, f, c, s, cur, start, b, e, n in query(
            cfg,
            "SELECT window, tenant_id, team, feature, customer, service, currency, "
            "window_start, toString(billed_cost), toString(effective_cost), allocations "
            f"FROM {db}.cost_windows",
        )
    }  # fmt: skip
    want_cost = {
        k: (v["billed_cost"].quantize(PICO), v["effective_cost"].quantize(PICO),
            v["allocations"])
        for k, v in want.cost_windows.items()
    }  # fmt: skip
    assert cost == want_cost, mismatch("cost_windows", cost, want_cost)
    engagement = {
        (w, t, c, e, ms(start)): (n, u, Decimal(r).quantize(MICRO))
        for w, t, c, e, start, n, u, r in query(
            cfg,
            "SELECT window, tenant_id, campaign_id, event_type, window_start, events, "
            f"unique_profiles, toString(revenue) FROM {db}.engagement_windows "
            "WHERE event_type != '*'",
        )
    }
    want_engagement = {
        k: (v["events"], len(v["profiles"]), v["revenue"].quantize(MICRO))
        for k, v in want.engagement_windows.items()
    }
    assert engagement == want_engagement, mismatch(
        "engagement_windows", engagement, want_engagement
    )


def assert_redis_live(cfg: Config, want: reference_windows.WindowsOutcome) -> None:
    """Profile and team live hashes (fields and versions), and every tenant's notifications."""
    r = redis.Redis(host=cfg.redis.host, port=cfg.redis_port, db=cfg.redis.db,
                    decode_responses=True)  # fmt: skip
    prefix = cfg.redis.key_prefix
    try:
        for name, states, versions, key_of in (
            ("profile live", want.profile_live, want.profile_versions,
             lambda k: f"{prefix}:{k[0]}:profile:{k[1]}:live"),
            ("team live", want.team_live, want.team_versions,
             lambda k: f"{prefix}:{k[0]}:team:{k[1]}:{k[2]}:live"),
        ):  # fmt: skip
            keys = list(states)
            pipe = r.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(key_of(k))
            got = dict(zip(keys, pipe.execute(), strict=True))
            want_hashes = {k: {**states[k], "_v": str(versions[k])} for k in keys}
            assert got == want_hashes, mismatch(name, got, want_hashes)
        live_keys = {k for k in r.scan_iter(match=f"{prefix}:*:live", count=10_000)}
        assert len(live_keys) == len(want.profile_live) + len(want.team_live), (
            f"{len(live_keys)} live hashes in Redis, the model has "
            f"{len(want.profile_live) + len(want.team_live)}"
        )
        fields = ("rule", "entity_type", "entity_id", "crossing", "message_id", "values")
        tenants = {k.split(":")[1] for k in r.scan_iter(match=f"{prefix}:*:notifications")}
        tenants |= set(want.notifications)
        for tenant in sorted(tenants):
            got_notes = [
                (*(entry[f] for f in fields[:-1]), orjson.loads(entry["values"]))
                for _, entry in r.xrange(f"{prefix}:{tenant}:notifications")
            ]
            want_notes = [
                (n["rule"], n["entity_type"], n["entity_id"], str(n["crossing"]),
                 n["message_id"], dict(n["values"]))
                for n in want.notifications.get(tenant, [])
            ]  # fmt: skip
            # Within a family (profile rules on events, team rules on cost rows) the stream
            # follows the tenant's Kafka order; the two families' batches interleave as they
            # arrive, so each family's notifications are compared in order, separately.
            for family in ("profile", "team"):
                got_f = [n for n in got_notes if n[1] == family]
                want_f = [n for n in want_notes if n[1] == family]
                pairs = zip(got_f, want_f, strict=False)
                first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
                assert got_f == want_f, (
                    f"{family} notifications of {tenant}: {len(got_f)} in Redis, "
                    f"{len(want_f)} expected; first difference at {first}: "
                    f"{got_f[first] if first is not None else None} vs "
                    f"{want_f[first] if first is not None else None}"
                )
    finally:
        r.close()
