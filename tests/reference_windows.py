"""The expected outcome of the window stage (issue 4), computed independently of the job's code.

A plain, literal model of docs-spec-issue4.md: it never imports the production window / live
state / trigger code, and uses only the standard library. End-to-end tests feed it

- the valid first-occurrence raw docs of the stream, in produce order (parsed with
  `parse_float=Decimal`), events and cost records mixed as they were produced;
- the profile id each event resolved to (`reference_identity`'s `resolved_by_key`);
- the allocation rows of each cost record (`reference_enrichment.expected_allocations`);
- the settings (window specs, lateness, live windows, trigger rules);

and compare the job's pane tables, late events, Redis snapshots and notifications with
`expected_windows`.

Every tenant's rows are applied in produce order (= per-tenant Kafka order). The two families
(`events`, `cost`) have separate clocks; one row is judged late against its family's clock
*before* the row moves the clock. Windows (`cost_windows`, `engagement_windows`) are computed
straight from the counted rows by window membership, never by adding panes up, so that a
pane-to-window mistake in the job cannot hide behind the same mistake here.

Conventions of the outcome (the production side must agree):
- times in keys and values are epoch milliseconds (int), except the Redis fields and
  notifications, which hold the spec's ISO text 'YYYY-MM-DDTHH:MM:SS.fffZ';
- amounts are `Decimal`; Redis fields and notification values are normalized decimal text.

Where the spec is silent, this model decides (the job must agree):
- a tenant-family with no clock yet judges nothing late; cost rows are judged one allocation
  at a time (in allocation_index order), so all rows of one record share the verdict;
- revenue = properties.revenue rounded half-even to 6 places (None when absent); the value of
  a cart event = properties.price (JSON number or plain decimal string) rounded the same way,
  0 when absent or not a number; every other event has value 0;
- live sequence numbers, one per tenant and family: profiles count the tenant's counted
  events with a profile id, teams its counted allocation rows (one per allocation);
- snapshot fields `revenue:{w}`, `cart_value` and `last_orders` are always present ("0", "0",
  "[]"); `events:{type}:{w}` only when non-zero; team fields always present;
- `last_orders` is taken from every order the profile ever applied (not cut by history);
  an order without revenue shows null, without a string order_id shows "";
- rules are evaluated in configured order; labels: `count:{event}:{w}`, `cart_value`,
  `sum:{field}:{w}`, or `sum:{field}:{event}:{w}` with an event filter; count values are
  integer text; history horizon = max over live windows and every rule's window (any entity).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Any, NamedTuple

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ROLLED_UP = "*"
EVENTS = "events"
COST = "cost"
REVENUE_UNIT = Decimal("1e-6")
MONEY_UNIT = Decimal("1e-12")
DECIMAL_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}

DEFAULT_TRIGGERS: dict[str, dict[str, Any]] = {
    "browse_abandon": {
        "entity": "profile",
        "when": [
            {"metric": "count", "event": "Product Viewed", "window": "30m", "op": ">", "value": 3},
            {
                "metric": "count",
                "event": "Order Completed",
                "window": "30m",
                "op": "==",
                "value": 0,
            },
        ],
    },
    "big_cart": {"entity": "profile", "when": [{"metric": "cart_value", "op": ">", "value": 200}]},
    "team_cost_hour": {
        "entity": "team",
        "when": [
            {"metric": "sum", "field": "billed_cost", "window": "1h", "op": ">", "value": 100}
        ],
    },
}

OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


# --- settings -----------------------------------------------------------------------------------


def duration_ms(text: str) -> int:
    """'10s' / '5m' / '1h' / '1d' -> milliseconds."""
    text = text.strip()
    number, unit = text[:-1], text[-1:]
    if unit not in UNITS_MS or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"not a duration: {text!r} (a positive integer and one of s, m, h, d)")
    return int(number) * UNITS_MS[unit]


class WindowSpec(NamedTuple):
    name: str  # as written in the config, e.g. '1h/1m'
    size_ms: int
    slide_ms: int


def parse_spec(text: str) -> WindowSpec:
    size_text, slide_text = text.strip().split("/")
    size, slide = duration_ms(size_text), duration_ms(slide_text)
    if size % slide != 0:
        raise ValueError(f"window {text!r}: size is not a multiple of slide")
    return WindowSpec(text.strip(), size, slide)


def as_list(value: str | Iterable[str]) -> list[str]:
    """A config list given either as 'a,b' text or as a sequence."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return [item.strip() for item in value]


