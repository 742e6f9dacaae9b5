"""The window views of migration 006 against the real ClickHouse engine (chDB HTTP server).

Pane rows are built here the way the window stage builds them (absolute values per pane,
version = rows folded, the six cost grouping sets read literally: the full row, each one
dimension replaced by '*', all four '*') and inserted as JSONEachRow text, including
a superseded older version of a pane (inserted after the newer one, as a replay would) and an
exact duplicate insert. The views must return exactly one row per window x key with the sums
of a reference computed straight from the rows (not from the panes), exact unique profiles
across panes, the window boundaries of the spec, is_final from the watermark and the idle
rule, and the documented dashboard queries (DASHBOARD_QUERIES, mirrored in the README) must
return the numbers worked out by hand below.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from tidemark import schema
from tidemark.config import Config

# --- the documented dashboard queries (the README section mirrors these verbatim) -----------

DASHBOARD_QUERIES: dict[str, tuple[str, str]] = {
    "cost_by_team_last_hour": (
        "Cost by team over the last hour: each tenant's newest final 1-hour window",
        """\
SELECT tenant_id, team, currency, window_start, window_end,
       sum(billed_cost) AS billed_cost, sum(effective_cost) AS effective_cost
FROM cost_windows_latest
WHERE window = '1h/1m' AND team != '*' AND feature != '*' AND customer != '*' AND service != '*'
GROUP BY tenant_id, team, currency, window_start, window_end
ORDER BY tenant_id, billed_cost DESC, team""",
    ),
    "spend_per_customer_last_hour": (
        "Spend per customer over the last hour (each tenant's newest final 1-hour window)",
        """\
SELECT tenant_id, customer, currency, window_start, window_end,
       sum(billed_cost) AS billed_cost, sum(effective_cost) AS effective_cost
FROM cost_windows_latest
WHERE window = '1h/1m' AND team != '*' AND feature != '*' AND customer != '*' AND service != '*'
GROUP BY tenant_id, customer, currency, window_start, window_end
ORDER BY tenant_id, billed_cost DESC, customer""",
    ),
    "spend_per_customer_today": (
        "Spend per customer today (the UTC day of each tenant's cost clock, so far)",
        """\
SELECT d.tenant_id AS tenant_id, d.customer AS customer, d.currency AS currency, d.day AS day,
       sum(d.billed_cost) AS billed_cost, sum(d.effective_cost) AS effective_cost,
       min(d.is_final) AS is_final
FROM cost_days AS d
INNER JOIN
(
    SELECT tenant_id, toDate(max(event_clock)) AS day
    FROM window_frontier WHERE family = 'cost'
    GROUP BY tenant_id
) AS today ON today.tenant_id = d.tenant_id AND today.day = d.day
WHERE d.team != '*' AND d.feature != '*' AND d.customer != '*' AND d.service != '*'
GROUP BY tenant_id, customer, currency, day
ORDER BY tenant_id, billed_cost DESC, customer""",
    ),
    "campaign_engagement_last_5m": (
        "Campaign engagement over the last 5 minutes (each tenant's newest final 5-minute"
        " window; event_type '*' = the whole campaign, its unique profiles counted once)",
        """\
SELECT tenant_id, campaign_id, event_type, window_start, window_end,
       events, unique_profiles, revenue
FROM engagement_windows_latest
WHERE window = '5m/10s' AND campaign_id != ''
ORDER BY tenant_id, campaign_id, event_type""",
    ),
    "profile_activity": (
        "A profile's activity, hour by hour (event_type '*' = all its events); parameters"
        " tenant and profile_id",
        """\
SELECT window_start, window_end, event_type, events, revenue, last_event_at, is_final
FROM profile_windows
WHERE tenant_id = {tenant:String} AND profile_id = {profile_id:String}
  AND window = '1h/1m' AND toMinute(window_start) = 0
