"""tidemark settings: one YAML file (default `flink-conf/tidemark.yaml`) plus `section.key=value`
overrides.

Why a schema of dataclasses rather than a free dict: an operator's typo (`kafka.topik`) or a
wrong type must fail before a job is submitted, with a message that names the key, instead of
surfacing minutes later as a silent default inside a TaskManager.

Flink's own settings (checkpointing, state backend, restart strategy) live in
`flink-conf/config.yaml`; the `flink:` section here overrides them for one job.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = REPO_ROOT / "flink-conf" / "tidemark.yaml"
CONFIG_ENV_VAR = "TIDEMARK_CONFIG"


class ConfigError(ValueError):
    """A setting is unknown, mistyped or out of range; the message names the key."""


@dataclass(frozen=True)
class StackConfig:
    """Where the local stack lives and listens."""

    state_dir: str = ".tidemark/stack"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093  # KRaft controller listener (loopback)
    redis_port: int = 16379
    clickhouse_port: int = 18123
    flink_rest_port: int = 18081
    flink_rpc_port: int = 16123
    taskmanagers: int = 1
    taskmanager_slots: int = 1


@dataclass(frozen=True)
class KafkaConfig:
    """Source and dead-letter topics, and how Flink's Kafka connector reads them."""

    bootstrap_servers: str = ""  # empty: the local stack's broker
    topic: str = "tidemark.events"
    partitions: int = 4
    dead_letter_topic: str = "tidemark.dead-letters"
    start_from: str = "earliest"  # earliest | latest | timestamp:<epoch millis>
    consumer_group: str = "tidemark-ingest"  # offsets are Flink's; the group only reports them
    max_poll_records: int = 5000
    fetch_max_bytes: int = 16 * 1024 * 1024
    partition_discovery_seconds: int = 10
    connector_jar: str = ""  # flink-sql-connector-kafka jar; empty: the pinned one (jars.lock)


