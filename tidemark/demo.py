"""`tidemark demo`: the main job end to end on the local stack, with a report.

Starts the stack, applies the schema, resets the demo's topics and tables, generates a
realistic stream (duplicates, late and malformed events included), produces it to Kafka,
submits the ingest job to the standalone cluster and waits until ClickHouse holds what the
generator says it should: every valid event once, every malformed one as a dead letter.
Dimension files matching the generator's catalog are written first (`tidemark
gen-dimensions`), so events are enriched and cost attributed; the report ends with what the
profile stage made of the stream (profiles, merges, allocations, a Redis lookup).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from tidemark import flink_rest, schema, topics
from tidemark.config import Config, load_config
from tidemark.gen import DEFAULT_EVENTS_PER_SECOND, DEFAULT_START_MS, generate
from tidemark.gen_dimensions import write_dimension_files
from tidemark.produce import produce
from tidemark.run import submit
from tidemark.stack import flink
from tidemark.stack.commands import start_stack


@dataclass(frozen=True)
class Expected:
    """What ClickHouse must hold after the job has read the stream, from the generator's truth."""

    produced: int
    events: int
    cost_records: int
    dead_letters: int

    @property
    def duplicates(self) -> int:
        return self.produced - self.events - self.cost_records - self.dead_letters


def reset(cfg: Config) -> None:
    """Fresh topics and empty tables, so the report counts this run only."""
    admin = topics.admin_client(cfg)
    try:
        existing = set(admin.list_topics())
        doomed = [t for t in topics.topic_names(cfg) if t in existing]
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()
    topics.ensure_topics(cfg)
    client = schema.connect(cfg)
    try:
        for table in (*schema.INGEST_TABLES, *schema.PROFILE_TABLES, *schema.WINDOW_TABLES):
            client.command(f"TRUNCATE TABLE {cfg.clickhouse.database}.{table}")
    finally:
        client.close()
    from sinks.redis_profiles import RedisSettings, connect

    r = connect(RedisSettings.from_config(cfg))
    try:
        doomed = list(r.scan_iter(match=f"{cfg.redis.key_prefix}:*", count=10_000))
        for start in range(0, len(doomed), 10_000):
            r.delete(*doomed[start : start + 10_000])
    finally:
        r.close()


def profile_summary(cfg: Config) -> list[str]:
    """Report lines on what the profile stage made of the stream."""
    db = cfg.clickhouse.database
    client = schema.connect(cfg)
    try:

        def one(sql: str) -> object:
            return client.query(sql).result_rows[0][0]

        profiles = one(f"SELECT count() FROM {db}.profiles_current")
        merges = one(f"SELECT count() FROM {db}.identity_merges FINAL")
        links = one(f"SELECT count() FROM {db}.identity_links FINAL")
        unknown = one(
            f"SELECT countIf(has(product_names, 'unknown') OR campaign_channel = 'unknown' "
            f"OR account_plan = 'unknown') FROM {db}.events FINAL"
        )
        allocations = one(f"SELECT count() FROM {db}.cost_allocations FINAL")
        unallocated = one(
            f"SELECT sum(billed_cost) FROM {db}.cost_allocations FINAL WHERE team = 'unallocated'"
        )
        sample = client.query(
            f"SELECT tenant_id, id_type, id_value, profile_id FROM {db}.identity_links FINAL "
            "WHERE id_type = 'email' ORDER BY id_value LIMIT 1"
        ).result_rows
    finally:
        client.close()
    lines = [
        f"profiles (live)      {profiles:>10,}   from {links:,} identifiers, {merges:,} merges",
        f"events with an unknown dimension {unknown:>6,}   (the demo files leave some out)",
        f"cost allocations     {allocations:>10,}   unallocated billed cost {unallocated}",
    ]
    if sample:
        tenant, kind, value, profile = sample[0]
        key = f"{cfg.redis.key_prefix}:{tenant}:id:{kind}:{value}"
        lines.append(f"Redis: HGET {key} p  ->  {profile}")
    return lines


