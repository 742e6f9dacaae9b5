"""Freshness under a steady load: produce time -> effect visible in Redis and in ClickHouse.

The whole job (windows on) runs on the real local stack while the generator's stream is
produced at a steady 1,000 events/s with live timestamps, and probe events go in at 3 per
second (tidemark/freshness.py says how a probe's effect is told apart). Every probe must
become visible in both stores, with the probe's own event time, and p95 must stay within a
bound loose enough for a loaded CI machine: this catches a stage that stalls or batches for
too long; the benchmark (bench/windows_bench.py) measures the numbers themselves.
"""

from __future__ import annotations

import threading

import pytest

from tests import ingest_flow
from tests.support import wait_until
from tidemark import flink_rest
from tidemark.demo import generate_stream
from tidemark.freshness import ProbeRun, now_ms
from tidemark.produce import produce
from tidemark.stack import flink

pytestmark = [pytest.mark.stack, pytest.mark.slow]

RATE = 1_000  # background events/s
SECONDS = 20
PROBE_RATE = 3.0
P95_BOUND_MS = 10_000


def test_probes_are_visible_in_redis_and_clickhouse_within_seconds(stack_cfg):
    case = ingest_flow.new_case(stack_cfg, seed=51, count=2_000)
    ingest_flow.produce_all(case)  # a warm-up: the job starts on a small backlog
    job_id = ingest_flow.start_job(case)
    url = flink.rest_url(case.cfg)
    try:
        ingest_flow.wait_for_all_rows(case, job_id, timeout=180)
        records, _ = generate_stream(52, RATE * SECONDS, now_ms() + 1_000, RATE)
        run = ProbeRun(case.cfg, int(PROBE_RATE * SECONDS), PROBE_RATE, "test")
        since_ms = now_ms()
        threads = [
            threading.Thread(target=produce, args=(case.cfg, records),
                             kwargs={"rate": RATE, "total": len(records)}, daemon=True),
            threading.Thread(target=run.send, daemon=True),
            threading.Thread(target=run.poll_redis, daemon=True),
            threading.Thread(target=run.poll_clickhouse, args=(since_ms,), daemon=True),
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        wait_until(run.all_seen, SECONDS + 90, "every probe in Redis and ClickHouse")
        run.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        fresh = run.summary()
        print(
            "freshness at 1k events/s: Redis p50/p95 "
            f"{fresh['redis_live']['p50_ms']}/{fresh['redis_live']['p95_ms']} ms, ClickHouse "
            f"{fresh['clickhouse_polled']['p50_ms']}/{fresh['clickhouse_polled']['p95_ms']} ms"
        )
        assert not fresh["errors"], fresh["errors"]
        assert fresh["redis_live"]["n"] == fresh["clickhouse_polled"]["n"] == len(run.probes)
        assert not fresh["live_hash_mismatches"] and not fresh["profile_id_mismatches"]
        for target in ("redis_live", "clickhouse_polled"):
            assert fresh[target]["p95_ms"] < P95_BOUND_MS, (target, fresh[target])
        assert flink_rest.job_state(url, job_id) == "RUNNING"
    finally:
        flink_rest.cancel(url, job_id)
