"""The chDB HTTP front, driven exactly as production code drives ClickHouse.

The server runs as a real subprocess on a free port with its own data directory, and every
check goes through stock clickhouse-connect (or plain HTTP), so what passes here is what the
pipeline's clients will see.
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import lz4.frame
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from tidemark.stack.chdb_http import decode_body, split_insert

REPO = Path(__file__).resolve().parents[1]
UTC = dt.UTC


class ChdbServer:
    """A `python -m tidemark.stack.chdb_http` subprocess that can be stopped and restarted."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tidemark.stack.chdb_http"),
                    *("--path", str(self.data_dir), "--host", "127.0.0.1"),
                    *("--port", str(self.port), "--log-level", "debug"),
                ],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                if self.get("/ping") == (200, b"Ok.\n"):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"server did not answer /ping: {self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM, as an operator or supervisor would; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self.proc = None
        return code

    def get(self, path: str) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()

    def client(self, **kwargs: object) -> Client:
        return clickhouse_connect.get_client(host="127.0.0.1", port=self.port, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbServer]:
    root = tmp_path_factory.mktemp("chdb_http")
    srv = ChdbServer(root / "data", root / "server.log")
    srv.start()
    yield srv
    if srv.proc is not None:
        assert srv.stop() == 0


@pytest.fixture
def client(server: ChdbServer) -> Iterator[Client]:
    ch = server.client()
    yield ch
    ch.close()


def test_ping_and_root_health_check(server: ChdbServer) -> None:
    assert server.get("/ping") == (200, b"Ok.\n")
    assert server.get("/") == (200, b"Ok.\n")


def test_query_from_url_parameter_with_default_format(server: ChdbServer) -> None:
    status, body = server.get("/?query=SELECT%20number%20FROM%20numbers(3)&default_format=CSV")
    assert (status, body) == (200, b"0\n1\n2\n")


def test_client_sees_the_real_engine(client: Client) -> None:
    assert client.server_version.startswith("26.")
    assert client.command("SELECT 1") == 1
    assert client.command("SELECT 1 WHERE 0") == ""  # a result set, just empty
    assert client.command("SELECT 'a', 'b'") == ["a", "b"]


ROW_TYPES = """
    id UInt64,
    ts DateTime64(6, 'UTC'),
    amount Decimal(38, 12),
    tags Map(String, String),
    labels Array(String),
    service LowCardinality(String),
    note Nullable(String),
    score Nullable(Float64)
"""


def test_native_lz4_insert_round_trips_exact_values(client: Client) -> None:
    client.command(f"CREATE TABLE native_rows ({ROW_TYPES}) ENGINE = MergeTree ORDER BY id")
    rows = [
        [
            1,
            dt.datetime(2026, 11, 22, 6, 7, 8, 123456, tzinfo=UTC),
            Decimal("12345678901234567890.123456789012"),
            {"team": "core", "env": "prod"},
            ["a", "b'c", "tab\there"],
            "ec2",
            None,
            None,
        ],
        [
            2,
            dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            Decimal("-0.000000000001"),
            {},
            [],
            "s3",
            "quoted 'note' \\ backslash",
            2.5,
        ],
    ]
    columns = ["id", "ts", "amount", "tags", "labels", "service", "note", "score"]
    summary = client.insert("native_rows", rows, column_names=columns)
    assert summary.written_rows == 2
    # clickhouse-connect's default tz_mode returns UTC values as naive datetimes.
    expected = [
        [v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v for v in row] for row in rows
    ]
    result = client.query("SELECT * FROM native_rows ORDER BY id").result_rows
    assert [list(row) for row in result] == expected
    assert client.query("SELECT toTypeName(service) FROM native_rows LIMIT 1").result_rows == [
        ("LowCardinality(String)",)
    ]


def test_large_lz4_insert_arrives_as_several_frames(client: Client) -> None:
    client.command("CREATE TABLE many (id UInt64, s String) ENGINE = MergeTree ORDER BY id")
    # clickhouse-connect compresses each ~1 MB block as its own lz4 frame.
    client.insert("many", [[i, "x" * 20] for i in range(300_000)], column_names=["id", "s"])
    assert client.command("SELECT count(), sum(id) FROM many") == ["300000", "44999850000"]


