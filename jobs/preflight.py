"""Checks a job runs on the client before it is submitted.

Why: a wrong broker address or ClickHouse URL otherwise shows up minutes later as a task
failing and restarting in a loop inside a TaskManager. Checked here, it fails at once with a
message that names the setting to fix.
"""

from __future__ import annotations

from tidemark.config import Config, ConfigError
from tidemark.schema import INGEST_TABLES, PROFILE_TABLES, WINDOW_TABLES


def check_kafka(cfg: Config, timeout_seconds: float = 5.0) -> None:
    """The broker answers a metadata request."""
    from kafka.errors import KafkaError

    from tidemark.topics import admin_client, unreachable_broker

    admin = admin_client(cfg, timeout_seconds, timeout_seconds, client_id="tidemark-preflight")
    try:
        admin.list_topics()
    except (KafkaError, OSError, ValueError) as exc:
        raise unreachable_broker(cfg, exc) from exc
    finally:
        admin.close()


def check_clickhouse(cfg: Config) -> None:
    """ClickHouse answers at the configured endpoint and the schema has been applied."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from tidemark.schema import connect

    c = cfg.clickhouse
    endpoint = f"http://{c.host}:{cfg.clickhouse_port}"
    try:
        client = connect(cfg)
    except (ClickHouseError, OSError, ValueError) as exc:
        raise ConfigError(
            f"clickhouse.host/clickhouse.port: no ClickHouse server answers at {endpoint} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    try:
        rows = client.query(
            "SELECT name FROM system.tables WHERE database = {db:String}",
            parameters={"db": c.database},
        ).result_rows
    finally:
        client.close()
    present = {row[0] for row in rows}
    required = INGEST_TABLES + (PROFILE_TABLES if cfg.ingest.profile_stage else ())
    required += WINDOW_TABLES if windows_active(cfg) else ()
    missing = [t for t in required if t not in present]
    if missing:
        raise ConfigError(
            f"clickhouse.database: '{c.database}' at {endpoint} lacks table(s) "
            f"{', '.join(missing)}: run `tidemark schema apply`"
        )


def check_redis(cfg: Config, timeout_seconds: float = 5.0) -> None:
    """Redis answers a PING (the profile stage writes identity lookups there)."""
    import redis

    from sinks.redis_profiles import RedisSettings, connect

    client = connect(RedisSettings.from_config(cfg), timeout_seconds, timeout_seconds)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise ConfigError(
            f"redis.host/redis.port: no Redis answers at {cfg.redis.host}:{cfg.redis_port} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        client.close()


def windows_active(cfg: Config) -> bool:
    """Windows run inside the profile stage: both must be on."""
    return cfg.ingest.profile_stage and cfg.windows.enabled


def publish_window_specs(cfg: Config) -> None:
    """Replace `window_specs` with this job's windows: the window views in ClickHouse read
    sizes, slides, the pane and the idle timeout from it (006_windows.sql)."""
    from tidemark.schema import connect
    from udfs.window_specs import pane_ms, parse_specs

    specs = parse_specs(cfg.windows.specs)
    pane = pane_ms(specs)
    w = cfg.windows
    rows = [
        [s.name, s.size_ms, s.slide_ms, pane, w.allowed_lateness_ms, w.idle_timeout_ms]
        for s in specs
    ]
    client = connect(cfg)
    try:
        table = f"{cfg.clickhouse.database}.window_specs"
        client.command(f"TRUNCATE TABLE {table}")
        client.insert(
            table,
            rows,
            column_names=[
                "name", "size_ms", "slide_ms", "pane_ms", "allowed_lateness_ms", "idle_timeout_ms"
            ],
        )  # fmt: skip
    finally:
        client.close()


def preflight(cfg: Config) -> None:
    """Fail fast, naming the setting, if the job's external systems are not usable."""
    check_kafka(cfg)
    check_clickhouse(cfg)
    if cfg.ingest.profile_stage:
        check_redis(cfg)
