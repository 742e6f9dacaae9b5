"""`tidemark stack up | down | status` against real processes on loopback (no mocks).

Every test uses its own state_dir and free, non-default ports, so a developer's running
stack (default ports, .tidemark/stack) is never touched. The lifecycle is one test because
each step depends on the previous one and a Flink start costs ~10-20 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_client
from kafka import KafkaAdminClient

from tests.support import free_ports, stack_overrides
from tidemark.config import REPO_ROOT, load_config
from tidemark.stack import flink, process
from tidemark.stack.commands import ORDER, stack_status, start_stack, stop_stack
from tidemark.stack.process import Daemon, StackError

pytestmark = pytest.mark.stack

# Runs the real `tidemark.cli.main` (global --config/--set, error handling), registering only
# the stack commands so this test does not depend on the other command modules.
CLI = (
    "import sys, tidemark.cli as cli; "
    "cli.COMMAND_MODULES = ('tidemark.stack.commands',); "
    "sys.exit(cli.main(sys.argv[1:]))"
)


def run_cli(overrides: list[str], *args: str, env: dict[str, str] | None = None):
    """`tidemark --set ... stack <args>` in a separate process, as an operator runs it."""
    sets = [part for override in overrides for part in ("--set", override)]
    return subprocess.run(
        [sys.executable, "-c", CLI, *sets, "stack", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
        env=env,
    )


def processes_mentioning(text: str) -> list[str]:
    """Live (non-zombie) processes whose command line contains `text`, per `ps`."""
    listing = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line
        for line in listing.splitlines()
        if text in line and not line.split()[1].startswith("Z") and "pytest" not in line
    ]


@pytest.fixture
def overrides(tmp_path: Path) -> Iterator[list[str]]:
    """Overrides for a private stack, stopped again whatever the test did."""
    values = stack_overrides(tmp_path / "stack")
    yield values
    stop_stack(load_config(overrides=values))


def test_up_status_second_up_down(overrides: list[str]) -> None:
    cfg = load_config(overrides=overrides)

    began = time.monotonic()
    up = run_cli(overrides, "up")
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"stack up took {time.monotonic() - began:.1f} s:\n{up.stdout}")
    for name in ORDER:
        assert any(line.startswith(name) and "started" in line for line in up.stdout.splitlines())

    statuses = {item.name: item for item in stack_status(cfg)}
    assert all(item.healthy and item.state == "running" for item in statuses.values()), statuses
    all_pids = [pid for item in statuses.values() for pid in item.pids]

    # Each component answers its own protocol, with the clients the jobs use.
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap, bootstrap_timeout_ms=5000)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()
    assert redis_client.Redis(host="127.0.0.1", port=cfg.stack.redis_port).ping()
    url = f"http://127.0.0.1:{cfg.stack.clickhouse_port}/ping"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read().strip() == b"Ok."
    assert flink.overview(cfg)["taskmanagers"] == cfg.stack.taskmanagers
    assert len(flink.taskmanager_pids(cfg)) == cfg.stack.taskmanagers

    status = run_cli(overrides, "status")
    assert status.returncode == 0, status.stdout + status.stderr

    # A second `up` leaves everything alone.
    again = {item.name: item for item in start_stack(cfg)}
    assert {item.state for item in again.values()} == {"already running"}
    assert {name: item.pids for name, item in again.items()} == {
        name: item.pids for name, item in statuses.items()
    }

    # One more TaskManager joins, then both are killed hard: the JobManager still lists them
    # (until their heartbeats time out), Flink's pid file goes stale, and `up` must top the
    # cluster up again while `down` must not trip over the stale pids.
    original = flink.taskmanager_pids(cfg)
    extra = flink.start_taskmanager(cfg)
    assert extra not in original and extra in flink.taskmanager_pids(cfg)
    assert flink.overview(cfg)["taskmanagers"] == cfg.stack.taskmanagers + 1
    for pid in [extra, *original]:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while flink.taskmanager_pids(cfg) and time.monotonic() < deadline:
        time.sleep(0.1)
    (flink_status,) = stack_status(cfg, ["flink"])
    assert not flink_status.healthy and "0 running" in flink_status.detail
    (topped_up,) = start_stack(cfg, ["flink"])
    assert topped_up.state == "started" and topped_up.healthy, topped_up
    assert len(flink.taskmanager_pids(cfg)) == cfg.stack.taskmanagers
    all_pids += flink.taskmanager_pids(cfg)

    down = run_cli(overrides, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert run_cli(overrides, "down").returncode == 0  # idempotent

    status = run_cli(overrides, "status")
    assert status.returncode == 1
    assert all(item.state == "stopped" for item in stack_status(cfg))
    assert not [pid for pid in all_pids if process.pid_alive(pid)]
    ports = [cfg.stack.kafka_port, cfg.stack.redis_port, cfg.stack.clickhouse_port]
    ports += [cfg.stack.flink_rest_port, cfg.stack.flink_rpc_port]
    assert all(process.port_is_free(port) for port in ports)
    assert processes_mentioning(str(cfg.state_dir)) == []
    assert flink.jobmanager_pids(cfg) == [] and flink.taskmanager_pids(cfg) == []


@pytest.mark.parametrize("component", ORDER)
def test_port_taken_by_foreign_listener(overrides: list[str], component: str) -> None:
    cfg = load_config(overrides=overrides)
    port = {
        "kafka": cfg.stack.kafka_port,
        "redis": cfg.stack.redis_port,
        "clickhouse": cfg.stack.clickhouse_port,
        "flink": cfg.stack.flink_rest_port,
    }[component]
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", port))
        foreign.listen()
        with pytest.raises(StackError, match=f"port {port} for {component} is already in use"):
            start_stack(cfg, [component])
    assert stack_status(cfg, [component])[0].state == "stopped"


def test_kafka_controller_port_taken_names_its_setting(overrides: list[str]) -> None:
    """The KRaft controller listens on a second port; a conflict there fails before the JVM
    starts and names that port's own setting."""
    cfg = load_config(overrides=overrides)
    port = cfg.stack.kafka_controller_port
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", port))
        foreign.listen()
        with pytest.raises(StackError, match=f"port {port} for kafka.*kafka_controller_port"):
            start_stack(cfg, ["kafka"])
    assert stack_status(cfg, ["kafka"])[0].state == "stopped"


