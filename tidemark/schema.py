"""`tidemark schema apply | status`: versioned ClickHouse migrations, applied idempotently.

Migrations are `schemas/clickhouse/NNN_name.sql`, applied in order; each applied version is
recorded in `<database>.schema_migrations` with a checksum of its text. Applying again skips
recorded versions, and a recorded migration whose file has since changed is an error: schema
history is append-only, so a change to a table ships as a new migration.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from tidemark.config import REPO_ROOT, Config, ConfigError, load_config

MIGRATIONS_DIR = REPO_ROOT / "schemas" / "clickhouse"
#: The tables the ingest job writes, and those its profile stage adds (migrations 004, 005).
INGEST_TABLES = ("events", "cost_records", "dead_letters")
PROFILE_TABLES = (
    "profiles", "identity_links", "identity_merges", "profile_aliases", "cost_allocations"
)  # fmt: skip
#: The tables the window stage writes (migration 006); the windows are views over them.
WINDOW_TABLES = (
    "cost_panes", "engagement_panes", "profile_panes", "late_events", "window_progress",
    "window_specs",
)  # fmt: skip
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        """The file's statements with `{database}` filled in (split on `;` at end of line)."""
        body = "\n".join(
            line for line in self.text.splitlines() if not line.lstrip().startswith("--")
        )
        parts = re.split(r";\s*(?:\n|$)", body)
        return [p.strip().replace("{database}", database) for p in parts if p.strip()]


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migration files, in version order; a malformed name or a repeated version fails."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ConfigError(f"migration file name {path.name!r} is not NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise ConfigError(f"migration version {version:03d} appears twice")
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def connect(cfg: Config):
    """A ClickHouse client on the configured endpoint (no default database: it may not exist)."""
    from sinks.clickhouse import ClickHouseSettings
    from sinks.clickhouse import connect as clickhouse_client

    return clickhouse_client(ClickHouseSettings.from_config(cfg), use_database=False)


def applied_versions(client, database: str) -> dict[int, str]:
    """Version -> checksum of the migrations recorded as applied."""
    rows = client.query(
        f"SELECT version, checksum FROM {database}.schema_migrations FINAL"
    ).result_rows
    return {int(v): c for v, c in rows}


def apply(cfg: Config, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every migration not yet recorded; return those applied now."""
    database = cfg.clickhouse.database
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
        raise ConfigError(f"clickhouse.database: not a valid database name: {database!r}")
    client = connect(cfg)
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        client.command(
            f"""CREATE TABLE IF NOT EXISTS {database}.schema_migrations (
                  version UInt32, name String, checksum String,
                  applied_at DateTime64(3, 'UTC') DEFAULT now64(3))
                ENGINE = ReplacingMergeTree ORDER BY version"""
        )
        done = applied_versions(client, database)
        applied = []
        for migration in migrations(directory):
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise ConfigError(
                        f"migration {migration.path.name} changed after it was applied; "
                        "add a new migration instead"
                    )
                continue
            for statement in migration.statements(database):
                client.command(statement)
            client.insert(
                f"{database}.schema_migrations",
                [[migration.version, migration.name, migration.checksum]],
                column_names=["version", "name", "checksum"],
            )
            applied.append(migration)
        return applied
    finally:
        client.close()


def _cmd_apply(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    applied = apply(cfg)
    for migration in applied:
        print(f"applied {migration.path.name}")
    print(f"schema of '{cfg.clickhouse.database}' is current ({len(applied)} applied now)")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    client = connect(cfg)
    try:
        try:
            done = applied_versions(client, cfg.clickhouse.database)
        except Exception:  # no database or table yet: nothing applied
            done = {}
    finally:
        client.close()
    pending = 0
    for migration in migrations():
        state = "applied" if migration.version in done else "pending"
        pending += state == "pending"
        print(f"{migration.path.name:40} {state}")
    return 1 if pending else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("schema", help="ClickHouse schema migrations")
    sub = parser.add_subparsers(dest="schema_command", required=True)
    sub.add_parser("apply", help="apply pending migrations (idempotent)").set_defaults(
        func=_cmd_apply
    )
    sub.add_parser("status", help="list migrations and whether each is applied").set_defaults(
        func=_cmd_status
    )
