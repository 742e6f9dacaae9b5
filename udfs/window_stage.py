"""The window stage: event-time panes, late rows, live state and triggers, per batch.

It runs inside the profile stage's batch call (udfs/profile_stage.py), on rows that stage
has just parsed, enriched and resolved, so Python touches each event once for everything.
Measured before choosing (bench/window_choice.py, bench/README.md): a Python window operator
cost ~3 ms per row here, Java's HOP windows ~4 us but with neither partial values nor
allowed lateness, Java's early-firing group windows never caught up with their own timers,
and this fold ~12 us per cost row (six grouping sets) inside a pass that exists anyway.

Per batch, in each tenant's Kafka order:
1. every row is judged against its (tenant, family) clock (udfs/event_clock.py): too late
   -> a `late_events` row with the reason, and nothing else;
2. counted rows are folded into panes (udfs/panes.py) and fed to the live state and trigger
   rules (udfs/live_state.py, udfs/triggers.py);
3. the batch's outputs: the changed panes, the late rows and the clocks (`window_progress`)
   for ClickHouse, and one `redis_live` payload (profile / team snapshots, notifications)
   for the Redis live writer (sinks/redis_live.py).

State (keyed by the profile stage's shard, each MapState behind a write-back cache flushed
at the end of the batch, so no checkpoint can split a batch):
    window_clocks  "tenant \\x1f family"  -> clock (ms)
    window_panes   pane key               -> accumulator       (TTL: panes_ttl_ms)
    live_state     entity / rule key      -> live-state object (TTL: live_ttl_ms)
TTLs are in processing time, refreshed on every write: a pane is kept far longer than any
row can still reach it (allowed lateness + the longest window, doubled), a profile as long as
its Redis keys live.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

import orjson
from pyflink.common import Types
from pyflink.common.time import Time
from pyflink.datastream import RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, StateTtlConfig

from udfs.cached_state import CachedMap
from udfs.event_clock import EventClocks, Lateness
from udfs.live_state import LiveCost, LiveEngine, LiveEvent, LiveSettings, ProfileState, TeamState
from udfs.panes import Panes
from udfs.scd import row_time_ms
from udfs.validation import ms_text
from udfs.window_specs import pane_ms, parse_specs

EVENTS = "events"
COST = "cost"
LATE_EVENTS = "late_events"
WINDOW_PROGRESS = "window_progress"
LIVE_TABLE = "redis_live"
LATE_REASON = "beyond_allowed_lateness"


@dataclass(frozen=True)
class WindowStageSettings:
    """What the window stage needs, resolved on the client."""

    specs: str
    out_of_orderness_ms: int
    allowed_lateness_ms: int
    live: dict[str, Any]  # the `live` config section, for LiveSettings.from_mapping
    live_ttl_ms: int
    cache_entries: int

    @property
    def panes_ttl_ms(self) -> int:
        longest = max(s.size_ms for s in parse_specs(self.specs))
        return 2 * (self.allowed_lateness_ms + self.out_of_orderness_ms + longest)


def event_type(row: dict[str, Any]) -> str:
    """The event name of a track call, else the call type (page, identify, screen, ...)."""
    return row["event"] if row["type"] == "track" else row["type"]


def map_state(runtime_context: RuntimeContext, name: str, value_type: Any, ttl_ms: int = 0) -> Any:
    descriptor = MapStateDescriptor(name, Types.STRING(), value_type)
    if ttl_ms:
        descriptor.enable_time_to_live(
            StateTtlConfig.new_builder(Time.milliseconds(ttl_ms))
            .set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)
            .set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)
            # PyFlink 2.3's default background cleanup builds a py4j Duration, and there is no
            # py4j gateway inside a TaskManager (thread mode: open() failed with ENOENT); so
            # no default, and the same RocksDB compaction-filter cleanup set explicitly
            .disable_cleanup_in_background()
            .cleanup_in_rocksdb_compact_filter(1000, Time.days(30))
            .build()
        )
    return runtime_context.get_map_state(descriptor)


class PlainStateStore:
    """The live engine's store, keeping only builtins in Flink state.

    Why: the job's code is pickled by value (README, "Thread mode"), so the class of an
    instance made on the worker is not the class pickle finds under its module's name, and
    putting one in state failed ("not the same object as udfs.live_state.ProfileState").
    Entity states are therefore stored as tagged tuples of their slots.
    """

    CLASSES: ClassVar[dict[str, type]] = {"P": ProfileState, "T": TeamState}

    def __init__(self, store: CachedMap) -> None:
        self.store = store

    def load(self, key: str) -> Any | None:
        raw = self.store.load(key)
        if isinstance(raw, tuple) and len(raw) == 2 and raw[0] in self.CLASSES:
            value = object.__new__(self.CLASSES[raw[0]])
            value.__setstate__(raw[1])
            return value
        return raw

    def save(self, key: str, value: Any) -> None:
        if isinstance(value, ProfileState):
            value = ("P", value.__getstate__())
        elif isinstance(value, TeamState):
            value = ("T", value.__getstate__())
        self.store.save(key, value)


class WindowStage:
    """Owned by the profile stage; `open` from its open, then one call per batch."""

    def __init__(self, settings: WindowStageSettings) -> None:
        self.settings = settings

    def open(self, runtime_context: RuntimeContext) -> None:
        s = self.settings
        entries = s.cache_entries
        clocks = CachedMap(map_state(runtime_context, "window_clocks", Types.LONG()), entries)
        self.clocks = EventClocks(clocks, Lateness(s.out_of_orderness_ms, s.allowed_lateness_ms))
        self.out_of_orderness = s.out_of_orderness_ms
        panes = map_state(
            runtime_context, "window_panes", Types.PICKLED_BYTE_ARRAY(), s.panes_ttl_ms
        )
        self.panes = Panes(CachedMap(panes, entries), pane_ms(parse_specs(s.specs)))
        live = map_state(runtime_context, "live_state", Types.PICKLED_BYTE_ARRAY(), s.live_ttl_ms)
        self.live_store = CachedMap(live, entries)
        self.live_settings = LiveSettings.from_mapping(s.live)
        self.live = LiveEngine(self.live_settings, PlainStateStore(self.live_store))
        self.cart_event = self.live_settings.cart_event
        self.order_event = self.live_settings.order_event
        self.stores = (clocks, self.panes.store, self.live_store)
        group = runtime_context.get_metrics_group().add_group("tidemark_windows")
        self.late_rows = group.counter("late_rows")
        self.notifications = group.counter("notifications")

    def _late_row(
        self, row: dict[str, Any], family: str, index: int, event_ms: int, watermark: int
    ) -> dict[str, Any]:
        return {
            "tenant_id": row["tenant_id"],
            "family": family,
            "message_id": row["message_id"],
            "allocation_index": index,
            "event_time": ms_text(event_ms),
            "watermark": ms_text(watermark),
            "lateness_ms": watermark - event_ms,
            "reason": LATE_REASON,
            "payload": orjson.dumps(row).decode(),
        }

    def on_events(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """Fold a batch of resolved events rows (in Kafka order); return the output tables."""
        late: list[dict[str, Any]] = []
        live: list[LiveEvent] = []
        observe, add_event = self.clocks.observe, self.panes.add_event
        cart_event, order_event = self.cart_event, self.order_event
        for row in rows:
            tenant = row["tenant_id"]
            event_ms = row_time_ms(row["event_time"])
            watermark = observe(tenant, EVENTS, event_ms)
            if watermark is not None:
                late.append(self._late_row(row, EVENTS, 0, event_ms, watermark))
                continue
            kind = event_type(row)
            revenue_text = row["revenue"]
            revenue = Decimal(revenue_text) if revenue_text is not None else None
            profile_id = row["profile_id"]
            add_event(tenant, row["campaign_id"], kind, event_ms, revenue, profile_id)
            if not profile_id:
                continue
            value, order_id = None, ""
            if kind in (cart_event, order_event):
                properties = orjson.loads(row["properties"] or "{}")
                if kind == cart_event and properties.get("price") is not None:
                    value = Decimal(str(properties["price"]))
                elif kind == order_event:
                    order_id = str(properties.get("order_id") or "")
            live.append(
                LiveEvent(tenant, profile_id, kind, event_ms, row["message_id"], revenue, value,
                          order_id)
            )  # fmt: skip
        return self._end_batch(late, live, [])

    def on_allocations(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """Fold a batch of cost allocation rows; return the output tables."""
        late: list[dict[str, Any]] = []
        live: list[LiveCost] = []
        ordered = sorted(
            rows, key=lambda r: (r["source_partition"], r["source_offset"], r["allocation_index"])
        )
        for row in ordered:
            tenant = row["tenant_id"]
            usage_ms = row_time_ms(row["usage_start"])
            index = row["allocation_index"]
            watermark = self.clocks.observe(tenant, COST, usage_ms)
            if watermark is not None:
                late.append(self._late_row(row, COST, index, usage_ms, watermark))
                continue
            billed, effective = Decimal(row["billed_cost"]), Decimal(row["effective_cost"])
            dims = (row["team"], row["feature"], row["customer"], row["service"])
            amounts = (billed, effective, Decimal(row["usage_quantity"]))
            self.panes.add_cost(tenant, dims, row["currency"], usage_ms, amounts)
            live.append(
                LiveCost(tenant, row["team"], row["currency"], usage_ms, row["message_id"],
                         index, billed, effective)
            )  # fmt: skip
        return self._end_batch(late, [], live)

    def _end_batch(
        self, late: list[dict[str, Any]], events: list[LiveEvent], costs: list[LiveCost]
    ) -> dict[str, list[Any]]:
        tables: dict[str, list[Any]] = dict(self.panes.end_batch())
        tables[LATE_EVENTS] = late
        tables[WINDOW_PROGRESS] = [
            {
                "tenant_id": tenant,
                "family": family,
                "watermark": ms_text(clock - self.out_of_orderness),
                "event_clock": ms_text(clock),
                "version": clock,
            }
            for (tenant, family), clock in self.clocks.end_batch().items()
        ]
        payload = self.live.apply_batch(events, costs)
        if payload["profiles"] or payload["teams"] or payload["notifications"]:
            tables[LIVE_TABLE] = [payload]
        for store in self.stores:
            store.flush()
        self.late_rows.inc(len(late))
        self.notifications.inc(len(payload["notifications"]))
        return tables
