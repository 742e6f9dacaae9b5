"""Exactly-once under failure: kill a TaskManager, or a Python worker, mid-stream.

Each test lets the job complete at least one checkpoint and write part of the stream, then
kills a process with SIGKILL. The job must recover by itself (restart strategy, failover to
the spare TaskManager) and ClickHouse must still hold exactly the expectation computed
independently from the generated input: nothing lost, nothing twice (as read with FINAL,
which is how dashboards read; rows a replay wrote twice are collapsed by ReplacingMergeTree).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests import ingest_flow
from tests.support import child_pids, cmdline, pid_listening_on, wait_until
from tidemark import flink_rest
from tidemark.stack import flink

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def rows_so_far(case: ingest_flow.IngestCase) -> int:
    return sum(ingest_flow.table_counts(case.cfg).values())


def wait_mid_stream(case: ingest_flow.IngestCase, job_id: str) -> None:
    """Until a checkpoint has completed and some, but not all, rows are written."""
    url = flink.rest_url(case.cfg)
    total = sum(case.expected.counts().values())
    wait_until(
        lambda: (
            flink_rest.completed_checkpoints(url, job_id) >= 1 and rows_so_far(case) >= total // 10
        ),
        180,
        "a completed checkpoint and 10% of the rows",
    )
    assert rows_so_far(case) < total, "the job finished before the failure could be injected"


def taskmanager_pid_of(case: ingest_flow.IngestCase, job_id: str) -> int:
    """The pid of the TaskManager JVM that runs the job's reader."""
    url = flink.rest_url(case.cfg)
    vertex = flink_rest.call(url, f"/jobs/{job_id}")["vertices"][1]
    detail = flink_rest.call(url, f"/jobs/{job_id}/vertices/{vertex['id']}")
    tm_id = detail["subtasks"][0]["taskmanager-id"]  # e.g. 127.0.0.1:39739-3e772b
    rpc_port = int(tm_id.split(":")[1].split("-")[0])
    pid = pid_listening_on(rpc_port)
    assert pid in flink.taskmanager_pids(case.cfg), f"no TaskManager JVM on port {rpc_port}"
    return pid


def ensure_spare_taskmanager(case: ingest_flow.IngestCase) -> None:
    """Two TaskManagers, so the job has somewhere to fail over to (a TaskManager an earlier
    test lost, or one that died on its own, would otherwise fail this test for that reason)."""
    while len(flink.taskmanager_pids(case.cfg)) < 2:
        flink.start_taskmanager(case.cfg)


def kill_job_taskmanager(case: ingest_flow.IngestCase, job_id: str) -> int:
    """Mid-stream, SIGKILL the TaskManager running the job; return its pid once it restarted."""
    ensure_spare_taskmanager(case)
    wait_mid_stream(case, job_id)
    victim = taskmanager_pid_of(case, job_id)
    os.kill(victim, signal.SIGKILL)
    url = flink.rest_url(case.cfg)
    wait_until(lambda: flink_rest.restarts(url, job_id) >= 1, 120, "the job to restart")
    return victim


def test_taskmanager_killed_mid_stream(stack_cfg):
    case = ingest_flow.new_case(stack_cfg, seed=21, count=200_000)
    ingest_flow.produce_all(case)
    job_id = ingest_flow.start_job(case)
    url = flink.rest_url(case.cfg)
    try:
        victim = kill_job_taskmanager(case, job_id)
        ingest_flow.wait_for_all_rows(case, job_id, timeout=420)
        ingest_flow.assert_exact(case)
        assert victim not in flink.taskmanager_pids(case.cfg)
        # The transactional KafkaSink: each dead letter committed once despite the failover
        # (records of the killed TaskManager's open transaction were aborted, not read).
        expected_dead = case.expected.counts()["dead_letters"]
        keys = ingest_flow.dead_letter_topic_keys(case.cfg, expected_dead)
        assert len(keys) == expected_dead and set(keys.values()) == {1}
    finally:
        flink_rest.cancel(url, job_id)
        flink.start_taskmanager(case.cfg)  # back to two, as a supervisor would


def python_worker_pids(case: ingest_flow.IngestCase) -> list[int]:
    """Python worker interpreters (process mode) under the TaskManagers.

    The TaskManager starts `pyflink-udf-runner.sh` (bash), which runs the interpreter
    `python -m pyflink.fn_execution.beam.beam_boot`: the worker is that interpreter, not
    the shell wrapper, whose death would go unnoticed.
    """
    workers, pending = [], list(flink.taskmanager_pids(case.cfg))
    while pending:
        for child in child_pids(pending.pop()):
            pending.append(child)
            if "pyflink.fn_execution" in cmdline(child):
                workers.append(child)
    return workers


def kill_python_worker(case: ingest_flow.IngestCase, job_id: str) -> None:
    """Mid-stream, SIGKILL a Python worker (process mode); return once the job restarted."""
    url = flink.rest_url(case.cfg)
    wait_until(lambda: bool(python_worker_pids(case)), 60, "a Python worker process")
    wait_mid_stream(case, job_id)
    os.kill(python_worker_pids(case)[0], signal.SIGKILL)
    wait_until(lambda: flink_rest.restarts(url, job_id) >= 1, 120, "the job to restart")


def test_python_worker_killed_mid_stream(stack_cfg):
    """Process mode runs Python in separate worker processes; kill one of them."""
    case = ingest_flow.new_case(stack_cfg, seed=31, count=60_000)
    ingest_flow.produce_all(case)
    job_id = ingest_flow.start_job(case, extra_overrides=["flink.python.execution-mode=process"])
    url = flink.rest_url(case.cfg)
    try:
        kill_python_worker(case, job_id)
        ingest_flow.wait_for_all_rows(case, job_id, timeout=600)
        ingest_flow.assert_exact(case)
    finally:
        flink_rest.cancel(url, job_id)


def test_stop_with_savepoint_then_resume(stack_cfg):
    """An operator's upgrade: stop with a savepoint mid-stream, resume from it with more input.

    The second job is a new submission of the (re-packed) code; it must continue exactly where
    the savepoint was taken: the reader's offsets and the dedup state both come back.
    """
    case = ingest_flow.new_case(stack_cfg, seed=41, count=60_000)
    half = len(case.records) // 2
    ingest_flow.produce_range(case, 0, half)
    url = flink.rest_url(case.cfg)
    first = ingest_flow.start_job(case)
    wait_until(lambda: rows_so_far(case) >= half // 4, 180, "a quarter of the first half")
    target = (case.cfg.state_dir / "flink" / "savepoints").as_uri()
    savepoint = flink_rest.stop_with_savepoint(url, first, target)
    assert flink_rest.job_state(url, first) == "FINISHED"
    ingest_flow.produce_range(case, half, len(case.records))
    second = ingest_flow.start_job(case, savepoint=savepoint)
    try:
        ingest_flow.wait_for_all_rows(case, second, timeout=300)
        ingest_flow.assert_exact(case)
    finally:
        flink_rest.cancel(url, second)
