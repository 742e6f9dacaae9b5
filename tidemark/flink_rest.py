"""The few calls tidemark makes to a Flink cluster's REST API.

Why REST rather than PyFlink's JobClient: the job runs in a `flink run` process that has
exited by the time an operator (or a test) wants its state, and in Flink 2.3.0 PyFlink's
`stop_with_savepoint` is broken (see ENVIRONMENT.md); the REST API is what the web UI and the
CLI use, and it works from any process.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

TERMINAL_STATES = {"FINISHED", "FAILED", "CANCELED", "SUSPENDED"}


class FlinkRestError(RuntimeError):
    """The cluster did not answer, or answered with an error."""


def call(
    base_url: str, path: str, method: str = "GET", body: Any = None, timeout: float = 10
) -> Any:
    """One JSON request to the REST API."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as exc:
        raise FlinkRestError(
            f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:500]}"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FlinkRestError(
            f"{method} {path}: Flink REST at {base_url} unreachable: {exc}"
        ) from exc
    return json.loads(text) if text else None


def jobs(base_url: str) -> list[dict[str, Any]]:
    """All jobs the cluster knows: id, name, state."""
    return call(base_url, "/jobs/overview")["jobs"]


def job_state(base_url: str, job_id: str) -> str:
    """RUNNING, RESTARTING, FAILED, ..."""
    return call(base_url, f"/jobs/{job_id}")["state"]


def running_tasks(base_url: str, job_id: str) -> bool:
    """Whether every vertex of the job has all its subtasks RUNNING."""
    detail = call(base_url, f"/jobs/{job_id}")
    return detail["state"] == "RUNNING" and all(
        v["status"] == "RUNNING" for v in detail.get("vertices", [])
    )


def wait_running(base_url: str, job_id: str, timeout: float = 120) -> None:
    """Block until every task runs; fail if the job ends or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(base_url, job_id)
        if state in TERMINAL_STATES:
            raise FlinkRestError(
                f"job {job_id} ended in state {state}: {exceptions(base_url, job_id)}"
            )
        if running_tasks(base_url, job_id):
            return
        time.sleep(0.5)
    raise FlinkRestError(f"job {job_id} not running after {timeout:.0f}s")


def exceptions(base_url: str, job_id: str) -> str:
    """The root exception of the job's latest failure, if any (first lines)."""
    try:
        info = call(base_url, f"/jobs/{job_id}/exceptions")
    except FlinkRestError as exc:
        return str(exc)
    history = info.get("exceptionHistory", {}).get("entries", [])
    if not history:
        return "no exception recorded"
    return "\n".join(history[0].get("stacktrace", "").splitlines()[:12])


def completed_checkpoints(base_url: str, job_id: str) -> int:
    """How many checkpoints of this job have completed."""
    return int(call(base_url, f"/jobs/{job_id}/checkpoints")["counts"]["completed"])


def restarts(base_url: str, job_id: str) -> int:
    """How many times the job has restarted (failovers).

    Flink's `numRestarts` job metric, or the failures in the job's exception history if that
    says more: the metric reaches REST through the metric fetcher's cache, and was seen to
    lag a completed failover by over 100 s, while the history is the JobMaster's own record.
    """
    metrics = call(base_url, f"/jobs/{job_id}/metrics?get=numRestarts")
    counted = int(float(metrics[0]["value"])) if metrics else 0
    history = call(base_url, f"/jobs/{job_id}/exceptions").get("exceptionHistory", {})
    return max(counted, len(history.get("entries", [])))


def cancel(base_url: str, job_id: str, timeout: float = 60) -> None:
    """Cancel the job and wait until it has ended."""
    call(base_url, f"/jobs/{job_id}", method="PATCH")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job_state(base_url, job_id) in TERMINAL_STATES:
            return
        time.sleep(0.5)
    raise FlinkRestError(f"job {job_id} did not end within {timeout:.0f}s of cancel")


def stop_with_savepoint(base_url: str, job_id: str, target_dir: str, timeout: float = 120) -> str:
    """Stop the job with a savepoint (as `flink stop --savepointPath`); return its path."""
    trigger = call(
        base_url,
        f"/jobs/{job_id}/stop",
        method="POST",
        body={"targetDirectory": target_dir, "drain": False},
    )["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = call(base_url, f"/jobs/{job_id}/savepoints/{trigger}")
        if result["status"]["id"] == "COMPLETED":
            operation = result.get("operation", {})
            if "location" not in operation:
                raise FlinkRestError(f"savepoint failed: {operation.get('failure-cause')}")
            # like `flink stop`, return once the job has stopped, not just once it was saved
            while job_state(base_url, job_id) not in TERMINAL_STATES:
                if time.monotonic() > deadline:
                    raise FlinkRestError(f"job {job_id} saved but not stopped in {timeout:.0f}s")
                time.sleep(0.2)
            return operation["location"]
        time.sleep(0.5)
    raise FlinkRestError(f"savepoint of job {job_id} not done within {timeout:.0f}s")
