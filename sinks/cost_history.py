"""Keep cost_hourly / cost_daily equal to cost_allocations, bucket by bucket (migration 009).

Cost history is bucketed by each allocation's own usage_start (the FOCUS ChargePeriodStart),
not by when it arrived, so an out-of-order or late cost file is counted in full here even
where the live windows sent it to late_events.

Why recompute instead of adding: ClickHouse's own exactly-once tool, the insert dedup token,
does not cover a Flink replay, which re-batches rows (new tokens), nor a file loaded again
after the dedup horizon. cost_allocations absorbs those copies (ReplacingMergeTree, read with
FINAL), so each touched bucket is recomputed from it and written as absolute rows with a
version that only grows: recomputing twice writes the same sums, and ReplacingMergeTree keeps
the newest. Cheap, because only the buckets of the batch just inserted are read, through the
leading (tenant_id, toStartOfHour(usage_start)) primary key of cost_allocations.

A key (team, service, ...) that no longer has any allocation in its hour (its record was
re-attributed) is rewritten with zero sums and allocations = 0, so the hour's old team does
not keep the cost; days are summed from the hours, zero rows included, so they follow.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

ALLOCATIONS_TABLE = "cost_allocations"
#: The cost windows' dimensions (cost_panes), so history and live windows group alike.
DIMENSIONS = ("currency", "team", "feature", "customer", "service")

_DIMS = ", ".join(DIMENSIONS)
_SUMS = "billed_cost, effective_cost, usage_quantity"

# Every statement covers all the tenants of a batch at once: in a profile of the windows bench,
# one hourly and one daily statement per tenant per batch were 64% of ClickHouse's time (about
# 50 and 20 ms each, mostly fixed cost), and made the writer the job's bottleneck.
_HOURS = "{hours:Array(Tuple(String, DateTime('UTC')))}"  # (tenant_id, hour) buckets

_HOURLY = f"""
INSERT INTO cost_hourly (tenant_id, hour, {_DIMS}, {_SUMS}, allocations, version)
WITH fresh AS (
    SELECT tenant_id, toStartOfHour(usage_start) AS hour, {_DIMS},
           sum(billed_cost) AS billed_cost, sum(effective_cost) AS effective_cost,
           sum(usage_quantity) AS usage_quantity, count() AS allocations,
           max(toUInt64(toUnixTimestamp64Milli(max(ingested_at))))
               OVER (PARTITION BY tenant_id, hour) AS version
    FROM cost_allocations FINAL
    WHERE (tenant_id, toStartOfHour(usage_start)) IN {_HOURS}
    GROUP BY tenant_id, hour, {_DIMS}
)
SELECT tenant_id, hour, {_DIMS}, {_SUMS}, allocations, version FROM fresh
UNION ALL
SELECT old.tenant_id, old.hour, {", ".join(f"old.{d}" for d in DIMENSIONS)},
       toDecimal128(0, 12), toDecimal128(0, 12), toDecimal128(0, 12), toUInt64(0), v.version
FROM (
    SELECT tenant_id, hour, {_DIMS} FROM cost_hourly FINAL
    WHERE (tenant_id, hour) IN {_HOURS} AND allocations > 0
) AS old
INNER JOIN (SELECT DISTINCT tenant_id, hour, version FROM fresh) AS v
    ON v.tenant_id = old.tenant_id AND v.hour = old.hour
LEFT ANTI JOIN fresh AS f
    ON f.tenant_id = old.tenant_id AND f.hour = old.hour
   AND {" AND ".join(f"f.{d} = old.{d}" for d in DIMENSIONS)}
"""

_DAILY = f"""
INSERT INTO cost_daily (tenant_id, day, {_DIMS}, {_SUMS}, allocations, version)
SELECT tenant_id, toDate(hour) AS day, {_DIMS},
       sum(billed_cost), sum(effective_cost), sum(usage_quantity), sum(allocations),
       max(max(version)) OVER (PARTITION BY tenant_id, day)
FROM cost_hourly FINAL
WHERE (tenant_id, toDate(hour)) IN {{days:Array(Tuple(String, Date))}}
GROUP BY tenant_id, day, {_DIMS}
"""


def touched_buckets(lines: Iterable[bytes | str]) -> dict[str, set[str]]:
    """tenant_id -> the hours ('YYYY-MM-DD hh:00:00', UTC) that a batch of cost_allocations
    JSON rows touches. usage_start is the validator's 'YYYY-MM-DD hh:mm:ss.fff' UTC text."""
    buckets: dict[str, set[str]] = {}
    for line in lines:
        row = orjson.loads(line)
        buckets.setdefault(row["tenant_id"], set()).add(row["usage_start"][:13] + ":00:00")
    return buckets


def refresh(client: Any, buckets: dict[str, set[str]]) -> None:
    """Recompute the given hours, then their days, of every tenant given (idempotent): two
    statements, whatever the number of tenants."""
    hours = sorted(
        (tenant, hour) for tenant, tenant_hours in buckets.items() for hour in tenant_hours
    )
    if not hours:
        return
    client.command(_HOURLY, parameters={"hours": hours})
    days = sorted({(tenant, hour[:10]) for tenant, hour in hours})
    client.command(_DAILY, parameters={"days": days})
