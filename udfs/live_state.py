"""Per-profile and per-team live state, and trigger crossings, from the window stage's rows.

Flink-free: the engine reads and writes its state through any `store` with
`load(key) -> value | None` and `save(key, value)`. In the job that is a write-back cache over a
MapState of pickled values, flushed once per batch; so a batch loads each entity once, mutates
it in place and saves it once at the end (a save marks it dirty for the flush).

Store keys (SEP = "\\x1f", which tenant ids, profile ids, team names and currencies never hold):
    "p SEP tenant SEP profile_id"        -> ProfileState
    "t SEP tenant SEP team SEP currency" -> TeamState
    "s SEP tenant"                       -> int: the tenant's live sequence of events
    "s SEP tenant SEP cost"              -> int: the tenant's live sequence of cost rows
The per-(rule, entity) trigger state (holding flag, crossings so far) lives inside the
entity's state (`triggers`: rule id -> (holding, crossings)) rather than under keys of its
own: it is read and written exactly when the entity is, so a separate key would only double
the state accesses, the slowest thing in PyFlink.

Semantics (docs-spec-issue4.md, "Live state" and "Triggers"):
* The caller feeds only counted rows (late-beyond-lateness rows are not live rows), each
  family in per-tenant processing order; events with an empty profile_id are skipped here.
* An entity's clock is the max event time it has seen; window w of size S covers
  (clock - S, clock]. History keeps rows with event_ms > clock - horizon, where horizon is
  the largest live window or rule window; an older row still updates last_orders,
  last_event_type and the latest-order time, counts in the live sequence and is judged by
  the rules, but is never in a window.
* Rules are judged for an entity right after each row applied to it; a crossing (not holding
  -> holding) emits the rule's next numbered notification. Snapshots are built once per
  touched entity at the end of the batch, so batching never changes their fields or the
  notifications. Versions follow a sequence per tenant and family (profiles count the
  tenant's events, teams its cost rows): each family reaches the stage in the tenant's Kafka
  order, so a replay numbers every state exactly as the first attempt did. (One sequence for
  both would interleave the families by batch arrival, which a replay can change, and a
  replayed newer state could then carry a lower version than an older one already written.)
* Decimal sums are exact (an 80-digit context; Decimal(38, 12) sums never round).
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from functools import lru_cache
from operator import itemgetter
from typing import Any, Protocol

import orjson

from udfs.triggers import (
    Condition,
    TriggerRule,
    decimal_text,
    duration_ms,
    holds,
    merged_rules,
    parse_rules,
    rule_values,
)

SEP = "\x1f"
DEFAULT_WINDOWS = ("30m", "1h")
_CONTEXT = Context(prec=80)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_time_of = itemgetter(0)


@lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return f"{_EPOCH + timedelta(seconds=second):%Y-%m-%dT%H:%M:%S}"


def iso_ms(ms: int) -> str:
    """'YYYY-MM-DDTHH:MM:SS.fffZ' (UTC) of epoch milliseconds, exact (no float seconds).
    The second's text is cached: a batch's clocks fall in a few seconds, and formatting a
    datetime was the largest cost of building snapshots."""
    return f"{_iso_second(ms // 1000)}.{ms % 1000:03d}Z"


def profile_key(tenant_id: str, profile_id: str) -> str:
    return f"p{SEP}{tenant_id}{SEP}{profile_id}"


def team_key(tenant_id: str, team: str, currency: str) -> str:
    return f"t{SEP}{tenant_id}{SEP}{team}{SEP}{currency}"


def sequence_key(tenant_id: str) -> str:
    return f"s{SEP}{tenant_id}"


class Store(Protocol):
    def load(self, key: str) -> Any | None: ...

    def save(self, key: str, value: Any) -> None: ...


# -- settings


@dataclass(frozen=True)
class LiveSettings:
    windows: tuple[tuple[str, int], ...]  # (name as configured, size ms), e.g. ("30m", 1800000)
    last_orders: int = 10
    order_event: str = "Order Completed"
    cart_event: str = "Product Added"
    rules: tuple[TriggerRule, ...] = ()

    @property
    def horizon_ms(self) -> int:
        """How far behind its clock an entity keeps rows: the largest live or rule window."""
        rule_max = max((r.max_window_ms for r in self.rules), default=0)
        return max(max((size for _, size in self.windows), default=0), rule_max)

    @classmethod
    def from_mapping(cls, live: Mapping[str, Any]) -> LiveSettings:
        """From the `live` config section. `windows` is a list of durations or one
        comma-separated string ("30m,1h"); `triggers` is laid over the default rules by id
        (a rule set to null removes it; missing or empty = the defaults). Keys that are the
        Redis writer's (ttl_seconds, stream_maxlen) are ignored here."""
        raw_windows = live.get("windows", DEFAULT_WINDOWS)
        if isinstance(raw_windows, str):
            raw_windows = [w.strip() for w in raw_windows.split(",") if w.strip()]
        if not isinstance(raw_windows, list | tuple) or not raw_windows:
            raise ValueError(
                f"live.windows: expected a non-empty list of durations, got {raw_windows!r}"
            )
        windows: list[tuple[str, int]] = []
        for i, name in enumerate(raw_windows):
            try:
                windows.append((name, duration_ms(name)))
            except ValueError as exc:
                raise ValueError(f"live.windows[{i}]: {exc}") from None
        names = [name for name, _ in windows]
        if len(set(names)) != len(names):
            raise ValueError(f"live.windows: duplicate window in {names!r}")

        last_orders = live.get("last_orders", 10)
        if isinstance(last_orders, bool) or not isinstance(last_orders, int) or last_orders < 0:
            raise ValueError(
                f"live.last_orders: expected a non-negative integer, got {last_orders!r}"
            )
        events = {}
        for key, default in (("order_event", "Order Completed"), ("cart_event", "Product Added")):
            value = live.get(key, default)
            if not isinstance(value, str) or not value:
                raise ValueError(f"live.{key}: expected a non-empty event type, got {value!r}")
            events[key] = value
        rules = parse_rules(merged_rules(live.get("triggers") or None))
        return cls(tuple(windows), last_orders, events["order_event"], events["cart_event"], rules)

    @classmethod
    def from_config(cls, live: Any) -> LiveSettings:
        """From a `LiveConfig` dataclass (or a mapping)."""
        if is_dataclass(live) and not isinstance(live, type):
            live = {f.name: getattr(live, f.name) for f in fields(live)}
        return cls.from_mapping(live)

    @classmethod
    def default(cls) -> LiveSettings:
        return cls.from_mapping({})


