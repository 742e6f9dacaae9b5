"""Sliding-window specs ("1h/1m": one hour, sliding every minute) and the pane they share.

Why panes: a sliding window of size S and slide D overlaps S/D others, so folding each row
into every window it belongs to costs S/D updates (60 for 1h/1m). Folding it into one pane
instead, the greatest common divisor of all slides (10 s by default), costs one update; a
window is the sum of the S/pane panes it covers, and every pane lies wholly inside exactly
S/D windows of each spec. The job keeps and emits panes; ClickHouse's window views sum them
(schemas/clickhouse/006_windows.sql). Window starts are multiples of the slide since the
epoch, as in Flink's HOP windows with no offset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from udfs.triggers import duration_ms


@dataclass(frozen=True)
class WindowSpec:
    """One sliding window: [start, start + size_ms) for every start that is a multiple of
    slide_ms."""

    name: str
    size_ms: int
    slide_ms: int

    def windows_of(self, event_ms: int) -> list[int]:
        """The starts of the windows holding `event_ms`, oldest first."""
        last = event_ms - event_ms % self.slide_ms
        count = self.size_ms // self.slide_ms
        return [last - k * self.slide_ms for k in range(count - 1, -1, -1)]


def parse_spec(text: str) -> WindowSpec:
    """`size/slide`, e.g. "1h/1m" or "5m/10s"; size must be a positive multiple of slide."""
    size_text, sep, slide_text = text.strip().partition("/")
    if not sep:
        raise ValueError(f"{text!r}: expected size/slide, e.g. 1h/1m")
    size, slide = duration_ms(size_text.strip()), duration_ms(slide_text.strip())
    if size <= 0 or slide <= 0:
        raise ValueError(f"{text!r}: size and slide must be positive")
    if size % slide:
        raise ValueError(f"{text!r}: the size must be a multiple of the slide")
    return WindowSpec(f"{size_text.strip()}/{slide_text.strip()}", size, slide)


def parse_specs(text: str | Iterable[str]) -> tuple[WindowSpec, ...]:
    """A comma-separated list (or an iterable) of specs, at least one, names unique."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    specs = tuple(parse_spec(p) for p in parts if p.strip())
    if not specs:
        raise ValueError("no window spec given")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate window specs in {names}")
    return specs


def pane_ms(specs: Iterable[WindowSpec]) -> int:
    """The pane: the greatest common divisor of the slides."""
    return math.gcd(*(s.slide_ms for s in specs))


def pane_start(event_ms: int, pane: int) -> int:
    """The start of the pane holding `event_ms` (floor, also for times before 1970)."""
    return event_ms - event_ms % pane