ORDER BY window_start DESC, event_type""",
    ),
}


def dashboard_markdown() -> str:
    """The README section: every query above, verbatim."""
    parts = [
        "### Dashboard queries",
        "",
        "Windows are assembled from panes by views (migration 006): `cost_windows`,",
        "`engagement_windows`, `profile_windows` (every window of all history),",
        "`*_windows_between(since = ..., until = ...)` (the windows inside a time range; only",
        "the panes in it are read), `*_windows_latest` (each tenant's newest final window of",
        "every spec), `cost_days` and `window_frontier` (how far each tenant's windows are",
        "final). In the pane rows a rolled-up dimension is `'*'`; the cost queries below sum",
        "the full-detail rows (no `'*'`), which hold every allocation exactly once.",
        "",
        '"The last hour" is anchored in event time, at each tenant\'s newest *final* window',
        "(its watermark, or the idle rule), not at `now()`: a lagging pipeline or a replay of",
        "old data then shows the newest complete numbers instead of an empty or half-filled",
        "window. Wall-clock ranges go through the parameterized views:",
        "`cost_windows_between(since = now64(3) - INTERVAL 2 HOUR, until = now64(3))` is every",
        "window lying inside the last two hours.",
        "",
    ]
    for title, sql in DASHBOARD_QUERIES.values():
        parts += [f"**{title}**", "", "```sql", sql, "```", ""]
    return "\n".join(parts)


# --- time and the window specs ------------------------------------------------------------

PANE_MS = 10_000
SPECS = {"1h/1m": (3_600_000, 60_000), "5m/10s": (300_000, 10_000)}
SPEC_ROWS = [
    {
        "name": name,
        "size_ms": size,
        "slide_ms": slide,
        "pane_ms": PANE_MS,
        "allowed_lateness_ms": 600_000,
        "idle_timeout_ms": 60_000,
    }
    for name, (size, slide) in SPECS.items()
]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms(text: str) -> int:
    """'2026-11-01 00:04:50.5' (UTC) -> epoch millis."""
    return int((datetime.fromisoformat(text + "+00:00") - EPOCH) / timedelta(milliseconds=1))


def text(millis: int) -> str:
    """Epoch millis -> 'YYYY-MM-DD HH:MM:SS.fff', the job's time text."""
    return (EPOCH + timedelta(milliseconds=millis)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def naive(millis: int) -> datetime:
    """What clickhouse-connect returns for a DateTime64(3, 'UTC') value."""
    return (EPOCH + timedelta(milliseconds=millis)).replace(tzinfo=None)


def window_starts(event_ms: int, size: int, slide: int) -> range:
    """Starts of the windows [start, start + size) holding event_ms: multiples of the slide."""
    last = event_ms - event_ms % slide
    return range(last - size + slide, last + 1, slide)


# --- the counted rows, and the panes the window stage folds them into ----------------------


@dataclasses.dataclass(frozen=True)
class Alloc:
    tenant: str
    at: str
    team: str
    feature: str
    customer: str
    service: str
    currency: str
    billed: str
    effective: str
    usage: str


@dataclasses.dataclass(frozen=True)
class Event:
    tenant: str
    at: str
    profile: str
    campaign: str
    event_type: str
    revenue: str = "0"


# tenant, usage_start, team, feature, customer, service, currency, billed, effective, usage
ALLOCS = [
    Alloc(*line.split())
    for line in """
        acme    2026-10-31T23:59:50  search    index  cust-1  s3   USD  100   90    1
        acme    2026-11-01T00:04:51  checkout  cart   cust-1  ec2  USD  1.5   1.25  2
        acme    2026-11-01T00:04:55  search    index  cust-2  s3   USD  2     2     1
        acme    2026-11-01T00:05:10  checkout  cart   cust-2  ec2  USD  0.25  0.25  0.5
        acme    2026-11-01T00:40:00  checkout  pay    cust-1  ec2  USD  10    9     3
        globex  2026-11-01T00:04:52  data      etl    cust-9  ec2  EUR  7     7     1
    """.strip().splitlines()
]
EVENTS = [
    Event("acme", "2026-10-31 23:30:00", "p3", "", "Product Viewed"),
    Event("acme", "2026-11-01 00:04:50.5", "p1", "spring", "Product Viewed"),
    Event("acme", "2026-11-01 00:04:51", "p2", "spring", "Product Viewed"),
    Event("acme", "2026-11-01 00:04:58.5", "p1", "spring", "Product Viewed"),
    Event("acme", "2026-11-01 00:05:01", "p3", "spring", "Product Viewed"),
    Event("acme", "2026-11-01 00:05:02", "p3", "spring", "Order Completed", "59.98"),
    Event("acme", "2026-11-01 00:05:03", "p2", "spring", "Product Viewed"),
    Event("acme", "2026-11-01 00:04:53", "", "", "page"),  # anonymous: no profile row
    Event("globex", "2026-11-01 00:04:52", "q1", "fall", "Order Completed", "10.5"),
]
COST_DIMS = ("team", "feature", "customer", "service")


def grouping_sets(alloc: Alloc) -> list[tuple[str, ...]]:
    """The six (team, feature, customer, service) rows of one allocation ('*' = rolled up)."""
    full = tuple(getattr(alloc, d) for d in COST_DIMS)
    one_up = [(*full[:i], "*", *full[i + 1 :]) for i in range(4)]
    return [full, *one_up, ("*",) * 4]


def pane_of(at: str) -> int:
    return ms(at) - ms(at) % PANE_MS


def cost_pane_rows(allocs: Iterable[Alloc]) -> list[dict[str, Any]]:
    panes: dict[tuple, list] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0), 0])
    for a in allocs:
        for dims in grouping_sets(a):
            acc = panes[(a.tenant, *dims, a.currency, pane_of(a.at))]
            acc[0] += Decimal(a.billed)
            acc[1] += Decimal(a.effective)
            acc[2] += Decimal(a.usage)
            acc[3] += 1
    out = []
    for (tenant, team, feature, customer, service, currency, pane), acc in panes.items():
        billed, effective, usage, n = acc
        row = {
            "tenant_id": tenant, "team": team, "feature": feature, "customer": customer,
            "service": service, "currency": currency, "pane_start": text(pane),
            "billed_cost": str(billed), "effective_cost": str(effective),
            "usage_quantity": str(usage), "allocations": n, "version": n,
        }  # fmt: skip
        out.append(row)
    return out