@dataclass(frozen=True)
class WindowSettings:
    """The knobs of the window stage, with the spec's defaults."""

    specs: str | Sequence[str] = ("1h/1m", "5m/10s")
    out_of_orderness_ms: int = 5_000
    allowed_lateness_ms: int = 600_000
    live_windows: str | Sequence[str] = ("30m", "1h")
    last_orders: int = 10
    order_event: str = "Order Completed"
    cart_event: str = "Product Added"
    triggers: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_TRIGGERS)

    def window_specs(self) -> list[WindowSpec]:
        return [parse_spec(text) for text in as_list(self.specs)]

    def pane_ms(self) -> int:
        return math.gcd(*(spec.slide_ms for spec in self.window_specs()))

    def live(self) -> list[tuple[str, int]]:
        """(name as written, size ms) of each live window."""
        return [(name, duration_ms(name)) for name in as_list(self.live_windows)]

    def history_ms(self) -> int:
        """How far back live state keeps rows: the largest live or rule window."""
        sizes = [size for _, size in self.live()]
        for rule in self.triggers.values():
            for condition in rule["when"]:
                if "window" in condition:
                    sizes.append(duration_ms(condition["window"]))
        return max(sizes)


# --- reading a doc ------------------------------------------------------------------------------


def epoch_millis(value: object) -> int:
    """A contract time (int epoch millis, or ISO-8601 text with a zone) as epoch millis,
    finer digits truncated."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return (parsed - EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int) -> str:
    """Epoch millis as 'YYYY-MM-DDTHH:MM:SS.fffZ' (the Redis / notification time format)."""
    moment = EPOCH + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def decimal_text(value: Decimal | int) -> str:
    """Plain decimal text: no exponent, trailing zeros stripped, '0' for zero."""
    value = Decimal(value)
    if value == 0:
        return "0"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def to_decimal(value: object) -> Decimal | None:
    """A JSON number (int or Decimal) or a decimal string as a finite Decimal, else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        if not DECIMAL_TEXT.fullmatch(value):  # Decimal() alone would take "1_0" and " 1 "
            return None
        number = Decimal(value)
    else:
        return None
    return number if number.is_finite() else None


def rounded(value: Decimal, unit: Decimal) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 80
        return value.quantize(unit, rounding=ROUND_HALF_EVEN)


def properties_of(doc: dict) -> dict:
    properties = doc.get("properties")
    return properties if isinstance(properties, dict) else {}


def event_type_of(doc: dict) -> str:
    """The track event's name; the record type for page / identify / alias."""
    return doc["event"] if doc["type"] == "track" else doc["type"]


def string_property(doc: dict, key: str) -> str:
    value = properties_of(doc).get(key)
    return value if isinstance(value, str) else ""


class EventRow(NamedTuple):
    tenant_id: str
    message_id: str
    event_ms: int
    event_type: str
    campaign_id: str
    revenue: Decimal | None  # None: the event has no revenue
    value: Decimal  # properties.price of a cart event; 0 for any other event
    order_id: str
    profile_id: str


class CostRow(NamedTuple):
    tenant_id: str
    message_id: str
    allocation_index: int
    event_ms: int  # usage_start
    team: str
    feature: str
    customer: str
    service: str
    currency: str
    billed_cost: Decimal
    effective_cost: Decimal
    usage_quantity: Decimal


def event_row(doc: dict, profile_id: str, settings: WindowSettings) -> EventRow:
    event_type = event_type_of(doc)
    revenue = to_decimal(properties_of(doc).get("revenue"))
    value = Decimal(0)
    if event_type == settings.cart_event:
        price = to_decimal(properties_of(doc).get("price"))
        value = rounded(price, REVENUE_UNIT) if price is not None else Decimal(0)
    return EventRow(
        tenant_id=doc["tenant_id"],
        message_id=doc["message_id"],
        event_ms=epoch_millis(doc["timestamp"]),
        event_type=event_type,
        campaign_id=string_property(doc, "campaign_id"),
        revenue=rounded(revenue, REVENUE_UNIT) if revenue is not None else None,
        value=value,
        order_id=string_property(doc, "order_id"),
        profile_id=profile_id,
    )