@dataclass(frozen=True)
class ClickHouseConfig:
    """The ClickHouse HTTP endpoint every client uses (the local stack's chDB server by default)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: the local stack's port
    database: str = "tidemark"
    username: str = "default"
    password: str = ""
    connect_timeout_seconds: int = 5


@dataclass(frozen=True)
class IngestConfig:
    """Validation limits, the dedup horizon and ClickHouse batching of the ingest job."""

    dedup_horizon_seconds: int = 24 * 3600
    batch_max_rows: int = 5000
    batch_max_seconds: float = 1.0  # the batching window; fractions allowed, in whole ms
    max_event_bytes: int = 32 * 1024
    max_future_seconds: int = 3600
    insert_retries: int = 8
    insert_backoff_max_seconds: int = 30
    parallelism: int = 1
    profile_stage: bool = True  # enrichment + identity resolution between dedup and the sinks


@dataclass(frozen=True)
class EnrichmentConfig:
    """Where dimension data comes from: files at start, then a Kafka changelog topic."""

    dimensions_dir: str = ""  # products/accounts/campaigns/attribution_rules .csv|.parquet
    changelog_topic: str = "tidemark.dimensions"


@dataclass(frozen=True)
class IdentityConfig:
    """Identity-resolution rules and how its state is sharded.

    `rules` is passed to udfs.identity.IdentityRules.from_mapping (types, blocked values,
    limits, caps); it is checked when the settings load.
    """

    shards: int = 1  # tenants hash to shards; one insert per table per shard per batch
    cache_entries: int = 200_000  # identity state entries cached in each Python operator
    rules: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RedisConfig:
    """The Redis that automations read (the local stack's by default)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: the local stack's port
    db: int = 0
    key_prefix: str = "tm"
    profile_ttl_seconds: int = 90 * 86_400
    write_retries: int = 8
    write_backoff_max_seconds: int = 30


@dataclass(frozen=True)
class WindowsConfig:
    """Event-time sliding windows over the profile stage's output (issue 4).

    `specs` is a comma-separated list of size/slide pairs ("1h/1m,5m/10s"); every spec's size
    is a multiple of its slide. Lateness is judged per tenant and family against a clock kept
    in checkpointed state (see udfs/event_clock.py), so replays decide identically.
    """

    enabled: bool = True  # needs ingest.profile_stage
    specs: str = "1h/1m,5m/10s"
    out_of_orderness_ms: int = 5_000
    allowed_lateness_ms: int = 600_000
    idle_timeout_ms: int = 60_000  # a tenant idle this long stops holding back `is_final`


@dataclass(frozen=True)
class LiveConfig:
    """Per-profile and per-team live state in Redis, and the trigger rules over it."""

    windows: str = "30m,1h"  # comma-separated window sizes of the live counters
    last_orders: int = 10
    order_event: str = "Order Completed"
    cart_event: str = "Product Added"
    ttl_seconds: int = 7 * 86_400
    stream_maxlen: int = 100_000  # approximate cap of each tenant's notification stream
    triggers: dict[str, Any] = field(default_factory=dict)  # rule id -> {entity, when}


@dataclass(frozen=True)
class Config:
    """All tidemark settings. `flink` holds raw Flink keys passed through to the job."""

    stack: StackConfig = field(default_factory=StackConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    clickhouse: ClickHouseConfig = field(default_factory=ClickHouseConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    enrichment: EnrichmentConfig = field(default_factory=EnrichmentConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    live: LiveConfig = field(default_factory=LiveConfig)
    flink: dict[str, str] = field(default_factory=dict)
    source_path: str = ""
    overrides: tuple[str, ...] = ()  # as given to load_config, so a job can be given the same

    @property
    def kafka_bootstrap(self) -> str:
        """The broker list, defaulting to the local stack's broker."""
        return self.kafka.bootstrap_servers or f"127.0.0.1:{self.stack.kafka_port}"

    @property
    def clickhouse_port(self) -> int:
        """The ClickHouse HTTP port, defaulting to the local stack's."""
        return self.clickhouse.port or self.stack.clickhouse_port

    @property
    def redis_port(self) -> int:
        """The Redis port, defaulting to the local stack's."""
        return self.redis.port or self.stack.redis_port

    @property
    def dimensions_dir(self) -> Path | None:
        """The dimension files' directory, absolute (relative paths hang off the repo)."""
        if not self.enrichment.dimensions_dir:
            return None
        path = Path(self.enrichment.dimensions_dir)
        return path if path.is_absolute() else REPO_ROOT / path

    @property
    def state_dir(self) -> Path:
        """The local stack's state directory, absolute (relative paths hang off the repo)."""
        path = Path(self.stack.state_dir)
        return path if path.is_absolute() else REPO_ROOT / path


#: ingest.batch_max_seconds bounds: below 10 ms a window holds a handful of records and the
#: per-batch costs (a Python call, one insert per table) dominate; above a minute the live
#: outputs are no longer live.
MIN_BATCH_MS, MAX_BATCH_MS = 10, 60_000

_SECTIONS: dict[str, type] = {
    "stack": StackConfig,
    "kafka": KafkaConfig,
    "clickhouse": ClickHouseConfig,
    "ingest": IngestConfig,
    "enrichment": EnrichmentConfig,
    "identity": IdentityConfig,
    "redis": RedisConfig,
    "windows": WindowsConfig,
    "live": LiveConfig,
}


def flatten_flink_yaml(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flink 2.x YAML may nest keys (`execution: {checkpointing: ...}`); flatten to dotted keys,
    so the repo file, generated cluster files and per-job overrides merge by name."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_flink_yaml(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def flink_text(value: Any) -> str:
    """A YAML value in Flink's string form (booleans lower-case, lists `;`-joined)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


def _number(key: str, value: Any, kind: type, accepted: tuple[type, ...], noun: str) -> Any:
    """`value` as an int or float (YAML gives one, an override gives text); YAML's booleans
    are ints to Python, but never a number here."""
    if isinstance(value, accepted) and not isinstance(value, bool):
        return kind(value)
    if isinstance(value, str):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected {noun}, got {value!r}")


def _coerce(key: str, value: Any, target: Any) -> Any:
    """Convert a YAML or override value to the field's declared type, or fail naming the key."""
    if target is int:
        return _number(key, value, int, (int,), "an integer")
    if target is float:
        return _number(key, value, float, (int, float), "a number")
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typing.get_origin(target) is dict:
        if value is None:
            return {}
        if isinstance(value, str):  # an override: section.key={"yaml": "or json"}
            try:
                value = YAML(typ="safe").load(value)
            except Exception as exc:  # ruamel raises several unrelated error types
                raise ConfigError(f"{key}: not a valid mapping: {exc}") from exc
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{key}: expected a mapping, got {value!r}")
    if target is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported setting type {target!r}")


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected a mapping of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"unknown key '{name}.{unknown[0]}' "
            f"(known keys in '{name}': {', '.join(sorted(known))})"
        )
    values = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in raw.items()}
    return cls(**values)


def _check_ranges(cfg: Config) -> None:
    positive = {
        "kafka.partitions": cfg.kafka.partitions,
        "kafka.max_poll_records": cfg.kafka.max_poll_records,
        "kafka.partition_discovery_seconds": cfg.kafka.partition_discovery_seconds,
        "ingest.batch_max_rows": cfg.ingest.batch_max_rows,
        "ingest.dedup_horizon_seconds": cfg.ingest.dedup_horizon_seconds,
        "ingest.max_event_bytes": cfg.ingest.max_event_bytes,
        "ingest.parallelism": cfg.ingest.parallelism,
        "stack.taskmanagers": cfg.stack.taskmanagers,
        "identity.shards": cfg.identity.shards,
        "identity.cache_entries": cfg.identity.cache_entries,
        "redis.write_retries": cfg.redis.write_retries,
        "stack.taskmanager_slots": cfg.stack.taskmanager_slots,
        "windows.idle_timeout_ms": cfg.windows.idle_timeout_ms,
        "live.last_orders": cfg.live.last_orders,
        "live.ttl_seconds": cfg.live.ttl_seconds,
        "live.stream_maxlen": cfg.live.stream_maxlen,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    batch_ms = cfg.ingest.batch_max_seconds * 1000
    if not MIN_BATCH_MS <= batch_ms <= MAX_BATCH_MS or batch_ms != round(batch_ms):
        raise ConfigError(
            f"ingest.batch_max_seconds: must be a whole number of ms from"
            f" {MIN_BATCH_MS / 1000:g} to {MAX_BATCH_MS / 1000:g} s, got"
            f" {cfg.ingest.batch_max_seconds:g}"
        )
    if cfg.redis.port and not 0 < cfg.redis.port < 65536:
        raise ConfigError(f"redis.port: not a TCP port: {cfg.redis.port}")
    directory = cfg.dimensions_dir
    if directory is not None and not directory.is_dir():
        raise ConfigError(f"enrichment.dimensions_dir: no such directory: {directory}")
    _check_identity_rules(cfg.identity.rules)
    for key in ("windows.out_of_orderness_ms", "windows.allowed_lateness_ms"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 0:
            raise ConfigError(f"{key}: must not be negative")
    _check_windows(cfg)
    for key in (
        "kafka_port",
        "kafka_controller_port",
        "redis_port",
        "clickhouse_port",
        "flink_rest_port",
        "flink_rpc_port",
    ):
        port = getattr(cfg.stack, key)
        if not 0 < port < 65536:
            raise ConfigError(f"stack.{key}: not a TCP port: {port}")
    start = cfg.kafka.start_from
    if start not in ("earliest", "latest") and not (
        start.startswith("timestamp:") and start.removeprefix("timestamp:").isdigit()
    ):
        raise ConfigError(
            "kafka.start_from: expected earliest, latest or timestamp:<epoch millis>, "
            f"got {start!r}"
        )
    if cfg.kafka.connector_jar and not Path(cfg.kafka.connector_jar).is_file():
        raise ConfigError(f"kafka.connector_jar: no such file: {cfg.kafka.connector_jar}")


def _check_identity_rules(rules: dict[str, Any]) -> None:
    """Build the identity rules once on the client, so a bad rule fails before submission."""
    from udfs.identity import IdentityRules

    try:
        IdentityRules.from_mapping(rules)
    except ValueError as exc:
        # The engine names keys inside the rules section ("identity.max_merges"); the user
        # wrote them under identity.rules, so name the key as it appears in the settings.
        message = str(exc)
        if message.startswith("identity."):
            message = "identity.rules." + message.removeprefix("identity.")
        else:
            message = f"identity.rules: {message}"
        raise ConfigError(message) from exc


def _check_windows(cfg: Config) -> None:
    """Parse the window specs, live windows and trigger rules once on the client, so a bad
    one fails before submission with the key named."""
    from udfs.live_state import LiveSettings
    from udfs.window_specs import parse_specs

    try:
        parse_specs(cfg.windows.specs)
    except ValueError as exc:
        raise ConfigError(f"windows.specs: {exc}") from exc
    try:
        LiveSettings.from_config(cfg.live)
    except ValueError as exc:
        text = str(exc)
        raise ConfigError(text if text.startswith("live.") else f"live: {text}") from exc


def _apply_override(raw: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected section.key=value")
    dotted, value = override.split("=", 1)
    section, _, key = dotted.strip().partition(".")
    if not key:
        raise ConfigError(f"override {override!r}: expected section.key=value")
    if section not in _SECTIONS and section != "flink":
        raise ConfigError(
            f"unknown section '{section}' in override {override!r} "
            f"(known: {', '.join([*_SECTIONS, 'flink'])})"
        )
    target = raw.setdefault(section, {}) or {}
    if not isinstance(target, dict):
        raise ConfigError(f"{section}: expected a mapping of settings, got {target!r}")
    raw[section] = target
    target[key] = value


def from_dict(raw: dict[str, Any], source_path: str = "") -> Config:
    """Build and check a Config from a plain mapping (the YAML document or a shipped JSON)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source_path or 'config'}: expected a mapping at the top level")
    unknown = sorted(set(raw) - {*_SECTIONS, "flink", "source_path", "overrides"})
    if unknown:
        raise ConfigError(
            f"unknown section '{unknown[0]}' (known: {', '.join([*_SECTIONS, 'flink'])})"
        )
    sections = {name: _build_section(name, cls, raw.get(name)) for name, cls in _SECTIONS.items()}
    flink_raw = raw.get("flink") or {}
    if not isinstance(flink_raw, dict):
        raise ConfigError(f"flink: expected a mapping of Flink keys, got {flink_raw!r}")
    # Flink 2.x YAML may nest keys: flatten them, so a job gets dotted keys Flink understands.
    flink = {str(k): flink_text(v) for k, v in flatten_flink_yaml(flink_raw).items()}
    cfg = Config(**sections, flink=flink, source_path=source_path)
    _check_ranges(cfg)
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> Config:
    """Load settings from `path` (or $TIDEMARK_CONFIG, or the default file) plus overrides."""
    chosen = Path(path or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)
    if not chosen.is_file():
        raise ConfigError(f"config file not found: {chosen}")
    try:
        raw = YAML(typ="safe").load(chosen.read_text()) or {}
    except Exception as exc:  # ruamel raises several unrelated error types
        raise ConfigError(f"{chosen}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):  # checked before overrides, which index into it
        raise ConfigError(f"{chosen}: expected a mapping at the top level")
    for override in overrides or []:
        _apply_override(raw, override)
    cfg = from_dict(raw, source_path=str(chosen))
    return dataclasses.replace(cfg, overrides=tuple(overrides or ()))
