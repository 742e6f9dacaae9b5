"""End-to-end freshness: how long until an event's effects are visible to the consumers.

A *probe* is a valid `track` event of tenant `acme` with a fresh `user_id`, produced with the
project's producer at a fixed pace while the job runs under whatever other load. For each
probe, the wall time from its send (= its Kafka timestamp = its event time) until:
- Redis: its identifier resolves (`{prefix}:acme:id:user_id:{uid}` -> profile id) and that
  profile's live hash (`{prefix}:acme:profile:{pid}:live`) shows the probe's `last_event_at`
  (polled every 20 ms, pipelined);
- ClickHouse: a `profile_panes` row of that profile holds the probe (polled every 200 ms;
  `updated_at` of the row's first version is kept too, the server's own insert time).

Why probes rather than all rows: a pane or a live hash folds many events, so "when did this
event's effect appear" is only answerable for an event whose effect can be told apart. A
probe is the only event of its profile, so its profile's first live hash and first pane row
are its effect. Used by `bench/windows_bench.py` and `tests/test_freshness.py`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson

from tidemark import schema
from tidemark.config import Config
from tidemark.produce import producer
from udfs.live_state import iso_ms  # the live hashes' text: a probe is matched on it
from udfs.validation import ms_text

PROBE_TENANT = "acme"
PROBE_EVENT = "Bench Probe"
REDIS_POLL_SECONDS = 0.02
CLICKHOUSE_POLL_SECONDS = 0.2


def now_ms() -> int:
    """Wall-clock epoch milliseconds: the clock ClickHouse's now64(3) and Kafka timestamps use."""
    return time.time_ns() // 1_000_000


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    """Exact nearest-rank p50/p95/p99 and max (as ClickHouse's quantilesExact)."""
    if not values:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    return {
        "n": len(ordered),
        "p50_ms": rank(0.5),
        "p95_ms": rank(0.95),
        "p99_ms": rank(0.99),
        "max_ms": ordered[-1],
    }


@dataclass
class Probe:
    """One probe event and when its effects were first seen (epoch ms)."""

    index: int
    user_id: str
    sent_ms: int
    profile_id: str | None = None
    redis_identity_ms: int | None = None
    redis_live_ms: int | None = None
    redis_live_mismatch: str | None = None  # a live hash whose last_event_at differed
    clickhouse_seen_ms: int | None = None
    clickhouse_updated_ms: int | None = None
    clickhouse_profile_id: str | None = None


def redis_client(cfg: Config) -> Any:
    from sinks.redis_profiles import RedisSettings, connect

    return connect(RedisSettings.from_config(cfg))


