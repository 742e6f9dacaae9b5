"""The profile and window stages on the real local stack, with a TaskManager killed mid-stream.

The generator's stream (shared devices, anonymous visitors who identify later, aliases,
duplicates, late and malformed events, tagged and untagged cost) goes through the whole job
on the standalone cluster. Mid-stream, after a checkpoint, the TaskManager running the job is
killed; between the two halves of the stream a dimension change (and a malformed one) is
published on the changelog topic. Afterwards ClickHouse (events with profile ids and
enrichment, profiles, links, merges, cost allocations, panes, window views, late events)
and Redis (identifier lookups, profile hashes, live state, trigger streams) must equal the
independent models in tests/reference_*.py. The allowed lateness is lowered to one minute so
the generator's late events (up to ten minutes behind) exercise both sides of it.
"""

from __future__ import annotations

import csv
import shutil
import time

import orjson
import pytest

from tests import ingest_flow, profile_flow, window_flow
from tests.support import wait_until
from tests.test_exactly_once import kill_job_taskmanager, kill_python_worker
from tidemark import flink_rest
from tidemark.gen import DEFAULT_START_MS
from tidemark.gen_dimensions import write_dimension_files
from tidemark.produce import produce
from tidemark.stack import flink

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SEED = 31
COUNT = 60_000  # one simulated minute at the generator's 1000 records/s
CHANGE_VALID_FROM = DEFAULT_START_MS + 40_000  # inside the second half's event times
WORKER_SEED = 37
WORKER_COUNT = 30_000  # process mode is several times slower: half a simulated minute


def renamed_product(dimensions_dir) -> dict:
    """The first product of the files, renamed from CHANGE_VALID_FROM on."""
    with (dimensions_dir / "products.csv").open() as handle:
        first = next(csv.DictReader(handle))
    return {**first, "name": f"Renamed {first['name']}", "valid_from": str(CHANGE_VALID_FROM)}


def test_profiles_enrichment_and_allocations_exact_after_taskmanager_kill(stack_cfg, tmp_path):
    dims = tmp_path / "dimensions"
    write_dimension_files(dims, seed=SEED, start_ms=DEFAULT_START_MS, change_after_ms=30_000)
    case = ingest_flow.new_case(
        stack_cfg,
        seed=SEED,
        count=COUNT,
        extra_overrides=[
            f"enrichment.dimensions_dir={dims}",
            "windows.allowed_lateness_ms=60000",
        ],
    )
    # What the model sees: the files plus the change the job will receive on the changelog.
    model_dims = tmp_path / "model-dimensions"
    shutil.copytree(dims, model_dims)
    change = renamed_product(dims)
    with (model_dims / "products.csv").open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(change)).writerow(change)
    bad_change = b'{"dimension": "products", "op": "upsert", "key": {"tenant_id": "acme"}}'
    case.expected.dead_letters[bad_change] += 1
    want = profile_flow.expectation(case, model_dims)
    want_windows = window_flow.expectation(case, model_dims, want)
    assert want_windows.late, "the stream should exercise rows beyond the allowed lateness"
    assert any(want_windows.notifications.values()), "the stream should cross trigger rules"

    half = len(case.records) // 2
    ingest_flow.produce_range(case, 0, half)
    job_id = ingest_flow.start_job(case)
    url = flink.rest_url(case.cfg)
    try:
        kill_job_taskmanager(case, job_id)

        key = {"tenant_id": change["tenant_id"], "sku": change["sku"]}
        attributes = {k: change[k] for k in ("name", "category", "price")}
        good_change = orjson.dumps(
            {"dimension": "products", "op": "upsert", "key": key,
             "valid_from": CHANGE_VALID_FROM, "attributes": attributes}
        )  # fmt: skip
        topic = case.cfg.enrichment.changelog_topic
        produce(case.cfg, [(None, good_change), (None, bad_change)], topic=topic)
        time.sleep(5)  # the changelog reader polls every 200 ms; the change is applied first
        ingest_flow.produce_range(case, half, len(case.records))

        ingest_flow.wait_for_all_rows(case, job_id, timeout=420)
        ingest_flow.assert_exact(case)
        profile_flow.assert_events(case.cfg, want)
        profile_flow.assert_allocations(case.cfg, want)
        wait_until(
            lambda: passes(profile_flow.assert_identity_tables, case, want), 60, "identity tables"
        )
        profile_flow.assert_identity_tables(case.cfg, want)
        wait_until(lambda: passes(profile_flow.assert_redis, case, want), 60, "Redis")
        profile_flow.assert_redis(case.cfg, want)
        assert_windows(case, want_windows)
        assert want.identity.merges, "the stream should exercise merges"
        renamed = [k for k, v in want.enrichment.items() if change["name"] in v["product_names"]]
        assert renamed, "some events should be enriched with the changed product version"
    finally:
        flink_rest.cancel(url, job_id)
        flink.start_taskmanager(case.cfg)  # back to two, as a supervisor would


WINDOW_CHECKS = (
    window_flow.assert_late_and_progress,
    window_flow.assert_panes,
    window_flow.assert_window_views,
    window_flow.assert_redis_live,
)


def assert_windows(case: ingest_flow.IngestCase, want_windows: object) -> None:
    """Every window output equals the model's (waiting up to a minute for each sink)."""
    for check in WINDOW_CHECKS:
        try:
            wait_until(lambda check=check: passes(check, case, want_windows), 60, check.__name__)
        except AssertionError:
            check(case.cfg, want_windows)  # fails, saying what differs


def test_windows_live_state_and_triggers_exact_after_python_worker_kill(stack_cfg, tmp_path):
    """Process mode runs Python in worker processes: SIGKILL the one running the stages
    mid-stream; windows, late rows, live state and notifications must still be exact."""
    dims = tmp_path / "dimensions"
    write_dimension_files(dims, seed=WORKER_SEED, start_ms=DEFAULT_START_MS)
    case = ingest_flow.new_case(
        stack_cfg,
        seed=WORKER_SEED,
        count=WORKER_COUNT,
        extra_overrides=[f"enrichment.dimensions_dir={dims}", "windows.allowed_lateness_ms=30000"],
    )
    want = profile_flow.expectation(case, dims)
    want_windows = window_flow.expectation(case, dims, want)
    assert want_windows.late and any(want_windows.notifications.values())
    ingest_flow.produce_all(case)
    job_id = ingest_flow.start_job(case, extra_overrides=["flink.python.execution-mode=process"])
    url = flink.rest_url(case.cfg)
    try:
        kill_python_worker(case, job_id)
        ingest_flow.wait_for_all_rows(case, job_id, timeout=600)
        ingest_flow.assert_exact(case)
        profile_flow.assert_events(case.cfg, want)
        assert_windows(case, want_windows)
    finally:
        flink_rest.cancel(url, job_id)


def passes(check, case: ingest_flow.IngestCase, want: object) -> bool:
    try:
        check(case.cfg, want)
        return True
    except AssertionError:
        return False