def engagement_pane_rows(events: Iterable[Event]) -> list[dict[str, Any]]:
    panes: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0), set()])
    for e in events:
        acc = panes[(e.tenant, e.campaign, e.event_type, pane_of(e.at))]
        acc[0] += 1
        acc[1] += Decimal(e.revenue)
        if e.profile:
            acc[2].add(e.profile)
    out = []
    for (tenant, campaign, event_type, pane), (n, revenue, profiles) in panes.items():
        row = {
            "tenant_id": tenant, "campaign_id": campaign, "event_type": event_type,
            "pane_start": text(pane), "events": n, "revenue": str(revenue),
            "profiles": sorted(profiles), "version": n,
        }  # fmt: skip
        out.append(row)
    return out


def profile_pane_rows(events: Iterable[Event]) -> list[dict[str, Any]]:
    panes: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0), 0])
    for e in events:
        if not e.profile:
            continue
        acc = panes[(e.tenant, e.profile, e.event_type, pane_of(e.at))]
        acc[0] += 1
        acc[1] += Decimal(e.revenue)
        acc[2] = max(acc[2], ms(e.at))
    out = []
    for (tenant, profile, event_type, pane), (n, revenue, last) in panes.items():
        row = {
            "tenant_id": tenant, "profile_id": profile, "event_type": event_type,
            "pane_start": text(pane), "events": n, "revenue": str(revenue),
            "last_event_at": text(last), "version": n,
        }  # fmt: skip
        out.append(row)
    return out


# --- references: windows straight from the rows, without panes -----------------------------


