"""Issue 4's windows, live state and triggers, measured end to end, with a Java-only bound.

    .venv/bin/python -m bench.windows_bench [--events 200000] [--rate N]
                                            [--steady-seconds 30] [--seed 7]

Three parts, one run (bench.ingest_bench's machinery: private stack, `flink run`, RSS/CPU
sampling, checkpoint stats, Flink log findings):

1. Whole job, windows on (profile stage + window stage, the generator's dimension files):
   the backlog is produced before the job exists; the catch-up clock runs from the last
   subtask RUNNING until every output is in ClickHouse: the ingest tables equal the
   generator's truth (as ingest_bench), every (tenant, family) clock in `window_progress`
   equals the generator's max event time for it, and no window/identity table has received
   a row for a few seconds. events/s = N / (last output row visible - RUNNING).
2. Freshness under a steady load: the generator's events at `--rate` (background; by default
   half of part 1's sustained rate, issue 9's "at half of capacity"), plus
   *probes* at `--probe-rate` per second: valid `track` events of tenant acme with event
   name "Bench Probe", a fresh `user_id` each and event time = send time, produced with the
   same producer code and partitioner (so they queue behind the tenant's background events
   on its partition). Per probe, from its send time (= its Kafka record timestamp) to:
   (a) Redis: `{p}:acme:id:user_id:{uid}` field `p` names the profile, and
       `{p}:acme:profile:{pid}:live` has `last_event_at` = the probe's event time
       (pipelined polls every 20 ms);
   (b) ClickHouse: a `profile_panes` row of that profile (polls every 200 ms); the row's
       `updated_at` (insert time) gives the same lag without the poll's granularity.
   Why probes: background rows do not identify themselves in Redis (a live hash is an
   absolute snapshot of many events) and panes aggregate many rows, so "when did *this*
   event's effect become visible" can only be asked of an event that alone makes a key.
3. Pure Flink SQL, the same cost windows over the same records (the Java-only upper bound):
   the backlog's raw values, produced (untimed) to a topic of a private Apache Kafka broker
   and read back by Flink's Kafka connector (bounded at the latest offsets, `raw` format)
   on a local mini-cluster with the job's Flink settings, parsed with JSON_VALUE,
   valid-looking `cost` rows kept, HOP windows 1h/1m and 5m/10s per tenant x service x
   currency (SUM billed/effective, COUNT). A baseline run only reads and parses. Reported:
   records/s from the last subtask RUNNING to the end of the job (as part 1's clock), and
   net of the baseline; CPU seconds.

Prints each part and a summary against issue 9's targets (>= 15,000 events/s sustained,
>= 0.5x the pure SQL job, p95 freshness <= 1 s at half of capacity); everything goes to
`bench/results/windows-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import ingest_bench
from bench.ingest_bench import log, now_ms
from tidemark import flink_rest, jars, schema, topics
from tidemark.config import Config, load_config
from tidemark.demo import Expected, generate_stream
from tidemark.freshness import (
    CLICKHOUSE_POLL_SECONDS,
    PROBE_TENANT,
    REDIS_POLL_SECONDS,
    ProbeRun,
    redis_client,
)
from tidemark.gen import DEFAULT_START_MS, generate
from tidemark.gen_dimensions import write_dimension_files
from tidemark.produce import produce
from tidemark.stack import flink
from tidemark.stack.commands import start_stack, stop_stack

TARGET_EVENTS_PER_SECOND = 15_000  # issue 9: the whole job, windows on
TARGET_VS_SQL = 0.5  # issue 9: the whole job's rate over the pure SQL job's
TARGET_FRESHNESS_P95_MS = 1_000  # issue 9: at half of capacity (part 2's default rate)
MIN_STEADY_RATE = 100.0  # part 2's floor when part 1 measured (almost) nothing
QUIET_SECONDS = 3.0  # no new output row for this long: the job has written everything

#: The tables the job writes besides the ingest ones, and their "became visible" column.
OUTPUT_VISIBLE = {
    "profiles": "updated_at",
    "identity_links": "updated_at",
    "cost_allocations": "ingested_at",
    "cost_panes": "updated_at",
    "engagement_panes": "updated_at",
    "profile_panes": "updated_at",
    "late_events": "ingested_at",
    "window_progress": "updated_at",
}


# --- part 1: the backlog, with the answers the window outputs must reach ------------------------


class WindowsBacklog(ingest_bench.BacklogProducer):
    """ingest_bench's backlog, plus each (tenant, family)'s max event time (the clock the
    window stage must reach) and the raw values written to a file for part 3."""

    def __init__(self, cfg: Config, seed: int, count: int, data_path: Path) -> None:
        super().__init__(cfg, seed, count)
        self.data_path = data_path
        self.clocks: dict[tuple[str, str], int] = {}
        self.file_records = 0
        self.valid_cost_records = 0  # including re-sent duplicates: the SQL job does not dedup

    def run(self) -> None:
        try:
            records, events, costs, dead = [], 0, 0, 0
            with self.data_path.open("wb") as data:
                for record in generate(seed=self.seed, count=self.count):
                    key, value = bytes(memoryview(record.key)), bytes(memoryview(record.value))
                    records.append((key, value))
                    if b"\n" not in value and b"\r" not in value:
                        data.write(value + b"\n")
                        self.file_records += 1
                    truth = record.truth
                    if not truth.valid:
                        dead += 1
                        continue
                    if truth.table == "cost_records":
                        self.valid_cost_records += 1
                    if truth.duplicate_of is not None:
                        continue
                    events += truth.table == "events"
                    costs += truth.table == "cost_records"
                    family = "events" if truth.table == "events" else "cost"
                    clock_key = (truth.tenant_id, family)
                    if truth.event_ms is not None:
                        self.clocks[clock_key] = max(self.clocks.get(clock_key, 0), truth.event_ms)
            self.expected = Expected(len(records), events, costs, dead)
            log(f"phase 1: producing {self.count:,} events (seed {self.seed}) before the job")
            self.produced = produce(self.cfg, records, total=len(records))
        except BaseException as exc:  # re-raised by result() in the main thread
            self.error = exc


def query_rows(cfg: Config, sql: str) -> list[tuple[Any, ...]]:
    client = schema.connect(cfg)
    try:
        return [tuple(row) for row in client.query(sql).result_rows]
    finally:
        client.close()


def progress_clocks(cfg: Config) -> dict[tuple[str, str], int]:
    """(tenant, family) -> the highest event clock (ms) the job wrote to window_progress."""
    db = cfg.clickhouse.database
    rows = query_rows(
        cfg,
        f"SELECT tenant_id, family, max(toUnixTimestamp64Milli(event_clock)) "
        f"FROM {db}.window_progress GROUP BY tenant_id, family",
    )
    return {(str(t), str(f)): int(ms) for t, f, ms in rows}


def last_output_ms(cfg: Config) -> dict[str, int]:
    """Per output table, when its newest row became visible (epoch ms; 0 if empty)."""
    db = cfg.clickhouse.database
    parts = [
        f"SELECT '{table}', toInt64(max(toUnixTimestamp64Milli({column}))) FROM {db}.{table}"
        for table, column in OUTPUT_VISIBLE.items()
    ]
    return {str(t): int(ms or 0) for t, ms in query_rows(cfg, " UNION ALL ".join(parts))}


def wait_for_windows(
    cfg: Config, want: dict[tuple[str, str], int], job_id: str, timeout: float
) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
    """Poll until every (tenant, family) clock reaches the generator's, then until no output
    table has received a row for QUIET_SECONDS (late rows within lateness may still correct
    panes after the clock is reached). Returns the clocks and each table's last row time."""
    url = flink.rest_url(cfg)
    deadline = time.monotonic() + timeout
    clocks: dict[tuple[str, str], int] = {}
    while time.monotonic() < deadline:
        if flink_rest.job_state(url, job_id) in flink_rest.TERMINAL_STATES:
            raise RuntimeError(f"job {job_id} ended: {flink_rest.exceptions(url, job_id)}")
        clocks = progress_clocks(cfg)
        if all(clocks.get(key, -1) >= ms for key, ms in want.items()):
            break
        time.sleep(1.0)
    last, quiet_since = last_output_ms(cfg), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < QUIET_SECONDS:
        time.sleep(1.0)
        now = last_output_ms(cfg)
        if now != last:
            last, quiet_since = now, time.monotonic()
    return progress_clocks(cfg), last


