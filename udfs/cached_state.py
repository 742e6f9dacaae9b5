"""A write-back cache over one Flink MapState, flushed once per batch.

The window stage touches the same panes, clocks and profiles many times within a batch (a
pane collects every row of its ten seconds), and each MapState access crosses into the JVM
and RocksDB. So, as for the identity graph (udfs/identity_state.py, which says why this is
exactly-once: no checkpoint barrier can fall inside one batch call), reads go to a dict
first and dirty entries are written back in one `put_all` at the end of the batch.

Values are whatever the MapState's value type holds (the stage uses pickled Python
objects); a value mutated in place must be `save`d again to be written back.
"""

from __future__ import annotations

from typing import Any

from udfs.identity_state import put_all


class MemoryMapState:
    """The part of PyFlink's MapState the caches use (get, put_all), over a dict, counting
    calls: for running state code off Flink, in unit tests and offline benchmarks."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.gets = 0
        self.put_alls = 0

    def get(self, key: str) -> Any | None:
        self.gets += 1
        return self.data.get(key)

    def put_all(self, entries: dict[str, Any] | list[tuple[str, Any]]) -> None:
        self.put_alls += 1
        self.data.update(entries)


class CachedMap:
    """load/save/flush over a MapState; the cache is dropped whole past `max_entries`."""

    def __init__(self, state: Any, max_entries: int) -> None:
        self.state = state
        self.max_entries = max_entries
        self.cache: dict[str, Any] = {}
        self.dirty: set[str] = set()

    def load(self, key: str) -> Any | None:
        try:
            return self.cache[key]
        except KeyError:
            found = self.state.get(key)
            self.cache[key] = found
            return found

    def save(self, key: str, value: Any) -> None:
        self.cache[key] = value
        self.dirty.add(key)

    def flush(self) -> int:
        """Write the dirty entries to state; return how many."""
        dirty = self.dirty
        if dirty:
            put_all(self.state, {k: self.cache[k] for k in dirty})
        self.dirty = set()
        if len(self.cache) > self.max_entries:
            self.cache.clear()
        return len(dirty)