# -- input rows


@dataclass(slots=True)
class LiveEvent:
    """A counted event with a profile; treated as read-only. value: the cart price (or None);
    order_id: of an order event ('' otherwise)."""

    tenant_id: str
    profile_id: str
    event_type: str
    event_ms: int
    message_id: str
    revenue: Decimal | None
    value: Decimal | None
    order_id: str


@dataclass(slots=True)
class LiveCost:
    """A counted cost allocation row; treated as read-only."""

    tenant_id: str
    team: str
    currency: str
    usage_ms: int
    message_id: str
    allocation_index: int
    billed: Decimal
    effective: Decimal


# -- per-entity state (pickled by Flink: plain slots, lists of tuples, small dicts)
#
# Window aggregates are kept incrementally, not rescanned: a team gets every cost row of its
# currency (thousands an hour), and rescanning an hour of history after every row to judge
# team_cost_hour was measured at ~1k rows/s. When the clock moves, the rows that left a window
# are found by bisecting the sorted history and subtracted; a new row is added to the windows
# it falls in. Sums are exact Decimals, so add-then-subtract never drifts. `basis` records the
# window sizes (and cart event) the aggregates were built for; a state from other settings is
# rebuilt from its history on first load (`LiveEngine._profile` / `_team`).


class ProfileState:
    """history: (event_ms, event_type, revenue, value) sorted by event_ms (ties: arrival);
    windows: size_ms -> event_type -> [count, revenue sum, value sum] (zero counts removed);
    cart: sum of cart values in history after the latest order (last_order_ms);
    last_event: (event_ms, message_id, event_type) of the greatest (event_ms, message_id);
    orders: (event_ms, message_id, order_id, revenue text | None, event_time text), newest
      first, at most last_orders (texts made once, when an order enters the list);
    triggers: rule id -> (holding, crossings)."""

    __slots__ = (
        "basis",
        "cart",
        "clock",
        "history",
        "last_event",
        "last_order_ms",
        "orders",
        "triggers",
        "windows",
    )

    def __init__(self, clock: int) -> None:
        self.basis: tuple[Any, ...] = ()
        self.cart: Decimal | int = 0
        self.clock = clock
        self.history: list[tuple[int, str, Decimal | None, Decimal | None]] = []
        self.last_event: tuple[int, str, str] | None = None
        self.last_order_ms: int | None = None
        self.orders: list[tuple[int, str, str, str | None, str]] = []
        self.triggers: dict[str, tuple[bool, int]] = {}
        self.windows: dict[int, dict[str, list[Any]]] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)

    def rebuild(self, basis: tuple[tuple[int, ...], str]) -> None:
        """Recompute every aggregate from history (new state of other settings; tests)."""
        sizes, cart_event = basis
        self.basis = basis
        self.windows = {size: {} for size in sizes}
        for row in self.history:
            for size, agg in self.windows.items():
                if row[0] > self.clock - size:
                    _count_in(agg, row)
        self.cart = self._cart_after(self.last_order_ms, cart_event)

    def _cart_after(self, after: int | None, cart_event: str) -> Decimal | int:
        total: Decimal | int = 0
        for row in reversed(self.history):
            if after is not None and row[0] <= after:
                break
            if row[1] == cart_event and row[3] is not None:
                total += row[3]
        return total

    def add(self, row: tuple[Any, ...], horizon: int, cart_event: str) -> None:
        """Move the clock, insert the row into history and windows, drop what fell behind."""
        event_ms = row[0]
        history, windows = self.history, self.windows
        if event_ms > self.clock:
            old, self.clock = self.clock, event_ms
            if history:
                first = history[0][0]
                for size, agg in windows.items():
                    low = event_ms - size
                    if first <= low:
                        start = bisect_right(history, old - size, key=_time_of)
                        for i in range(start, bisect_right(history, low, lo=start, key=_time_of)):
                            _count_out(agg, history[i])
        clock = self.clock
        cut = clock - horizon
        if event_ms <= cut:
            return  # older than history: in no window, not in the cart
        if not history or history[-1][0] <= event_ms:
            history.append(row)
        else:
            insort(history, row, key=_time_of)
        for size, agg in windows.items():
            if event_ms > clock - size:
                _count_in(agg, row)
        after = self.last_order_ms
        if row[1] == cart_event and row[3] is not None and (after is None or event_ms > after):
            self.cart += row[3]
        if history[0][0] <= cut:
            end = bisect_right(history, cut, key=_time_of)
            for i in range(end):
                old_row = history[i]
                if (
                    old_row[1] == cart_event
                    and old_row[3] is not None
                    and (after is None or old_row[0] > after)
                ):
                    self.cart -= old_row[3]
            del history[:end]

    def order_seen(self, event_ms: int, cart_event: str) -> None:
        """An order: the cart restarts after the latest order ever seen."""
        if self.last_order_ms is None or event_ms > self.last_order_ms:
            self.last_order_ms = event_ms
            self.cart = self._cart_after(event_ms, cart_event)

    def count(self, event_type: str | None, size_ms: int) -> int:
        agg = self.windows[size_ms].get(event_type or "")
        return agg[0] if agg is not None else 0

    def total(self, field: str, event_type: str | None, size_ms: int) -> Decimal | int:
        index = 1 if field == "revenue" else 2
        by_type = self.windows[size_ms]
        if event_type is not None:
            agg = by_type.get(event_type)
            return agg[index] if agg is not None else 0
        return sum((agg[index] for agg in by_type.values()), 0)


