"""Issue 4's first decision, measured: how to compute the sliding windows.

    .venv/bin/python -m bench.window_choice [--rows 400000] [--python-rows 4000]

Each variant runs alone on an in-process mini-cluster with the job's Flink settings (thread
mode, RocksDB, checkpoints), over the same bounded input from Java's datagen: cost rows
(tenant x team x service, 8 x 6 x 5 keys) 2 ms of event time apart, watermarks 5 s behind.
The windows are the issue's defaults: 5 min sliding every 10 s, and 1 h sliding every 1 min.

    baseline          source -> sink, no windows (start-up and source cost, subtracted)
    sql-tvf           Flink SQL HOP table functions, both windows (Java); final values only
    sql-early-fire    Flink SQL group windows (GROUP BY HOP) with the experimental emit
                      options: a partial value every second, late firing for 10 min (Java)
    python-windows    DataStream key_by + SlidingEventTimeWindows + a Python AggregateFunction,
                      5-minute window only, on far fewer rows (it is that slow)
    python-panes      what the job does (udfs/panes.py + udfs/event_clock.py): fold each row
                      into one pane per grouping set inside the Python pass the profile stage
                      already makes, state behind a per-batch cache; measured offline over a
                      dict-backed state, per 1,000-row batch (no Flink: the pass exists anyway)

Prints rows, seconds, seconds net of the baseline, and microseconds per input row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BASE_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS = ("baseline", "sql-tvf", "sql-early-fire", "python-windows")


def python_panes(rows: int, batch: int = 1_000) -> float:
    """Microseconds per cost row of the job's pane fold (six grouping sets, two specs)."""
    from decimal import Decimal

    from udfs.cached_state import CachedMap, MemoryMapState
    from udfs.event_clock import EventClocks, Lateness
    from udfs.panes import Panes
    from udfs.window_specs import pane_ms, parse_specs

    panes = Panes(CachedMap(MemoryMapState(), 200_000), pane_ms(parse_specs("1h/1m,5m/10s")))
    clocks = EventClocks(CachedMap(MemoryMapState(), 200_000), Lateness(5_000, 600_000))
    amount = Decimal("1.234567")
    started = time.perf_counter()
    for start in range(0, rows, batch):
        for seq in range(start, min(start + batch, rows)):
            ts = BASE_MS + seq * 2
            tenant = f"t{seq % 8}"
            if clocks.observe(tenant, "cost", ts) is None:
                dims = (f"team{seq % 6}", "feature", "customer", f"svc{seq % 5}")
                panes.add_cost(tenant, dims, "USD", ts, (amount, amount, amount))
        panes.end_batch()
        clocks.end_batch()
        panes.store.flush()
        clocks.store.flush()
    return (time.perf_counter() - started) / rows * 1e6


def source_ddl(rows: int) -> str:
    return f"""
        CREATE TEMPORARY TABLE costs (
          seq BIGINT, tenant INT, team INT, service INT, cost DOUBLE,
          ts AS TO_TIMESTAMP_LTZ({BASE_MS} + seq * 2, 3),
          WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
        ) WITH (
          'connector' = 'datagen', 'number-of-rows' = '{rows}',
          'fields.seq.kind' = 'sequence', 'fields.seq.start' = '0',
          'fields.seq.end' = '{rows - 1}',
          'fields.tenant.min' = '0', 'fields.tenant.max' = '7',
          'fields.team.min' = '0', 'fields.team.max' = '5',
          'fields.service.min' = '0', 'fields.service.max' = '4',
          'fields.cost.min' = '0', 'fields.cost.max' = '10'
        )"""


SINK_DDL = """
    CREATE TEMPORARY TABLE sink (
      tenant INT, team INT, service INT, window_end TIMESTAMP(3), cost DOUBLE, n BIGINT
    ) WITH ('connector' = 'blackhole')"""

TVF = """
    SELECT tenant, team, service, window_end, SUM(cost), COUNT(*)
    FROM TABLE(HOP(TABLE costs, DESCRIPTOR(ts), {slide}, {size}))
    GROUP BY tenant, team, service, window_start, window_end"""

GROUP_WINDOW = """
    SELECT tenant, team, service, HOP_END(ts, {slide}, {size}), SUM(cost), COUNT(*)
    FROM costs
    GROUP BY tenant, team, service, HOP(ts, {slide}, {size})"""

#: (slide, size) of the issue's two default windows.
WINDOWS = (
    ("INTERVAL '10' SECOND", "INTERVAL '5' MINUTE"),
    ("INTERVAL '1' MINUTE", "INTERVAL '1' HOUR"),
)


def sql_windows(template: str) -> str:
    """Both windows of the issue, as one INSERT into the sink."""
    parts = [template.format(slide=slide, size=size) for slide, size in WINDOWS]
    return "INSERT INTO sink " + " UNION ALL ".join(parts)


