"""Write per-profile and per-team live state and trigger notifications to Redis.

Key scheme (`p` is `redis.key_prefix`, `tm` by default):

    {p}:{tenant}:profile:{profile_id}:live    hash    the profile's live snapshot + _v
    {p}:{tenant}:team:{team}:{currency}:live  hash    the team's live snapshot + _v
    {p}:{tenant}:notifications                stream  one entry per rule crossing: rule,
                                                      entity_type, entity_id, crossing,
                                                      event_time, message_id, values (JSON)
    {p}:{tenant}:trigger:{rule}|{entity_type}|{entity_id}
                                              string  the last crossing appended to the stream

An automation reads `HGETALL tm:acme:profile:p-1:live` for the current counters, or follows
`XREAD ... STREAMS tm:acme:notifications` for crossings.

Why a versioned *replace*: a snapshot is the entity's whole live state (windowed counters
that drop to zero disappear from it), so a write replaces the hash (DEL + HSET) rather than
merging into it, or a stale counter would linger. The version is the tenant's live sequence
number from checkpointed Flink state, so the same logical snapshot always carries the same
version: a Lua compare-and-set replaces the hash only if the stored `_v` is not newer. A
replay after a failover, re-sending older snapshots, never moves a hash backwards, and the
same version rewrites identical values. Hashes expire after `live.ttl_seconds` without an
update.

Why the stream is exactly-once: a stream append is not idempotent by itself, but each
notification carries its crossing number n (the n-th time the rule started to hold for that
entity), counted in checkpointed Flink state, so a replay re-sends the very same numbers. One
Lua script call appends a notification only if its crossing is greater than the one recorded
for that (rule, entity) and records it in the same call (atomic), so a replayed payload, or
a retry of a write whose reply was lost, appends nothing twice and skips nothing. The record
expires after `live.ttl_seconds` without a crossing, like the entity's state in Flink (same
TTL, refreshed on every write of the entity, so never earlier than this record): when a quiet
entity's state has expired and its crossings count from 1 again, the old record is gone too,
and cannot hold back the new crossings. The stream is capped approximately
(`MAXLEN ~ live.stream_maxlen`), which trims whole macro nodes cheaply.

Writes go in script calls of at most 500 keys (or notifications) each, pipelined, retried
with backoff like sinks/redis_profiles: a Redis restart costs a pause, not lost updates (the
whole payload is written again; both scripts make that harmless), and a payload that keeps
failing fails the job, which replays it from the last checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pyflink.common import Row
from pyflink.datastream import MapFunction, RuntimeContext

from sinks.redis_profiles import (
    KEYS_PER_CALL,
    VERSIONED_WRITES,
    RedisSettings,
    connect,
    send_scripts,
    versioned_calls,
)
from udfs.busy_time import BusyTime

#: Exactly-once notifications of one tenant. KEYS[1] = the stream, then one crossing record
#: key per notification; ARGV[1] = MAXLEN (0: untrimmed), ARGV[2] = the records' TTL seconds
#: (0: none), then per notification, in order, NOTIFY_ARITY items: rule, entity_type,
#: entity_id, crossing, event_time, message_id, values. A notification is appended (and its
#: crossing recorded) only if its crossing is greater than the recorded one. Returns how many
#: were appended.
NOTIFY_ONCE = """
local stream = KEYS[1]
local maxlen, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local appended = 0
for i = 2, #KEYS do
  local pos = 3 + (i - 2) * 7
  local record, crossing = KEYS[i], ARGV[pos + 3]
  local last = redis.call('GET', record)
  if not last or tonumber(last) < tonumber(crossing) then
    local entry = {
      'rule', ARGV[pos], 'entity_type', ARGV[pos + 1], 'entity_id', ARGV[pos + 2],
      'crossing', crossing, 'event_time', ARGV[pos + 4], 'message_id', ARGV[pos + 5],
      'values', ARGV[pos + 6]}
    if maxlen > 0 then
      redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(entry))
    else
      redis.call('XADD', stream, '*', unpack(entry))
    end
    if ttl > 0 then
      redis.call('SET', record, crossing, 'EX', ttl)
    else
      redis.call('SET', record, crossing)
    end
    appended = appended + 1
  end
end
return appended
"""
NOTIFY_ARITY = 7


@dataclass(frozen=True)
class LiveSinkSettings:
    """The live sink's own settings (connection and retries are RedisSettings')."""

    ttl_seconds: int
    stream_maxlen: int

    @classmethod
    def from_config(cls, cfg: Any) -> LiveSinkSettings:
        """The settings resolved from tidemark's configuration (on the client)."""
        return cls(ttl_seconds=cfg.live.ttl_seconds, stream_maxlen=cfg.live.stream_maxlen)


def profile_live_key(prefix: str, tenant_id: str, profile_id: str) -> str:
    """The Redis key of one profile's live snapshot."""
    return f"{prefix}:{tenant_id}:profile:{profile_id}:live"


def team_live_key(prefix: str, tenant_id: str, team: str, currency: str) -> str:
    """The Redis key of one (team, currency)'s live snapshot."""
    return f"{prefix}:{tenant_id}:team:{team}:{currency}:live"


