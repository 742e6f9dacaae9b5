"""The Kafka broker of the local stack: Apache Kafka 4.1 in KRaft mode, one node.

The broker's jars come from Maven Central, pinned in `flink-conf/jars.lock` and fetched by
bootstrap (`tidemark.jars`); this module runs `kafka.Kafka` on them with one JVM that is both
controller and broker. Its log segments and KRaft metadata live under
`<state_dir>/kafka/data`, formatted once (`kafka.tools.StorageTool format`), so a restart of
this component keeps topics, offsets and committed transactions, as a production broker does.
The settings are those of a single-node development cluster: replication factor 1 for the
internal topics, and no group-join delay (tests and the demo start consumers often).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import uuid
from pathlib import Path

from kafka import KafkaAdminClient

from tidemark import jars
from tidemark.config import Config
from tidemark.stack import process
from tidemark.stack.process import LOOPBACK, ComponentStatus, Daemon, StackError

NAME = "kafka"
MAIN_CLASS = "kafka.Kafka"
HEAP = "-Xmx768m"  # the broker of a laptop stack; Kafka's own script defaults to 1 GiB


def port(cfg: Config) -> int:
    """The broker's client listener port."""
    return cfg.stack.kafka_port


def controller_port(cfg: Config) -> int:
    """The KRaft controller's listener port (loopback only, never advertised to clients)."""
    return cfg.stack.kafka_controller_port


def home(cfg: Config) -> Path:
    """`<state_dir>/kafka`: server.properties, log4j2 settings and the data directory."""
    return cfg.state_dir / "kafka"


def data_dir(cfg: Config) -> Path:
    """Log segments and KRaft metadata; kept across restarts."""
    return home(cfg) / "data"


def server_properties(cfg: Config) -> str:
    """The broker's configuration: combined controller + broker, loopback listeners."""
    client, controller = port(cfg), controller_port(cfg)
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK}:{controller}",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{client},CONTROLLER://{LOOPBACK}:{controller}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{client}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir(cfg)),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Flink's KafkaSink keeps a transaction open for up to one checkpoint plus recovery
        "transaction.max.timeout.ms": "900000",
        "auto.create.topics.enable": "false",
        "log.retention.hours": "168",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


LOG4J2 = """\
Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka.server.KafkaRaftServer
        level: INFO
"""


def java() -> str:
    """The `java` of JAVA_HOME, else of PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise StackError("kafka: java not found: install Java 17 (openjdk-17-jre-headless)")
    return found


def java_argv(cfg: Config, main_class: str, *args: str) -> list[str]:
    """A JVM running `main_class` on the broker's pinned jars."""
    try:
        classpath = os.pathsep.join(str(p) for p in jars.classpath(jars.KAFKA_BROKER))
    except jars.JarError as exc:
        raise StackError(f"kafka: {exc}") from exc
    log4j = home(cfg) / "log4j2.yaml"
    return [
        java(), HEAP, "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp", classpath, main_class, *args,
    ]  # fmt: skip


def prepare(cfg: Config) -> Path:
    """Write the broker's settings; format the data directory on first start only."""
    directory = home(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    properties = directory / "server.properties"
    properties.write_text(server_properties(cfg))
    (directory / "log4j2.yaml").write_text(LOG4J2)
    if not (data_dir(cfg) / "meta.properties").is_file():
        cluster_id = _cluster_id()
        argv = java_argv(
            cfg, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(properties)
        )
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(
                f"kafka: formatting {data_dir(cfg)} failed:\n{done.stdout}{done.stderr}"
            )
    return properties


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, as Kafka's own
    `Uuid.randomUuid()`, which also never starts with '-' (the storage tool rejects those,
    taking them for an option)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def metadata_ok(broker_port: int) -> bool:
    """A real Kafka metadata request (ListTopics) succeeds, with short timeouts.

    The TCP pre-check keeps kafka-python from logging bootstrap warnings while the broker is
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
        marker=f"{MAIN_CLASS} {home(cfg) / 'server.properties'}",
        health=lambda: metadata_ok(broker_port),
        start_timeout=60,
        stop_grace=15,  # a clean shutdown spares the next start a log recovery
        other_ports=((controller_port(cfg), "stack.kafka_controller_port"),),
    )


def start(cfg: Config) -> ComponentStatus:
    """Start the broker on its data directory (formatted on the first start)."""
    broker = daemon(cfg)
    if process.running_pid(broker) is not None:  # its files were written when it started
        return process.status(broker, state_if_healthy="already running")
    return process.start(broker, java_argv(cfg, MAIN_CLASS, str(prepare(cfg))))


def stop(cfg: Config) -> ComponentStatus:
    """Stop the broker; its topics stay on disk for the next start."""
    return process.stop(daemon(cfg))


def status(cfg: Config) -> ComponentStatus:
    """Pid alive and a metadata request answered."""
    return process.status(daemon(cfg))
