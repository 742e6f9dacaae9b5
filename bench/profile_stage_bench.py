"""What the profile stage costs: the ingest job without it and with it, in one run.

    .venv/bin/python -m bench.profile_stage_bench [--events 300000] [--rate 10000] [--seed 7]

Runs bench.ingest_bench twice, back to back, each on its own private stack with the same
workload: first with `ingest.profile_stage=false` (Kafka -> validate -> dedup -> ClickHouse),
then with the profile stage on (+ as-of enrichment against the generator's dimension files,
identity resolution in keyed state, cost attribution, identity tables in ClickHouse and
Redis). Prints each run's full report, then the two side by side with their ratio; everything
goes to `bench/results/profile-stage-<timestamp>.json`. Accepts ingest_bench's options.

Note: dimension files are written for `--seed`, which is the catch-up backlog's seed; the
steady phase uses seed+1, whose catalog differs, so its lookups mostly miss ("unknown").
A miss costs about what a hit does.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import ingest_bench
from tidemark.gen import DEFAULT_START_MS
from tidemark.gen_dimensions import write_dimension_files

TARGET_EVENTS_PER_SECOND = 20_000  # issue 3's target for the whole job with the stage on


def taskmanager_peak_rss(report: ingest_bench.Report) -> int | None:
    for usage in report.memory:
        if usage["role"] == "taskmanager JVM":
            return usage["peak_rss_bytes"]
    return None


def summary(report: ingest_bench.Report) -> dict[str, Any]:
    """The numbers compared across the two runs."""
    p1, p2, cp = report.phase1, report.phase2, report.checkpoints
    return {
        "events_per_second": p1.get("events_per_second"),
        "p50_ms": p2.get("p50_ms"),
        "p95_ms": p2.get("p95_ms"),
        "p99_ms": p2.get("p99_ms"),
        "taskmanager_peak_rss_bytes": taskmanager_peak_rss(report),
        "checkpoint_avg_ms": cp.get("duration_ms_avg"),
        "checkpoint_state_bytes": cp.get("latest_state_size_bytes"),
        "errors": report.errors,
    }


def ratio(with_stage: Any, without: Any) -> str:
    if not isinstance(with_stage, (int, float)) or not isinstance(without, (int, float)):
        return "-"
    return f"{with_stage / without:.2f}x" if without else "-"


def render(rows: dict[str, dict[str, Any]]) -> str:
    off, on = rows["ingest only"], rows["with profile stage"]
    lines = [
        "",
        "PROFILE STAGE COST (same workload, same machine, one run)",
        f"   {'':<32}{'ingest only':>16}{'with stage':>16}{'ratio':>10}",
    ]
    for key, label, unit in (
        ("events_per_second", "sustained events/s", ""),
        ("p50_ms", "latency p50", " ms"),
        ("p95_ms", "latency p95", " ms"),
        ("p99_ms", "latency p99", " ms"),
        ("taskmanager_peak_rss_bytes", "TaskManager peak RSS", ""),
        ("checkpoint_avg_ms", "checkpoint avg", " ms"),
        ("checkpoint_state_bytes", "checkpoint state", ""),
    ):
        a, b = off.get(key), on.get(key)
        if key.endswith("_bytes"):
            shown = [ingest_bench.mib(a), ingest_bench.mib(b)]
        else:
            shown = [ingest_bench.fmt(a, unit), ingest_bench.fmt(b, unit)]
        lines.append(f"   {label:<32}{shown[0]:>16}{shown[1]:>16}{ratio(b, a):>10}")
    rate = on.get("events_per_second")
    met = isinstance(rate, (int, float)) and rate >= TARGET_EVENTS_PER_SECOND
    lines.append(
        f"   target: >= {TARGET_EVENTS_PER_SECOND:,} events/s with the stage on: "
        f"{'met' if met else 'NOT met'}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = ingest_bench.parse_args(sys.argv[1:] if argv is None else argv)
    dims = Path(tempfile.mkdtemp(prefix="tidemark-bench-dimensions-"))
    reports: dict[str, ingest_bench.Report] = {}
    try:
        write_dimension_files(dims, seed=args.seed, start_ms=DEFAULT_START_MS)
        stage_on = ["ingest.profile_stage=true", f"enrichment.dimensions_dir={dims}"]
        for label, extra in (
            ("ingest only", ["ingest.profile_stage=false"]),
            ("with profile stage", stage_on),
        ):
            run_args = copy.copy(args)
            run_args.overrides = [*args.overrides, *extra]
            ingest_bench.log(f"=== {label} ===")
            reports[label] = ingest_bench.run(run_args)
            print(f"\n=== {label} ===\n{ingest_bench.render(reports[label])}", flush=True)
    finally:
        shutil.rmtree(dims, ignore_errors=True)
    rows = {label: summary(report) for label, report in reports.items()}
    if len(rows) == 2:
        print(render(rows), flush=True)
    if not args.no_save:
        ingest_bench.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        path = ingest_bench.RESULTS_DIR / f"profile-stage-{stamp}.json"
        payload = {"summary": rows, "runs": {k: asdict(v) for k, v in reports.items()}}
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"results  {path.relative_to(ingest_bench.RESULTS_DIR.parent.parent)}")
    return 1 if any(r.errors for r in reports.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
