"""The Redis of the local stack: Debian's `redis-server`, bound to loopback, no persistence.

Why no persistence: the stack is for development and tests; jobs write absolute values
(idempotent HSETs) that a replay rebuilds, so snapshots would only cost disk and time.
"""

from __future__ import annotations

from pathlib import Path

import redis as redis_client

from tidemark.config import Config
from tidemark.stack import process
from tidemark.stack.process import LOOPBACK, ComponentStatus, Daemon

NAME = "redis"
BINARY_ENV_VAR = "TIDEMARK_REDIS_SERVER"  # overrides the binary, e.g. to test a missing one
INSTALL_HINT = "run `apt-get install -y redis-server` (scripts/bootstrap.sh does it)"


def port(cfg: Config) -> int:
    """Redis's port."""
    return cfg.stack.redis_port


def data_dir(cfg: Config, name: str = "redis") -> Path:
    """Redis's working directory (`--dir`), under the stack's state_dir."""
    return cfg.state_dir / name


def ping_ok(redis_port: int) -> bool:
    """PING answered through redis-py, the client the jobs use."""
    client = redis_client.Redis(
        host=LOOPBACK, port=redis_port, socket_timeout=1, socket_connect_timeout=1
    )
    try:
        return bool(client.ping())
    finally:
        client.close()


def daemon(cfg: Config) -> Daemon:
    """The supervision record of redis-server."""
    redis_port = port(cfg)
    return Daemon(
        name=NAME,
        port=redis_port,
        port_key="stack.redis_port",
        state_dir=cfg.state_dir,
        marker=f"redis-server {LOOPBACK}:{redis_port}",  # the title redis gives itself
        health=lambda: ping_ok(redis_port),
        start_timeout=15,
        stop_grace=5,
    )


def start(cfg: Config, directory: Path | None = None) -> ComponentStatus:
    """Start redis-server on loopback with snapshots and the AOF switched off."""
    binary = process.resolve_binary("redis-server", BINARY_ENV_VAR, INSTALL_HINT)
    work_dir = directory or data_dir(cfg)
    work_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port", str(port(cfg)),
        "--bind", LOOPBACK,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(work_dir),
        "--daemonize", "no",
        "--logfile", "",
    ]  # fmt: skip
    return process.start(daemon(cfg), argv)


def stop(cfg: Config) -> ComponentStatus:
    """Stop redis-server (SIGTERM makes it exit cleanly; nothing is saved)."""
    return process.stop(daemon(cfg))


def status(cfg: Config) -> ComponentStatus:
    """Pid alive and PING answered."""
    return process.status(daemon(cfg))