def cost_reference() -> dict[tuple, tuple]:
    out: dict[tuple, list] = defaultdict(lambda: [Decimal(0), Decimal(0), Decimal(0), 0])
    for name, (size, slide) in SPECS.items():
        for a in ALLOCS:
            for start in window_starts(ms(a.at), size, slide):
                for dims in grouping_sets(a):
                    acc = out[(name, a.tenant, *dims, a.currency, naive(start))]
                    acc[0] += Decimal(a.billed)
                    acc[1] += Decimal(a.effective)
                    acc[2] += Decimal(a.usage)
                    acc[3] += 1
    return {key: tuple(value) for key, value in out.items()}


def engagement_reference() -> dict[tuple, tuple]:
    out: dict[tuple, list] = defaultdict(lambda: [0, set(), Decimal(0)])
    for name, (size, slide) in SPECS.items():
        for e in EVENTS:
            for start in window_starts(ms(e.at), size, slide):
                for event_type in (e.event_type, "*"):
                    acc = out[(name, e.tenant, e.campaign, event_type, naive(start))]
                    acc[0] += 1
                    acc[1] |= {e.profile} - {""}
                    acc[2] += Decimal(e.revenue)
    return {k: (n, len(profiles), revenue) for k, (n, profiles, revenue) in out.items()}


def profile_reference() -> dict[tuple, tuple]:
    out: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0), 0])
    for name, (size, slide) in SPECS.items():
        for e in EVENTS:
            if not e.profile:
                continue
            for start in window_starts(ms(e.at), size, slide):
                for event_type in (e.event_type, "*"):
                    acc = out[(name, e.tenant, e.profile, event_type, naive(start))]
                    acc[0] += 1
                    acc[1] += Decimal(e.revenue)
                    acc[2] = max(acc[2], ms(e.at))
    return {k: (n, revenue, naive(last)) for k, (n, revenue, last) in out.items()}


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def client(clickhouse_cfg: Config) -> Iterator[Client]:
    """A client on a fresh database with every migration applied; dropped afterwards."""
    name = f"t_windows_{uuid.uuid4().hex[:10]}"
    cfg = dataclasses.replace(
        clickhouse_cfg, clickhouse=dataclasses.replace(clickhouse_cfg.clickhouse, database=name)
    )
    schema.apply(cfg)
    client = schema.connect(cfg)
    client.database = name
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS {name}")
        client.close()


def insert(client: Client, table: str, rows: list[dict[str, Any]]) -> None:
    """JSONEachRow text, as the job inserts it; an unknown field fails the insert."""
    client.raw_insert(
        table,
        insert_block=b"\n".join(orjson.dumps(row) for row in rows),
        fmt="JSONEachRow",
        settings={"input_format_skip_unknown_fields": 0},
    )


def progress(
    client: Client, tenant: str, family: str, watermark: str, updated_at: datetime | None = None
) -> None:
    """A window_progress row; the clock is the watermark + the default 5 s out-of-orderness."""
    row: dict[str, Any] = {
        "tenant_id": tenant,
        "family": family,
        "watermark": text(ms(watermark)),
        "event_clock": text(ms(watermark) + 5000),
        "version": ms(watermark) + 5000,
    }
    if updated_at is not None:
        row["updated_at"] = updated_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    insert(client, "window_progress", [row])


def load(client: Client) -> None:
    """Specs and panes, with an older version of some panes arriving after the newer one and
    the whole final batch inserted twice."""
    for table in ("cost_panes", "engagement_panes", "profile_panes"):
        client.command(f"SYSTEM STOP MERGES {table}")  # FINAL, not a merge, must collapse
    insert(client, "window_specs", SPEC_ROWS)
    partial_cost = cost_pane_rows(ALLOCS[:2])  # acme's 00:04:50 pane before 00:04:55 arrived
    partial_events = EVENTS[:2]  # p1's 00:04:50 pane before p2 and p1's second event
    insert(client, "cost_panes", partial_cost)
    insert(client, "engagement_panes", engagement_pane_rows(partial_events))
    insert(client, "profile_panes", profile_pane_rows(partial_events))
    for _ in range(2):  # the final values, then an exact duplicate insert (a retried batch)
        insert(client, "cost_panes", cost_pane_rows(ALLOCS))
        insert(client, "engagement_panes", engagement_pane_rows(EVENTS))
        insert(client, "profile_panes", profile_pane_rows(EVENTS))
    # A replay re-sends the older versions after the newer ones: they must not win.
    insert(client, "cost_panes", [{**row, "updated_at": text(0)} for row in partial_cost])
    insert(client, "engagement_panes", engagement_pane_rows(partial_events)[::-1])
    insert(client, "profile_panes", profile_pane_rows(partial_events)[::-1])