def notifications_key(prefix: str, tenant_id: str) -> str:
    """The Redis stream of one tenant's trigger notifications."""
    return f"{prefix}:{tenant_id}:notifications"


def trigger_key(prefix: str, tenant_id: str, rule: str, entity_type: str, entity_id: str) -> str:
    """The Redis key recording the last crossing of one (rule, entity) appended."""
    return f"{prefix}:{tenant_id}:trigger:{rule}|{entity_type}|{entity_id}"


def snapshot_writes(payload: Mapping[str, Any], prefix: str) -> list[tuple[str, int, list[str]]]:
    """(key, version, field/value items) of every profile and team snapshot of a payload."""
    writes = []
    for row in payload.get("profiles") or ():
        key = profile_live_key(prefix, row["tenant_id"], row["profile_id"])
        writes.append((key, int(row["version"]), _items(row["fields"])))
    for row in payload.get("teams") or ():
        key = team_live_key(prefix, row["tenant_id"], row["team"], row["currency"])
        writes.append((key, int(row["version"]), _items(row["fields"])))
    return writes


def notification_args(
    notifications: Iterable[Mapping[str, Any]], prefix: str
) -> dict[str, list[tuple[str, list[str]]]]:
    """Per tenant, in payload order: (crossing record key, NOTIFY_ONCE items) of each
    notification."""
    by_tenant: dict[str, list[tuple[str, list[str]]]] = {}
    for n in notifications:
        tenant, rule, entity_type, entity_id = (
            n["tenant_id"], n["rule"], n["entity_type"], n["entity_id"]
        )  # fmt: skip
        items = [
            rule,
            entity_type,
            entity_id,
            str(int(n["crossing"])),
            n["event_time"],
            n["message_id"],
            orjson.dumps(n["values"]).decode(),
        ]
        record = trigger_key(prefix, tenant, rule, entity_type, entity_id)
        by_tenant.setdefault(tenant, []).append((record, items))
    return by_tenant


def _items(fields: Mapping[str, Any]) -> list[str]:
    items: list[str] = []
    for name, value in fields.items():
        items += [name, str(value)]
    return items


class RedisLiveWriter(MapFunction):
    """Apply each incoming (target, window_start, redis_live payload JSON) row to Redis."""

    def __init__(self, settings: RedisSettings, live: LiveSinkSettings) -> None:
        self.settings = settings
        self.live = live

    def connect(self) -> None:
        """The client and the registered scripts (separate from open() for component tests)."""
        self.client = connect(self.settings)
        self.versioned_writes = self.client.register_script(VERSIONED_WRITES)
        self.notify_once = self.client.register_script(NOTIFY_ONCE)

    def open(self, runtime_context: RuntimeContext) -> None:
        self.connect()
        metrics = runtime_context.get_metrics_group().add_group("tidemark_redis_live")
        self.keys_written = metrics.counter("keys_written")
        self.stale_skipped = metrics.counter("stale_writes_skipped")
        self.notifications_appended = metrics.counter("notifications_appended")
        self.duplicates_skipped = metrics.counter("duplicate_notifications_skipped")
        self.busy_time = BusyTime(metrics)

    def close(self) -> None:
        self.client.close()

    def write_payload(self, payload: Mapping[str, Any]) -> tuple[int, int, int, int]:
        """Write one redis_live payload in one pipeline (retried whole); return (snapshots
        written, snapshots skipped as older than stored, notifications appended,
        notifications skipped as already delivered)."""
        prefix = self.settings.key_prefix
        writes = snapshot_writes(payload, prefix)
        replace_calls = [
            (self.versioned_writes, keys, args)
            for keys, args in versioned_calls(writes, self.live.ttl_seconds, replace=True)
        ]
        notify_calls = []
        total_notifications = 0
        notifications = payload.get("notifications") or ()
        for tenant, entries in notification_args(notifications, prefix).items():
            total_notifications += len(entries)
            for start in range(0, len(entries), KEYS_PER_CALL):
                chunk = entries[start : start + KEYS_PER_CALL]
                keys = [notifications_key(prefix, tenant), *(record for record, _ in chunk)]
                args = [self.live.stream_maxlen, self.live.ttl_seconds]
                for _, items in chunk:
                    args += items
                notify_calls.append((self.notify_once, keys, args))
        if not replace_calls and not notify_calls:
            return 0, 0, 0, 0
        results = send_scripts(
            self.client,
            replace_calls + notify_calls,
            self.settings,
            f"Redis write of {len(writes)} live keys and {total_notifications} notifications",
        )
        written = sum(int(r) for r in results[: len(replace_calls)])
        appended = sum(int(r) for r in results[len(replace_calls) :])
        return written, len(writes) - written, appended, total_notifications - appended

    def map(self, value: Row) -> int:
        total = 0
        with self.busy_time.measure():  # one payload per line: a batch's events, then its cost
            for line in value[2].split(b"\n"):
                written, skipped, appended, duplicates = self.write_payload(orjson.loads(line))
                self.keys_written.inc(written)
                self.stale_skipped.inc(skipped)
                self.notifications_appended.inc(appended)
                self.duplicates_skipped.inc(duplicates)
                total += written + appended
        return total
