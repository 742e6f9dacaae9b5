"""Per-tenant event-time clocks: the watermark windows are judged against.

Why not Flink's watermarks: whether a row is "too late" must be decided the same way when
Flink replays after a failure, or the row could be counted in a window by one attempt and
sent to `late_events` by the next. Flink's watermarks are not part of a checkpoint (they
restart from nothing after a restore) and depend on how partitions interleave. A clock per
(tenant, family) in checkpointed state, advanced in the tenant's Kafka order (producers
partition by tenant), replays identically. It also means a quiet tenant never holds back
another one's windows.

    watermark = clock - out_of_orderness        (clock = max event time seen so far)
    late      = event_ms < watermark - allowed_lateness, judged before the row moves the clock
"""

from __future__ import annotations

from dataclasses import dataclass

from udfs.cached_state import CachedMap
from udfs.identity_state import SEP

NO_CLOCK = -(2**62)


@dataclass(frozen=True)
class Lateness:
    """How late rows may be."""

    out_of_orderness_ms: int
    allowed_lateness_ms: int


class EventClocks:
    """The clocks of every (tenant, family) of one shard, over a cached MapState."""

    def __init__(self, store: CachedMap, lateness: Lateness) -> None:
        self.store = store
        self.out_of_orderness = lateness.out_of_orderness_ms
        self.allowed = lateness.allowed_lateness_ms
        self.touched: dict[tuple[str, str], int] = {}  # this batch's clocks, for progress rows
        self.before: dict[tuple[str, str], int] = {}  # the same clocks when the batch began

    def observe(self, tenant: str, family: str, event_ms: int) -> int | None:
        """Advance the clock with a row; return the watermark it was too late for, else None."""
        key = (tenant, family)
        clock = self.touched.get(key)
        if clock is None:
            clock = self.store.load(f"{tenant}{SEP}{family}")
            if clock is None:
                clock = NO_CLOCK
            self.before[key] = clock
        watermark = clock - self.out_of_orderness
        if event_ms < watermark - self.allowed:
            self.touched[key] = clock
            return watermark
        self.touched[key] = event_ms if event_ms > clock else clock
        return None

    def end_batch(self) -> dict[tuple[str, str], int]:
        """Save this batch's clocks; return those that moved, (tenant, family) -> clock.

        Only moved clocks make `window_progress` rows: cost clocks move once an hour (hourly
        usage_start), so the table gets about one insert a second (from the events batch),
        not one per source batch."""
        touched, before = self.touched, self.before
        self.touched, self.before = {}, {}
        moved = {}
        for key, clock in touched.items():
            if clock != before[key]:
                self.store.save(f"{key[0]}{SEP}{key[1]}", clock)
                moved[key] = clock
        return moved