def window_checks(cfg: Config) -> dict[str, Any]:
    """Cross-checks of the window outputs against the tables they were folded from."""
    db = cfg.clickhouse.database
    (row,) = query_rows(
        cfg,
        f"SELECT "
        f"(SELECT count() FROM {db}.events FINAL), "
        f"(SELECT sum(events) FROM {db}.engagement_panes FINAL), "
        f"(SELECT count() FROM {db}.cost_allocations FINAL), "
        f"(SELECT sum(allocations) FROM {db}.cost_panes FINAL WHERE team = '*' "
        f"AND feature = '*' AND customer = '*' AND service = '*'), "
        f"(SELECT countIf(family = 'events') FROM {db}.late_events FINAL), "
        f"(SELECT countIf(family = 'cost') FROM {db}.late_events FINAL), "
        f"(SELECT count() FROM {db}.cost_panes FINAL), "
        f"(SELECT count() FROM {db}.engagement_panes FINAL), "
        f"(SELECT count() FROM {db}.profile_panes FINAL)",
    )
    events, pane_events, allocations, pane_allocations, late_ev, late_cost = (
        int(x or 0) for x in row[:6]
    )
    return {
        "events_rows": events,
        "engagement_pane_events": pane_events,
        "late_events": late_ev,
        "events_match": pane_events + late_ev == events,
        "allocation_rows": allocations,
        "cost_pane_allocations": pane_allocations,
        "late_cost": late_cost,
        "cost_match": pane_allocations + late_cost == allocations,
        "pane_rows": {"cost": int(row[6]), "engagement": int(row[7]), "profile": int(row[8])},
    }


def redis_summary(cfg: Config) -> dict[str, int]:
    """Notifications per stream and how many live hashes exist (SCAN, after the run)."""
    client = redis_client(cfg)
    try:
        prefix = cfg.redis.key_prefix
        notifications = sum(
            int(client.xlen(key)) for key in client.scan_iter(f"{prefix}:*:notifications", 1000)
        )
        profiles = sum(1 for _ in client.scan_iter(f"{prefix}:*:profile:*:live", 5000))
        teams = sum(1 for _ in client.scan_iter(f"{prefix}:*:team:*:live", 5000))
        return {"notifications": notifications, "profile_live": profiles, "team_live": teams}
    finally:
        client.close()