def rows(client: Client, sql: str, **parameters: Any) -> list[tuple]:
    return client.query(sql, parameters=parameters).result_rows


# --- tests ---------------------------------------------------------------------------------


def test_new_tables_and_views_exist(client: Client) -> None:
    engines = dict(
        rows(
            client,
            "SELECT name, engine FROM system.tables WHERE database = {db:String}",
            db=client.database,
        )
    )
    for table in schema.WINDOW_TABLES:
        assert engines[table] == "ReplacingMergeTree", table
    for view in (
        "late_events_current", "window_frontier", "cost_days",
        *(f"{f}_windows{s}" for f in ("cost", "engagement", "profile") for s in ("", "_between")),
        "cost_windows_latest", "engagement_windows_latest",
    ):  # fmt: skip
        assert engines[view] == "View", view
    assert 6 in schema.applied_versions(client, client.database)


def test_windows_equal_the_reference_one_row_per_window_and_key(client: Client) -> None:
    load(client)
    # The stale and duplicate rows are physically there; FINAL hides them.
    assert client.command("SELECT count() FROM cost_panes") > len(cost_pane_rows(ALLOCS))

    cost = rows(
        client,
        "SELECT window, tenant_id, team, feature, customer, service, currency, window_start,"
        " billed_cost, effective_cost, usage_quantity, allocations,"
        " toUnixTimestamp64Milli(window_end) - toUnixTimestamp64Milli(window_start)"
        " FROM cost_windows",
    )
    assert len(cost) == len({r[:8] for r in cost})  # one row per window x key
    assert {r[:8]: r[8:12] for r in cost} == cost_reference()
    assert {(r[0], r[12]) for r in cost} == {(name, size) for name, (size, _) in SPECS.items()}

    engagement = rows(
        client,
        "SELECT window, tenant_id, campaign_id, event_type, window_start,"
        " events, unique_profiles, revenue FROM engagement_windows",
    )
    assert len(engagement) == len({r[:5] for r in engagement})
    assert {r[:5]: r[5:] for r in engagement} == engagement_reference()

    profile = rows(
        client,
        "SELECT window, tenant_id, profile_id, event_type, window_start,"
        " events, revenue, last_event_at FROM profile_windows",
    )
    assert len(profile) == len({r[:5] for r in profile})
    assert {r[:5]: r[5:] for r in profile} == profile_reference()