def run_variant(variant: str, rows: int) -> None:
    """Build and run one variant in this process (called in a child process)."""
    from pyflink.common import Time, Types
    from pyflink.datastream.functions import AggregateFunction
    from pyflink.datastream.window import SlidingEventTimeWindows

    from jobs.environment import create_environment
    from tidemark.config import load_config

    env, t_env = create_environment(load_config(), f"window-choice-{variant}")
    t_env.execute_sql(source_ddl(rows))
    if variant == "python-windows":

        class SumCount(AggregateFunction):
            def create_accumulator(self):
                return [0.0, 0]

            def add(self, value, accumulator):
                accumulator[0] += value[4]
                accumulator[1] += 1
                return accumulator

            def get_result(self, accumulator):
                return accumulator[1]

            def merge(self, a, b):
                return [a[0] + b[0], a[1] + b[1]]

        stream = t_env.to_data_stream(t_env.from_path("costs"))
        (
            stream.key_by(lambda r: (r[1], r[2], r[3]))
            .window(SlidingEventTimeWindows.of(Time.minutes(5), Time.seconds(10)))
            .aggregate(SumCount(), output_type=Types.LONG())
            .print()
        )
        env.execute("window-choice-python")
        return
    t_env.execute_sql(SINK_DDL)
    if variant == "baseline":
        statement = (
            "INSERT INTO sink SELECT tenant, team, service, CAST(ts AS TIMESTAMP(3)), cost, 1 "
            "FROM costs"
        )
    elif variant == "sql-tvf":
        statement = sql_windows(TVF)
    else:
        config = t_env.get_config()
        config.set("table.exec.emit.early-fire.enabled", "true")
        config.set("table.exec.emit.early-fire.delay", "1 s")
        config.set("table.exec.emit.late-fire.enabled", "true")
        config.set("table.exec.emit.late-fire.delay", "1 s")
        config.set("table.exec.emit.allow-lateness", "10 min")
        statement = sql_windows(GROUP_WINDOW)
    t_env.execute_sql(statement).wait()


def timed(variant: str, rows: int, timeout: float) -> dict[str, object]:
    """Run a variant in a fresh interpreter (its own mini-cluster); return its timing."""
    from tidemark.run import python_path_env

    env = dict(os.environ, PYTHONPATH=python_path_env())
    started = time.perf_counter()
    command = [sys.executable, "-m", "bench.window_choice", "--child", variant, "--rows", str(rows)]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        ok = result.returncode == 0
        error = "" if ok else (result.stderr.strip().splitlines() or ["?"])[-1][:300]
    except subprocess.TimeoutExpired:
        ok, error = False, f"did not finish within {timeout:.0f} s"
    seconds = time.perf_counter() - started
    run = {"variant": variant, "rows": rows, "seconds": round(seconds, 1), "ok": ok,
           "error": error}  # fmt: skip
    print(f"  {run}", file=sys.stderr, flush=True)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.window_choice")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--python-rows", type=int, default=4_000)
    parser.add_argument("--timeout", type=float, default=300, help="max seconds per variant")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_variant(args.child, args.rows)
        return 0
    runs = []
    for variant in VARIANTS:
        rows = args.python_rows if variant == "python-windows" else args.rows
        print(f"running {variant} over {rows:,} rows ...", file=sys.stderr, flush=True)
        runs.append(timed(variant, rows, args.timeout))
    small_base = timed("baseline", args.python_rows, args.timeout)
    panes_us = python_panes(args.rows)
    print(f"python-panes: {panes_us:.1f} us per row over {args.rows:,} rows", file=sys.stderr)
    base = {args.rows: runs[0]["seconds"], args.python_rows: small_base["seconds"]}
    print(f"{'variant':<16}{'rows':>10}{'seconds':>10}{'net s':>10}{'us/row':>10}  note")
    for run in [*runs, small_base]:
        net = max(float(run["seconds"]) - float(base[int(run["rows"])]), 0.0)
        per_row = net / int(run["rows"]) * 1e6
        shown = "-" if run["variant"] == "baseline" else f"{per_row:,.1f}"
        print(
            f"{run['variant']:<16}{run['rows']:>10,}{run['seconds']:>10}{net:>10.1f}"
            f"{shown:>10}  {'' if run['ok'] else 'FAILED: ' + str(run['error'])}"
        )
    print(f"{'python-panes':<16}{args.rows:>10,}{'-':>10}{'-':>10}{panes_us:>10.1f}  offline fold")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (RESULTS_DIR / f"window-choice-{stamp}.json").write_text(
        json.dumps(
            {"runs": runs, "small_baseline": small_base, "python_panes_us_per_row": panes_us},
            indent=2,
        )
        + "\n"
    )
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