def test_lz4_body_of_concatenated_frames_is_fully_decoded() -> None:
    body = lz4.frame.compress(b"INSERT INTO t FORMAT CSV\n1\n") + lz4.frame.compress(b"2\n")
    assert decode_body(body, "lz4") == b"INSERT INTO t FORMAT CSV\n1\n2\n"


@pytest.mark.parametrize("compress", ["zstd", "gzip", False])
def test_other_request_encodings(server: ChdbServer, compress: str | bool) -> None:
    client = server.client(compress=compress)
    table = f"enc_{compress or 'none'}"
    client.command(f"CREATE TABLE {table} (id UInt64) ENGINE = MergeTree ORDER BY id")
    client.insert(table, [[i] for i in range(1000)], column_names=["id"])
    assert client.command(f"SELECT sum(id) FROM {table}") == 499500


def test_arrow_insert_and_arrow_and_dataframe_queries(client: Client) -> None:
    client.command(f"CREATE TABLE arrow_rows ({ROW_TYPES}) ENGINE = MergeTree ORDER BY id")
    n = 50_000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.uint64()),
            "ts": pa.array(
                [dt.datetime(2026, 1, 1) + dt.timedelta(microseconds=i) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
            "amount": pa.array([Decimal(i) / 1000 for i in range(n)], pa.decimal128(38, 12)),
            "tags": pa.array(
                [[("k", str(i))] for i in range(n)], pa.map_(pa.string(), pa.string())
            ),
            "labels": pa.array([["x", str(i)] for i in range(n)], pa.list_(pa.string())),
            "service": pa.array([f"svc{i % 3}" for i in range(n)]),
            "note": pa.array([None if i % 2 else "n" for i in range(n)], pa.string()),
            "score": pa.array([None if i % 2 else i / 2 for i in range(n)], pa.float64()),
        }
    )
    assert client.insert_arrow("arrow_rows", table).written_rows == n
    row = client.query("SELECT * FROM arrow_rows WHERE id = 12345").result_rows[0]
    assert row == (
        12345,
        dt.datetime(2026, 1, 1, 0, 0, 0, 12345),
        Decimal("12.345"),
        {"k": "12345"},
        ["x", "12345"],
        "svc0",
        None,
        None,
    )
    back = client.query_arrow("SELECT id, amount, service FROM arrow_rows ORDER BY id")
    assert back.num_rows == n
    assert back.column("amount").to_pylist()[:3] == [
        Decimal("0"),
        Decimal("0.001"),
        Decimal("0.002"),
    ]
    frame = client.query_df(
        "SELECT service, count() AS c FROM arrow_rows GROUP BY service ORDER BY 1"
    )
    assert frame.to_dict("records") == [
        {"service": "svc0", "c": 16667},
        {"service": "svc1", "c": 16667},
        {"service": "svc2", "c": 16666},
    ]


def test_replacing_merge_tree_final_keeps_the_latest_version(client: Client) -> None:
    client.command(
        "CREATE TABLE latest (k String, v String, ver UInt64) "
        "ENGINE = ReplacingMergeTree(ver) ORDER BY k"
    )
    client.insert("latest", [["a", "old", 1], ["b", "only", 1]], column_names=["k", "v", "ver"])
    client.insert("latest", [["a", "new", 2]], column_names=["k", "v", "ver"])
    client.insert("latest", [["a", "stale replay", 1]], column_names=["k", "v", "ver"])
    rows = client.query("SELECT k, v, ver FROM latest FINAL ORDER BY k").result_rows
    assert rows == [("a", "new", 2), ("b", "only", 1)]


