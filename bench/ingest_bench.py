"""The ingest job end to end (Kafka -> Flink -> ClickHouse) on this machine, in one run.

    .venv/bin/python -m bench.ingest_bench [--events 300000] [--rate 10000] [--seed 7]

Why one run measures everything: these 2-core machines are noisy (other stacks, page cache,
JIT warm-up), so numbers from separate runs are hard to compare; within one run the phases
share the same cluster, the same JIT state and the same neighbours.

What it does, on a private stack (free ports, its own state dir under /tmp, so a developer's
stack is never touched):

1. Sustained throughput (catch-up): the generator's realistic mix (duplicates, late and
   malformed events) is produced to the topic (while the Flink cluster starts) *before* the
   job exists, then the ingest job is submitted with `flink run` as operators do. The clock
   runs from the moment the last subtask switched to RUNNING (Flink's own timestamps) until
   the last expected row is in ClickHouse (`max(ingested_at)`, confirmed with `count() FINAL`
   per table against the generator's truth). Rows per second are bucketed by `ingested_at`
   to show how even the flow is.
2. Latency under a steady load: with the job still running, a producer thread sends
   `rate * steady-seconds` fresh events at a fixed rate; latency is `ingested_at -
   produced_at` per row (`produced_at` is the Kafka record timestamp kafka-python sets at
   send time, `ingested_at` the ClickHouse insert time, i.e. when the row became visible).
3. Memory: VmHWM (peak RSS) of every component process, and the max of per-second RSS
   samples taken during the run; CPU seconds per component over the run.
4. Checkpoints: counts, latest duration and size from Flink's REST API.

The job is cancelled and the private stack stopped in all cases (finally). Results go to
stdout as a table and to `bench/results/ingest-<timestamp>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs.environment import job_flink_settings
from tests.support import stack_overrides
from tidemark import flink_rest, schema, topics
from tidemark.config import REPO_ROOT, Config, load_config
from tidemark.demo import Expected, generate_stream
from tidemark.freshness import now_ms
from tidemark.produce import ProduceReport, produce
from tidemark.run import submit
from tidemark.schema import INGEST_TABLES as TABLES
from tidemark.stack import clickhouse, flink, kafka, process, redis
from tidemark.stack.commands import start_stack, stop_stack
from tidemark.stack.process import StackError

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_EVENTS_PER_SECOND = 30_000  # the project's stated target for this slice
TARGET_P99_MS = 3_000
BUSY_MACHINE_SHARE = 0.15  # other processes above this share of all CPU: say so in the report
MIB = 1024 * 1024

#: The column that records when a row became visible, per table.
VISIBLE_AT = {"events": "ingested_at", "cost_records": "ingested_at", "dead_letters": "dead_at"}


# --- small helpers -------------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report table."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def proc_status(pid: int) -> dict[str, str]:
    """`/proc/<pid>/status` as a dict (empty if the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def kib_field(status: dict[str, str], key: str) -> int:
    """A `NNN kB` field of /proc/<pid>/status in bytes (0 if absent)."""
    value = status.get(key, "0 kB").split()
    return int(value[0]) * 1024 if value else 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of `pid` so far (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, all processes) since boot.

    Used to tell how much of the run's CPU went to processes outside the private stack:
    on a shared 2-core box, other people's tests move every number here.
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def parent_pid(pid: int) -> int | None:
    """The parent of `pid` per /proc (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[1])


def descendants(roots: list[int]) -> list[int]:
    """All live descendants of `roots` (e.g. process-mode Python workers of a TaskManager)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = parent_pid(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


# --- memory and CPU sampling ---------------------------------------------------------------------


@dataclass
class RoleUsage:
    """Memory and CPU of one component (one or more processes) over the run."""

    role: str
    note: str = ""
    pids: list[int] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # command line of each pid, shortened
    peak_rss_bytes: int = 0  # VmHWM, summed over the role's processes (last value read)
    max_sampled_rss_bytes: int = 0  # max over the 1 s samples of the summed VmRSS
    cpu_seconds: float = 0.0  # CPU used while sampled (first to last sample)
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds into run, RSS)


class ResourceSampler(threading.Thread):
    """Samples every component's RSS once a second and keeps each process's latest VmHWM.

    Why sample as well as read VmHWM: VmHWM of a JVM mostly reflects its heap reservation at
    start, while the sampled RSS shows what the run itself added; and VmHWM of a process that
    exits before the end (a process-mode Python worker) must be read while it is alive.
    """

    def __init__(self, roles: Callable[[], dict[str, list[int]]], interval: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roles = roles
        self.interval = interval
        self.started_at = time.monotonic()
        self.usage: dict[str, RoleUsage] = {}
        self.hwm: dict[int, int] = {}
        self.cpu_first: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.machine_first: tuple[float, float] | None = None  # (monotonic s, busy CPU s)
        self.machine_last: tuple[float, float] | None = None

    def sample(self) -> None:
        """One sample of every role's processes."""
        elapsed = round(time.monotonic() - self.started_at, 1)
        self.machine_last = (time.monotonic(), machine_busy_seconds())
        if self.machine_first is None:
            self.machine_first = self.machine_last
        for role, pids in self.roles().items():
            usage = self.usage.setdefault(role, RoleUsage(role))
            rss = 0
            for pid in pids:
                status = proc_status(pid)
                if not status:
                    continue
                rss += kib_field(status, "VmRSS")
                # max(): an exiting (zombie) process has no Vm* lines left to read
                self.hwm[pid] = max(self.hwm.get(pid, 0), kib_field(status, "VmHWM"))
                cpu = cpu_seconds(pid)
                if cpu is not None:
                    self.cpu_first.setdefault(pid, cpu)
                    self.cpu_last[pid] = cpu
                if pid not in usage.pids:
                    usage.pids.append(pid)
                    usage.commands.append(" ".join(process.cmdline(pid))[-160:])
            with self.lock:
                usage.samples.append((elapsed, rss))
                usage.max_sampled_rss_bytes = max(usage.max_sampled_rss_bytes, rss)

    def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(Exception):  # a process vanishing mid-read is not an error
                self.sample()
            self.stop_event.wait(self.interval)

    def finish(self) -> dict[str, RoleUsage]:
        """Stop sampling (after one last sample) and total each role."""
        self.stop_event.set()
        self.join(timeout=5)
        self.sample()
        for usage in self.usage.values():
            usage.peak_rss_bytes = sum(self.hwm.get(pid, 0) for pid in usage.pids)
            usage.cpu_seconds = round(
                sum(
                    self.cpu_last.get(pid, 0.0) - self.cpu_first.get(pid, 0.0) for pid in usage.pids
                ),
                1,
            )
        return self.usage

    def machine_cpu(self) -> dict[str, float]:
        """Wall seconds sampled, CPU seconds available (cores x wall) and used by everyone."""
        if self.machine_first is None or self.machine_last is None:
            return {}
        wall = self.machine_last[0] - self.machine_first[0]
        return {
            "wall_seconds": round(wall, 1),
            "available_cpu_seconds": round(wall * (os.cpu_count() or 1), 1),
            "busy_cpu_seconds": round(self.machine_last[1] - self.machine_first[1], 1),
        }


def component_pids(cfg: Config, bench_pid: int) -> dict[str, list[int]]:
    """Pids per component of the private stack, looked up afresh (workers come and go)."""
    tms = flink.taskmanager_pids(cfg)
    children = descendants(tms)
    # Process mode runs `pyflink-udf-runner.sh` -> `python -m pyflink.fn_execution...`; thread
    # mode only runs short helpers (e.g. `python -c "...find_libpython()"` at job start).
    workers = [pid for pid in children if "pyflink" in " ".join(process.cmdline(pid))]
    helpers = [pid for pid in children if pid not in workers]

    def daemon_pid(module: Any) -> list[int]:
        pid = process.running_pid(module.daemon(cfg))
        return [pid] if pid is not None else []

    roles = {
        "jobmanager JVM": flink.jobmanager_pids(cfg),
        "taskmanager JVM": tms,
        "python workers": workers,
        "other TM children": helpers,
        "clickhouse (chDB)": daemon_pid(clickhouse),
        "kafka (broker)": daemon_pid(kafka),
        "redis": daemon_pid(redis),
        "bench (gen+producer)": [bench_pid],
        "flink run client": [],  # filled in below
    }
    # `flink run` (a JVM plus a Python planner) is a child of this process, as are the
    # daemons it spawned (broker, Redis, chDB): whatever child is not a daemon is the client.
    known = {pid for pids in roles.values() for pid in pids}
    roles["flink run client"] = [pid for pid in descendants([bench_pid]) if pid not in known]
    return roles


# --- ClickHouse queries --------------------------------------------------------------------------


def raw_total(client: Any, database: str) -> int:
    """Rows in all tables without FINAL: cheap (part metadata), for polling."""
    return sum(
        int(client.query(f"SELECT count() FROM {database}.{table}").result_rows[0][0])
        for table in TABLES
    )


def final_counts(client: Any, database: str) -> dict[str, int]:
    """Distinct rows per table (FINAL collapses rows a replay may have written twice)."""
    return {
        table: int(client.query(f"SELECT count() FROM {database}.{table} FINAL").result_rows[0][0])
        for table in TABLES
    }


def phase_rows_sql(database: str, since_ms: int | None, until_ms: int | None) -> str:
    """Every table's rows of one phase as (visible_ms, produced_ms), phases split by produce
    time (phase 1 was produced entirely before phase 2 began)."""
    parts = []
    for table, visible in VISIBLE_AT.items():
        where = []
        if since_ms is not None:
            where.append(f"toUnixTimestamp64Milli(produced_at) >= {since_ms}")
        if until_ms is not None:
            where.append(f"toUnixTimestamp64Milli(produced_at) < {until_ms}")
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        parts.append(
            f"SELECT toUnixTimestamp64Milli({visible}) AS visible_ms, "
            f"toUnixTimestamp64Milli(produced_at) AS produced_ms "
            f"FROM {database}.{table}{condition}"
        )
    return " UNION ALL ".join(parts)


def phase_final_counts(client: Any, database: str, since_ms: int) -> dict[str, int]:
    """Distinct rows per table produced at or after `since_ms`."""
    return {
        table: int(
            client.query(
                f"SELECT count() FROM {database}.{table} FINAL "
                f"WHERE toUnixTimestamp64Milli(produced_at) >= {since_ms}"
            ).result_rows[0][0]
        )
        for table in TABLES
    }


def visible_span(client: Any, database: str, until_ms: int | None) -> tuple[int, int, int]:
    """(rows, first visible ms, last visible ms) of the rows produced before `until_ms`."""
    rows = client.query(
        f"SELECT count(), min(visible_ms), max(visible_ms) "
        f"FROM ({phase_rows_sql(database, None, until_ms)})"
    ).result_rows[0]
    return int(rows[0]), int(rows[1]), int(rows[2])


def per_second(client: Any, database: str, until_ms: int | None) -> list[tuple[int, int]]:
    """(epoch second, rows that became visible in it), gaps filled with zeros."""
    rows = client.query(
        f"SELECT intDiv(visible_ms, 1000) AS s, count() "
        f"FROM ({phase_rows_sql(database, None, until_ms)}) GROUP BY s ORDER BY s"
    ).result_rows
    if not rows:
        return []
    counts = {int(s): int(c) for s, c in rows}
    first, last = min(counts), max(counts)
    return [(s, counts.get(s, 0)) for s in range(first, last + 1)]


def latency(client: Any, database: str, since_ms: int) -> dict[str, float]:
    """Quantiles of visible - produced (ms) over the rows produced at or after `since_ms`."""
    row = client.query(
        f"SELECT count(), quantilesExact(0.5, 0.95, 0.99)(lat), max(lat), min(lat), "
        f"min(produced_ms), max(produced_ms), max(visible_ms) FROM ("
        f"SELECT visible_ms - produced_ms AS lat, visible_ms, produced_ms "
        f"FROM ({phase_rows_sql(database, since_ms, None)}))"
    ).result_rows[0]
    count, quantiles, top, low, first_produced, last_produced, last_visible = row
    return {
        "rows": int(count),
        "p50_ms": float(quantiles[0]),
        "p95_ms": float(quantiles[1]),
        "p99_ms": float(quantiles[2]),
        "max_ms": float(top),
        "min_ms": float(low),
        "first_produced_ms": int(first_produced),
        "last_produced_ms": int(last_produced),
        "last_visible_ms": int(last_visible),
    }


def wait_for_counts(
    cfg: Config,
    want: dict[str, int],
    job_id: str,
    timeout: float,
    since_ms: int | None = None,
    baseline_raw: int = 0,
) -> tuple[dict[str, int], float]:
    """Poll until the FINAL counts (of rows produced since `since_ms`, or all) equal `want`.

    Polls the cheap raw count (plus `baseline_raw`, the rows already there) first and runs
    FINAL only once enough rows exist: the chDB server serialises queries, so heavy polling
    would slow the very inserts being timed. Returns the last counts and the wall-clock time
    (epoch s) they were first seen complete.
    """
    database = cfg.clickhouse.database
    url = flink.rest_url(cfg)
    client = schema.connect(cfg)

    def counts_now() -> dict[str, int]:
        if since_ms is None:
            return final_counts(client, database)
        return phase_final_counts(client, database, since_ms)

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            state = flink_rest.job_state(url, job_id)
            if state in flink_rest.TERMINAL_STATES:
                raise RuntimeError(
                    f"job {job_id} ended ({state}): {flink_rest.exceptions(url, job_id)}"
                )
            if raw_total(client, database) >= baseline_raw + sum(want.values()):
                counts = counts_now()
                if counts == want:
                    return counts, time.time()
            time.sleep(1.0)
        return counts_now(), time.time()
    finally:
        client.close()


# --- Flink ---------------------------------------------------------------------------------------


def wait_tasks_running(url: str, job_id: str, timeout: float = 180) -> float:
    """Poll (5x a second) until every task of the job runs; return that wall-clock time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = flink_rest.job_state(url, job_id)
        if state in flink_rest.TERMINAL_STATES:
            raise RuntimeError(
                f"job {job_id} ended ({state}): {flink_rest.exceptions(url, job_id)}"
            )
        if flink_rest.running_tasks(url, job_id):
            return time.time()
        time.sleep(0.2)
    raise RuntimeError(f"job {job_id} not running after {timeout:.0f} s")


def task_running_times(url: str, job_id: str) -> dict[str, float]:
    """Epoch seconds at which each vertex's last subtask switched to RUNNING (Flink's own
    timestamps, `/jobs/<id>/vertices/<v>/subtasktimes`), so the start of the catch-up clock
    does not depend on how often (or how late, on a loaded machine) the REST API was polled.
    """
    detail = flink_rest.call(url, f"/jobs/{job_id}")
    times = {}
    for vertex in detail.get("vertices", []):
        info = flink_rest.call(url, f"/jobs/{job_id}/vertices/{vertex['id']}/subtasktimes")
        running = [sub.get("timestamps", {}).get("RUNNING", 0) for sub in info.get("subtasks", [])]
        if running and all(running):
            times[vertex["name"]] = max(running) / 1000
    return times


def checkpoint_stats(url: str, job_id: str) -> dict[str, Any]:
    """Counts, the latest completed checkpoint and duration/size summaries from REST."""
    info = flink_rest.call(url, f"/jobs/{job_id}/checkpoints")
    counts = info.get("counts", {})
    latest = (info.get("latest") or {}).get("completed") or {}
    summary = info.get("summary", {})
    duration = summary.get("end_to_end_duration", {})
    failures = [
        f"#{item.get('id')}: {item.get('failure_message') or 'no message'}"
        for item in info.get("history", [])
        if item.get("status") == "FAILED"
    ]
    return {
        "completed": int(counts.get("completed", 0)),
        "failed": int(counts.get("failed", 0)),
        "in_progress": int(counts.get("in_progress", 0)),
        "latest_id": latest.get("id"),
        "latest_duration_ms": latest.get("end_to_end_duration"),
        "latest_state_size_bytes": latest.get("state_size"),
        "latest_checkpointed_size_bytes": latest.get("checkpointed_size"),
        "duration_ms_avg": duration.get("avg"),
        "duration_ms_max": duration.get("max"),
        "duration_ms_p99": duration.get("p99"),
        "failure_messages": failures,
    }


def operator_busy_ms(url: str, job_id: str) -> dict[str, int]:
    """The `busy_ms` counters of the Python operators (time spent in each), summed over
    subtasks: where the job's time goes."""
    busy: dict[str, int] = {}
    for vertex in flink_rest.call(url, f"/jobs/{job_id}").get("vertices", []):
        base = f"/jobs/{job_id}/vertices/{vertex['id']}"
        names = [
            m["id"]
            for m in flink_rest.call(url, f"{base}/metrics")
            if m["id"].endswith(("busy_ms", "cpu_ms"))
        ]
        if not names:
            continue
        values = flink_rest.call(url, f"{base}/metrics?get={','.join(names)}")
        for metric in values:
            group, kind = metric["id"].split(".")[-2:]  # 0.<op>.tidemark_kafka.busy_ms
            name = f"{group} {kind.removesuffix('_ms')}"
            busy[name] = busy.get(name, 0) + int(float(metric["value"]))
    return busy


def root_cause(stacktrace: str) -> str:
    """The innermost `Caused by:` line of a Java stack trace (or its first line)."""
    lines = [line.strip() for line in stacktrace.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by: ") for line in lines if line.startswith("Caused by")]
    return (causes[-1] if causes else lines[0] if lines else "no exception recorded")[:200]


def latest_failure(url: str, job_id: str) -> str:
    """Root cause of the job's latest failure, from the full stack trace in REST's exception
    history (flink_rest.exceptions keeps only the first lines, before any `Caused by`)."""
    try:
        entries = flink_rest.call(url, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    except (flink_rest.FlinkRestError, KeyError, TypeError):
        return "unknown (no exception history)"
    return root_cause(entries[0].get("stacktrace", "")) if entries else "no exception recorded"


def flink_log_findings(cfg: Config, limit: int = 8) -> dict[str, Any]:
    """ERROR/WARN counts and the distinct ERROR lines of the private cluster's logs."""
    errors: list[str] = []
    counts = {
        "error_lines": 0,
        "warn_lines": 0,
        "exception_lines": 0,
        "checkpoint_triggers_declined": 0,
    }
    for path in sorted(flink.log_dir(cfg).glob("*")):
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line:
                counts["error_lines"] += 1
                text = f"{path.name}: {line.strip()[:300]}"
                short = line.split(" ERROR ", 1)[-1][:160]
                if all(short not in seen for seen in errors):
                    errors.append(text)
            elif " WARN " in line:
                counts["warn_lines"] += 1
            if "Failed to trigger checkpoint" in line:  # e.g. a task not running yet
                counts["checkpoint_triggers_declined"] += 1
            if "Exception" in line and not line.startswith("\t"):
                counts["exception_lines"] += 1
    return {**counts, "log_dir": str(flink.log_dir(cfg)), "first_errors": errors[:limit]}


# --- the benchmark -------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything one run measured; dumped as JSON next to the printed table."""

    started: str
    args: dict[str, Any]
    machine: dict[str, Any]
    config: dict[str, Any]
    phase1: dict[str, Any] = field(default_factory=dict)
    phase2: dict[str, Any] = field(default_factory=dict)
    memory: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    flink_logs: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # odd but not fatal (e.g. a retried start)


def machine_info() -> dict[str, Any]:
    """nproc, memory, CPU model and load: enough to tell two machines (or a busy one) apart."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_total_gib": round(total_kib / 1024 / 1024, 1),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "apache_flink": importlib.metadata.version("apache-flink"),
        "chdb": importlib.metadata.version("chdb"),
        "loadavg_at_start": list(os.getloadavg()),
    }


#: What decides the job's behaviour: the code shipped with it and the settings files.
CODE_PATHS = ("jobs", "udfs", "sinks", "tidemark", "flink-conf")


def code_version() -> dict[str, Any]:
    """The commit the job was built from, and any uncommitted change to the job's code.

    Why: the job archive is zipped from the working tree at submit time, and that tree moves
    while people work; a number is only comparable with another from the same code.
    """
    repo = str(REPO_ROOT)

    def git(*argv: str) -> str:
        result = subprocess.run(
            ["git", "-C", repo, *argv], capture_output=True, text=True, timeout=10, check=False
        )
        return result.stdout.rstrip()  # not strip(): porcelain lines start with a space

    dirty = git("status", "--porcelain", "--", *CODE_PATHS).splitlines()
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "subject": git("log", "-1", "--format=%s")[:80],
        "uncommitted_job_changes": [line[3:] for line in dirty],
    }


def config_info(cfg: Config) -> dict[str, Any]:
    """The settings that shape ingest performance, as the job resolves them."""
    settings = job_flink_settings(cfg)
    mode = settings.get("python.execution-mode", "thread")
    return {
        "code": code_version(),
        "parallelism": cfg.ingest.parallelism,
        "python_execution_mode": mode,
        "python_bundle_time_ms": settings.get("python.fn-execution.bundle.time", "(default)"),
        "python_bundle_size": settings.get("python.fn-execution.bundle.size", "(default 1000)"),
        "batch_max_rows": cfg.ingest.batch_max_rows,
        "batch_max_seconds": cfg.ingest.batch_max_seconds,
        "topic_partitions": cfg.kafka.partitions,
        "kafka_source": "flink-sql-connector-kafka (KafkaSource)",
        "max_poll_records": cfg.kafka.max_poll_records,
        "taskmanagers": cfg.stack.taskmanagers,
        "taskmanager_slots": cfg.stack.taskmanager_slots,
        "checkpoint_interval": settings.get("execution.checkpointing.interval", "(off)"),
        "state_backend": settings.get("state.backend.type", "(default)"),
        "state_dir": str(cfg.state_dir),
    }


def expected_map(expected: Expected) -> dict[str, int]:
    """The per-table counts ClickHouse must hold for one generated stream."""
    return {
        "events": expected.events,
        "cost_records": expected.cost_records,
        "dead_letters": expected.dead_letters,
    }


class BacklogProducer(threading.Thread):
    """Generates and produces phase 1's backlog while the Flink cluster starts.

    Why overlap them: both take 10-20 s here and neither is what is measured; doing them
    at once keeps a full run under ~3 minutes. The backlog is complete before the job is
    submitted (the caller joins first), so the catch-up measurement is unaffected.
    """

    def __init__(self, cfg: Config, seed: int, count: int) -> None:
        super().__init__(name="backlog-producer", daemon=True)
        self.cfg, self.seed, self.count = cfg, seed, count
        self.expected: Expected | None = None
        self.produced: ProduceReport | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            records, self.expected = generate_stream(self.seed, self.count)
            log(f"phase 1: producing {self.count:,} events (seed {self.seed}) before the job")
            self.produced = produce(self.cfg, records, total=len(records))
        except BaseException as exc:  # re-raised by result() in the main thread
            self.error = exc

    def result(self) -> tuple[Expected, ProduceReport]:
        """Wait for the backlog; re-raise what went wrong in the thread."""
        self.join()
        if self.error is not None:
            raise self.error
        assert self.expected is not None and self.produced is not None
        return self.expected, self.produced


class VertexBusySampler(threading.Thread):
    """Each second, every task's busy / backpressured / idle ms per second (Flink's task
    metrics, averaged over subtasks): the bottleneck is the busy task whose upstream is
    backpressured."""

    METRICS = ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond")

    def __init__(self, url: str, job_id: str) -> None:
        super().__init__(name="vertex-busy", daemon=True)
        self.url, self.job_id = url, job_id
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        vertices = flink_rest.call(self.url, f"/jobs/{self.job_id}").get("vertices", [])
        while not self.stop_event.wait(1.0):
            for vertex in vertices:
                path = (
                    f"/jobs/{self.job_id}/vertices/{vertex['id']}/subtasks/metrics"
                    f"?get={','.join(self.METRICS)}"
                )
                with contextlib.suppress(Exception):
                    for metric in flink_rest.call(self.url, path):
                        value = float(metric.get("avg", "nan"))
                        if not math.isnan(value):  # Flink reports NaN while it cannot tell
                            series = self.samples.setdefault(vertex["name"][:60], {})
                            series.setdefault(metric["id"], []).append(value)

    def finish(self) -> dict[str, dict[str, int]]:
        """Mean ms per second of each metric, per task, over the samples."""
        self.stop_event.set()
        self.join(timeout=10)
        return {
            name: {
                key.removesuffix("TimeMsPerSecond"): round(statistics.mean(values))
                for key, values in series.items()
            }
            for name, series in self.samples.items()
        }


def run_phase1(
    cfg: Config, args: argparse.Namespace, backlog: BacklogProducer, report: Report
) -> str:
    """Backlog first, then the job: the catch-up rate is the pipeline's sustained capacity."""
    expected, produced = backlog.result()
    log(f"phase 1: produced at {produced.rate:,.0f} events/s; submitting the ingest job")
    submit_began = time.time()
    job_id = submit(cfg, "ingest")  # the job gets cfg's own overrides: the private ports
    submitted = time.time()
    report.job["id"] = job_id
    url = flink.rest_url(cfg)
    polled_running_at = wait_tasks_running(url, job_id)
    vertex_running = task_running_times(url, job_id)
    running_at = max(vertex_running.values(), default=polled_running_at)
    log(f"phase 1: job {job_id} RUNNING {running_at - submit_began:.1f} s after `flink run`")
    want = expected_map(expected)
    tasks = VertexBusySampler(url, job_id)
    tasks.start()
    counts, seen_at = wait_for_counts(cfg, want, job_id, args.timeout)
    report.job["task_ms_per_second_phase1"] = tasks.finish()
    client = schema.connect(cfg)
    try:
        rows, first_ms, last_ms = visible_span(client, cfg.clickhouse.database, None)
        seconds = per_second(client, cfg.clickhouse.database, None)
    finally:
        client.close()
    catch_up = last_ms / 1000 - running_at
    per_sec = [count for _, count in seconds]
    # The first and last seconds are partial (the flow starts and ends inside them).
    interior = per_sec[1:-1] if len(per_sec) > 2 else per_sec
    report.phase1 = {
        "events": expected.produced,
        "expected": want,
        "counts": counts,
        "complete": counts == want,
        "duplicates_in_stream": expected.duplicates,
        "produce_rate": round(produced.rate),
        "submit_seconds": round(submitted - submit_began, 1),
        "submit_to_running_seconds": round(running_at - submit_began, 1),
        "running_seen_by_poll_late_seconds": round(polled_running_at - running_at, 2),
        "vertex_running_seconds_after_submit": {
            name: round(at - submit_began, 2) for name, at in vertex_running.items()
        },
        "running_at_epoch_seconds": round(running_at, 3),
        "last_row_visible_ms": last_ms,
        "running_to_first_row_seconds": round(first_ms / 1000 - running_at, 2),
        "catch_up_seconds": round(catch_up, 2),
        "events_per_second": round(expected.produced / catch_up) if catch_up > 0 else None,
        "flow_seconds": round((last_ms - first_ms) / 1000, 2),
        "events_per_second_while_flowing": (
            round(expected.produced / ((last_ms - first_ms) / 1000)) if last_ms > first_ms else None
        ),
        "rows_written_raw": rows,
        "seen_complete_by_poll_seconds": round(seen_at - running_at, 1),
        "rows_per_second_min": min(interior) if interior else None,
        "rows_per_second_median": statistics.median(interior) if interior else None,
        "rows_per_second_max": max(interior) if interior else None,
        "rows_per_second_series": per_sec,
    }
    if counts != want:
        report.errors.append(f"phase 1 incomplete after {args.timeout:.0f} s: {counts} != {want}")
    log(
        f"phase 1: {expected.produced:,} events in {catch_up:.1f} s "
        f"= {report.phase1['events_per_second']:,} events/s"
    )
    return job_id


def run_phase2(cfg: Config, args: argparse.Namespace, job_id: str, report: Report) -> None:
    """A fixed-rate producer against the running job: latency of a pipeline keeping up (or not).

    The producer runs in a thread of this process with pre-generated records, so generating
    does not eat into the send rate; it still shares the 2 cores with the pipeline, as a real
    co-located producer would.
    """
    count = int(args.rate * args.steady_seconds)
    start_ms = now_ms() + 1000  # simulated clock ~ real clock: event times look live
    records, expected = generate_stream(args.seed + 1, count, start_ms, args.rate)
    want = expected_map(expected)
    client = schema.connect(cfg)
    try:
        baseline = raw_total(client, cfg.clickhouse.database)
    finally:
        client.close()
    log(f"phase 2: producing {count:,} events at {args.rate:,.0f}/s for ~{args.steady_seconds} s")
    since_ms = now_ms()
    outcome: dict[str, Any] = {}

    def producer() -> None:
        try:
            outcome["report"] = produce(cfg, records, rate=args.rate, total=count)
        except Exception as exc:  # reported, then re-raised in the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=producer, name="steady-producer", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    sent = outcome["report"]
    log(f"phase 2: sent {sent.records:,} at {sent.rate:,.0f}/s; waiting for the rows")
    counts, _ = wait_for_counts(
        cfg, want, job_id, args.timeout, since_ms=since_ms, baseline_raw=baseline
    )
    client = schema.connect(cfg)
    try:
        lat = latency(client, cfg.clickhouse.database, since_ms)
    finally:
        client.close()
    span = (lat["last_visible_ms"] - lat["first_produced_ms"]) / 1000
    report.phase2 = {
        "events": count,
        "target_rate": args.rate,
        "achieved_produce_rate": round(sent.rate),
        "produce_seconds": round(sent.seconds, 2),
        "expected": want,
        "counts": counts,
        "complete": counts == want,
        "drain_after_last_send_seconds": round(
            (lat["last_visible_ms"] - lat["last_produced_ms"]) / 1000, 2
        ),
        "ingest_rate_over_phase": round(count / span) if span > 0 else None,
        **{key: lat[key] for key in ("rows", "p50_ms", "p95_ms", "p99_ms", "max_ms", "min_ms")},
    }
    if counts != want:
        report.errors.append(f"phase 2 incomplete after {args.timeout:.0f} s: {counts} != {want}")
    if sent.rate < 0.95 * args.rate:
        report.errors.append(
            f"phase 2 producer reached only {sent.rate:,.0f}/s of the {args.rate:,.0f}/s asked"
        )
    log(
        f"phase 2: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, "
        f"max {lat['max_ms']:.0f} ms"
    )


@contextlib.contextmanager
def private_stack(args: argparse.Namespace) -> Iterator[Config]:
    """A whole stack on free ports in a fresh /tmp state dir; always stopped afterwards.

    Bulk data (ClickHouse store, checkpoints) is removed at the end unless --keep-state;
    logs are kept for inspection.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="tidemark-bench-"))
    overrides = [*stack_overrides(state_dir), *args.overrides]
    cfg = load_config(overrides=overrides)
    try:
        yield cfg
    finally:
        log("stopping the private stack")
        try:
            stop_stack(cfg, report=lambda item: log(f"  {item.name:<11} stopped {item.detail}"))
        finally:
            if not args.keep_state:
                for name in ("clickhouse", "flink", "flink-lib", "job", "redis"):
                    shutil.rmtree(state_dir / name, ignore_errors=True)


def start_with_retry(cfg: Config, report: Report, components: list[str]) -> None:
    """Start `components`; if that fails, stop them and try once more.

    Why: `flink.start` can report "a JVM exited" for a TaskManager that is merely slow to
    appear: `taskmanager.sh start` returns before its forked child has exec'd java (the
    child first runs a command substitution for the classpath), so under load the process
    table briefly shows no TaskManager JVM. One retry keeps a benchmark from failing on it.
    """
    for attempt in (1, 2):
        try:
            for item in start_stack(cfg, components):
                log(f"  {item.name:<11} {item.state} {item.detail}")
            return
        except StackError as exc:
            if attempt == 2:
                raise
            first_line = str(exc).splitlines()[0]
            report.notes.append(f"start of {components} failed once (retried): {first_line}")
            log(f"start failed ({first_line}); stopping and retrying once")
            stop_stack(cfg, components)


#: Phase 1 and phase 2 as run() calls them; other benchmarks pass their own (windows_bench).
Phase1 = Callable[[Config, argparse.Namespace, BacklogProducer, Report], str]
Phase2 = Callable[[Config, argparse.Namespace, str, Report], None]


def run(
    args: argparse.Namespace,
    backlog_factory: Callable[[Config, int, int], BacklogProducer] | None = None,
    phase1: Phase1 | None = None,
    phase2: Phase2 | None = None,
) -> Report:
    """Start the stack, run both phases, collect memory/checkpoints, and always clean up.

    `backlog_factory`, `phase1` and `phase2` default to this benchmark's own; another
    benchmark (bench.windows_bench) swaps in its own phases and keeps the rest of the run.
    """
    backlog_factory = backlog_factory or BacklogProducer
    phase1 = phase1 or run_phase1
    phase2 = phase2 or run_phase2
    report = Report(
        started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        args={k: v for k, v in vars(args).items()},
        machine=machine_info(),
        config={},
    )
    began = time.monotonic()
    with private_stack(args) as cfg:
        report.config = config_info(cfg)
        sampler = ResourceSampler(lambda: component_pids(cfg, os.getpid()))
        job_id = None
        url = flink.rest_url(cfg)
        try:
            log(f"starting a private stack in {cfg.state_dir}")
            start_with_retry(cfg, report, ["kafka", "redis", "clickhouse"])
            schema.apply(cfg)
            topics.ensure_topics(cfg)
            backlog = backlog_factory(cfg, args.seed, args.events)
            backlog.start()
            start_with_retry(cfg, report, ["flink"])
            sampler.start()
            job_id = phase1(cfg, args, backlog, report)
            phase2(cfg, args, job_id, report)
            report.checkpoints = checkpoint_stats(url, job_id)
            report.job["python_busy_ms"] = operator_busy_ms(url, job_id)
            detail = flink_rest.call(url, f"/jobs/{job_id}")
            report.job.update(
                state=detail.get("state"),
                restarts=flink_rest.restarts(url, job_id),
                vertices=[
                    {"name": v["name"], "parallelism": v["parallelism"], "status": v["status"]}
                    for v in detail.get("vertices", [])
                ],
            )
            if report.job["restarts"]:
                cause = latest_failure(url, job_id)
                report.job["failure"] = cause
                report.notes.append(
                    f"the job restarted {report.job['restarts']}x during the run "
                    f"(it recovered; the times include the restart): {cause}"
                )
        except Exception as exc:
            report.errors.append(f"{type(exc).__name__}: {exc}")
            log(f"FAILED: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        finally:
            usage = sampler.finish() if sampler.is_alive() else sampler.usage
            report.memory = [asdict(u) for u in usage.values()]
            report.cpu = sampler.machine_cpu()
            if report.cpu:
                ours = round(sum(u.cpu_seconds for u in usage.values()), 1)
                others = round(report.cpu["busy_cpu_seconds"] - ours, 1)
                report.cpu.update(ours_cpu_seconds=ours, others_cpu_seconds=others)
                share = others / max(report.cpu["available_cpu_seconds"], 1e-9)
                if share > BUSY_MACHINE_SHARE:
                    report.notes.append(
                        f"machine was busy: other processes used {share:.0%} of all CPU "
                        "during the run; these numbers understate the pipeline"
                    )
            if job_id is not None:
                with contextlib.suppress(Exception):
                    flink_rest.cancel(url, job_id)
            report.flink_logs = flink_log_findings(cfg)
    report.verdict = verdict(report, time.monotonic() - began)
    return report


def verdict(report: Report, total_seconds: float) -> dict[str, Any]:
    """The project's target for this slice, checked against this run's numbers."""
    rate = report.phase1.get("events_per_second")
    p99 = report.phase2.get("p99_ms")
    latency_met = p99 is not None and p99 < TARGET_P99_MS and bool(report.phase2.get("complete"))
    return {
        "target": f">= {TARGET_EVENTS_PER_SECOND:,} events/s sustained, p99 < {TARGET_P99_MS} ms",
        "throughput_met": rate is not None and rate >= TARGET_EVENTS_PER_SECOND,
        "latency_met": latency_met,
        "total_seconds": round(total_seconds, 1),
    }


# --- output --------------------------------------------------------------------------------------


def mib(value: int | None) -> str:
    return "-" if not value else f"{value / MIB:,.0f} MiB"


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _header(report: Report) -> list[str]:
    m, c = report.machine, report.config
    code = c.get("code", {})
    dirty = code.get("uncommitted_job_changes", [])
    load = ", ".join(f"{x:.2f}" for x in m["loadavg_at_start"])
    where = (
        "Python runs inside the TaskManager JVM"
        if c.get("python_execution_mode") == "thread"
        else "separate Python worker processes"
    )
    return [
        f"tidemark ingest benchmark — {report.started}",
        "",
        f"machine  nproc {m['nproc']} (usable {m['cpus_usable']}), "
        f"{m['memory_total_gib']} GiB RAM, {m['cpu_model'] or 'cpu ?'}",
        f"         load avg at start {load}; Python {m['python']}, "
        f"apache-flink {m['apache_flink']}, chDB {m['chdb']}",
        f"code     {code.get('commit')} {code.get('subject')}"
        + (f" + uncommitted: {', '.join(dirty)[:60]}" if dirty else ""),
        f"config   parallelism {c.get('parallelism')}, "
        f"python.execution-mode {c.get('python_execution_mode')} ({where})",
        f"         python bundle.time {c.get('python_bundle_time_ms')} ms, "
        f"bundle.size {c.get('python_bundle_size')}",
        f"         batch_max_rows {c.get('batch_max_rows')}, "
        f"batch_max_seconds {c.get('batch_max_seconds')} (one insert per table per window)",
        f"         {c.get('topic_partitions')} partitions, {c.get('kafka_source')}, "
        f"max_poll_records {c.get('max_poll_records')}",
        f"         {c.get('taskmanagers')} TaskManager x {c.get('taskmanager_slots')} slot, "
        f"checkpoints every {c.get('checkpoint_interval')} ({c.get('state_backend')})",
        "",
    ]


def _verdict_of(complete: bool) -> str:
    return "OK" if complete else "MISMATCH"


def _phase1(report: Report) -> list[str]:
    p = report.phase1
    if not p:
        return []
    series = p["rows_per_second_series"]
    return [
        f"1. sustained throughput: catch-up of a {p['events']:,}-event backlog "
        f"(seed {report.args['seed']})",
        f"   backlog produced (while Flink starts) {fmt(p['produce_rate'])} events/s",
        f"   flink run -> all tasks RUNNING      {fmt(p['submit_to_running_seconds'], ' s')}",
        f"   RUNNING -> first row visible        {fmt(p['running_to_first_row_seconds'], ' s')}",
        f"   RUNNING -> last expected row        {fmt(p['catch_up_seconds'], ' s')}",
        f"   SUSTAINED THROUGHPUT                {fmt(p['events_per_second'])} events/s"
        "  (N / (last row - RUNNING))",
        f"   while rows flowed (first->last row) "
        f"{fmt(p['events_per_second_while_flowing'])} events/s",
        f"   rows/s by ingested_at min/med/max   {fmt(p['rows_per_second_min'])} / "
        f"{fmt(p['rows_per_second_median'])} / {fmt(p['rows_per_second_max'])}"
        f"  ({max(len(series) - 2, 0)} whole seconds)",
        f"   rows (FINAL) vs generator truth     {p['counts']}",
        f"                                       {p['expected']} -> {_verdict_of(p['complete'])}",
        "",
    ]


def _phase2(report: Report) -> list[str]:
    p = report.phase2
    if not p:
        return []
    return [
        f"2. latency under steady load: {p['events']:,} events at {fmt(p['target_rate'])}/s, "
        "job already running",
        f"   producer achieved                   {fmt(p['achieved_produce_rate'])} events/s "
        f"over {fmt(p['produce_seconds'], ' s')}",
        f"   ingest rate over the phase          {fmt(p['ingest_rate_over_phase'])} events/s",
        f"   ingested_at - produced_at  p50      {fmt(p['p50_ms'], ' ms')}",
        f"                              p95      {fmt(p['p95_ms'], ' ms')}",
        f"                              p99      {fmt(p['p99_ms'], ' ms')}",
        f"                              max      {fmt(p['max_ms'], ' ms')}"
        f"  (over {fmt(p['rows'])} rows)",
        f"   last row visible after last send    {fmt(p['drain_after_last_send_seconds'], ' s')}",
        f"   rows (FINAL) vs generator truth     {p['counts']}",
        f"                                       {p['expected']} -> {_verdict_of(p['complete'])}",
        "",
    ]


def _memory(report: Report) -> list[str]:
    if not report.memory:
        return []
    thread_mode = report.config.get("python_execution_mode") == "thread"
    out = [
        "3. memory and CPU over the run (VmHWM = peak RSS; sampled = max of 1 s RSS samples)",
        f"   {'component':<22} {'pids':<14} {'VmHWM':>10} {'sampled':>10} {'CPU s':>7}",
    ]
    for usage in report.memory:
        pids = ",".join(str(p) for p in usage["pids"]) or "-"
        note = ""
        if usage["role"] == "taskmanager JVM" and thread_mode:
            note = "  incl. Python (thread mode)"
        elif usage["role"] == "python workers" and not usage["pids"] and thread_mode:
            note = "  none: thread mode"
        out.append(
            f"   {usage['role']:<22} {pids[:14]:<14} {mib(usage['peak_rss_bytes']):>10}"
            f" {mib(usage['max_sampled_rss_bytes']):>10} {usage['cpu_seconds']:>7.1f}{note}"
        )
        if usage["role"] == "other TM children":  # say what they are
            out += [
                f"      {pid}: {cmd[-90:]}"
                for pid, cmd in zip(usage["pids"], usage["commands"], strict=False)
            ]
    cpu = report.cpu
    if cpu:
        out.append(
            f"   machine CPU while sampled: {cpu['busy_cpu_seconds']:.0f} of "
            f"{cpu['available_cpu_seconds']:.0f} CPU-s busy over {cpu['wall_seconds']:.0f} s; "
            f"this stack {cpu['ours_cpu_seconds']:.0f}, other processes "
            f"{cpu['others_cpu_seconds']:.0f}"
        )
    return [*out, ""]


def _checkpoints(report: Report) -> list[str]:
    ck = report.checkpoints
    if not ck:
        return []
    return [
        "4. checkpoints",
        f"   completed {ck['completed']}, failed {ck['failed']}, in progress {ck['in_progress']}",
        f"   latest #{ck['latest_id']}: {fmt(ck['latest_duration_ms'], ' ms')}, "
        f"state size {fmt(ck['latest_state_size_bytes'])} B, "
        f"checkpointed {fmt(ck['latest_checkpointed_size_bytes'])} B",
        f"   duration avg {fmt(ck['duration_ms_avg'], ' ms')}, "
        f"p99 {fmt(ck['duration_ms_p99'], ' ms')}, max {fmt(ck['duration_ms_max'], ' ms')}",
        *[f"   failed {message[:150]}" for message in ck["failure_messages"]],
        f"   (JobManager log: {report.flink_logs.get('checkpoint_triggers_declined', 0)} trigger(s)"
        " declined because a task was not running yet; Flink counts them as failed)",
        "",
    ]


def _footer(report: Report) -> list[str]:
    job, logs, v = report.job, report.flink_logs, report.verdict
    out = [
        f"job      {job.get('id', '-')}: {job.get('state', '-')} before cancel, "
        f"restarts {job.get('restarts', '-')}",
    ]
    for name, times in (job.get("task_ms_per_second_phase1") or {}).items():
        out.append(
            f"task     {name:<60} busy {times.get('busy', '-'):>4} "
            f"backpressured {times.get('backPressured', '-'):>4} idle {times.get('idle', '-'):>4}"
            " ms/s (phase 1)"
        )
    busy = job.get("python_busy_ms") or {}
    if busy:
        out.append(
            "python   seconds in each operator's Python, wall (busy) and thread CPU: "
            + ", ".join(f"{name} {ms / 1000:.1f}" for name, ms in sorted(busy.items()))
        )
    if logs:
        out.append(
            f"logs     {logs['error_lines']} ERROR, {logs['warn_lines']} WARN lines "
            f"in {logs['log_dir']}"
        )
        out += [f"         {line}" for line in logs["first_errors"]]
    out += [
        "",
        f"target   {v['target']}: throughput {'MET' if v['throughput_met'] else 'NOT MET'}, "
        f"{v.get('latency_label', 'p99')} {'MET' if v['latency_met'] else 'NOT MET'}",
        f"total    {v['total_seconds']} s",
    ]
    out += [f"note     {note}" for note in report.notes]
    return out + [f"ERROR    {error}" for error in report.errors]


def render(report: Report) -> str:
    """The human-readable table (also what bench/README.md quotes)."""
    sections = (_header, _phase1, _phase2, _memory, _checkpoints, _footer)
    return "\n".join(line for section in sections for line in section(report))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=300_000, help="phase 1 backlog size")
    parser.add_argument("--rate", type=float, default=10_000, help="phase 2 produce rate (/s)")
    parser.add_argument("--steady-seconds", type=float, default=20, help="phase 2 duration")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (phase 2: seed+1)")
    parser.add_argument("--timeout", type=float, default=120, help="max wait per phase (s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="section.key=value",
        help="extra tidemark setting for the stack and the job, e.g. ingest.batch_max_rows=20000",
    )  # fmt: skip
    parser.add_argument("--keep-state", action="store_true", help="keep the ClickHouse store etc.")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def terminate(signum: int, _frame: object) -> None:  # run the finally blocks on SIGTERM
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    report = run(args)
    print(render(report), flush=True)
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path = RESULTS_DIR / f"ingest-{stamp}.json"
        path.write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
        print(f"results  {path.relative_to(RESULTS_DIR.parent.parent)}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
