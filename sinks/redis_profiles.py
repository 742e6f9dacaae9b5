"""Write identity lookups and profile hashes to Redis, for automations that resolve a person
in a millisecond.

Key scheme (`prefix` is `redis.key_prefix`, `tm` by default):

    {prefix}:{tenant}:id:{id_type}:{id_value}   hash  p = profile id, _v = version
    {prefix}:{tenant}:profile:{profile_id}      hash  profile_id, identifiers (JSON object of
                                                      type -> values), first_seen, last_seen,
                                                      merges, merged_into, _v

A lookup is `HGET tm:acme:id:email:ana@mail.example p`; a profile id that lost a merge has
`merged_into` set, so a caller holding an old id can follow it. Keys expire after
`redis.profile_ttl_seconds` without an update.

Why versioned writes: the rows come from the identity stage with `version` = the tenant's
event sequence number in Flink state, so the same logical state always carries the same
version. A Lua compare-and-set applies a write only if its version is not older than the
stored one. A replay after a failure, re-sending older rows, therefore never moves a key
backwards, and re-sending the same version rewrites identical values: the sink is idempotent,
and with the job's checkpointed state that makes Redis exactly-once in effect.

Writes go in one script call per 500 keys (measured: one EVALSHA per key cost ~35 us of
Python each, more than the rest of the stage per event), pipelined, and retried with
backoff: a Redis restart costs a pause, not lost updates (the batch is written again when
Redis is back; a batch that keeps failing fails the job, which replays it from the last
checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pyflink.common import Row
from pyflink.datastream import MapFunction, RuntimeContext

from sinks.retry import retry_with_backoff
from udfs.busy_time import BusyTime

#: Versioned writes of many hashes in one call. KEYS = the hashes; ARGV[1] = TTL seconds (0:
#: none), ARGV[2] = 1 to replace a hash whole (DEL first: fields a newer state no longer has
#: disappear, as sinks/redis_live needs) or 0 to set the given fields (the identity hashes,
#: always written whole anyway); then per key: version, n, and n field/value items. A key
#: whose stored `_v` is newer is left alone. HSET goes in slices of 1000 items (even, so pairs
#: stay whole), far below Lua's unpack limit. Returns how many keys were written.
VERSIONED_WRITES = """
local ttl = tonumber(ARGV[1])
local replace = ARGV[2] == '1'
local pos = 3
local applied = 0
for _, key in ipairs(KEYS) do
  local version = ARGV[pos]
  local n = tonumber(ARGV[pos + 1])
  local current = redis.call('HGET', key, '_v')
  if not current or tonumber(current) <= tonumber(version) then
    if replace then redis.call('DEL', key) end
    redis.call('HSET', key, '_v', version)
    local last = pos + 1 + n
    for i = pos + 2, last, 1000 do
      redis.call('HSET', key, unpack(ARGV, i, math.min(i + 999, last)))
    end
    if ttl > 0 then redis.call('EXPIRE', key, ttl) end
    applied = applied + 1
  end
  pos = pos + 2 + n
end
return applied
"""
KEYS_PER_CALL = 500  # one script call holds Redis for ~1 ms at this size

LINKS_TABLE = "identity_links"
PROFILES_TABLE = "profiles"
TABLES = (LINKS_TABLE, PROFILES_TABLE)


@dataclass(frozen=True)
class RedisSettings:
    """Connection, key scheme and retry settings, captured on the client."""

    host: str
    port: int
    db: int
    key_prefix: str
    profile_ttl_seconds: int
    write_retries: int
    write_backoff_max_seconds: int

    @classmethod
    def from_config(cls, cfg: Any) -> RedisSettings:
        """The settings resolved from tidemark's configuration (on the client)."""
        r = cfg.redis
        return cls(
            host=r.host,
            port=cfg.redis_port,
            db=r.db,
            key_prefix=r.key_prefix,
            profile_ttl_seconds=r.profile_ttl_seconds,
            write_retries=r.write_retries,
            write_backoff_max_seconds=r.write_backoff_max_seconds,
        )