def windows_phase1(
    cfg: Config,
    args: argparse.Namespace,
    backlog: ingest_bench.BacklogProducer,
    report: ingest_bench.Report,
) -> str:
    """ingest_bench's phase 1, then the wait for the window outputs; the clock stops at
    the last output row of any table."""
    assert isinstance(backlog, WindowsBacklog)
    job_id = ingest_bench.run_phase1(cfg, args, backlog, report)
    p = report.phase1
    log("phase 1: ingest tables complete; waiting for the window outputs")
    clocks, last = wait_for_windows(cfg, backlog.clocks, job_id, args.timeout)
    behind = {
        f"{t}/{f}": {"want": ms, "got": clocks.get((t, f))}
        for (t, f), ms in backlog.clocks.items()
        if clocks.get((t, f)) != ms
    }
    end_ms = max([p["last_row_visible_ms"], *last.values()])
    catch_up = end_ms / 1000 - p["running_at_epoch_seconds"]
    checks = window_checks(cfg)
    p.update(
        windows={
            "clocks_expected": len(backlog.clocks),
            "clocks_not_matching": behind,
            "last_row_ms_per_table": last,
            "last_output_after_last_ingest_row_seconds": round(
                (end_ms - p["last_row_visible_ms"]) / 1000, 2
            ),
            "checks": checks,
            "redis": redis_summary(cfg),
        },
        whole_job_catch_up_seconds=round(catch_up, 2),
        whole_job_events_per_second=round(p["events"] / catch_up) if catch_up > 0 else None,
    )
    if behind:
        report.errors.append(f"phase 1: window clocks differ from the generator's: {behind}")
    for name in ("events", "cost"):
        if not checks[f"{name}_match"]:
            report.notes.append(f"phase 1: {name} panes do not add up to their rows: {checks}")
    log(
        f"phase 1: all outputs in {catch_up:.1f} s = "
        f"{p['whole_job_events_per_second']:,} events/s (windows on)"
    )
    return job_id


# --- part 2: probes ------------------------------------------------------------------------------


def phase2_rate(args: argparse.Namespace, report: ingest_bench.Report) -> float:
    """--rate if given, else half of the capacity part 1 just measured (issue 9 asks for the
    freshness "at half of capacity": above capacity a backlog grows and freshness only says
    how long the run was)."""
    if args.rate:
        return float(args.rate)
    capacity = report.phase1.get("whole_job_events_per_second") or 0
    return max(MIN_STEADY_RATE, round(capacity / 2))


