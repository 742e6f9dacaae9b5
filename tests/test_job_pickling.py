"""The job's functions survive the trip to a worker: pickled by value, loaded elsewhere.

Why this test exists: jobs pickle tidemark's packages by value (jobs/environment.py), and a
slotted dataclass came back from that trip without its attributes, so every event became a
dead letter. The round trip here runs in a separate interpreter, as a worker would.
"""

from __future__ import annotations

import subprocess
import sys

import cloudpickle

from jobs.environment import ship_code_by_value
from jobs.ingest import clickhouse_settings, validation_limits
from sinks.clickhouse import ClickHouseBatchWriter
from tidemark.config import load_config
from udfs.connector_records import BatchValidation

WORKER = """
import sys, cloudpickle
validator, writer = cloudpickle.loads(sys.stdin.buffer.read())
from_worker = validator.limits.max_event_bytes, writer.settings.batch_max_rows
print(from_worker[0], from_worker[1])
"""


def test_job_functions_round_trip_by_value_in_another_interpreter(tmp_path):
    ship_code_by_value()
    cfg = load_config(overrides=["ingest.max_event_bytes=12345", "ingest.batch_max_rows=777"])
    payload = cloudpickle.dumps(
        (
            BatchValidation(cfg.kafka.topic, validation_limits(cfg)),
            ClickHouseBatchWriter(clickhouse_settings(cfg)),
        )
    )
    # A fresh interpreter in an empty directory, as a worker unpickling the job would be.
    result = subprocess.run(
        [sys.executable, "-c", WORKER],
        input=payload,
        capture_output=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["12345", "777"]
