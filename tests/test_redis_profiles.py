"""The Redis identity sink against a real Redis: versioned, idempotent, and restart-proof.

Rows are what the profile stage emits for `identity_links` and `profiles`; the sink must
apply a row only if its version is not older than the stored one, rewrite the same version
identically, and keep trying (not drop the batch) while Redis is down.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis as redis_client

from sinks.redis_profiles import LINKS_TABLE, PROFILES_TABLE, RedisProfileWriter, RedisSettings
from tidemark.config import Config
from tidemark.stack import redis as redis_stack


@pytest.fixture
def writer(redis_cfg: Config) -> Iterator[RedisProfileWriter]:
    settings = RedisSettings.from_config(redis_cfg)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    w = RedisProfileWriter(
        RedisSettings(**{**settings.__dict__, "key_prefix": prefix, "write_retries": 30,
                         "write_backoff_max_seconds": 1})
    )  # fmt: skip
    w.connect()
    yield w
    w.close()


@pytest.fixture
def client(redis_cfg: Config) -> Iterator[redis_client.Redis]:
    c = redis_client.Redis(port=redis_cfg.redis_port, decode_responses=True)
    yield c
    c.close()


def link(profile_id: str, version: int) -> dict:
    return {"tenant_id": "acme", "id_type": "email", "id_value": "ana@mail.example",
            "profile_id": profile_id, "version": version}  # fmt: skip


def profile(version: int, merged_into: str = "") -> dict:
    return {
        "tenant_id": "acme", "profile_id": "p-1",
        "identifiers": {"email": ["ana@mail.example"], "anonymous_id": ["a-1"]},
        "first_seen": "2026-11-01 00:00:00.000", "last_seen": "2026-11-01 00:05:00.000",
        "merges": 0, "merged_into": merged_into, "version": version,
    }  # fmt: skip


def test_lookup_key_holds_the_profile_and_an_older_version_never_wins(writer, client):
    key = f"{writer.settings.key_prefix}:acme:id:email:ana@mail.example"
    assert writer.write_rows(LINKS_TABLE, [link("p-1", 5)]) == (1, 0)
    assert client.hget(key, "p") == "p-1"
    # A replay re-sends an older row: skipped, the newer value stays.
    assert writer.write_rows(LINKS_TABLE, [link("p-0", 3)]) == (0, 1)
    assert client.hget(key, "p") == "p-1"
    # The same version again rewrites the same value (idempotent), a newer one wins.
    assert writer.write_rows(LINKS_TABLE, [link("p-1", 5)]) == (1, 0)
    assert writer.write_rows(LINKS_TABLE, [link("p-2", 9)]) == (1, 0)
    assert client.hgetall(key) == {"p": "p-2", "_v": "9"}
    assert 0 < client.ttl(key) <= writer.settings.profile_ttl_seconds


def test_profile_hash_is_complete_and_replay_leaves_it_identical(writer, client):
    key = f"{writer.settings.key_prefix}:acme:profile:p-1"
    rows = [profile(4), profile(7, merged_into="p-9")]
    writer.write_rows(PROFILES_TABLE, rows)
    first = client.hgetall(key)
    assert first["merged_into"] == "p-9" and first["_v"] == "7"
    assert orjson.loads(first["identifiers"]) == rows[1]["identifiers"]
    assert first["first_seen"] == "2026-11-01 00:00:00.000"
    writer.write_rows(PROFILES_TABLE, rows)  # the whole batch again, as after a failover
    assert client.hgetall(key) == first


def test_a_batch_written_while_redis_restarts_is_not_lost(redis_cfg, writer, client):
    redis_stack.stop(redis_cfg)
    result: list = []
    thread = threading.Thread(
        target=lambda: result.append(writer.write_rows(LINKS_TABLE, [link("p-7", 1)]))
    )
    thread.start()
    time.sleep(1.5)  # the sink is retrying against a dead port
    assert thread.is_alive() and not result
    redis_stack.start(redis_cfg)
    thread.join(timeout=60)
    assert result == [(1, 0)]
    key = f"{writer.settings.key_prefix}:acme:id:email:ana@mail.example"
    assert client.hget(key, "p") == "p-7"
