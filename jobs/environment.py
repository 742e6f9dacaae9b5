"""Build the Flink execution environment every tidemark job starts from.

Job-level Flink settings (checkpointing, state backend, restart strategy, Python execution
mode) come from `flink-conf/config.yaml`, the same file the local cluster is started with, so
a quick run on a local mini-cluster behaves like a job submitted with `flink run`. The
`flink:` section of the tidemark settings overrides them for one job.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pyflink.common import Configuration
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment
from ruamel.yaml import YAML

from tidemark.config import REPO_ROOT, Config, ConfigError

FLINK_CONFIG_PATH = REPO_ROOT / "flink-conf" / "config.yaml"

#: Key prefixes a job may set for itself; cluster keys (memory, ports) stay with the cluster.
JOB_LEVEL_PREFIXES = (
    "execution.",
    "state.",
    "restart-strategy.",
    "python.",
    "pipeline.",
    "table.",
    "parallelism.",
)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flink 2.x YAML may nest keys (`execution: {checkpointing: ...}`); flatten to dotted keys."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        elif isinstance(value, bool):
            flat[dotted] = str(value).lower()
        elif isinstance(value, list):
            flat[dotted] = ";".join(str(v) for v in value)
        else:
            flat[dotted] = str(value)
    return flat


def job_flink_settings(cfg: Config, flink_config_path: Path = FLINK_CONFIG_PATH) -> dict[str, str]:
    """The Flink keys a job sets: the repo file's job-level keys, defaults, then overrides."""
    tree = (
        YAML(typ="safe").load(flink_config_path.read_text()) if flink_config_path.is_file() else {}
    )
    settings = {k: v for k, v in flatten(tree or {}).items() if k.startswith(JOB_LEVEL_PREFIXES)}
    state_dir = cfg.state_dir
    settings.setdefault("execution.checkpointing.dir", (state_dir / "checkpoints").as_uri())
    settings.setdefault(
        "execution.checkpointing.savepoint-dir", (state_dir / "savepoints").as_uri()
    )
    settings["python.executable"] = sys.executable
    settings["python.client.executable"] = sys.executable
    settings.update(cfg.flink)
    mode = settings.get("python.execution-mode", "thread")
    if mode not in ("thread", "process"):
        raise ConfigError(f"flink.python.execution-mode: expected thread or process, got {mode!r}")
    return settings


def create_environment(
    cfg: Config, job_name: str
) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    """A streaming environment with the job's Flink settings and a table environment on it."""
    conf = Configuration()
    for key, value in job_flink_settings(cfg).items():
        conf.set_string(key, value)
    conf.set_string("pipeline.name", job_name)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.ingest.parallelism)
    t_env = StreamTableEnvironment.create(env)
    return env, t_env