def window_summary(cfg: Config) -> list[str]:
    """Report lines on the windows, live state and notifications (a dashboard's first look)."""
    db = cfg.clickhouse.database
    client = schema.connect(cfg)
    try:
        panes = client.query(
            f"SELECT (SELECT count() FROM {db}.cost_panes FINAL), "
            f"(SELECT count() FROM {db}.engagement_panes FINAL), "
            f"(SELECT count() FROM {db}.profile_panes FINAL), "
            f"(SELECT count() FROM {db}.late_events FINAL)"
        ).result_rows[0]
        top_campaign = client.query(
            f"SELECT tenant_id, campaign_id, events, unique_profiles, revenue, window_end "
            f"FROM {db}.engagement_windows_latest WHERE window = '5m/10s' AND campaign_id != '' "
            "AND event_type = '*' ORDER BY events DESC LIMIT 1"
        ).result_rows
    finally:
        client.close()
    lines = [
        f"window panes         cost {panes[0]:,}, engagement {panes[1]:,}, profile {panes[2]:,}"
        f"; late events {panes[3]:,}",
    ]
    if top_campaign:
        tenant, campaign, events, profiles, revenue, end = top_campaign[0]
        lines.append(
            f"top campaign (5 min to {end:%H:%M:%S}): {tenant}/{campaign} {events:,} events, "
            f"{profiles:,} profiles, revenue {revenue}"
        )
    from sinks.redis_profiles import RedisSettings, connect

    r = connect(RedisSettings.from_config(cfg))
    try:
        prefix = cfg.redis.key_prefix
        streams = list(r.scan_iter(match=f"{prefix}:*:notifications", count=10_000))
        notes = sum(r.xlen(s) for s in streams)
        rules: dict[str, int] = {}
        for stream in streams:
            for _, entry in r.xrange(stream, count=10_000):
                rule = entry[b"rule"].decode()
                rules[rule] = rules.get(rule, 0) + 1
        live = next(iter(r.scan_iter(match=f"{prefix}:*:profile:*:live", count=1_000)), None)
    finally:
        r.close()
    by_rule = ", ".join(f"{rule} {n:,}" for rule, n in sorted(rules.items()))
    lines.append(f"notifications        {notes:>10,}   ({by_rule or 'none'})")
    if live is not None:
        lines.append(f"Redis: HGETALL {live.decode()}")
    return lines


def generate_stream(
    seed: int,
    count: int,
    start_ms: int = DEFAULT_START_MS,
    events_per_second: float = DEFAULT_EVENTS_PER_SECOND,
) -> tuple[list[tuple[bytes, bytes]], Expected]:
    """The records to produce, and the counts they must yield (from generator truth).

    Values are copied: each fresh from orjson.dumps keeps ~4 KiB alive (measured: 300k kept
    values of ~570 B held 1.3 GB, their copies 265 MB).
    """
    records, events, costs, dead = [], 0, 0, 0
    for record in generate(
        seed=seed, count=count, start_ms=start_ms, events_per_second=events_per_second
    ):
        records.append((bytes(memoryview(record.key)), bytes(memoryview(record.value))))
        truth = record.truth
        if not truth.valid:
            dead += 1
        elif truth.duplicate_of is None:
            events += truth.table == "events"
            costs += truth.table == "cost_records"
    return records, Expected(len(records), events, costs, dead)


def table_counts(cfg: Config) -> dict[str, int]:
    """Distinct rows per table (FINAL collapses rows a replay may have written twice)."""
    client = schema.connect(cfg)
    try:
        return {
            table: int(
                client.query(
                    f"SELECT count() FROM {cfg.clickhouse.database}.{table} FINAL"
                ).result_rows[0][0]
            )
            for table in schema.INGEST_TABLES
        }
    finally:
        client.close()