def connect(
    settings: RedisSettings, timeout_seconds: float = 10.0, connect_timeout_seconds: float = 5.0
):  # -> redis.Redis
    """A client for the configured Redis (the sink's, preflight's and the demo's)."""
    import redis

    return redis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=connect_timeout_seconds,
    )


def link_key(prefix: str, tenant_id: str, id_type: str, id_value: str) -> str:
    """The Redis key of one identifier's profile lookup."""
    return f"{prefix}:{tenant_id}:id:{id_type}:{id_value}"


def profile_key(prefix: str, tenant_id: str, profile_id: str) -> str:
    """The Redis key of one profile's hash."""
    return f"{prefix}:{tenant_id}:profile:{profile_id}"


def writes_for(table: str, row: Mapping[str, Any], prefix: str) -> tuple[str, int, list[str]]:
    """(key, version, field/value pairs) of one identity_links or profiles row."""
    if table == LINKS_TABLE:
        key = link_key(prefix, row["tenant_id"], row["id_type"], row["id_value"])
        return key, int(row["version"]), ["p", row["profile_id"]]
    key = profile_key(prefix, row["tenant_id"], row["profile_id"])
    fields = [
        "profile_id", row["profile_id"],
        "identifiers", orjson.dumps(row["identifiers"]).decode(),
        "first_seen", row["first_seen"],
        "last_seen", row["last_seen"],
        "merges", str(row["merges"]),
        "merged_into", row["merged_into"],
    ]  # fmt: skip
    return key, int(row["version"]), fields


def versioned_calls(
    writes: Sequence[tuple[str, int, list[str]]], ttl_seconds: int, replace: bool
) -> list[tuple[list[str], list[Any]]]:
    """(KEYS, ARGV) of the VERSIONED_WRITES calls of versioned writes (key, version,
    field/value items), at most KEYS_PER_CALL keys each."""
    calls = []
    for start in range(0, len(writes), KEYS_PER_CALL):
        chunk = writes[start : start + KEYS_PER_CALL]
        args: list[Any] = [ttl_seconds, int(replace)]
        for _, version, items in chunk:
            args += [version, len(items), *items]
        calls.append(([key for key, _, _ in chunk], args))
    return calls


def send_scripts(
    client: Any,
    calls: Sequence[tuple[Any, list[str], list[Any]]],
    settings: RedisSettings,
    what: str,
) -> list[Any]:
    """Run (script, KEYS, ARGV) calls in one pipeline, retried whole with backoff (the
    scripts make a repeat harmless); return their results in order."""

    def send() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for script, keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return pipe.execute()

    return retry_with_backoff(
        send,
        what=what,
        attempts=settings.write_retries,
        max_backoff_seconds=settings.write_backoff_max_seconds,
    )


class RedisProfileWriter(MapFunction):
    """Apply each incoming (table, window_start, newline-joined rows) batch to Redis."""

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings

    def connect(self) -> None:
        """The client and the registered script (separate from open() for component tests)."""
        self.client = connect(self.settings)
        self.versioned_writes = self.client.register_script(VERSIONED_WRITES)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.connect()
        metrics = runtime_context.get_metrics_group().add_group("tidemark_redis")
        self.keys_written = metrics.counter("keys_written")
        self.stale_skipped = metrics.counter("stale_writes_skipped")
        self.busy_time = BusyTime(metrics)

    def close(self) -> None:
        self.client.close()

    def write_rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        """Write rows (one script call per KEYS_PER_CALL keys, pipelined); return (applied,
        skipped as older than stored)."""
        writes = [writes_for(table, row, self.settings.key_prefix) for row in rows]
        calls = [
            (self.versioned_writes, keys, args)
            for keys, args in versioned_calls(
                writes, self.settings.profile_ttl_seconds, replace=False
            )
        ]
        results = send_scripts(
            self.client, calls, self.settings, f"Redis write of {len(writes)} {table} keys"
        )
        applied = sum(int(r) for r in results)
        return applied, len(writes) - applied

    def map(self, value: Row) -> int:
        with self.busy_time.measure():
            table, body = value[0], value[2]
            rows = (orjson.loads(x) for x in body.split(b"\n"))
            applied, skipped = self.write_rows(table, rows)
            self.keys_written.inc(applied)
            self.stale_skipped.inc(skipped)
        return applied + skipped
