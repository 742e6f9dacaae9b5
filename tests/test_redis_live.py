"""The Redis live-state sink against a real Redis: versioned replace, exactly-once
notifications, and restart-proof.

Payloads are what the window stage hands the `redis_live` target; the sink must replace a
snapshot only if its version is not older than the stored one, append each crossing to the
tenant's stream exactly once however often a payload is replayed, and keep trying (not drop
the payload) while Redis is down.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis as redis_client
from pyflink.common import Row

from sinks.redis_live import LiveSinkSettings, RedisLiveWriter
from sinks.redis_profiles import RedisSettings
from tidemark.config import Config
from tidemark.stack import redis as redis_stack


def make_writer(cfg: Config, stream_maxlen: int = 100_000) -> RedisLiveWriter:
    settings = RedisSettings.from_config(cfg)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    w = RedisLiveWriter(
        RedisSettings(**{**settings.__dict__, "key_prefix": prefix, "write_retries": 30,
                         "write_backoff_max_seconds": 1}),
        LiveSinkSettings(ttl_seconds=3600, stream_maxlen=stream_maxlen),
    )  # fmt: skip
    w.connect()
    return w


@pytest.fixture
def writer(redis_cfg: Config) -> Iterator[RedisLiveWriter]:
    w = make_writer(redis_cfg)
    yield w
    w.close()


@pytest.fixture
def client(redis_cfg: Config) -> Iterator[redis_client.Redis]:
    c = redis_client.Redis(port=redis_cfg.redis_port, decode_responses=True)
    yield c
    c.close()


def profile(version: int, fields: dict, tenant: str = "acme", pid: str = "p-1") -> dict:
    return {"tenant_id": tenant, "profile_id": pid, "version": version, "fields": fields}


def team(version: int, fields: dict, tenant: str = "acme") -> dict:
    return {"tenant_id": tenant, "team": "data", "currency": "USD", "version": version,
            "fields": fields}  # fmt: skip


def note(crossing: int, tenant: str = "acme", entity: str = "p-1", rule: str = "big_cart") -> dict:
    return {
        "tenant_id": tenant, "rule": rule, "entity_type": "profile", "entity_id": entity,
        "crossing": crossing, "event_time": f"2026-11-01T00:00:0{crossing % 10}.000Z",
        "message_id": f"m-{crossing}", "values": {"cart_value": "250.5"},
    }  # fmt: skip


def payload(profiles=(), teams=(), notifications=()) -> dict:
    return {"profiles": list(profiles), "teams": list(teams), "notifications": list(notifications)}


def stream(client: redis_client.Redis, w: RedisLiveWriter, tenant: str = "acme") -> list[dict]:
    return [f for _, f in client.xrange(f"{w.settings.key_prefix}:{tenant}:notifications")]


def test_snapshot_is_replaced_only_by_a_version_not_older(writer, client):
    key = f"{writer.settings.key_prefix}:acme:profile:p-1:live"
    v5 = {"events:page:30m": "3", "revenue:30m": "0", "last_event_type": "page"}
    assert writer.write_payload(payload([profile(5, v5)])) == (1, 0, 0, 0)
    assert client.hgetall(key) == {**v5, "_v": "5"}
    # A replay re-sends an older snapshot: skipped, the newer one stays.
    assert writer.write_payload(payload([profile(3, {"events:page:30m": "1"})])) == (0, 1, 0, 0)
    assert client.hgetall(key) == {**v5, "_v": "5"}
    # The same version again rewrites the identical hash.
    assert writer.write_payload(payload([profile(5, v5)])) == (1, 0, 0, 0)
    assert client.hgetall(key) == {**v5, "_v": "5"}
    # A newer snapshot replaces the hash whole: fields it lacks are gone.
    v9 = {"events:track:30m": "1", "revenue:30m": "12.5"}
    assert writer.write_payload(payload([profile(9, v9)])) == (1, 0, 0, 0)
    assert client.hgetall(key) == {**v9, "_v": "9"}
    assert 0 < client.ttl(key) <= writer.live.ttl_seconds


def test_team_snapshot_has_its_key_fields_and_ttl(writer, client):
    key = f"{writer.settings.key_prefix}:acme:team:data:USD:live"
    fields = {"billed_cost:1h": "120.25", "effective_cost:1h": "110"}
    writer.write_payload(payload(teams=[team(2, {"billed_cost:1h": "1"}), team(4, fields)]))
    assert client.hgetall(key) == {**fields, "_v": "4"}
    assert 0 < client.ttl(key) <= writer.live.ttl_seconds


def test_many_snapshots_and_wide_hashes_span_several_script_calls(writer, client):
    wide = {f"events:e{i}:30m": str(i) for i in range(1500)}  # > one HSET slice in Lua
    profiles = [profile(1, {"n": str(i)}, pid=f"p-{i}") for i in range(1200)]
    result = writer.write_payload(payload([*profiles, profile(2, wide, pid="wide")]))
    assert result == (1201, 0, 0, 0)
    p = writer.settings.key_prefix
    assert client.hget(f"{p}:acme:profile:p-1199:live", "n") == "1199"
    assert client.hgetall(f"{p}:acme:profile:wide:live") == {**wide, "_v": "2"}


def test_notifications_are_appended_once_per_crossing(writer, client):
    first = payload(notifications=[note(1)])
    assert writer.write_payload(first) == (0, 0, 1, 0)
    assert writer.write_payload(first) == (0, 0, 0, 1)  # the same payload again
    entries = stream(client, writer)
    assert entries == [{
        "rule": "big_cart", "entity_type": "profile", "entity_id": "p-1", "crossing": "1",
        "event_time": "2026-11-01T00:00:01.000Z", "message_id": "m-1",
        "values": '{"cart_value":"250.5"}',
    }]  # fmt: skip
    assert writer.write_payload(payload(notifications=[note(2)])) == (0, 0, 1, 0)
    # An older payload replayed after a newer one appends nothing.
    assert writer.write_payload(first) == (0, 0, 0, 1)
    assert [e["crossing"] for e in stream(client, writer)] == ["1", "2"]
    record = f"{writer.settings.key_prefix}:acme:trigger:big_cart|profile|p-1"
    assert client.get(record) == "2"
    assert 0 < client.ttl(record) <= writer.live.ttl_seconds  # expires like the Flink state


def test_a_crossing_record_that_expired_lets_crossings_count_from_one_again(writer, client):
    """Flink's entity state expired (TTL) and its crossings restart at 1: the Redis record
    has expired too (same TTL, never refreshed later than the state), so nothing is lost."""
    assert writer.write_payload(payload(notifications=[note(1), note(2)])) == (0, 0, 2, 0)
    client.delete(f"{writer.settings.key_prefix}:acme:trigger:big_cart|profile|p-1")
    assert writer.write_payload(payload(notifications=[note(1)])) == (0, 0, 1, 0)
    assert [e["crossing"] for e in stream(client, writer)] == ["1", "2", "1"]


def test_crossings_of_one_payload_apply_in_order_and_per_entity(writer, client):
    notes = [note(1), note(1, entity="p-2"), note(2), note(1, rule="browse_abandon"), note(3)]
    assert writer.write_payload(payload(notifications=notes)) == (0, 0, 5, 0)
    assert writer.write_payload(payload(notifications=notes)) == (0, 0, 0, 5)
    got = [(e["rule"], e["entity_id"], e["crossing"]) for e in stream(client, writer)]
    assert got == [
        ("big_cart", "p-1", "1"), ("big_cart", "p-2", "1"), ("big_cart", "p-1", "2"),
        ("browse_abandon", "p-1", "1"), ("big_cart", "p-1", "3"),
    ]  # fmt: skip


def test_several_tenants_in_one_payload(writer, client):
    body = payload(
        [profile(3, {"a": "1"}, tenant="acme"), profile(7, {"b": "2"}, tenant="globex")],
        [team(4, {"billed_cost:1h": "5"}, tenant="globex")],
        [note(1, tenant="acme"), note(1, tenant="globex"), note(2, tenant="globex")],
    )
    assert writer.write_payload(body) == (3, 0, 3, 0)
    assert writer.write_payload(body) == (3, 0, 0, 3)
    p = writer.settings.key_prefix
    assert client.hgetall(f"{p}:acme:profile:p-1:live") == {"a": "1", "_v": "3"}
    assert client.hgetall(f"{p}:globex:profile:p-1:live") == {"b": "2", "_v": "7"}
    assert client.hget(f"{p}:globex:team:data:USD:live", "_v") == "4"
    assert [e["crossing"] for e in stream(client, writer, "acme")] == ["1"]
    assert [e["crossing"] for e in stream(client, writer, "globex")] == ["1", "2"]


def test_stream_is_trimmed_to_about_maxlen(redis_cfg, client):
    w = make_writer(redis_cfg, stream_maxlen=50)
    try:
        notes = [note(1, entity=f"p-{i}") for i in range(1000)]
        assert w.write_payload(payload(notifications=notes)) == (0, 0, 1000, 0)
        length = client.xlen(f"{w.settings.key_prefix}:acme:notifications")
        node = int(client.config_get("stream-node-max-entries")["stream-node-max-entries"])
        assert 50 <= length <= 50 + node  # `~` trims whole macro nodes only
        # Trimmed entries stay delivered: the ledger still knows their crossings.
        assert w.write_payload(payload(notifications=notes)) == (0, 0, 0, 1000)
    finally:
        w.close()


def test_map_reads_the_payload_from_field_2_and_counts(writer, client):
    class Counter:
        def __init__(self) -> None:
            self.count = 0

        def inc(self, n: int = 1) -> None:
            self.count += n

    class Metrics:
        def counter(self, name: str) -> Counter:
            return Counter()

    from udfs.busy_time import BusyTime

    writer.keys_written, writer.stale_skipped = Counter(), Counter()
    writer.notifications_appended, writer.duplicates_skipped = Counter(), Counter()
    writer.busy_time = BusyTime(Metrics())
    body = orjson.dumps(payload([profile(2, {"a": "1"}), profile(1, {"a": "0"})], [],
                                [note(1)]))  # fmt: skip
    assert writer.map(Row("redis_live", 0, body)) == 2
    assert writer.map(Row("redis_live", 0, body)) == 1  # the same snapshot is rewritten
    assert writer.keys_written.count == 2 and writer.stale_skipped.count == 2
    assert writer.notifications_appended.count == 1 and writer.duplicates_skipped.count == 1
    assert writer.map(Row("redis_live", 0, orjson.dumps({}))) == 0


def test_a_retry_after_a_lost_reply_appends_nothing_twice(writer, client, monkeypatch):
    """The scripts ran but the reply was lost: the retry must not duplicate anything."""
    real_pipeline = writer.client.pipeline
    failures = [1]

    def pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        real_execute = pipe.execute

        def execute(*a, **k):
            result = real_execute(*a, **k)
            if failures:
                failures.pop()
                raise redis_client.ConnectionError("reply lost")
            return result

        pipe.execute = execute
        return pipe

    monkeypatch.setattr(writer.client, "pipeline", pipeline)
    body = payload([profile(1, {"a": "1"})], notifications=[note(1), note(2)])
    assert writer.write_payload(body) == (1, 0, 0, 2)  # the second attempt found them done
    assert [e["crossing"] for e in stream(client, writer)] == ["1", "2"]


def test_a_payload_written_while_redis_restarts_is_not_lost(redis_cfg, writer, client):
    body = payload(
        [profile(4, {"events:page:30m": "2"}, pid=f"p-{i}") for i in range(3)],
        [team(4, {"billed_cost:1h": "101"})],
        [note(1), note(1, entity="p-2"), note(2)],
    )
    redis_stack.stop(redis_cfg)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(writer.write_payload(body)))
    thread.start()
    time.sleep(1.5)  # the sink is retrying against a dead port
    assert thread.is_alive() and not result
    redis_stack.start(redis_cfg)
    thread.join(timeout=60)
    assert result == [(4, 0, 3, 0)]
    p = writer.settings.key_prefix
    for i in range(3):
        assert client.hgetall(f"{p}:acme:profile:p-{i}:live") == {
            "events:page:30m": "2", "_v": "4"}  # fmt: skip
    assert client.hget(f"{p}:acme:team:data:USD:live", "billed_cost:1h") == "101"
    got = [(e["entity_id"], e["crossing"]) for e in stream(client, writer)]
    assert got == [("p-1", "1"), ("p-2", "1"), ("p-1", "2")]
    # The job replays the payload after its failover: nothing changes.
    assert writer.write_payload(body) == (4, 0, 0, 3)
    assert len(stream(client, writer)) == 3