def wait_for(cfg: Config, expected: Expected, job_id: str, timeout: float) -> dict[str, int]:
    """Poll ClickHouse until the counts are reached (or the timeout passes)."""
    want = {
        "events": expected.events,
        "cost_records": expected.cost_records,
        "dead_letters": expected.dead_letters,
    }
    deadline = time.monotonic() + timeout
    counts = table_counts(cfg)
    while counts != want and time.monotonic() < deadline:
        state = flink_rest.job_state(flink.rest_url(cfg), job_id)
        if state in flink_rest.TERMINAL_STATES:
            raise RuntimeError(f"job {job_id} ended ({state}) before the data arrived")
        time.sleep(0.5)
        counts = table_counts(cfg)
    return counts


def wait_for_profiles(cfg: Config, timeout: float = 30.0) -> None:
    """The identity tables are written just after the events of the same batch: settle."""
    client = schema.connect(cfg)
    try:
        count = f"SELECT count() FROM {cfg.clickhouse.database}.identity_links"
        deadline, last = time.monotonic() + timeout, -1
        while time.monotonic() < deadline:
            now = int(client.command(count))
            if now == last:
                return
            last = now
            time.sleep(2)
    finally:
        client.close()


def _cmd_demo(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    started = time.perf_counter()
    print("starting the local stack (Apache Kafka, Redis, ClickHouse, Flink) ...")
    for item in start_stack(cfg):
        print(f"  {item.name:<11} {item.state} {item.detail}")
    schema.apply(cfg)
    reset(cfg)
    records, expected = generate_stream(args.seed, args.count)
    print(f"generated {expected.produced} records (seed {args.seed})")
    dimensions = cfg.state_dir / "demo-dimensions"
    write_dimension_files(dimensions, seed=args.seed, start_ms=DEFAULT_START_MS)
    print(f"wrote dimension files for the generator's catalog to {dimensions}")
    report = produce(cfg, records, total=len(records), show_progress=True)
    print(f"produced to {cfg.kafka.topic} at {report.rate:,.0f} records/s")
    job_id = submit(cfg, "ingest", extra_overrides=[f"enrichment.dimensions_dir={dimensions}"])
    url = flink.rest_url(cfg)
    flink_rest.wait_running(url, job_id)
    print(f"ingest job {job_id} running on the standalone cluster ({url})")
    job_started = time.perf_counter()
    counts = wait_for(cfg, expected, job_id, args.timeout)
    took = time.perf_counter() - job_started
    ok = counts == {
        "events": expected.events,
        "cost_records": expected.cost_records,
        "dead_letters": expected.dead_letters,
    }
    print()
    print(f"events in            {expected.produced:>10,}")
    print(f"rows out: events     {counts['events']:>10,}   (expected {expected.events:,})")
    print(
        f"rows out: cost       {counts['cost_records']:>10,}   (expected {expected.cost_records:,})"
    )
    print(
        f"dead letters         {counts['dead_letters']:>10,}   (expected {expected.dead_letters:,})"
    )
    print(f"duplicates dropped   {expected.duplicates:>10,}")
    print(f"time in the job      {took:>10.1f} s  ({expected.produced / took:,.0f} events/s)")
    if ok:
        wait_for_profiles(cfg)
        for line in [*profile_summary(cfg), *window_summary(cfg)]:
            print(line)
    if not args.keep_running:
        flink_rest.cancel(url, job_id)
    print(f"total time           {time.perf_counter() - started:>10.1f} s")
    print("OK: ClickHouse matches the generator's truth" if ok else "MISMATCH: see above")
    print("stop the stack with: .venv/bin/tidemark stack down")
    return 0 if ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the ingest job end to end on the local stack")
    parser.add_argument("--count", type=int, default=200_000, help="records to generate")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for rows")
    parser.add_argument("--keep-running", action="store_true", help="leave the job running")
    parser.set_defaults(func=_cmd_demo)