def test_window_boundaries_and_hand_worked_sums(client: Client) -> None:
    load(client)
    # globex's only cost is one pane in the last 10 s of the 5-minute window [00:00, 00:05):
    # it lies in 30 windows of 5m/10s and 60 of 1h/1m.
    spans = rows(
        client,
        "SELECT window, count(), min(window_start), max(window_start), max(window_end),"
        " sum(billed_cost) FROM cost_windows WHERE tenant_id = 'globex' AND team = '*'"
        " AND feature = '*' AND customer = '*' AND service = '*' GROUP BY window ORDER BY window",
    )
    assert spans == [
        ("1h/1m", 60, naive(ms("2026-10-31 23:05:00")), naive(ms("2026-11-01 00:04:00")),
         naive(ms("2026-11-01 01:04:00")), Decimal(7 * 60)),
        ("5m/10s", 30, naive(ms("2026-11-01 00:00:00")), naive(ms("2026-11-01 00:04:50")),
         naive(ms("2026-11-01 00:09:50")), Decimal(7 * 30)),
    ]  # fmt: skip

    def checkout(window: str, start: str) -> Decimal:
        return rows(
            client,
            "SELECT sum(billed_cost) FROM cost_windows WHERE tenant_id = 'acme'"
            " AND team = 'checkout' AND feature != '*' AND customer != '*' AND service != '*'"
            " AND window = {w:String} AND window_start = {s:DateTime64(3, 'UTC')}",
            w=window,
            s=start,
        )[0][0]

    assert checkout("5m/10s", "2026-11-01 00:00:00") == Decimal("1.5")
    assert checkout("5m/10s", "2026-11-01 00:01:00") == Decimal("1.75")
    assert checkout("5m/10s", "2026-11-01 00:04:50") == Decimal("1.75")
    assert checkout("5m/10s", "2026-11-01 00:05:00") == Decimal("0.25")
    assert checkout("1h/1m", "2026-11-01 00:00:00") == Decimal("11.75")

    # A profile in two panes of one window counts once: p1 and p2 at 00:04:50, p2 and p3 at
    # 00:05:00 -> 3 profiles over 5 events in [00:01:00, 00:06:00), 2 in [00:00:00, 00:05:00).
    spring = rows(
        client,
        "SELECT window_start, event_type, events, unique_profiles, revenue"
        " FROM engagement_windows WHERE tenant_id = 'acme' AND campaign_id = 'spring'"
        " AND window = '5m/10s' AND window_start IN ('2026-11-01 00:00:00', '2026-11-01 00:01:00')"
        " ORDER BY window_start, event_type",
    )
    assert spring == [
        (naive(ms("2026-11-01 00:00:00")), "*", 3, 2, Decimal(0)),
        (naive(ms("2026-11-01 00:00:00")), "Product Viewed", 3, 2, Decimal(0)),
        (naive(ms("2026-11-01 00:01:00")), "*", 6, 3, Decimal("59.98")),
        (naive(ms("2026-11-01 00:01:00")), "Order Completed", 1, 1, Decimal("59.98")),
        (naive(ms("2026-11-01 00:01:00")), "Product Viewed", 5, 3, Decimal(0)),
    ]

    # The parameterized view returns exactly the windows inside the range.
    between = rows(
        client,
        "SELECT window, tenant_id, team, feature, customer, service, currency, window_start,"
        " billed_cost FROM cost_windows_between(since = '2026-11-01 00:00:00',"
        " until = '2026-11-01 00:10:00')",
    )
    inside = rows(
        client,
        "SELECT window, tenant_id, team, feature, customer, service, currency, window_start,"
        " billed_cost FROM cost_windows WHERE window_start >= '2026-11-01 00:00:00'"
        " AND window_end <= '2026-11-01 00:10:00'",
    )
    expected = {
        key: value
        for key, value in cost_reference().items()
        if key[7] >= naive(ms("2026-11-01 00:00:00"))
        and key[7] + timedelta(milliseconds=SPECS[key[0]][0]) <= naive(ms("2026-11-01 00:10:00"))
    }
    assert {r[:8]: r[8] for r in between} == {k: v[0] for k, v in expected.items()}
    assert len(between) == len(expected) > 0 and sorted(between) == sorted(inside)


def finality(client: Client, tenant: str, window: str, start: str) -> list[bool]:
    return [
        r[0]
        for r in rows(
            client,
            "SELECT DISTINCT is_final FROM cost_windows WHERE tenant_id = {t:String}"
            " AND window = {w:String} AND window_start = {s:DateTime64(3, 'UTC')}",
            t=tenant,
            w=window,
            s=start,
        )
    ]


