"""tidemark.config: the settings file, `--set` overrides and their checks.

Proves that the shipped defaults load; that overrides apply on top of the file and are coerced
to each field's type; that every kind of mistake (unknown key or section, wrong type,
non-positive count, bad port, bad `kafka.start_from`, missing `kafka.connector_jar`, a section
that is not a mapping, a YAML syntax error) fails with a ConfigError naming the key or file;
that `$TIDEMARK_CONFIG` selects the file; that the `flink:` section reaches the job as flat
string Flink keys; and that the CLI turns a bad key into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidemark.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    REPO_ROOT,
    ClickHouseConfig,
    ConfigError,
    IngestConfig,
    KafkaConfig,
    StackConfig,
    load_config,
)


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's $TIDEMARK_CONFIG must not change what these tests load."""
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)


def write(tmp_path: Path, text: str, name: str = "tidemark.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(overrides: list[str] | None = None, path: Path | None = None) -> str:
    """The message of the ConfigError that loading raises (fails the test if none is raised)."""
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_defaults_load_and_match_the_dataclass_defaults() -> None:
    cfg = load_config()
    assert cfg.source_path == str(DEFAULT_CONFIG_PATH)
    # The shipped file and the dataclass defaults must say the same thing.
    assert cfg.stack == StackConfig()
    assert cfg.kafka == KafkaConfig()
    assert cfg.clickhouse == ClickHouseConfig()
    assert cfg.ingest == IngestConfig()
    assert cfg.flink == {}
    assert cfg.kafka_bootstrap == "127.0.0.1:19092"
    assert cfg.clickhouse_port == 18123
    assert cfg.state_dir == REPO_ROOT / ".tidemark" / "stack"


def test_overrides_apply_and_coerce_types() -> None:
    cfg = load_config(
        overrides=[
            "kafka.partitions= 8 ",
            "kafka.topic=orders",
            "kafka.bootstrap_servers=b1:9092,b2:9092",
            "kafka.start_from=timestamp:1700000000000",
            "clickhouse.port=9000",
            "stack.state_dir=/tmp/elsewhere",
            "ingest.batch_max_rows=250",
            "kafka.topic=orders-v2",  # the last override of a key wins
        ]
    )
    assert cfg.kafka.partitions == 8 and isinstance(cfg.kafka.partitions, int)
    assert cfg.kafka.topic == "orders-v2"
    assert cfg.kafka_bootstrap == "b1:9092,b2:9092"
    assert cfg.kafka.start_from == "timestamp:1700000000000"
    assert cfg.clickhouse_port == 9000
    assert cfg.state_dir == Path("/tmp/elsewhere")
    assert cfg.ingest.batch_max_rows == 250
    # Untouched keys keep the file's values.
    assert cfg.kafka.dead_letter_topic == "tidemark.dead-letters"
    assert cfg.ingest.batch_max_seconds == 1


def test_batch_window_takes_fractions_of_a_second() -> None:
    assert load_config(overrides=["ingest.batch_max_seconds=0.25"]).ingest.batch_max_seconds == 0.25
    assert load_config(overrides=["ingest.batch_max_seconds=2"]).ingest.batch_max_seconds == 2.0


def test_yaml_scalars_coerce_to_the_declared_type(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  topic: 123\n  partitions: '6'\nclickhouse:\n  password:\n")
    cfg = load_config(path)
    assert cfg.kafka.topic == "123"
    assert cfg.kafka.partitions == 6
    assert cfg.clickhouse.password == ""
    # A partial file leaves every other key at its default.
    assert cfg.kafka.max_poll_records == KafkaConfig().max_poll_records
    assert cfg.stack == StackConfig()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("kafka.topik=x", "unknown key 'kafka.topik'"),
        ("clickhouse.hostname=h", "unknown key 'clickhouse.hostname'"),
        ("kafkaa.topic=x", "unknown section 'kafkaa'"),
        ("kafka.partitions=four", "kafka.partitions: expected an integer, got 'four'"),
        ("stack.kafka_port=1.5", "stack.kafka_port: expected an integer"),
        ("ingest.batch_max_rows=0", "ingest.batch_max_rows: must be positive, got 0"),
        ("ingest.batch_max_seconds=fast", "ingest.batch_max_seconds: expected a number"),
        ("ingest.batch_max_seconds=0", "ingest.batch_max_seconds: must be a whole number of ms"),
        ("ingest.batch_max_seconds=0.0005", "ingest.batch_max_seconds: must be a whole number"),
        ("ingest.batch_max_seconds=0.2505", "ingest.batch_max_seconds: must be a whole number"),
        ("ingest.batch_max_seconds=61", "from 0.01 to 60 s, got 61"),
        ("kafka.max_poll_records=-2", "kafka.max_poll_records: must be positive, got -2"),
        ("kafka.reader_slots=2", "unknown key 'kafka.reader_slots'"),
        ("stack.taskmanagers=0", "stack.taskmanagers: must be positive"),
        ("stack.kafka_port=70000", "stack.kafka_port: not a TCP port: 70000"),
        ("stack.clickhouse_port=0", "stack.clickhouse_port: not a TCP port: 0"),
        ("kafka.start_from=newest", "kafka.start_from: expected earliest, latest or timestamp"),
        ("kafka.start_from=timestamp:", "kafka.start_from"),
        ("kafka.start_from=timestamp:-5", "kafka.start_from"),
        ("kafka.connector_jar=/nonexistent/kafka.jar", "kafka.connector_jar: no such file"),
        ("kafka.topic", "expected section.key=value"),
        ("kafka=x", "expected section.key=value"),
        ("ingest.profile_stage=maybe", "ingest.profile_stage: expected true or false"),
        ("identity.shards=0", "identity.shards: must be positive, got 0"),
        ("redis.port=70000", "redis.port: not a TCP port: 70000"),
        ("enrichment.dimensions_dir=/nonexistent/dims", "enrichment.dimensions_dir: no such"),
        ("identity.rules={max_merges: -1}", "identity.rules.max_merges"),
        ("identity.rules={types: {email: {limit: 0}}}", "identity.rules.types.email.limit"),
        ("identity.rules={colour: blue}", "identity.rules.colour"),
        ("identity.rules=[1, 2]", "identity.rules: expected a mapping"),
        (
            "identity.rules={blocked_patterns: ['(bad']}",
            "identity.rules.blocked_patterns[0]: invalid regular expression",
        ),
        ("identity.rules={blocked_defaults: maybe}", "identity.rules.blocked_defaults: must be"),
        (
            "identity.rules={types: {phone: {limit: 5 fortnightly}}}",
            "identity.rules.types.phone.limit: must be a positive integer, optionally with a"
            " period (ever, daily, weekly, monthly, annually) such as '5 weekly',"
            " got '5 fortnightly'",
        ),
        (
            "identity.rules={types: {device_id: {reassign: sometimes}}}",
            "identity.rules.types.device_id.reassign: must be true or false, got 'sometimes'",
        ),
        ("windows.specs=1h/7m", "windows.specs: '1h/7m': the size must be a multiple"),
        ("windows.specs=1h", "windows.specs: '1h': expected size/slide"),
        ("windows.specs=", "windows.specs: no window spec given"),
        ("windows.allowed_lateness_ms=-1", "windows.allowed_lateness_ms: must not be negative"),
        ("windows.idle_timeout_ms=0", "windows.idle_timeout_ms: must be positive"),
        ("live.windows=30x", "live.windows[0]: invalid duration '30x'"),
        ("live.last_orders=0", "live.last_orders: must be positive"),
        ("live.triggers={x: {entity: team, when: [{metric: count, op: '>', value: 1}]}}",
         "live.triggers.x"),
        ("live.triggers={x: {entity: profile, when: [{metric: cart_value, op: '=>', value: 1}]}}",
         "live.triggers.x.when[0].op: unknown operator '=>'"),
    ],
)
def test_bad_override_names_the_key(override: str, named: str) -> None:
    assert named in config_error([override])


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("kafka:\n  topik: x\n", "unknown key 'kafka.topik'"),
        ("kafkaa:\n  topic: x\n", "unknown section 'kafkaa'"),
        ("kafka:\n  partitions: true\n", "kafka.partitions: expected an integer, got True"),
        ("kafka:\n  partitions: 2.5\n", "kafka.partitions: expected an integer"),
        ("kafka:\n  topic: [a, b]\n", "kafka.topic: expected a string"),
        ("ingest:\n  parallelism: 0\n", "ingest.parallelism: must be positive"),
        ("kafka: 5\n", "kafka: expected a mapping"),
        ("flink: [a]\n", "flink: expected a mapping"),
        ("identity:\n  rules:\n    blocked: 5\n", "identity.rules.blocked"),
        (
            "identity:\n  rules:\n    types:\n      email: {limit: 0 weekly}\n",
            "identity.rules.types.email.limit: must be a positive integer",
        ),
        ("redis:\n  key_prefix: [a]\n", "redis.key_prefix: expected a string"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    assert named in config_error(path=write(tmp_path, text))


def test_non_mapping_section_with_an_override_is_a_config_error(tmp_path: Path) -> None:
    """An override into a section the file wrote as a scalar must not crash with TypeError."""
    path = write(tmp_path, "kafka: 5\n")
    assert "kafka: expected a mapping" in config_error(["kafka.topic=x"], path)
    top_level_list = write(tmp_path, "- a\n", name="list.yaml")
    assert "expected a mapping at the top level" in config_error(["kafka.topic=x"], top_level_list)


def test_connector_jar_that_exists_is_accepted(tmp_path: Path) -> None:
    jar = tmp_path / "flink-sql-connector-kafka.jar"
    jar.write_bytes(b"PK\x03\x04")
    assert load_config(overrides=[f"kafka.connector_jar={jar}"]).kafka.connector_jar == str(jar)


def test_environment_variable_picks_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "kafka:\n  topic: from-env\n")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    cfg = load_config()
    assert cfg.kafka.topic == "from-env"
    assert cfg.source_path == str(path)
    # Overrides still apply on top, and an explicit path beats the variable.
    assert load_config(overrides=["kafka.topic=o"]).kafka.topic == "o"
    assert load_config(DEFAULT_CONFIG_PATH).kafka.topic == "tidemark.events"


