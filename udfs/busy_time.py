"""Where a Python operator's time goes: two counters every Python operator of the job keeps.

`busy_ms` is the wall time spent in the operator's calls, `cpu_ms` the CPU its thread used
meanwhile; the difference is waiting (for the GIL, for ClickHouse or Redis, for downstream).
The benchmarks read both to find the bottleneck. Counters, not gauges: a Python gauge is read
from Flink's metrics thread, which crashed a TaskManager in thread mode (README, thread mode).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class BusyTime:
    """The `busy_ms` and `cpu_ms` counters of one operator's metric group."""

    def __init__(self, metric_group: Any) -> None:
        self.busy_ms = metric_group.counter("busy_ms")
        self.cpu_ms = metric_group.counter("cpu_ms")

    @contextmanager
    def measure(self) -> Iterator[None]:
        """Count the wall and thread-CPU time of the enclosed block."""
        began, began_cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.busy_ms.inc(int((time.perf_counter() - began) * 1000))
            self.cpu_ms.inc(int((time.thread_time() - began_cpu) * 1000))
