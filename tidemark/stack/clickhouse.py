"""The ClickHouse endpoint of the local stack: one process owning a chDB store, serving HTTP.

Why a process of our own: no modern ClickHouse server is installable here, and chDB (the real
engine, on PyPI) allows one process per data directory and opens no port. One server process
owns the store and speaks ClickHouse's HTTP interface, so every client (Flink's Python
workers, the CLI, dashboards) uses stock `clickhouse_connect.get_client(host=, port=)`.
"""

from __future__ import annotations

import importlib.util
import os
import urllib.request
from pathlib import Path

from tidemark.config import Config
from tidemark.stack import process
from tidemark.stack.process import LOOPBACK, ComponentStatus, Daemon, StackError

NAME = "clickhouse"
SERVER_MODULE = "tidemark.stack.chdb_http"
MODULE_ENV_VAR = "TIDEMARK_CHDB_HTTP_MODULE"  # another server module, e.g. a stub in a test


def port(cfg: Config) -> int:
    """The HTTP port of the ClickHouse interface."""
    return cfg.stack.clickhouse_port


def server_module() -> str:
    """The module run with `python -m`; fails clearly if it is not importable."""
    module = os.environ.get(MODULE_ENV_VAR) or SERVER_MODULE
    if module == SERVER_MODULE and importlib.util.find_spec(module) is None:
        raise StackError(
            f"{module} not found: the chDB HTTP server module is missing from this checkout "
            f"(expected at tidemark/stack/chdb_http.py)"
        )
    return module


def store_dir(cfg: Config) -> Path:
    """The chDB data directory, owned by the server process."""
    return cfg.state_dir / "clickhouse"


def ping_ok(http_port: int) -> bool:
    """`GET /ping` answers `Ok.`, as ClickHouse's own server does."""
    url = f"http://{LOOPBACK}:{http_port}/ping"
    with urllib.request.urlopen(url, timeout=1) as response:
        return response.status == 200 and response.read().strip() == b"Ok."


def daemon(cfg: Config) -> Daemon:
    """The supervision record of the chDB HTTP server."""
    http_port = port(cfg)
    return Daemon(
        name=NAME,
        port=http_port,
        port_key="stack.clickhouse_port",
        state_dir=cfg.state_dir,
        marker=f"--path {store_dir(cfg)} --host {LOOPBACK} --port {http_port}",
        health=lambda: ping_ok(http_port),
        start_timeout=60,  # importing chDB (~500 MB of engine) takes seconds on a cold cache
        stop_grace=10,
    )


def start(cfg: Config) -> ComponentStatus:
    """Start the server with the venv's interpreter on `<state_dir>/clickhouse`."""
    module = server_module()
    store = store_dir(cfg)
    store.mkdir(parents=True, exist_ok=True)
    argv = [
        process.venv_python(), "-m", module,
        "--path", str(store),
        "--host", LOOPBACK,
        "--port", str(port(cfg)),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": process.python_path_env(), "PYTHONUNBUFFERED": "1"}
    return process.start(daemon(cfg), argv, env)


def stop(cfg: Config) -> ComponentStatus:
    """Stop the server; SIGTERM lets it close the chDB store cleanly."""
    return process.stop(daemon(cfg))


def status(cfg: Config) -> ComponentStatus:
    """Pid alive and `/ping` answered."""
    return process.status(daemon(cfg))