class ProbeRun:
    """Sends the probes at a fixed pace and polls Redis and ClickHouse for their effects."""

    def __init__(self, cfg: Config, count: int, rate: float, run_id: str) -> None:
        self.cfg, self.count, self.rate, self.run_id = cfg, count, rate, run_id
        self.probes: list[Probe] = []
        self.by_event_ms: dict[int, Probe] = {}
        self.lock = threading.Lock()
        self.sending_done = threading.Event()
        self.stop = threading.Event()
        self.errors: list[str] = []
        prefix = cfg.redis.key_prefix
        self.id_key = f"{prefix}:{PROBE_TENANT}:id:user_id:{{}}"
        self.live_key = f"{prefix}:{PROBE_TENANT}:profile:{{}}:live"
        self.polls = {"redis": 0, "clickhouse": 0}

    def pending(self, attr: str) -> list[Probe]:
        with self.lock:
            return [p for p in self.probes if getattr(p, attr) is None]

    def all_seen(self) -> bool:
        return (
            self.sending_done.is_set()
            and not self.pending("redis_live_ms")
            and not self.pending("clickhouse_seen_ms")
        )

    def send(self) -> None:
        """The probes, evenly paced; event time = Kafka timestamp = send time (unique ms)."""
        kafka = producer(self.cfg)
        interval, next_at, last_ms = 1.0 / self.rate, time.perf_counter(), 0
        try:
            for index in range(self.count):
                delay = next_at - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                next_at += interval
                sent_ms = max(now_ms(), last_ms + 1)
                last_ms = sent_ms
                user_id = f"probe-{self.run_id}-{index}"
                message_id = f"probe-{self.run_id}-{index}"
                doc = {
                    "type": "track",
                    "event": PROBE_EVENT,
                    "message_id": message_id,
                    "tenant_id": PROBE_TENANT,
                    "user_id": user_id,
                    "timestamp": iso_ms(sent_ms),
                    "properties": {"probe": index},
                    "context": {"library": {"name": "tidemark.freshness", "version": "1"}},
                }
                probe = Probe(index, user_id, sent_ms)
                with self.lock:
                    self.probes.append(probe)
                    self.by_event_ms[sent_ms] = probe
                kafka.send(
                    self.cfg.kafka.topic,
                    key=f"{PROBE_TENANT}:{message_id}".encode(),
                    value=orjson.dumps(doc),
                    timestamp_ms=sent_ms,
                )
            kafka.flush()
        except Exception as exc:
            self.errors.append(f"probe producer: {type(exc).__name__}: {exc}")
        finally:
            kafka.close(timeout=30)
            self.sending_done.set()

    def poll_redis(self) -> None:
        """Every 20 ms, one pipelined round: identity keys of probes without a profile yet,
        then the live hashes of the probes whose profile is known (including ones just
        resolved, in a second round trip, so a resolution does not wait one more period)."""
        self._poll("redis", REDIS_POLL_SECONDS, redis_client(self.cfg), self._redis_round)

    def _poll(self, name: str, period: float, client: Any, one_round: Any) -> None:
        """Run `one_round(client)` every `period` seconds until stopped or every probe is seen;
        an error ends the poller and is reported in the summary."""
        try:
            while not self.stop.is_set():
                started = time.perf_counter()
                one_round(client)
                self.polls[name] += 1
                if self.all_seen():
                    return
                time.sleep(max(0.0, period - (time.perf_counter() - started)))
        except Exception as exc:
            self.errors.append(f"{name} poller: {type(exc).__name__}: {exc}")
        finally:
            client.close()

    def _redis_round(self, client: Any) -> None:
        pending = self.pending("redis_live_ms")
        unresolved = [p for p in pending if p.profile_id is None]
        if unresolved:
            pipe = client.pipeline(transaction=False)
            for p in unresolved:
                pipe.hget(self.id_key.format(p.user_id), "p")
            answers = pipe.execute()
            seen = now_ms()
            for p, pid in zip(unresolved, answers, strict=True):
                if pid is not None:
                    p.profile_id, p.redis_identity_ms = pid.decode(), seen
        resolved = [p for p in pending if p.profile_id is not None]
        if not resolved:
            return
        pipe = client.pipeline(transaction=False)
        for p in resolved:
            pipe.hget(self.live_key.format(p.profile_id), "last_event_at")
        answers = pipe.execute()
        seen = now_ms()
        for p, value in zip(resolved, answers, strict=True):
            if value is None:
                continue
            if value.decode() == iso_ms(p.sent_ms):
                p.redis_live_ms = seen
            else:
                p.redis_live_mismatch = value.decode()

    def poll_clickhouse(self, since_ms: int) -> None:
        """Every 200 ms: the probes' profile_panes rows (event_type is the probe's event name;
        each probe's profile has one event, so last_event_at names the probe). Read without
        FINAL: a row exists in FINAL exactly when some version of it exists, and min(updated_at)
        over the versions is when it first became visible."""
        db = self.cfg.clickhouse.database
        since = ms_text(since_ms - 60_000)
        sql = (
            f"SELECT profile_id, toUnixTimestamp64Milli(max(last_event_at)), "
            f"toUnixTimestamp64Milli(min(updated_at)) FROM {db}.profile_panes "
            f"WHERE tenant_id = '{PROBE_TENANT}' AND event_type = '{PROBE_EVENT}' "
            f"AND pane_start >= '{since}' GROUP BY profile_id"
        )

        def one_round(client: Any) -> None:
            rows = client.query(sql).result_rows
            seen = now_ms()
            with self.lock:
                for pid, last_ms, updated_ms in rows:
                    probe = self.by_event_ms.get(int(last_ms))
                    if probe is not None and probe.clickhouse_seen_ms is None:
                        probe.clickhouse_seen_ms = seen
                        probe.clickhouse_updated_ms = int(updated_ms)
                        probe.clickhouse_profile_id = str(pid)

        self._poll("clickhouse", CLICKHOUSE_POLL_SECONDS, schema.connect(self.cfg), one_round)

    def summary(self) -> dict[str, Any]:
        """Per target: lag quantiles (ms from send), probes seen, and oddities."""

        def lags(attr: str) -> list[float]:
            return [
                float(getattr(p, attr) - p.sent_ms)
                for p in self.probes
                if getattr(p, attr) is not None
            ]

        pid_mismatch = [
            p.index
            for p in self.probes
            if p.profile_id and p.clickhouse_profile_id and p.profile_id != p.clickhouse_profile_id
        ]
        return {
            "probes_sent": len(self.probes),
            "redis_identity": quantiles(lags("redis_identity_ms")),
            "redis_live": quantiles(lags("redis_live_ms")),
            "clickhouse_polled": quantiles(lags("clickhouse_seen_ms")),
            "clickhouse_updated_at": quantiles(lags("clickhouse_updated_ms")),
            "live_hash_mismatches": [
                {"probe": p.index, "last_event_at": p.redis_live_mismatch}
                for p in self.probes
                if p.redis_live_mismatch and p.redis_live_ms is None
            ],
            "profile_id_mismatches": pid_mismatch,
            "redis_polls": self.polls["redis"],
            "clickhouse_polls": self.polls["clickhouse"],
            "errors": self.errors,
        }
