"""The identity graph in Flink keyed state, behind a write-back cache.

Why a cache: per-event Python state access is the slowest thing in PyFlink (each `get` crosses
into the JVM and RocksDB). The identity stage receives one batch per shard per second; within
a batch most events touch identifiers and profiles seen moments ago. So reads go to a plain
dict first and fall back to MapState; writes go to the dict and are marked dirty, and the
dirty entries are written to MapState in one `put_all` per state at the end of the batch.

Why this is still exactly-once: the batch is one call of the operator, so no checkpoint
barrier can fall between a write to the cache and its flush. Only this operator writes this
state, so a cached entry is never stale. After a failure Flink builds a new operator with an
empty cache over the restored state. The cache is bounded: past `max_entries` it is dropped
whole (a cheap, rare reset; the state is the truth).

State layout (all keyed by the shard the batch belongs to; tenants hash to shards):
    links:    "tenant \\x1f type \\x1f value" -> profile id
    profiles: "tenant \\x1f profile id"       -> Profile as JSON bytes
    sequence: tenant                          -> the tenant's event sequence number
"""

from __future__ import annotations

from typing import Any

from udfs.identity import Profile

SEP = "\x1f"


def put_all(state: Any, entries: dict[str, Any]) -> None:
    """MapState.put_all in either Python execution mode.

    PyFlink 2.3's process-mode MapState iterates put_all's argument as (key, value) pairs
    (`for k, v in dict_value`: a dict fails with "too many values to unpack"), while thread
    mode converts a dict. Found by the process-mode worker-kill test.
    """
    if type(state).__module__.startswith("pyflink.fn_execution.datastream.embedded"):
        state.put_all(entries)
    else:
        state.put_all(list(entries.items()))


class CachedStateStore:
    """An IdentityStore over three MapStates, with a bounded write-back cache."""

    def __init__(self, links: Any, profiles: Any, sequence: Any, max_entries: int) -> None:
        self.links_state = links
        self.profiles_state = profiles
        self.sequence_state = sequence
        self.max_entries = max_entries
        self.links: dict[str, str | None] = {}
        self.profiles: dict[str, Profile | None] = {}
        self.sequences: dict[str, int] = {}
        self.dirty_links: dict[str, str] = {}
        self.dirty_profiles: dict[str, Profile] = {}
        self.dirty_sequences: set[str] = set()

    # -- IdentityStore

    def get_link(self, tenant_id: str, id_type: str, value: str) -> str | None:
        key = f"{tenant_id}{SEP}{id_type}{SEP}{value}"
        try:
            return self.links[key]
        except KeyError:
            found = self.links_state.get(key)
            self.links[key] = found
            return found

    def put_link(self, tenant_id: str, id_type: str, value: str, profile_id: str) -> None:
        key = f"{tenant_id}{SEP}{id_type}{SEP}{value}"
        self.links[key] = profile_id
        self.dirty_links[key] = profile_id

    def get_profile(self, tenant_id: str, profile_id: str) -> Profile | None:
        key = f"{tenant_id}{SEP}{profile_id}"
        try:
            return self.profiles[key]
        except KeyError:
            raw = self.profiles_state.get(key)
            found = Profile.from_bytes(raw) if raw is not None else None
            self.profiles[key] = found
            return found

    def put_profile(self, profile: Profile) -> None:
        key = f"{profile.tenant_id}{SEP}{profile.profile_id}"
        self.profiles[key] = profile
        self.dirty_profiles[key] = profile

    # -- the tenant's event sequence

    def next_sequence(self, tenant_id: str) -> int:
        """The next event sequence number of `tenant_id` (1, 2, ...)."""
        current = self.sequences.get(tenant_id)
        if current is None:
            current = self.sequence_state.get(tenant_id) or 0
        current += 1
        self.sequences[tenant_id] = current
        self.dirty_sequences.add(tenant_id)
        return current

    # -- end of batch

    def flush(self) -> tuple[dict[str, str], dict[str, Profile]]:
        """Write dirty entries to state; return them (links, profiles) for the sinks."""
        links, profiles = self.dirty_links, self.dirty_profiles
        if links:
            put_all(self.links_state, links)
        if profiles:
            put_all(self.profiles_state, {k: p.to_bytes() for k, p in profiles.items()})
        if self.dirty_sequences:
            put_all(self.sequence_state, {t: self.sequences[t] for t in self.dirty_sequences})
        self.dirty_links, self.dirty_profiles, self.dirty_sequences = {}, {}, set()
        if len(self.links) + len(self.profiles) > self.max_entries:
            self.links.clear()
            self.profiles.clear()
        self.sequences.clear()  # a handful of tenants; re-read per batch, never stale
        return links, profiles