def cost_rows(doc: dict, allocations: list[dict]) -> list[CostRow]:
    return [
        CostRow(
            tenant_id=doc["tenant_id"],
            message_id=doc["message_id"],
            allocation_index=index,
            event_ms=epoch_millis(doc["usage_start"]),
            team=allocation["team"],
            feature=allocation["feature"],
            customer=allocation["customer"],
            service=doc["service"],
            currency=str(doc["currency"]).upper(),
            billed_cost=rounded(Decimal(allocation["billed_cost"]), MONEY_UNIT),
            effective_cost=rounded(Decimal(allocation["effective_cost"]), MONEY_UNIT),
            usage_quantity=rounded(Decimal(allocation["usage_quantity"]), MONEY_UNIT),
        )
        for index, allocation in enumerate(allocations)
    ]


def grouping_sets(row: CostRow) -> list[tuple[str, str, str, str]]:
    """The 6 (team, feature, customer, service) keys one allocation is folded into."""
    full = (row.team, row.feature, row.customer, row.service)
    keys = [full]
    for i in range(4):
        keys.append(tuple(ROLLED_UP if j == i else full[j] for j in range(4)))
    keys.append((ROLLED_UP,) * 4)
    return keys


def window_starts(event_ms: int, spec: WindowSpec) -> list[int]:
    """Starts s (multiples of slide) of the windows [s, s + size) that hold event_ms."""
    starts = []
    start = event_ms - event_ms % spec.slide_ms
    while start > event_ms - spec.size_ms:
        starts.append(start)
        start -= spec.slide_ms
    return starts


# --- live state ---------------------------------------------------------------------------------


@dataclass
class ProfileState:
    clock: int | None = None
    history: list[EventRow] = field(default_factory=list)  # rows with event_ms > clock - H
    latest: tuple[int, str, str] | None = None  # (event_ms, message_id, event_type)
    latest_order_ms: int | None = None  # over every order ever applied
    orders: list[EventRow] = field(default_factory=list)  # every order ever applied
    version: int = 0


@dataclass
class TeamState:
    clock: int | None = None
    history: list[CostRow] = field(default_factory=list)
    version: int = 0


def in_window(event_ms: int, clock: int, size_ms: int) -> bool:
    """Whether a row lies in the live window (clock - size, clock]."""
    return clock - size_ms < event_ms <= clock


def cart_value(state: ProfileState, cart_event: str) -> Decimal:
    total = Decimal(0)
    for row in state.history:
        if row.event_type != cart_event:
            continue
        if state.latest_order_ms is not None and row.event_ms <= state.latest_order_ms:
            continue
        total += row.value
    return total


class Condition(NamedTuple):
    """One trigger condition, parsed once."""

    metric: str  # count | sum | cart_value
    event: str | None  # count: the event type; sum: optional event-type filter
    field: str | None  # sum: revenue | value | billed_cost | effective_cost
    window_ms: int | None
    op: str
    threshold: Decimal
    label: str  # count:Product Viewed:30m, cart_value, sum:billed_cost:1h, ...


def parse_condition(raw: Mapping) -> Condition:
    metric = raw["metric"]
    if metric not in ("count", "sum", "cart_value") or raw["op"] not in OPS:
        raise ValueError(f"unknown metric or op: {dict(raw)}")
    threshold = to_decimal(raw["value"])
    if threshold is None:
        raise ValueError(f"value is not a number: {dict(raw)}")
    if metric == "cart_value":
        return Condition(metric, None, None, None, raw["op"], threshold, "cart_value")
    window = raw["window"]
    if metric == "count":
        label = f"count:{raw['event']}:{window}"
        return Condition(
            metric, raw["event"], None, duration_ms(window), raw["op"], threshold, label
        )
    event = raw.get("event")
    label = f"sum:{raw['field']}:{event}:{window}" if event else f"sum:{raw['field']}:{window}"
    return Condition(metric, event, raw["field"], duration_ms(window), raw["op"], threshold, label)