def probe_phase2(
    cfg: Config, args: argparse.Namespace, job_id: str, report: ingest_bench.Report
) -> None:
    """Background events at phase2_rate plus probes at --probe-rate, for --steady-seconds."""
    rate = phase2_rate(args, report)
    count = int(rate * args.steady_seconds)
    probes = int(args.probe_rate * args.steady_seconds)
    start_ms = now_ms() + 1000  # simulated clock ~ real clock: event times look live
    records, expected = generate_stream(args.seed + 1, count, start_ms, rate)
    want = ingest_bench.expected_map(expected)
    want["events"] += probes
    client = schema.connect(cfg)
    try:
        baseline = ingest_bench.raw_total(client, cfg.clickhouse.database)
    finally:
        client.close()
    log(
        f"phase 2: {count:,} events at {rate:,.0f}/s and {probes} probes at "
        f"{args.probe_rate:g}/s for ~{args.steady_seconds} s"
    )
    since_ms = now_ms()
    run = ProbeRun(cfg, probes, args.probe_rate, time.strftime("%H%M%S", time.gmtime()))
    outcome: dict[str, Any] = {}

    def background() -> None:
        try:
            outcome["report"] = produce(cfg, records, rate=rate, total=count)
        except Exception as exc:
            outcome["error"] = exc

    threads = [
        threading.Thread(target=background, name="steady-producer", daemon=True),
        threading.Thread(target=run.send, name="probe-producer", daemon=True),
        threading.Thread(target=run.poll_redis, name="redis-poller", daemon=True),
        threading.Thread(target=run.poll_clickhouse, args=(since_ms,), name="ch-poller",
                         daemon=True),
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    threads[0].join()
    threads[1].join()
    if "error" in outcome:
        run.stop.set()
        raise outcome["error"]
    sent = outcome["report"]
    log(f"phase 2: sent {sent.records:,} at {sent.rate:,.0f}/s; waiting for the probes")
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and not run.all_seen():
        if flink_rest.job_state(flink.rest_url(cfg), job_id) == "FAILED":
            break
        time.sleep(0.5)
    run.stop.set()
    for thread in threads[2:]:
        thread.join(timeout=10)
    counts, _ = ingest_bench.wait_for_counts(
        cfg, want, job_id, args.timeout, since_ms=since_ms, baseline_raw=baseline
    )
    client = schema.connect(cfg)
    try:
        lat = ingest_bench.latency(client, cfg.clickhouse.database, since_ms)
    finally:
        client.close()
    fresh = run.summary()
    report.phase2 = {
        "events": count,
        "target_rate": rate,
        "rate_rule": "--rate" if args.rate else "half of part 1's sustained rate",
        "probe_rate": args.probe_rate,
        "achieved_produce_rate": round(sent.rate),
        "produce_seconds": round(sent.seconds, 2),
        "expected": want,
        "counts": counts,
        "complete": counts == want,
        "ingest_latency": {k: lat[k] for k in ("rows", "p50_ms", "p95_ms", "p99_ms", "max_ms")},
        "freshness": fresh,
        "probes": [asdict(p) for p in run.probes],
    }
    for attr, label in (("redis_live", "Redis"), ("clickhouse_polled", "ClickHouse")):
        if fresh[attr]["n"] < fresh["probes_sent"]:
            report.errors.append(
                f"phase 2: only {fresh[attr]['n']} of {fresh['probes_sent']} probes seen in {label}"
            )
    report.errors += [f"phase 2: {e}" for e in fresh["errors"]]
    if counts != want:
        report.errors.append(f"phase 2 incomplete after {args.timeout:.0f} s: {counts} != {want}")
    if sent.rate < 0.95 * rate:
        report.errors.append(
            f"phase 2 producer reached only {sent.rate:,.0f}/s of the {rate:,.0f}/s asked"
        )
    log(
        f"phase 2: freshness p95 Redis {fresh['redis_live']['p95_ms']} ms, "
        f"ClickHouse {fresh['clickhouse_polled']['p95_ms']} ms"
    )


# --- part 3: the same cost windows in pure Flink SQL ---------------------------------------------

TS_PATTERN = "yyyy-MM-dd''T''HH:mm:ss.SSS''Z''"

#: Event time of a valid cost record; anything else (other types, unparsable or out-of-range
#: times, which the validator rejects) gets the epoch, so it never moves the watermark: the
#: generator's "future" faults would otherwise push it to the year 2299 and every later row
#: would be dropped as late. The rowtime must not be NULL, hence the epoch.
EVENT_TIME = f"""
    CASE WHEN TO_TIMESTAMP(JSON_VALUE(line, '$.usage_start'), '{TS_PATTERN}')
              BETWEEN TIMESTAMP '2000-01-01 00:00:00' AND TIMESTAMPADD(HOUR, 1, LOCALTIMESTAMP)
         THEN TO_TIMESTAMP(JSON_VALUE(line, '$.usage_start'), '{TS_PATTERN}')
         ELSE TIMESTAMP '1970-01-01 00:00:00' END"""

SOURCE_DDL = f"""
    CREATE TEMPORARY TABLE raw_in (
      line STRING,
      ts AS {EVENT_TIME},
      WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
    ) WITH (
      'connector' = 'kafka',
      'topic' = '{{topic}}',
      'properties.bootstrap.servers' = '{{bootstrap}}',
      'properties.group.id' = 'windows-bench-sql',
      'properties.isolation.level' = 'read_committed',
      'scan.startup.mode' = 'earliest-offset',
      'scan.bounded.mode' = 'latest-offset',
      'format' = 'raw'
    )"""

#: Valid-looking cost rows (the contract's required fields parse); not the full validator.
COSTS_VIEW = f"""
    CREATE TEMPORARY VIEW costs AS
    SELECT tenant, service, currency, billed, effective, ts FROM (
      SELECT
        JSON_VALUE(line, '$.type') AS type,
        JSON_VALUE(line, '$.message_id') AS message_id,
        JSON_VALUE(line, '$.tenant_id') AS tenant,
        JSON_VALUE(line, '$.service') AS service,
        JSON_VALUE(line, '$.account_id') AS account_id,
        UPPER(JSON_VALUE(line, '$.currency')) AS currency,
        TRY_CAST(JSON_VALUE(line, '$.billed_cost') AS DECIMAL(38, 12)) AS billed,
        TRY_CAST(JSON_VALUE(line, '$.effective_cost') AS DECIMAL(38, 12)) AS effective,
        TO_TIMESTAMP(JSON_VALUE(line, '$.usage_start'), '{TS_PATTERN}') AS usage_start,
        TO_TIMESTAMP(JSON_VALUE(line, '$.usage_end'), '{TS_PATTERN}') AS usage_end,
        ts
      FROM raw_in)
    WHERE type = 'cost' AND message_id <> '' AND tenant <> '' AND service <> ''
      AND account_id <> '' AND CHAR_LENGTH(currency) = 3 AND billed IS NOT NULL
      AND effective IS NOT NULL AND ts > TIMESTAMP '1970-01-01 00:00:00'
      AND usage_end >= usage_start"""

WINDOW_SINK = """
    CREATE TEMPORARY TABLE window_sink (
      spec STRING, tenant STRING, service STRING, currency STRING, window_start TIMESTAMP(3),
      window_end TIMESTAMP(3), billed DECIMAL(38, 12), effective DECIMAL(38, 12), n BIGINT
    ) WITH ('connector' = 'print')"""

PARSE_SINK = """
    CREATE TEMPORARY TABLE parsed_sink (
      tenant STRING, service STRING, currency STRING, billed DECIMAL(38, 12),
      effective DECIMAL(38, 12), ts TIMESTAMP(3)
    ) WITH ('connector' = 'blackhole')"""

HOP_QUERY = """
    SELECT '{name}' AS spec, tenant, service, currency, window_start, window_end,
           SUM(billed) AS billed, SUM(effective) AS effective, COUNT(*) AS n
    FROM TABLE(HOP(TABLE costs, DESCRIPTOR(ts), INTERVAL '{slide}' SECOND(5),
                   INTERVAL '{size}' SECOND(5)))
    GROUP BY tenant, service, currency, window_start, window_end"""

#: issue 4's default specs: (name, slide s, size s)
SPECS = (("1h/1m", 60, 3600), ("5m/10s", 10, 300))


class RunningWatch(threading.Thread):
    """Polls the mini-cluster's REST API (every 50 ms) for the epoch ms at which the last
    subtask of the job switched to RUNNING (Flink's own timestamps, as ingest_bench uses).

    Why: the net job runtime Flink reports includes seconds of job initialisation, deployment
    and task start-up here (~3 s for a 20k-record file); timed from RUNNING to
    the end of the job, the SQL job is measured like the whole job (RUNNING to last row).
    """

    def __init__(self, port: int) -> None:
        super().__init__(name="running-watch", daemon=True)
        self.base = f"http://127.0.0.1:{port}"
        self.running_ms: int | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        vertices: list[str] = []
        job_id = ""
        while not self.stop_event.wait(0.05) and self.running_ms is None:
            with contextlib.suppress(Exception):
                if not vertices:  # the graph exists once the job left INITIALIZING
                    for job in flink_rest.jobs(self.base):
                        job_id = job["jid"]
                        detail = flink_rest.call(self.base, f"/jobs/{job_id}")
                        vertices = [v["id"] for v in detail.get("vertices", [])]
                    continue
                running = []
                for vertex in vertices:
                    path = f"/jobs/{job_id}/vertices/{vertex}/subtasktimes"
                    subtasks = flink_rest.call(self.base, path).get("subtasks", [])
                    running += [sub.get("timestamps", {}).get("RUNNING", 0) for sub in subtasks]
                if running and all(running):
                    self.running_ms = int(max(running))


@contextlib.contextmanager
def sql_topic(data: Path, work: Path) -> Iterator[tuple[str, str]]:
    """(bootstrap, topic): a private broker whose topic holds the file's records, one per
    line; stopped on exit. Producing is not timed: the SQL job starts once it is done."""
    from tests.support import stack_overrides

    cfg = load_config(overrides=stack_overrides(work / "sql-stack"))
    try:
        start_stack(cfg, ["kafka"])
        topics.ensure_topics(cfg)
        with data.open("rb") as lines:
            records = [(None, line.rstrip(b"\n")) for line in lines]
        produce(cfg, records, total=len(records))
        yield cfg.kafka_bootstrap, cfg.kafka.topic
    finally:
        stop_stack(cfg, ["kafka"])


def sql_child(variant: str, bootstrap: str, topic: str, state_dir: Path) -> dict[str, Any]:
    """Run one variant on a mini-cluster in this process; return its measurements."""
    from jobs.environment import create_environment
    from tests.support import free_ports

    began = time.perf_counter()
    (port,) = free_ports(1)
    cfg = load_config(
        overrides=[
            f"stack.state_dir={state_dir}",
            f"flink.rest.bind-port={port}",
            f"flink.rest.port={port}",
            # in the environment's own settings: a mini-cluster's table planner finds the
            # connector only if the jar is there when the environment is made
            f"flink.pipeline.jars={jars.connector_jar().resolve().as_uri()}",
        ]
    )
    _env, t_env = create_environment(cfg, f"windows-bench-sql-{variant}")
    config = t_env.get_config()
    config.set("table.local-time-zone", "UTC")  # LOCALTIMESTAMP in EVENT_TIME
    # Checkpoints keep running while data flows (as in the job), but a finished bounded input
    # does not wait for one more checkpoint (up to an interval, 5 s) before the job ends: the
    # whole job's clock stops at its last output row, not at a checkpoint.
    config.set("execution.checkpointing.checkpoints-after-tasks-finish", "false")
    t_env.execute_sql(SOURCE_DDL.format(topic=topic, bootstrap=bootstrap))
    t_env.execute_sql(COSTS_VIEW)
    out: dict[str, Any] = {"variant": variant}
    watch = RunningWatch(port)
    watch.start()
    started = time.perf_counter()
    if variant == "parse":
        t_env.execute_sql(PARSE_SINK)
        result = t_env.execute_sql(
            "INSERT INTO parsed_sink SELECT tenant, service, currency, billed, effective, "
            "CAST(ts AS TIMESTAMP(3)) FROM costs"
        )
        result.wait()
    else:  # the window rows go to stdout (print), where the parent counts them
        t_env.execute_sql(WINDOW_SINK)
        query = " UNION ALL ".join(
            HOP_QUERY.format(name=name, slide=slide, size=size) for name, slide, size in SPECS
        )
        result = t_env.execute_sql(f"INSERT INTO window_sink {query}")
        result.wait()
    ended_ms = now_ms()
    out["execute_seconds"] = round(time.perf_counter() - started, 2)
    watch.stop_event.set()
    if watch.running_ms is not None:
        out["running_to_end_ms"] = ended_ms - watch.running_ms
    with contextlib.suppress(Exception):
        job = result.get_job_client().get_job_execution_result().result()
        out["net_runtime_ms"] = job.get_net_runtime()
    pids = [os.getpid(), *ingest_bench.descendants([os.getpid()])]
    out["cpu_seconds"] = round(sum(ingest_bench.cpu_seconds(p) or 0.0 for p in pids), 1)
    out["child_seconds"] = round(time.perf_counter() - began, 2)
    return out


def window_rows(stdout: str) -> dict[str, Any]:
    """Windows per spec, and the rows the filter kept (each row lies in size/slide windows of
    every spec), from the print sink's `+I[spec, tenant, ..., n]` lines."""
    windows: dict[str, int] = {}
    counted: dict[str, int] = {}
    for line in stdout.splitlines():
        if line.startswith("+I[") and line.endswith("]"):
            fields = line[3:-1].split(", ")
            windows[fields[0]] = windows.get(fields[0], 0) + 1
            counted[fields[0]] = counted.get(fields[0], 0) + int(fields[-1])
    kept = {name: counted.get(name, 0) // (size // slide) for name, slide, size in SPECS}
    return {"windows_emitted": windows, "rows_kept": kept}


def run_sql_variant(variant: str, source: tuple[str, str], timeout: float) -> dict[str, Any]:
    """One variant in a fresh interpreter (its own mini-cluster), as bench.window_choice."""
    from tidemark.run import python_path_env

    state_dir = Path(tempfile.mkdtemp(prefix="tidemark-bench-sql-"))
    env = dict(os.environ, PYTHONPATH=python_path_env())
    command = [
        sys.executable, "-m", "bench.windows_bench", "--child-sql", variant,
        "--bootstrap", source[0], "--topic", source[1], "--state-dir", str(state_dir),
    ]  # fmt: skip
    began = time.perf_counter()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [ln for ln in result.stdout.splitlines() if ln.startswith("RESULT ")]
        if result.returncode == 0 and lines:
            out = json.loads(lines[-1].removeprefix("RESULT "))
            out["ok"] = True
            if variant == "windows":
                out.update(window_rows(result.stdout))
        else:
            tail = (result.stderr.strip().splitlines() or ["?"])[-3:]
            out = {"variant": variant, "ok": False, "error": " | ".join(tail)[:500]}
    except subprocess.TimeoutExpired:
        out = {"variant": variant, "ok": False, "error": f"did not finish within {timeout:.0f} s"}
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    out["wall_seconds"] = round(time.perf_counter() - began, 2)
    log(f"  sql {variant}: {out}")
    return out


def run_sql(data: Path, records: int, valid_costs: int, timeout: float) -> dict[str, Any]:
    """The parse-only baseline, then the windows; rates over RUNNING -> end of job (Flink's
    net runtime if the RUNNING time was not caught)."""
    log(f"part 3: pure Flink SQL over {records:,} records from Kafka")
    with sql_topic(data, data.parent) as source:
        parse = run_sql_variant("parse", source, timeout)
        windows = run_sql_variant("windows", source, timeout)
    out: dict[str, Any] = {"records": records, "valid_cost_records": valid_costs,
                           "parse": parse, "windows": windows}  # fmt: skip
    if not (parse.get("ok") and windows.get("ok")):
        return out
    runtime_w = windows.get("running_to_end_ms") or windows["net_runtime_ms"]
    runtime_p = parse.get("running_to_end_ms") or parse["net_runtime_ms"]
    net_ms = runtime_w - runtime_p
    out.update(
        records_per_second=round(records / (runtime_w / 1000)),
        parse_records_per_second=round(records / (runtime_p / 1000)),
        windows_net_of_parse_ms=round(net_ms),
        records_per_second_net_of_parse=round(records / (net_ms / 1000)) if net_ms > 0 else None,
        wall_net_of_parse_seconds=round(windows["wall_seconds"] - parse["wall_seconds"], 2),
        cpu_seconds=windows.get("cpu_seconds"),
        cpu_seconds_net_of_parse=round(windows["cpu_seconds"] - parse["cpu_seconds"], 1),
        rows_kept=max(windows.get("rows_kept", {}).values(), default=0),
    )
    return out


# --- report --------------------------------------------------------------------------------------


def taskmanager_rss(report: ingest_bench.Report) -> tuple[int | None, int | None]:
    for usage in report.memory:
        if usage["role"] == "taskmanager JVM":
            return usage["peak_rss_bytes"], usage["max_sampled_rss_bytes"]
    return None, None


def summary(report: ingest_bench.Report, sql: dict[str, Any]) -> dict[str, Any]:
    p1, p2, cp = report.phase1, report.phase2, report.checkpoints
    fresh = p2.get("freshness", {})
    rate = p1.get("whole_job_events_per_second")
    sql_rate = sql.get("records_per_second")
    peak, sampled = taskmanager_rss(report)
    redis_p95 = fresh.get("redis_live", {}).get("p95_ms")
    ch_p95 = fresh.get("clickhouse_polled", {}).get("p95_ms")
    sent = fresh.get("probes_sent", 0)

    def fresh_met(key: str, p95: float | None) -> bool:
        seen = fresh.get(key, {}).get("n", 0)
        return p95 is not None and p95 <= TARGET_FRESHNESS_P95_MS and seen == sent > 0

    return {
        "whole_job_events_per_second": rate,
        "sql_records_per_second": sql_rate,
        "sql_records_per_second_net_of_parse": sql.get("records_per_second_net_of_parse"),
        "sql_windows_net_of_parse_ms": sql.get("windows_net_of_parse_ms"),
        "whole_job_vs_sql": round(rate / sql_rate, 3) if rate and sql_rate else None,
        "freshness_redis": fresh.get("redis_live"),
        "freshness_clickhouse": fresh.get("clickhouse_polled"),
        "freshness_clickhouse_updated_at": fresh.get("clickhouse_updated_at"),
        "taskmanager_peak_rss_bytes": peak,
        "taskmanager_max_sampled_rss_bytes": sampled,
        "checkpoint_avg_ms": cp.get("duration_ms_avg"),
        "checkpoint_p99_ms": cp.get("duration_ms_p99"),
        "checkpoint_state_bytes": cp.get("latest_state_size_bytes"),
        "throughput_met": rate is not None and rate >= TARGET_EVENTS_PER_SECOND,
        "vs_sql_met": bool(rate and sql_rate) and rate / sql_rate >= TARGET_VS_SQL,
        "freshness_rate": p2.get("target_rate"),
        "freshness_rate_share_of_capacity": (
            round(p2["target_rate"] / rate, 2) if rate and p2.get("target_rate") else None
        ),
        "freshness_redis_met": fresh_met("redis_live", redis_p95),
        "freshness_clickhouse_met": fresh_met("clickhouse_polled", ch_p95),
        "errors": report.errors,
    }


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _part1(report: ingest_bench.Report) -> list[str]:
    p = report.phase1
    if not p:
        return []
    lines = ingest_bench._phase1(report)[:-1]
    w = p.get("windows")
    if not w:
        return [*lines, ""]
    c = w["checks"]
    rate = ingest_bench.fmt(p["whole_job_events_per_second"])
    return [
        *lines,
        f"   window outputs: last row {w['last_output_after_last_ingest_row_seconds']} s after "
        f"the last ingest row; clocks {w['clocks_expected'] - len(w['clocks_not_matching'])}"
        f"/{w['clocks_expected']} (tenant, family) equal the generator's",
        f"   WHOLE JOB, ALL OUTPUTS              {rate} events/s  "
        f"(N / (last output row - RUNNING) = {p['whole_job_catch_up_seconds']} s)",
        f"   engagement pane events + late       {c['engagement_pane_events']:,} + "
        f"{c['late_events']} vs events rows {c['events_rows']:,} -> "
        f"{'OK' if c['events_match'] else 'MISMATCH'}",
        f"   cost pane allocations + late        {c['cost_pane_allocations']:,} + "
        f"{c['late_cost']} vs allocation rows {c['allocation_rows']:,} -> "
        f"{'OK' if c['cost_match'] else 'MISMATCH'}",
        f"   pane rows (FINAL)                   cost {c['pane_rows']['cost']:,}, engagement "
        f"{c['pane_rows']['engagement']:,}, profile {c['pane_rows']['profile']:,}",
        f"   Redis after phase 1                 {w['redis']['profile_live']:,} profile and "
        f"{w['redis']['team_live']:,} team live hashes, "
        f"{w['redis']['notifications']:,} notifications",
        "",
    ]


def _part2(report: ingest_bench.Report) -> list[str]:
    p = report.phase2
    if not p:
        return []
    f, lat = p["freshness"], p["ingest_latency"]
    out = [
        f"2. freshness under steady load: {p['events']:,} events at {p['target_rate']:,.0f}/s "
        f"+ {f['probes_sent']} probes at {p['probe_rate']:g}/s (tenant {PROBE_TENANT})",
        f"   producer achieved                   {ingest_bench.fmt(p['achieved_produce_rate'])}"
        f" events/s over {p['produce_seconds']} s",
        f"   {'probe send -> visible':<36}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}  seen",
    ]
    for key, label in (
        ("redis_identity", "Redis identity key (id:user_id)"),
        ("redis_live", "Redis live hash, last_event_at"),
        ("clickhouse_polled", "ClickHouse profile_panes (poll)"),
        ("clickhouse_updated_at", "ClickHouse pane updated_at"),
    ):
        q = f[key]
        out.append(
            f"   {label:<36}{_ms(q['p50_ms']):>10}{_ms(q['p95_ms']):>10}{_ms(q['p99_ms']):>10}"
            f"{_ms(q['max_ms']):>10}  {q['n']}/{f['probes_sent']}"
        )
    out += [
        f"   polls: Redis {f['redis_polls']:,} (every {REDIS_POLL_SECONDS * 1000:.0f} ms), "
        f"ClickHouse {f['clickhouse_polls']:,} (every {CLICKHOUSE_POLL_SECONDS * 1000:.0f} ms); "
        f"live-hash mismatches {len(f['live_hash_mismatches'])}, profile id mismatches "
        f"{len(f['profile_id_mismatches'])}",
        f"   all rows ingested_at - produced_at  p50 {_ms(lat['p50_ms'])}, p95 "
        f"{_ms(lat['p95_ms'])}, p99 {_ms(lat['p99_ms'])}, max {_ms(lat['max_ms'])} "
        f"({lat['rows']:,} rows)",
        f"   rows (FINAL) vs generator truth     {p['counts']}",
        f"                                       {p['expected']} -> "
        f"{'OK' if p['complete'] else 'MISMATCH'}",
        "",
    ]
    return out


def _part3(sql: dict[str, Any]) -> list[str]:
    if not sql:
        return []
    out = [f"5. pure Flink SQL (Java only): the same cost windows over the same {sql['records']:,}"
           " records, from Kafka, mini-cluster"]  # fmt: skip
    for key in ("parse", "windows"):
        run = sql[key]
        if not run.get("ok"):
            out.append(f"   {key:<10} FAILED: {run.get('error')}")
            continue
        out.append(
            f"   {key:<10} RUNNING -> end {_ms(run.get('running_to_end_ms'))}, net job runtime "
            f"{_ms(run.get('net_runtime_ms'))}, process wall "
            f"{run['wall_seconds']} s, CPU {run['cpu_seconds']} s"
            + (f", rows kept {run['rows_kept']}" if "rows_kept" in run else "")
        )
    if "records_per_second" in sql:
        kept = max(sql["rows_kept"], 1)
        per_row = f"{sql['windows_net_of_parse_ms'] * 1000 / kept:,.0f} us per cost row kept"
        out += [
            f"   RECORDS/S, read+parse+windows        {sql['records_per_second']:,}  "
            "(all records / (end of job - RUNNING))",
            f"   read+parse baseline alone            {sql['parse_records_per_second']:,}  "
            "records/s",
            f"   the windows' own time                {sql['windows_net_of_parse_ms']:+,} ms over "
            f"the baseline ({per_row}; compare with the baseline's run-to-run spread)",
            f"   CPU seconds                          {sql['cpu_seconds']} (net of parse "
            f"{sql['cpu_seconds_net_of_parse']}; incl. JVM start-up)",
            f"   rows the SQL filter kept             {sql['rows_kept']:,}; generator's valid cost "
            f"records {sql['valid_cost_records']:,} (duplicates included; the filter checks "
            "required fields only)",
        ]
    return [*out, ""]


def render(report: ingest_bench.Report, sql: dict[str, Any], s: dict[str, Any]) -> str:
    header = ingest_bench._header(report)
    header[0] = f"tidemark windows benchmark — {report.started}"
    lines = [
        *header,
        *_part1(report),
        *_part2(report),
        *ingest_bench._memory(report),
        *ingest_bench._checkpoints(report),
        *_part3(sql),
        *ingest_bench._footer(report),
        "",
        "WINDOWS (issue 9): whole job vs pure Flink SQL, same machine, one run",
    ]

    def row(label: str, value: str) -> None:
        lines.append(f"   {label:<44}{value:>16}")

    rate = ingest_bench.fmt(s["whole_job_events_per_second"])
    row("whole job, windows on: sustained events/s", rate)
    row("pure Flink SQL cost windows: records/s", ingest_bench.fmt(s["sql_records_per_second"]))
    extra = s["sql_windows_net_of_parse_ms"]
    row("  of which the windows (over read+parse)", "-" if extra is None else f"{extra:+,} ms")
    ratio = s["whole_job_vs_sql"]
    row("whole job / pure SQL", "-" if ratio is None else f"{ratio:.3f}x")
    share = s.get("freshness_rate_share_of_capacity")
    row(
        "freshness measured at events/s (x capacity)",
        f"{ingest_bench.fmt(s.get('freshness_rate'))} ({'-' if share is None else share}x)",
    )
    for key, label in (("freshness_redis", "Redis"), ("freshness_clickhouse", "ClickHouse")):
        q = s[key] or {}
        row(
            f"freshness to {label} p50 / p95 / p99",
            " / ".join(_ms(q.get(k)).removesuffix(" ms") for k in ("p50_ms", "p95_ms", "p99_ms"))
            + " ms",
        )
    row("TaskManager peak RSS (VmHWM)", ingest_bench.mib(s["taskmanager_peak_rss_bytes"]))
    row("checkpoint avg / p99", f"{_ms(s['checkpoint_avg_ms'])} / {_ms(s['checkpoint_p99_ms'])}")
    row("checkpoint state size", ingest_bench.mib(s["checkpoint_state_bytes"]))

    def met(flag: bool) -> str:
        return "met" if flag else "NOT met"

    lines += [
        f"   target >= {TARGET_EVENTS_PER_SECOND:,} events/s sustained: {met(s['throughput_met'])}",
        f"   target >= {TARGET_VS_SQL}x the pure SQL job: {met(s.get('vs_sql_met', False))}",
        f"   target p95 freshness <= {TARGET_FRESHNESS_P95_MS:,} ms at half of capacity: Redis "
        f"{met(s['freshness_redis_met'])}, ClickHouse {met(s['freshness_clickhouse_met'])}",
    ]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.windows_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=200_000, help="phase 1 backlog size")
    parser.add_argument(
        "--rate", type=float, help="phase 2 background rate (/s); default half of phase 1's"
    )
    parser.add_argument("--probe-rate", type=float, default=5, help="phase 2 probes per second")
    parser.add_argument("--steady-seconds", type=float, default=30, help="phase 2 duration")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (phase 2: seed+1)")
    parser.add_argument("--timeout", type=float, default=300, help="max wait per phase (s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="section.key=value",
        help="extra tidemark setting for the stack and the job",
    )  # fmt: skip
    parser.add_argument("--skip-sql", action="store_true", help="do not run part 3")
    parser.add_argument("--keep-state", action="store_true", help="keep the ClickHouse store etc.")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    parser.add_argument(
        "--render", metavar="JSON", help="print the report of a saved bench/results file again"
    )
    parser.add_argument("--child-sql", choices=("parse", "windows"), help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:  # the same report from a saved run (e.g. after a change of wording)
        saved = json.loads(Path(args.render).read_text())
        report = ingest_bench.Report(**saved["run"])
        print(render(report, saved["sql"], summary(report, saved["sql"])))
        return 0
    if args.child_sql:
        result = sql_child(args.child_sql, args.bootstrap, args.topic, Path(args.state_dir))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    def terminate(signum: int, _frame: object) -> None:  # run the finally blocks on SIGTERM
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    work = Path(tempfile.mkdtemp(prefix="tidemark-bench-windows-"))
    data = work / "backlog.jsonl"
    backlogs: list[WindowsBacklog] = []
    sql: dict[str, Any] = {}
    try:
        dims = work / "dimensions"
        dims.mkdir()
        write_dimension_files(dims, seed=args.seed, start_ms=DEFAULT_START_MS)
        run_args = copy.copy(args)
        run_args.overrides = [
            "ingest.profile_stage=true",
            "windows.enabled=true",
            f"enrichment.dimensions_dir={dims}",
            *args.overrides,
        ]

        def backlog_factory(cfg: Config, seed: int, count: int) -> WindowsBacklog:
            backlogs.append(WindowsBacklog(cfg, seed, count, data))
            return backlogs[-1]

        log("=== parts 1 and 2: the whole job, windows on ===")
        report = ingest_bench.run(run_args, backlog_factory, windows_phase1, probe_phase2)
        if not args.skip_sql and backlogs and data.is_file() and backlogs[0].file_records:
            log("=== part 3: pure Flink SQL ===")
            backlog = backlogs[0]
            sql = run_sql(data, backlog.file_records, backlog.valid_cost_records, args.timeout)
            if not sql["windows"].get("ok") or not sql["parse"].get("ok"):
                report.errors.append("part 3 (pure Flink SQL) failed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    s = summary(report, sql)
    report.verdict = {
        "target": f">= {TARGET_EVENTS_PER_SECOND:,} events/s sustained, >= {TARGET_VS_SQL}x "
        f"pure SQL, p95 freshness <= {TARGET_FRESHNESS_P95_MS:,} ms at half of capacity",
        "throughput_met": s["throughput_met"],
        "latency_met": s["freshness_redis_met"] and s["freshness_clickhouse_met"],
        "latency_label": "p95 freshness",
        "total_seconds": report.verdict.get("total_seconds"),
    }
    print(render(report, sql, s), flush=True)
    if not args.no_save:
        ingest_bench.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path = ingest_bench.RESULTS_DIR / f"windows-{stamp}.json"
        payload = {"summary": s, "run": asdict(report), "sql": sql}
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"results  {path.relative_to(ingest_bench.RESULTS_DIR.parent.parent)}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