def test_is_final_follows_the_watermark(client: Client) -> None:
    load(client)
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:00:00") == [False]  # no progress

    progress(client, "acme", "cost", "2026-11-01 00:05:00")
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:00:00") == [True]  # end = wm
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:00:10") == [False]
    assert finality(client, "acme", "1h/1m", "2026-10-31 23:05:00") == [True]
    assert finality(client, "acme", "1h/1m", "2026-10-31 23:06:00") == [False]

    progress(client, "acme", "cost", "2026-11-01 00:06:00")  # a newer row: the windows flip
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:00:10") == [True]
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:01:00") == [True]
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:01:10") == [False]
    assert finality(client, "acme", "1h/1m", "2026-10-31 23:06:00") == [True]

    progress(client, "acme", "cost", "2026-11-01 00:05:00")  # a replayed older row: no flip back
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:01:00") == [True]
    # The other family's watermark does not finalize cost windows, nor another tenant's.
    progress(client, "acme", "events", "2026-11-01 02:00:00")
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:01:10") == [False]
    assert finality(client, "globex", "5m/10s", "2026-11-01 00:00:00") == [False]
    events_final = rows(
        client,
        "SELECT DISTINCT is_final FROM engagement_windows WHERE tenant_id = 'acme'"
        " AND window_end <= '2026-11-01 02:00:00'",
    )
    assert events_final == [(True,)]


def test_idle_tenant_windows_close_at_the_family_watermark(client: Client) -> None:
    load(client)
    now = datetime.now(UTC)
    progress(client, "acme", "cost", "2026-11-01 00:06:00")
    # globex's own watermark is before the end of [00:00, 00:05), and its last progress row
    # is 30 s old: not idle under the 60 s timeout, so the window is not final.
    quiet = now - timedelta(seconds=30)
    progress(client, "globex", "cost", "2026-11-01 00:04:00", updated_at=quiet)
    assert finality(client, "globex", "5m/10s", "2026-11-01 00:00:00") == [False]
    frontier = rows(
        client,
        "SELECT idle, watermark, final_until FROM window_frontier"
        " WHERE tenant_id = 'globex' AND family = 'cost' AND window = '5m/10s'",
    )
    wm = naive(ms("2026-11-01 00:04:00"))
    assert frontier == [(False, wm, wm)]

    # The job resubmitted with a 20 s idle timeout (window_specs is replaced whole): globex
    # is now idle, so its windows are final up to the family's highest watermark (acme's).
    client.command("TRUNCATE TABLE window_specs")
    insert(client, "window_specs", [{**row, "idle_timeout_ms": 20_000} for row in SPEC_ROWS])
    assert finality(client, "globex", "5m/10s", "2026-11-01 00:00:00") == [True]
    assert finality(client, "globex", "5m/10s", "2026-11-01 00:01:00") == [True]  # end 00:06
    assert finality(client, "globex", "5m/10s", "2026-11-01 00:01:10") == [False]
    frontier = rows(
        client,
        "SELECT idle, watermark, final_until FROM window_frontier"
        " WHERE tenant_id = 'globex' AND family = 'cost' AND window = '5m/10s'",
    )
    assert frontier == [(True, wm, naive(ms("2026-11-01 00:06:00")))]
    # acme sent progress just now: not idle, still final only up to its own watermark.
    assert finality(client, "acme", "5m/10s", "2026-11-01 00:01:10") == [False]


def test_late_events_current_collapses_replays(client: Client) -> None:
    client.command("SYSTEM STOP MERGES late_events")
    row = {
        "tenant_id": "acme",
        "family": "events",
        "message_id": "m-late",
        "allocation_index": 0,
        "event_time": "2026-11-01 00:00:00.000",
        "watermark": "2026-11-01 00:15:00.000",
        "lateness_ms": 900_000,
        "reason": "beyond_allowed_lateness",
        "payload": '{"message_id":"m-late"}',
    }
    cost_row = {**row, "family": "cost", "message_id": "c-late", "allocation_index": 1}
    insert(client, "late_events", [row])
    insert(client, "late_events", [row, cost_row])  # a replay, batched differently
    assert client.command("SELECT count() FROM late_events") == 3
    assert rows(
        client, "SELECT family, message_id, allocation_index, lateness_ms FROM late_events_current"
        " ORDER BY family"
    ) == [("cost", "c-late", 1, 900_000), ("events", "m-late", 0, 900_000)]  # fmt: skip