def test_insert_deduplication_token_on_raw_json_insert(client: Client) -> None:
    client.command(
        "CREATE TABLE dedup (id UInt64, v String) ENGINE = MergeTree ORDER BY id "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    block = b'{"id": 1, "v": "a"}\n{"id": 2, "v": "b"}\n'

    def insert(token: str) -> None:
        client.raw_insert(
            "dedup",
            ["id", "v"],
            insert_block=block,
            fmt="JSONEachRow",
            settings={"insert_deduplication_token": token},
        )

    insert("batch-1")
    insert("batch-1")  # a replay of the same batch adds nothing
    assert client.command("SELECT count() FROM dedup") == 2
    insert("batch-2")
    assert client.command("SELECT count() FROM dedup") == 4


def test_server_side_and_client_side_parameters(client: Client) -> None:
    awkward = "tab\t quote' backslash\\ newline\n"
    rows = client.query(
        "SELECT {s:String}, {a:Array(String)}, {t:DateTime64(3, 'UTC')}, {d:Decimal(38, 12)}",
        parameters={
            "s": awkward,
            "a": ["x", "y'z"],
            "t": dt.datetime(2026, 11, 22, 1, 2, 3, 456000),
            "d": Decimal("1.000000000001"),
        },
    ).result_rows
    assert rows == [
        (
            awkward,
            ["x", "y'z"],
            dt.datetime(2026, 11, 22, 1, 2, 3, 456000),
            Decimal("1.000000000001"),
        )
    ]
    long_value = "v" * 10_000  # past 4 kB clickhouse-connect sends a multipart form instead
    assert client.query("SELECT length({s:String})", parameters={"s": long_value}).result_rows == [
        (10_000,)
    ]
    assert client.query("SELECT %(n)s + 1", parameters={"n": 41}).result_rows == [(42,)]


def test_settings_apply_to_their_own_request_only(client: Client) -> None:
    setting = "SELECT getSetting('max_block_size')"
    default = client.query(setting).result_rows
    assert client.query(setting, settings={"max_block_size": 1234}).result_rows == [(1234,)]
    assert client.query(setting).result_rows == default != [(1234,)]
    client.command("SET max_block_size = 4321")  # no session: lasts for that request only
    assert client.query(setting).result_rows == default


def test_database_parameter(server: ChdbServer, client: Client) -> None:
    client.command("CREATE DATABASE IF NOT EXISTS other")
    other = server.client(database="other")
    assert other.command("SELECT currentDatabase()") == "other"
    assert client.command("SELECT currentDatabase()") == "default"


def test_errors_raise_database_error_with_the_clickhouse_message(client: Client) -> None:
    with pytest.raises(DatabaseError, match=r"Code: 60\..*UNKNOWN_TABLE") as unknown:
        client.query("SELECT * FROM no_such_table")
    assert unknown.value.code == 60
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR"):
        client.command("SELEKT 1")
    client.command("CREATE TABLE strict (id UInt64) ENGINE = MergeTree ORDER BY id")
    with pytest.raises(DatabaseError, match="Code: "):
        client.raw_insert("strict", ["id"], insert_block=b'{"id": "nope"}\n', fmt="JSONEachRow")
    assert client.command("SELECT 1") == 1  # the server is still fine


def test_split_insert_finds_the_data_after_format() -> None:
    assert split_insert(b"INSERT INTO t (a) FORMAT Native\n\x00\n") == (
        "INSERT INTO t (a) ",
        "Native",
        b"\x00\n",
    )
    assert split_insert(b"INSERT INTO t SETTINGS x='FORMAT y' FORMAT CSV 1,2") == (
        "INSERT INTO t SETTINGS x='FORMAT y' ",
        "CSV",
        b"1,2",
    )
    assert split_insert(b"INSERT INTO t (format) VALUES (1)") is None
    assert split_insert(b"INSERT INTO t SELECT 1 FORMAT Native") is None
    assert split_insert(b"SELECT 1 FORMAT Native") is None


def test_data_survives_a_restart(server: ChdbServer, client: Client) -> None:
    client.command("CREATE TABLE durable (id UInt64, v String) ENGINE = MergeTree ORDER BY id")
    client.insert("durable", [[1, "kept"], [2, "also kept"]], column_names=["id", "v"])
    assert server.stop() == 0
    server.start()
    again = server.client()
    assert again.query("SELECT * FROM durable ORDER BY id").result_rows == [
        (1, "kept"),
        (2, "also kept"),
    ]