def _count_in(agg: dict[str, list[Any]], row: tuple[Any, ...]) -> None:
    entry = agg.get(row[1])
    if entry is None:
        entry = agg[row[1]] = [0, 0, 0]
    entry[0] += 1
    if row[2] is not None:
        entry[1] += row[2]
    if row[3] is not None:
        entry[2] += row[3]


def _count_out(agg: dict[str, list[Any]], row: tuple[Any, ...]) -> None:
    entry = agg[row[1]]
    if entry[0] == 1:
        del agg[row[1]]  # sums of a type's only row are exactly that row's amounts
        return
    entry[0] -= 1
    if row[2] is not None:
        entry[1] -= row[2]
    if row[3] is not None:
        entry[2] -= row[3]


class TeamState:
    """history: (usage_ms, billed, effective) sorted by usage_ms (ties: arrival);
    windows: size_ms -> [billed sum, effective sum]; triggers: rule id -> (holding, crossings)."""

    __slots__ = ("basis", "clock", "history", "triggers", "windows")

    def __init__(self, clock: int) -> None:
        self.basis: tuple[Any, ...] = ()
        self.clock = clock
        self.history: list[tuple[int, Decimal, Decimal]] = []
        self.triggers: dict[str, tuple[bool, int]] = {}
        self.windows: dict[int, list[Any]] = {}

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.basis, self.clock, self.history, self.triggers, self.windows)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.basis, self.clock, self.history, self.triggers, self.windows = state

    def rebuild(self, basis: tuple[tuple[int, ...]]) -> None:
        (sizes,) = basis
        self.basis = basis
        self.windows = {}
        for size in sizes:
            low = self.clock - size
            rows = [row for row in self.history if row[0] > low]
            self.windows[size] = [sum((r[1] for r in rows), 0), sum((r[2] for r in rows), 0)]

    def add(self, row: tuple[int, Decimal, Decimal], horizon: int) -> None:
        usage_ms = row[0]
        history, windows = self.history, self.windows
        if usage_ms > self.clock:
            old, self.clock = self.clock, usage_ms
            if history:
                first = history[0][0]
                for size, sums in windows.items():
                    low = usage_ms - size
                    if first <= low:
                        start = bisect_right(history, old - size, key=_time_of)
                        for i in range(start, bisect_right(history, low, lo=start, key=_time_of)):
                            gone = history[i]
                            sums[0] -= gone[1]
                            sums[1] -= gone[2]
        clock = self.clock
        cut = clock - horizon
        if usage_ms <= cut:
            return
        if not history or history[-1][0] <= usage_ms:
            history.append(row)
        else:
            insort(history, row, key=_time_of)
        for size, sums in windows.items():
            if usage_ms > clock - size:
                sums[0] += row[1]
                sums[1] += row[2]
        if history[0][0] <= cut:
            del history[: bisect_right(history, cut, key=_time_of)]

    def total(self, field: str, size_ms: int) -> Decimal | int:
        return self.windows[size_ms][0 if field == "billed_cost" else 1]