def test_dashboard_queries(client: Client) -> None:
    load(client)
    progress(client, "acme", "cost", "2026-11-01 00:45:00")
    progress(client, "globex", "cost", "2026-11-01 00:05:00")
    progress(client, "acme", "events", "2026-11-01 00:05:10")
    progress(client, "globex", "events", "2026-11-01 00:05:00")

    def run(name: str, **parameters: Any) -> list[tuple]:
        return rows(client, DASHBOARD_QUERIES[name][1], **parameters)

    # acme's newest final hour is [23:45, 00:45): everything but nothing from before 23:45;
    # globex's is [23:05, 00:05).
    acme_hour = (naive(ms("2026-10-31 23:45:00")), naive(ms("2026-11-01 00:45:00")))
    globex_hour = (naive(ms("2026-10-31 23:05:00")), naive(ms("2026-11-01 00:05:00")))
    assert run("cost_by_team_last_hour") == [
        ("acme", "search", "USD", *acme_hour, Decimal("102"), Decimal("92")),
        ("acme", "checkout", "USD", *acme_hour, Decimal("11.75"), Decimal("10.5")),
        ("globex", "data", "EUR", *globex_hour, Decimal("7"), Decimal("7")),
    ]
    assert run("spend_per_customer_last_hour") == [
        ("acme", "cust-1", "USD", *acme_hour, Decimal("111.5"), Decimal("100.25")),
        ("acme", "cust-2", "USD", *acme_hour, Decimal("2.25"), Decimal("2.25")),
        ("globex", "cust-9", "EUR", *globex_hour, Decimal("7"), Decimal("7")),
    ]
    # Today (2026-11-01 for both clocks): acme's 100 from the day before is not in it.
    today = datetime(2026, 11, 1).date()
    assert run("spend_per_customer_today") == [
        ("acme", "cust-1", "USD", today, Decimal("11.5"), Decimal("10.25"), False),
        ("acme", "cust-2", "USD", today, Decimal("2.25"), Decimal("2.25"), False),
        ("globex", "cust-9", "EUR", today, Decimal("7"), Decimal("7"), False),
    ]
    # acme's newest final 5 minutes are [00:00:10, 00:05:10): p1, p2 viewed at 00:04:50.5-58.5,
    # p3 and p2 at 00:05:01-03, p3 ordered; globex's are [00:00, 00:05).
    acme_5m = (naive(ms("2026-11-01 00:00:10")), naive(ms("2026-11-01 00:05:10")))
    globex_5m = (naive(ms("2026-11-01 00:00:00")), naive(ms("2026-11-01 00:05:00")))
    assert run("campaign_engagement_last_5m") == [
        ("acme", "spring", "*", *acme_5m, 6, 3, Decimal("59.98")),
        ("acme", "spring", "Order Completed", *acme_5m, 1, 1, Decimal("59.98")),
        ("acme", "spring", "Product Viewed", *acme_5m, 5, 3, Decimal("0")),
        ("globex", "fall", "*", *globex_5m, 1, 1, Decimal("10.5")),
        ("globex", "fall", "Order Completed", *globex_5m, 1, 1, Decimal("10.5")),
    ]
    hour_0 = (naive(ms("2026-11-01 00:00:00")), naive(ms("2026-11-01 01:00:00")))
    hour_23 = (naive(ms("2026-10-31 23:00:00")), naive(ms("2026-11-01 00:00:00")))
    assert run("profile_activity", tenant="acme", profile_id="p3") == [
        (*hour_0, "*", 2, Decimal("59.98"), naive(ms("2026-11-01 00:05:02")), False),
        (*hour_0, "Order Completed", 1, Decimal("59.98"), naive(ms("2026-11-01 00:05:02")), False),
        (*hour_0, "Product Viewed", 1, Decimal("0"), naive(ms("2026-11-01 00:05:01")), False),
        (*hour_23, "*", 1, Decimal("0"), naive(ms("2026-10-31 23:30:00")), True),
        (*hour_23, "Product Viewed", 1, Decimal("0"), naive(ms("2026-10-31 23:30:00")), True),
    ]