def test_missing_binary_gives_the_fix(overrides: list[str], tmp_path: Path) -> None:
    cfg = load_config(overrides=overrides)
    env = {**os.environ, "TIDEMARK_REDIS_SERVER": str(tmp_path / "nonexistent")}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIDEMARK_REDIS_SERVER", env["TIDEMARK_REDIS_SERVER"])
        with pytest.raises(
            StackError, match=r"redis-server not found .*apt-get install -y redis-server"
        ):
            start_stack(cfg, ["redis"])
    result = run_cli(overrides, "up", "redis", env=env)
    assert result.returncode == 1
    assert "redis-server not found" in result.stderr
    assert "apt-get install -y redis-server" in result.stderr


def test_daemon_that_exits_reports_its_log(overrides: list[str], tmp_path: Path) -> None:
    cfg = load_config(overrides=overrides)
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'fatal: cannot open the data directory' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIDEMARK_REDIS_SERVER", str(fake))
        with pytest.raises(StackError, match=r"(?s)redis exited.*cannot open the data directory"):
            start_stack(cfg, ["redis"])
    assert not (cfg.state_dir / "pids" / "redis.pid").exists()


def test_unhealthy_daemon_is_killed_at_the_timeout(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    daemon = Daemon(
        name="sleeper",
        port=port,
        port_key="test.port",
        state_dir=tmp_path,
        marker="sleep",
        health=lambda: False,
        start_timeout=1,
    )
    with pytest.raises(StackError, match=r"(?s)sleeper was not healthy after 1 s.*sleep 31.7"):
        process.start(daemon, ["sleep", "31.7"])
    assert not daemon.pid_path.exists()
    assert processes_mentioning("sleep 31.7") == []


def test_broker_restart_keeps_topics_and_records(overrides: list[str]) -> None:
    """Kafka's data lives on disk under the state dir: a restart keeps topics and records."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    cfg = load_config(overrides=overrides)
    start_stack(cfg, ["kafka"])
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka_bootstrap)
    admin.create_topics([NewTopic("kept", 2, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=cfg.kafka_bootstrap, acks="all")
    sent = [f"record-{i}".encode() for i in range(50)]
    for value in sent:
        producer.send("kept", value=value, partition=len(value) % 2)
    producer.flush()
    producer.close()
    stop_stack(cfg, ["kafka"])
    assert stack_status(cfg, ["kafka"])[0].state == "stopped"
    start_stack(cfg, ["kafka"])
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka_bootstrap, consumer_timeout_ms=5000)
    consumer.assign([TopicPartition("kept", 0), TopicPartition("kept", 1)])
    consumer.seek_to_beginning()
    read = sorted(record.value for record in consumer)
    consumer.close()
    assert read == sorted(sent)


def test_missing_broker_jars_give_the_fix(overrides: list[str], tmp_path: Path) -> None:
    cfg = load_config(overrides=overrides)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIDEMARK_JARS_DIR", str(tmp_path / "no-jars"))
        with pytest.raises(StackError, match=r"kafka: kafka-broker jars missing .*bootstrap\.sh"):
            start_stack(cfg, ["kafka"])