# -- the engine


class LiveEngine:
    """Applies batches of live rows to state in `store`; returns the `redis_live` payload."""

    def __init__(self, settings: LiveSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.horizon = settings.horizon_ms
        self.profile_rules = tuple(r for r in settings.rules if r.entity == "profile")
        self.team_rules = tuple(r for r in settings.rules if r.entity == "team")
        live_sizes = {size for _, size in settings.windows}
        profile_sizes = live_sizes | {c.window_ms for r in self.profile_rules for c in r.when}
        team_sizes = live_sizes | {c.window_ms for r in self.team_rules for c in r.when}
        profile_sizes.discard(0)  # cart_value has no window
        self.profile_basis = (tuple(sorted(profile_sizes)), settings.cart_event)
        self.team_basis = (tuple(sorted(team_sizes)),)

    def apply_batch(self, events: Sequence[LiveEvent], costs: Sequence[LiveCost]) -> dict[str, Any]:
        """Apply all events, then all costs (each in per-tenant order). Returns
        {"profiles": [...], "teams": [...], "notifications": [...]}: a snapshot of every entity
        touched (state after the batch, in order of first touch) and the crossings in order."""
        with localcontext(_CONTEXT):
            notifications: list[dict[str, Any]] = []
            sequences: dict[str, int] = {}
            profiles = self._apply_events(events, sequences, notifications)
            teams = self._apply_costs(costs, sequences, notifications)
            save = self.store.save
            for tenant, seq in sequences.items():
                save(sequence_key(tenant), seq)
            return {
                "profiles": [self._profile_snapshot(*entry) for entry in profiles.values()],
                "teams": [self._team_snapshot(*entry) for entry in teams.values()],
                "notifications": notifications,
            }

    def _next_sequence(self, sequences: dict[str, int], tenant: str) -> int:
        seq = sequences.get(tenant)
        if seq is None:
            seq = self.store.load(sequence_key(tenant)) or 0
        seq += 1
        sequences[tenant] = seq
        return seq

    def _apply_events(
        self,
        events: Sequence[LiveEvent],
        sequences: dict[str, int],
        notifications: list[dict[str, Any]],
    ) -> dict[str, list[Any]]:
        s = self.settings
        horizon, order_event, limit = self.horizon, s.order_event, s.last_orders
        cart_event, basis, rules = s.cart_event, self.profile_basis, self.profile_rules
        touched: dict[str, list[Any]] = {}  # key -> [state, version, tenant, profile_id]
        load, save = self.store.load, self.store.save
        for ev in events:
            profile_id = ev.profile_id
            if not profile_id:
                continue
            tenant = ev.tenant_id
            seq = self._next_sequence(sequences, tenant)
            key = profile_key(tenant, profile_id)
            entry = touched.get(key)
            if entry is None:
                state = load(key)
                if state is None:
                    state = ProfileState(ev.event_ms)
                if state.basis != basis:
                    state.rebuild(basis)
                entry = touched[key] = [state, seq, tenant, profile_id]
            else:
                state = entry[0]
                entry[1] = seq
            event_ms, message_id, kind = ev.event_ms, ev.message_id, ev.event_type
            state.add((event_ms, kind, ev.revenue, ev.value), horizon, cart_event)
            last = state.last_event
            if last is None or (event_ms, message_id) > (last[0], last[1]):
                state.last_event = (event_ms, message_id, kind)
            if kind == order_event:
                state.order_seen(event_ms, cart_event)
                _add_order(state.orders, event_ms, message_id, ev.order_id, ev.revenue, limit)

            if rules:
                self._judge(
                    rules, state, self._profile_metric, tenant, "profile", profile_id,
                    message_id, notifications,
                )  # fmt: skip
        for key, entry in touched.items():
            save(key, entry[0])
        return touched

    def _apply_costs(
        self,
        costs: Sequence[LiveCost],
        sequences: dict[str, int],
        notifications: list[dict[str, Any]],
    ) -> dict[str, list[Any]]:
        horizon, rules, basis = self.horizon, self.team_rules, self.team_basis
        touched: dict[str, list[Any]] = {}  # key -> [state, version, tenant, team, currency]
        load, save = self.store.load, self.store.save
        for cost in costs:
            tenant, team, currency = cost.tenant_id, cost.team, cost.currency
            seq = self._next_sequence(sequences, f"{tenant}{SEP}cost")
            key = team_key(tenant, team, currency)
            entry = touched.get(key)
            if entry is None:
                state = load(key)
                if state is None:
                    state = TeamState(cost.usage_ms)
                if state.basis != basis:
                    state.rebuild(basis)
                entry = touched[key] = [state, seq, tenant, team, currency]
            else:
                state = entry[0]
                entry[1] = seq
            state.add((cost.usage_ms, cost.billed, cost.effective), horizon)
            if rules:
                self._judge(
                    rules, state, self._team_metric, tenant, "team", f"{team}|{currency}",
                    cost.message_id, notifications,
                )  # fmt: skip
        for key, entry in touched.items():
            save(key, entry[0])
        return touched

    # -- rules

    def _profile_metric(self, state: ProfileState, cond: Condition) -> Decimal | int:
        if cond.metric == "count":
            return state.count(cond.event, cond.window_ms)
        if cond.metric == "sum":
            return state.total(cond.field or "", cond.event, cond.window_ms)
        return state.cart

    @staticmethod
    def _team_metric(state: TeamState, cond: Condition) -> Decimal | int:
        return state.total(cond.field or "", cond.window_ms)

    @staticmethod
    def _judge(
        rules: tuple[TriggerRule, ...],
        state: Any,
        metric: Callable[[Any, Condition], Decimal | int],
        tenant: str,
        entity_type: str,
        entity_id: str,
        message_id: str,
        notifications: list[dict[str, Any]],
    ) -> None:
        """Judge every rule of this entity type after one row; record crossings."""
        memo: dict[str, Decimal | int] = {}

        def lookup(cond: Condition) -> Decimal | int:
            label = cond.label
            value = memo.get(label)
            if value is None:
                value = memo[label] = metric(state, cond)
            return value

        triggers = state.triggers
        for rule in rules:
            now = holds(rule, lookup)
            before = triggers.get(rule.rule_id)
            if now:
                if before is not None and before[0]:
                    continue
                crossing = (before[1] if before is not None else 0) + 1
                triggers[rule.rule_id] = (True, crossing)
                notifications.append(
                    {
                        "tenant_id": tenant,
                        "rule": rule.rule_id,
                        "entity_type": entity_type,
                        "entity_id": entity_id,
                        "crossing": crossing,
                        "event_time": iso_ms(state.clock),
                        "message_id": message_id,
                        "values": rule_values(rule, lookup),
                    }
                )
            elif before is not None and before[0]:
                triggers[rule.rule_id] = (False, before[1])

    # -- snapshots

    def _profile_snapshot(
        self, state: ProfileState, version: int, tenant: str, profile_id: str
    ) -> dict[str, Any]:
        fields: dict[str, str] = {}
        for name, size in self.settings.windows:
            by_type = state.windows[size]
            revenue: Decimal | int = 0
            for kind in sorted(by_type):
                agg = by_type[kind]
                fields[f"events:{kind}:{name}"] = str(agg[0])
                revenue += agg[1]
            fields[f"revenue:{name}"] = decimal_text(revenue)
        fields["last_event_at"] = iso_ms(state.clock)
        fields["last_event_type"] = state.last_event[2] if state.last_event else ""
        fields["cart_value"] = decimal_text(state.cart)
        fields["last_orders"] = orjson.dumps(
            [
                {
                    "order_id": order_id,
                    "revenue": revenue,
                    "event_time": event_time,
                    "message_id": message_id,
                }
                for _, message_id, order_id, revenue, event_time in state.orders
            ]
        ).decode()
        return {"tenant_id": tenant, "profile_id": profile_id, "version": version, "fields": fields}

    def _team_snapshot(
        self, state: TeamState, version: int, tenant: str, team: str, currency: str
    ) -> dict[str, Any]:
        fields: dict[str, str] = {}
        for name, size in self.settings.windows:
            billed, effective = state.windows[size]
            fields[f"billed_cost:{name}"] = decimal_text(billed)
            fields[f"effective_cost:{name}"] = decimal_text(effective)
        return {
            "tenant_id": tenant,
            "team": team,
            "currency": currency,
            "version": version,
            "fields": fields,
        }


def _add_order(
    orders: list[tuple[int, str, str, str | None, str]],
    event_ms: int,
    message_id: str,
    order_id: str,
    revenue: Decimal | None,
    limit: int,
) -> None:
    """Keep the `limit` orders with the greatest (event_ms, message_id), newest first."""
    if limit <= 0:
        return
    rank = (event_ms, message_id)
    if len(orders) >= limit and rank <= (orders[-1][0], orders[-1][1]):
        return
    i = len(orders)
    while i > 0 and (orders[i - 1][0], orders[i - 1][1]) < rank:
        i -= 1
    revenue_text = decimal_text(revenue) if revenue is not None else None
    orders.insert(i, (event_ms, message_id, order_id, revenue_text, iso_ms(event_ms)))
    del orders[limit:]