def test_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.yaml"
    assert f"config file not found: {missing}" in config_error(path=missing)
    monkeypatch.setenv(CONFIG_ENV_VAR, str(missing))
    assert str(missing) in config_error()


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "kafka:\n  topic: [unclosed\n  partitions: 4\n")
    message = config_error(path=path)
    assert message.startswith(f"{path}: not valid YAML")


def test_flink_section_passes_through_as_flat_strings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "flink:\n"
        "  parallelism.default: 2\n"
        "  pipeline.object-reuse: true\n"
        "  execution:\n"  # Flink 2.x YAML may nest keys
        "    checkpointing:\n"
        "      interval: 5 s\n"
        "  pipeline.jars: [file:///a.jar, file:///b.jar]\n",
    )
    cfg = load_config(path, ["flink.state.backend.type=rocksdb", "flink.parallelism.default=3"])
    assert cfg.flink == {
        "parallelism.default": "3",
        "pipeline.object-reuse": "true",
        "execution.checkpointing.interval": "5 s",
        "pipeline.jars": "file:///a.jar;file:///b.jar",
        "state.backend.type": "rocksdb",
    }


def test_cli_reports_an_unknown_key_on_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV_VAR}
    result = subprocess.run(
        [sys.executable, "-m", "tidemark.cli", "--set", "kafka.topik=x", "topics", "describe"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tidemark: configuration error: unknown key 'kafka.topik'")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
