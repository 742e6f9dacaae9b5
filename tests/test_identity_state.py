"""The write-back cache over identity state: reads fall through, writes flush once per batch.

The Flink MapStates are replaced by dict-backed stand-ins with the same get / put_all
surface; the real state is exercised end to end in tests/test_profile_e2e.py.
"""

from __future__ import annotations

from udfs.cached_state import MemoryMapState
from udfs.identity import IdentityResolver, IdentityRules, Profile
from udfs.identity_state import CachedStateStore


def new_store(max_entries: int = 1000) -> tuple[CachedStateStore, MemoryMapState, MemoryMapState]:
    links, profiles, sequence = MemoryMapState(), MemoryMapState(), MemoryMapState()
    return CachedStateStore(links, profiles, sequence, max_entries), links, profiles


def test_writes_reach_state_only_on_flush_and_are_returned_for_the_sinks():
    store, links, profiles = new_store()
    resolver = IdentityResolver(IdentityRules.default(), store)
    version = store.next_sequence("acme")
    result = resolver.resolve("acme", [("email", "ana@x.example")], 1_000, "m-1", version)
    assert links.data == {} and profiles.data == {}  # nothing before the end of the batch

    flushed_links, flushed_profiles = store.flush()

    assert flushed_links == {"acme\x1femail\x1fana@x.example": result.profile_id}
    assert list(flushed_profiles) == [f"acme\x1f{result.profile_id}"]
    assert links.data == flushed_links
    stored = Profile.from_bytes(profiles.data[f"acme\x1f{result.profile_id}"])
    assert stored.identifiers == {"email": ["ana@x.example"]} and stored.version == 1
    assert store.sequence_state.data == {"acme": 1}
    assert store.flush() == ({}, {})  # nothing dirty any more


def test_reads_are_served_from_the_cache_after_the_first_miss():
    store, links, _ = new_store()
    assert store.get_link("acme", "email", "x") is None
    assert store.get_link("acme", "email", "x") is None
    assert links.gets == 1  # a miss is cached too


def test_a_full_cache_is_dropped_and_state_stays_the_truth():
    store, links, _ = new_store(max_entries=2)
    for i in range(3):
        store.put_link("acme", "email", f"e{i}", f"p{i}")
    store.flush()
    assert store.links == {}  # over the bound: reset
    assert store.get_link("acme", "email", "e1") == "p1"  # read back from state
    assert links.gets == 1


def test_sequence_numbers_continue_from_state_across_batches():
    store, _, _ = new_store()
    assert [store.next_sequence("acme") for _ in range(3)] == [1, 2, 3]
    store.flush()
    assert store.next_sequence("acme") == 4
    assert store.next_sequence("globex") == 1
