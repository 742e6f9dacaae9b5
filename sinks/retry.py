"""Retry a sink write with capped exponential backoff.

Why retry in the sink instead of failing the job at once: a ClickHouse or Kafka hiccup of a
few seconds should cost a few seconds of backpressure, not a job restart and a replay from
the last checkpoint. After the last attempt the error propagates, the job fails over and the
write is replayed, so nothing is ever dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def retry_with_backoff(
    action: Callable[[], T],
    what: str,
    attempts: int,
    max_backoff_seconds: float,
    first_backoff_seconds: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`, retrying on any exception up to `attempts` times in all."""
    backoff = first_backoff_seconds
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning(
                "%s failed (attempt %d/%d): %s; retrying in %.1fs",
                what,
                attempt,
                attempts,
                exc,
                backoff,
            )
            sleep(backoff)
            backoff = min(backoff * 2, max_backoff_seconds)
    raise AssertionError("unreachable")