def profile_metric(state: ProfileState, condition: Condition, cart_event: str) -> Decimal:
    if condition.metric == "cart_value":
        return cart_value(state, cart_event)
    total = Decimal(0)
    for row in state.history:
        if not in_window(row.event_ms, state.clock, condition.window_ms):
            continue
        if condition.event is not None and row.event_type != condition.event:
            continue
        if condition.metric == "count":
            total += 1
        elif condition.field == "revenue":
            total += row.revenue if row.revenue is not None else 0
        elif condition.field == "value":
            total += row.value
        else:
            raise ValueError(f"condition not defined for profiles: {condition}")
    return total


def team_metric(state: TeamState, condition: Condition) -> Decimal:
    if condition.metric != "sum" or condition.field not in ("billed_cost", "effective_cost"):
        raise ValueError(f"condition not defined for teams: {condition}")
    total = Decimal(0)
    for row in state.history:
        if in_window(row.event_ms, state.clock, condition.window_ms):
            total += getattr(row, condition.field)
    return total


def metric_text(condition: Condition, value: Decimal) -> str:
    return str(int(value)) if condition.metric == "count" else decimal_text(value)


def profile_fields(state: ProfileState, settings: WindowSettings) -> dict[str, str]:
    """The Redis hash fields of one profile snapshot."""
    fields: dict[str, str] = {}
    for name, size in settings.live():
        counts: dict[str, int] = {}
        revenue = Decimal(0)
        for row in state.history:
            if in_window(row.event_ms, state.clock, size):
                counts[row.event_type] = counts.get(row.event_type, 0) + 1
                if row.revenue is not None:
                    revenue += row.revenue
        for event_type, count in counts.items():
            fields[f"events:{event_type}:{name}"] = str(count)
        fields[f"revenue:{name}"] = decimal_text(revenue)
    fields["last_event_at"] = iso_ms(state.clock)
    fields["last_event_type"] = state.latest[2]
    fields["cart_value"] = decimal_text(cart_value(state, settings.cart_event))
    newest = sorted(state.orders, key=lambda r: (r.event_ms, r.message_id), reverse=True)
    fields["last_orders"] = json.dumps(
        [
            {
                "order_id": r.order_id,
                "revenue": decimal_text(r.revenue) if r.revenue is not None else None,
                "event_time": iso_ms(r.event_ms),
                "message_id": r.message_id,
            }
            for r in newest[: settings.last_orders]
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return fields


def team_fields(state: TeamState, settings: WindowSettings) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, size in settings.live():
        rows = [r for r in state.history if in_window(r.event_ms, state.clock, size)]
        fields[f"billed_cost:{name}"] = decimal_text(sum((r.billed_cost for r in rows), Decimal(0)))
        fields[f"effective_cost:{name}"] = decimal_text(
            sum((r.effective_cost for r in rows), Decimal(0))
        )
    return fields


# --- the model ----------------------------------------------------------------------------------


class LateDetail(NamedTuple):
    event_ms: int
    watermark: int  # of the tenant-family when the row was judged
    lateness_ms: int  # watermark - event_ms


@dataclass
class WindowsOutcome:
    """What the window stage must have produced once every row is applied.

    Keys (times in epoch ms):
      late: (tenant, family, message_id, allocation_index)  [0 for events]
      cost_panes: (tenant, team, feature, customer, service, currency, pane_start)
        -> {billed_cost, effective_cost, usage_quantity, allocations, version}
      engagement_panes: (tenant, campaign_id, event_type, pane_start)
        -> {events, revenue, profiles (frozenset), version}
      profile_panes: (tenant, profile_id, event_type, pane_start)
        -> {events, revenue, last_event_at (ms), version}
      cost_windows: (window name, tenant, team, feature, customer, service, currency, start)
        -> {billed_cost, effective_cost, usage_quantity, allocations}
      engagement_windows: (window name, tenant, campaign_id, event_type, start)
        -> {events, revenue, profiles (frozenset)}
      profile_live: (tenant, profile_id) -> Redis hash fields (without `_v`)
      team_live: (tenant, team, currency) -> Redis hash fields (without `_v`)
      profile_versions / team_versions: same keys -> snapshot version (`_v`)
      notifications: tenant -> notification dicts in stream order
      progress: (tenant, family) -> final event clock (ms); watermark = clock - out_of_orderness
    """

    late: set[tuple[str, str, str, int]]
    late_details: dict[tuple[str, str, str, int], LateDetail]
    cost_panes: dict[tuple, dict[str, Any]]
    engagement_panes: dict[tuple, dict[str, Any]]
    profile_panes: dict[tuple, dict[str, Any]]
    cost_windows: dict[tuple, dict[str, Any]]
    engagement_windows: dict[tuple, dict[str, Any]]
    profile_live: dict[tuple[str, str], dict[str, str]]
    profile_versions: dict[tuple[str, str], int]
    team_live: dict[tuple[str, str, str], dict[str, str]]
    team_versions: dict[tuple[str, str, str], int]
    notifications: dict[str, list[dict[str, Any]]]
    progress: dict[tuple[str, str], int]


class _Model:
    """The state of one run; `apply_event` / `apply_cost` take rows in produce order."""

    def __init__(self, settings: WindowSettings) -> None:
        self.settings = settings
        self.specs = settings.window_specs()
        self.pane_ms = settings.pane_ms()
        self.history_ms = settings.history_ms()
        self.rules = [  # in configured order
            (rule_id, rule["entity"], [parse_condition(c) for c in rule["when"]])
            for rule_id, rule in settings.triggers.items()
        ]
        self.clocks: dict[tuple[str, str], int] = {}
        self.live_seq: dict[str, int] = {}
        self.late: dict[tuple[str, str, str, int], LateDetail] = {}
        self.cost_panes: dict[tuple, dict[str, Any]] = {}
        self.engagement_panes: dict[tuple, dict[str, Any]] = {}
        self.profile_panes: dict[tuple, dict[str, Any]] = {}
        self.counted_events: list[EventRow] = []  # in the order they were applied
        self.counted_costs: list[CostRow] = []
        self.profiles: dict[tuple[str, str], ProfileState] = {}
        self.teams: dict[tuple[str, str, str], TeamState] = {}
        self.holding: dict[tuple[str, str, str], bool] = {}  # (tenant, rule, entity_id)
        self.crossings: dict[tuple[str, str, str], int] = {}
        self.notifications: dict[str, list[dict[str, Any]]] = {}

    # lateness

    def counts(self, tenant: str, family: str, key: tuple, event_ms: int) -> bool:
        """Judge the row against its tenant-family clock, then move the clock. False = late."""
        clock = self.clocks.get((tenant, family))
        if clock is not None:
            watermark = clock - self.settings.out_of_orderness_ms
            if event_ms < watermark - self.settings.allowed_lateness_ms:
                self.late[key] = LateDetail(event_ms, watermark, watermark - event_ms)
                return False
        self.clocks[(tenant, family)] = event_ms if clock is None else max(clock, event_ms)
        return True

    def next_seq(self, tenant: str) -> int:
        self.live_seq[tenant] = self.live_seq.get(tenant, 0) + 1
        return self.live_seq[tenant]

    # customer events

    def apply_event(self, row: EventRow) -> None:
        key = (row.tenant_id, EVENTS, row.message_id, 0)
        if not self.counts(row.tenant_id, EVENTS, key, row.event_ms):
            return
        revenue = row.revenue if row.revenue is not None else Decimal(0)
        pane = row.event_ms - row.event_ms % self.pane_ms

        engagement = self.engagement_panes.setdefault(
            (row.tenant_id, row.campaign_id, row.event_type, pane),
            {"events": 0, "revenue": Decimal(0), "profiles": set(), "version": 0},
        )
        engagement["events"] += 1
        engagement["revenue"] += revenue
        if row.profile_id:
            engagement["profiles"].add(row.profile_id)
        engagement["version"] = engagement["events"]

        self.counted_events.append(row)

        if not row.profile_id:
            return
        per_profile = self.profile_panes.setdefault(
            (row.tenant_id, row.profile_id, row.event_type, pane),
            {"events": 0, "revenue": Decimal(0), "last_event_at": row.event_ms, "version": 0},
        )
        per_profile["events"] += 1
        per_profile["revenue"] += revenue
        per_profile["last_event_at"] = max(per_profile["last_event_at"], row.event_ms)
        per_profile["version"] = per_profile["events"]

        state = self.profiles.setdefault((row.tenant_id, row.profile_id), ProfileState())
        state.version = self.next_seq(row.tenant_id)
        state.clock = row.event_ms if state.clock is None else max(state.clock, row.event_ms)
        if state.latest is None or (row.event_ms, row.message_id) > state.latest[:2]:
            state.latest = (row.event_ms, row.message_id, row.event_type)
        if row.event_type == self.settings.order_event:
            state.orders.append(row)
            if state.latest_order_ms is None or row.event_ms > state.latest_order_ms:
                state.latest_order_ms = row.event_ms
        state.history.append(row)
        state.history = [r for r in state.history if r.event_ms > state.clock - self.history_ms]
        self.evaluate(
            row.tenant_id,
            "profile",
            row.profile_id,
            state.clock,
            row.message_id,
            lambda condition: profile_metric(state, condition, self.settings.cart_event),
        )

    # cost allocations

    def apply_cost(self, row: CostRow) -> None:
        key = (row.tenant_id, COST, row.message_id, row.allocation_index)
        if not self.counts(row.tenant_id, COST, key, row.event_ms):
            return
        self.counted_costs.append(row)
        pane = row.event_ms - row.event_ms % self.pane_ms
        for team, feature, customer, service in grouping_sets(row):
            dims = (row.tenant_id, team, feature, customer, service, row.currency)
            values = self.cost_panes.setdefault((*dims, pane), new_cost_values(version=True))
            add_cost(values, row)
            values["version"] = values["allocations"]

        state = self.teams.setdefault((row.tenant_id, row.team, row.currency), TeamState())
        state.version = self.next_seq(f"{row.tenant_id}/cost")
        state.clock = row.event_ms if state.clock is None else max(state.clock, row.event_ms)
        state.history.append(row)
        state.history = [r for r in state.history if r.event_ms > state.clock - self.history_ms]
        self.evaluate(
            row.tenant_id,
            "team",
            f"{row.team}|{row.currency}",
            state.clock,
            row.message_id,
            lambda condition: team_metric(state, condition),
        )

    # triggers

    def evaluate(
        self, tenant: str, entity_type: str, entity_id: str, clock: int, message_id: str, metric
    ) -> None:
        """Every rule of this entity type, in configured order, right after a row was applied."""
        for rule_id, rule_entity, conditions in self.rules:
            if rule_entity != entity_type:
                continue
            values: dict[str, str] = {}
            holds = True
            for condition in conditions:
                value = metric(condition)
                values[condition.label] = metric_text(condition, value)
                if not OPS[condition.op](value, condition.threshold):
                    holds = False
            key = (tenant, rule_id, entity_id)
            if holds and not self.holding.get(key, False):
                self.crossings[key] = self.crossings.get(key, 0) + 1
                self.notifications.setdefault(tenant, []).append(
                    {
                        "tenant_id": tenant,
                        "rule": rule_id,
                        "entity_type": entity_type,
                        "entity_id": entity_id,
                        "crossing": self.crossings[key],
                        "event_time": iso_ms(clock),
                        "message_id": message_id,
                        "values": values,
                    }
                )
            self.holding[key] = holds

    def outcome(self) -> WindowsOutcome:
        engagement_panes = {
            key: {**values, "profiles": frozenset(values["profiles"])}
            for key, values in self.engagement_panes.items()
        }
        return WindowsOutcome(
            late=set(self.late),
            late_details=dict(self.late),
            cost_panes=self.cost_panes,
            engagement_panes=engagement_panes,
            profile_panes=self.profile_panes,
            cost_windows=cost_windows(self.counted_costs, self.specs),
            engagement_windows=engagement_windows(self.counted_events, self.specs),
            profile_live={k: profile_fields(s, self.settings) for k, s in self.profiles.items()},
            profile_versions={k: s.version for k, s in self.profiles.items()},
            team_live={k: team_fields(s, self.settings) for k, s in self.teams.items()},
            team_versions={k: s.version for k, s in self.teams.items()},
            notifications=self.notifications,
            progress=dict(self.clocks),
        )


# --- windows, straight from the counted rows ----------------------------------------------------


def engagement_windows(
    rows: list[EventRow], specs: list[WindowSpec], by_slide: bool = True
) -> dict[tuple, dict[str, Any]]:
    """(window name, tenant, campaign_id, event_type, start) -> {events, revenue, profiles}.

    A row at t is in the windows of `window_starts(t)`. That list is the same for every t of
    one slide-aligned instant (t - t % slide), so rows are folded per (key, that instant)
    first and each fold is added to its windows: the same result as adding every row to
    every window (by_slide=False does exactly that; the unit tests compare the two), in a
    fraction of the time. The slide of each spec is used, never the pane.
    """
    windows: dict[tuple, dict[str, Any]] = {}
    for spec in specs:
        groups: dict[tuple, dict[str, Any]] = {}
        for row in rows:
            at = row.event_ms - row.event_ms % spec.slide_ms if by_slide else row.event_ms
            key = (row.tenant_id, row.campaign_id, row.event_type, at)
            group = groups.get(key)
            if group is None:
                group = groups[key] = {"events": 0, "revenue": Decimal(0), "profiles": set()}
            group["events"] += 1
            if row.revenue is not None:
                group["revenue"] += row.revenue
            if row.profile_id:
                group["profiles"].add(row.profile_id)
        for (tenant, campaign_id, event_type, at), group in groups.items():
            for start in window_starts(at, spec):
                key = (spec.name, tenant, campaign_id, event_type, start)
                window = windows.get(key)
                if window is None:
                    window = windows[key] = {"events": 0, "revenue": Decimal(0), "profiles": set()}
                window["events"] += group["events"]
                window["revenue"] += group["revenue"]
                window["profiles"] |= group["profiles"]
    return {
        key: {**values, "profiles": frozenset(values["profiles"])}
        for key, values in windows.items()
    }


def cost_windows(
    rows: list[CostRow], specs: list[WindowSpec], by_slide: bool = True
) -> dict[tuple, dict[str, Any]]:
    """(window name, tenant, team, feature, customer, service, currency, start) ->
    {billed_cost, effective_cost, usage_quantity, allocations}, over the 6 grouping sets of
    every counted allocation; folded per slide-aligned instant as in `engagement_windows`."""
    windows: dict[tuple, dict[str, Any]] = {}
    for spec in specs:
        groups: dict[tuple, dict[str, Any]] = {}
        for row in rows:
            at = row.event_ms - row.event_ms % spec.slide_ms if by_slide else row.event_ms
            for team, feature, customer, service in grouping_sets(row):
                key = (row.tenant_id, team, feature, customer, service, row.currency, at)
                group = groups.get(key)
                if group is None:
                    group = groups[key] = new_cost_values(version=False)
                add_cost(group, row)
        for (*dims, at), group in groups.items():
            for start in window_starts(at, spec):
                key = (spec.name, *dims, start)
                window = windows.get(key)
                if window is None:
                    window = windows[key] = new_cost_values(version=False)
                for name in ("billed_cost", "effective_cost", "usage_quantity", "allocations"):
                    window[name] += group[name]
    return windows


def new_cost_values(version: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "billed_cost": Decimal(0),
        "effective_cost": Decimal(0),
        "usage_quantity": Decimal(0),
        "allocations": 0,
    }
    if version:
        values["version"] = 0
    return values


def add_cost(values: dict[str, Any], row: CostRow) -> None:
    values["billed_cost"] += row.billed_cost
    values["effective_cost"] += row.effective_cost
    values["usage_quantity"] += row.usage_quantity
    values["allocations"] += 1


def expected_windows(
    docs: Iterable[dict],
    profile_ids: Mapping[tuple[str, str], str],
    allocations: Mapping[tuple[str, str], list[dict]],
    settings: WindowSettings | None = None,
) -> WindowsOutcome:
    """Apply the valid first-occurrence docs (produce order) one by one; the final outcome.

    profile_ids: (tenant, message_id) -> profile id of each customer event ("" = none; a
    missing key counts as ""). allocations: (tenant, message_id) -> allocation rows of each
    cost record, in allocation_index order (dicts with team, feature, customer, billed_cost,
    effective_cost, usage_quantity).
    """
    settings = settings or WindowSettings()
    model = _Model(settings)
    with localcontext() as ctx:
        ctx.prec = 80  # Decimal(38, 12) sums must never round
        for doc in docs:
            key = (doc["tenant_id"], doc["message_id"])
            if doc["type"] == "cost":
                for row in cost_rows(doc, allocations[key]):
                    model.apply_cost(row)
            else:
                model.apply_event(event_row(doc, profile_ids.get(key, ""), settings))
        return model.outcome()
