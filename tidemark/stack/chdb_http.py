"""ClickHouse's HTTP interface in front of one chDB data directory.

No modern ClickHouse server can be installed on these machines, but the real engine is on
PyPI as chDB. chDB runs in-process, opens no port, and only one process may own a data
directory, while several processes (Flink's Python workers, the CLI, a dashboard) must share
one store. This process owns the directory and speaks the subset of ClickHouse's HTTP
protocol that clickhouse-connect uses, so every client is a stock
`clickhouse_connect.get_client(host=..., port=...)`, exactly as against a production server.

    python -m tidemark.stack.chdb_http --path /abs/data/dir --host 127.0.0.1 --port 18123

What is served, following ClickHouse's HTTP handler:
- `GET /ping` and `GET /` answer `Ok.` (health checks);
- the query is the `query` URL parameter followed by a newline and the request body (either
  may be absent), so `INSERT ... FORMAT X` in the URL with the data in the body works;
  multipart form bodies (clickhouse-connect's route for long parameters) are read as fields;
- request bodies may be lz4 (several concatenated frames), zstd, gzip or deflate encoded;
- URL parameters: `database`, `default_format`, `param_<name>` for `{name:Type}`
  placeholders, `query_id`; every other parameter is a ClickHouse setting, except the
  transport-only ones in `TRANSPORT_PARAMS`, which are accepted and ignored;
- errors are `Code: N. DB::Exception: ...` bodies with ClickHouse's HTTP status and the
  `X-ClickHouse-Exception-Code` header, so clients raise their usual DatabaseError.

Differences from a server, all deliberate to stay small: one chDB connection serialises all
queries (chDB is in-process; a lock is simpler and a few ms per query is enough here);
results are buffered, not streamed; responses are never compressed (localhost); there is no
authentication, no sessions (a `SET` or `USE` statement lasts for its own request only,
as over HTTP without `session_id`) and no external-data tables.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import gzip
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.frame
from backports import zstd

log = logging.getLogger("tidemark.chdb_http")

# HTTP-interface parameters that are not ClickHouse settings: handled here, or meaningless for
# a buffered, unauthenticated, sessionless front. Sending them to chDB as settings would
# either fail (not settings at all) or do nothing. client_protocol_version would only add a
# TCP-style block header to Native output; plain Native is sent, which clients accept.
# fmt: off
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "wait_end_of_query", "buffer_size", "client_protocol_version",
    "enable_http_compression", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "quota_key", "role", "user", "password",
})
# fmt: on

# ClickHouse's own compression framing of request/response bodies is not implemented.
UNSUPPORTED_PARAMS = ("compress", "decompress")

_SETTING_NAME = re.compile(r"[A-Za-z_]\w*\Z")
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
_TRAILING_FORMAT = re.compile(rb"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_LEADING_COMMENTS = re.compile(rb"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
# Statements that produce a result set (ClickHouse then sends X-ClickHouse-Format even for an
# empty result, which is how clickhouse-connect's command() tells "" from a summary).
_RESULT_STATEMENT = re.compile(
    rb"\(*\s*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS|CHECK|FROM)\b", re.IGNORECASE
)
_SESSION_STATEMENT = re.compile(rb"(SET|USE)\b", re.IGNORECASE)
_WORD = re.compile(rb"\w+")

# ClickHouse's HTTP status for an exception (HTTPHandler's exceptionCodeToHTTPStatus, abridged).
# fmt: off
_BAD_REQUEST = frozenset({
    "SYNTAX_ERROR", "TYPE_MISMATCH", "INCORRECT_DATA", "ILLEGAL_COLUMN", "DUPLICATE_COLUMN",
    "THERE_IS_NO_COLUMN", "UNKNOWN_ELEMENT_IN_AST", "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
})
_NOT_FOUND = frozenset({
    "UNKNOWN_TABLE", "UNKNOWN_DATABASE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
    "UNKNOWN_STORAGE", "UNKNOWN_SETTING", "UNKNOWN_FORMAT", "UNKNOWN_AGGREGATE_FUNCTION",
    "UNKNOWN_DATABASE_ENGINE",
})
# fmt: on


class ClickHouseError(Exception):
    """A ClickHouse exception with the code and name the HTTP response must carry."""

    def __init__(self, message: str) -> None:
        # chDB prefixes some engine messages ("Streaming insert append failed: Code: ...");
        # ClickHouse's own text starts at "Code: ". Anything else becomes an STD_EXCEPTION.
        start = message.find("Code: ")
        if start >= 0:
            message = message[start:].strip()
        else:
            message = f"Code: 1001. DB::Exception: {message}. (STD_EXCEPTION)"
        super().__init__(message)
        code = _ERROR_CODE.match(message)
        name = _ERROR_NAME.search(message)
        self.code = int(code.group(1)) if code else 1001
        self.name = name.group(1) if name else ""

    @property
    def http_status(self) -> int:
        """The status ClickHouse's HTTP handler would answer this exception with."""
        if self.name in _BAD_REQUEST or self.name.startswith("CANNOT_PARSE"):
            return 400
        if self.name in _NOT_FOUND:
            return 404
        if self.name == "NOT_IMPLEMENTED":
            return 501
        return 500


@dataclass
class Request:
    """One query as ClickHouse's HTTP handler sees it, transport details removed."""

    sql: bytes
    database: str
    settings: dict[str, str]
    params: dict[str, str]  # query parameters, without the param_ prefix
    default_format: str
    query_id: str


@dataclass
class Result:
    """What chDB answered: the body, its format when it is a result set, and statistics."""

    body: bytes
    fmt: str | None
    summary: dict[str, str]


def split_insert(sql: bytes) -> tuple[str, str, bytes] | None:
    """Split `INSERT ... FORMAT <fmt><data>` into (statement, format, data), else None.

    Data after FORMAT is often binary (Native, Arrow) and chDB corrupts binary data passed
    inside the query text, so inserts with data go through chDB's streaming insert instead.
    Only the SQL head is scanned: quoted strings, comments and parentheses are skipped so a
    "format" column or literal does not count; INSERT ... SELECT and INSERT ... VALUES carry
    no foreign data and run as plain queries. A table literally named `format` needs quoting.
    """
    pos = _LEADING_COMMENTS.match(sql).end()
    if sql[pos : pos + 6].upper() != b"INSERT":
        return None
    depth, end = 0, len(sql)
    while pos < end:
        char = sql[pos : pos + 1]
        if char in (b"'", b'"', b"`"):
            pos = _skip_quoted(sql, pos)
        elif sql.startswith((b"--", b"/*"), pos):
            pos = _LEADING_COMMENTS.match(sql, pos).end()
        elif char in (b"(", b")"):
            depth += 1 if char == b"(" else -1
            pos += 1
        elif word := _WORD.match(sql, pos):
            keyword = word.group().upper()
            after_dot = sql[pos - 1 : pos] == b"."
            if depth == 0 and not after_dot and keyword in (b"SELECT", b"WITH", b"VALUES"):
                return None
            if depth == 0 and not after_dot and keyword == b"FORMAT":
                fmt = _WORD.match(sql, _LEADING_COMMENTS.match(sql, word.end()).end())
                if fmt is None:
                    return None
                return sql[:pos].decode(), fmt.group().decode(), sql[_data_start(sql, fmt.end()) :]
            pos = word.end()
        else:
            pos += 1
    return None


def _skip_quoted(sql: bytes, pos: int) -> int:
    """Position after the quoted string or identifier starting at pos (\\ and doubled quotes)."""
    quote, pos = sql[pos], pos + 1
    while pos < len(sql):
        if sql[pos] == 0x5C:  # backslash escapes the next byte
            pos += 2
        elif sql[pos] == quote and sql[pos + 1 : pos + 2] != bytes([quote]):
            return pos + 1
        else:
            pos += 2 if sql[pos] == quote else 1
    return pos


def _data_start(sql: bytes, pos: int) -> int:
    """ClickHouse's rule: data starts after the first newline, else after the blanks."""
    while sql[pos : pos + 1] in (b" ", b"\t", b"\f"):
        pos += 1
    if sql.startswith(b"\r\n", pos):
        return pos + 2
    return pos + 1 if sql.startswith(b"\n", pos) else pos


def _quote(value: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """The chDB connection, one query at a time, with each request's database and settings.

    Settings and the current database are connection state in chDB. Rather than SET and
    restore around every query (several extra calls each), the connection keeps what the
    last request needed and only the difference is applied: clients send the same settings
    on every request, so the steady state costs nothing.
    """

    def __init__(self, path: str) -> None:
        self._conn: Any = chdb.connect(path)
        self._lock = threading.Lock()
        self._database: str | None = "default"
        self._applied: dict[str, str] = {}  # settings this front has changed on the connection
        # Settings chDB itself changes at start-up: "restoring" one means going back to these.
        self._baseline = self._changed_settings()
        version, tz = self._run("SELECT version(), timezone()").body.decode().split()
        self.version, self.timezone = version, tz

    def execute(self, request: Request) -> Result:
        """Run one request's statement, raising ClickHouseError as ClickHouse would."""
        with self._lock:
            if self._conn is None:
                raise ClickHouseError("Code: 1001. DB::Exception: Server is shutting down.")
            self._use(request.database)
            self._apply(request.settings)
            insert = split_insert(request.sql)
            if insert is not None:
                return self._insert(*insert)
            result = self._run(request.sql, request.default_format, request.params)
            if _SESSION_STATEMENT.match(request.sql, _LEADING_COMMENTS.match(request.sql).end()):
                # The statement changed connection state behind our back: resynchronise, so
                # the next request puts it back (no sessions: SET/USE last one request).
                self._database = None
                self._applied = {
                    name: value
                    for name, value in self._changed_settings().items()
                    if self._baseline.get(name) != value
                }
            return result

    def close(self) -> None:
        """Close chDB after the running query: parts and metadata are then safely on disk."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _run(
        self, sql: bytes | str, fmt: str = "TabSeparated", params: dict[str, str] | None = None
    ) -> Result:
        try:
            res = self._conn.query(sql, fmt, params=params or {})
        except RuntimeError as exc:  # chDB's ChdbError is a RuntimeError
            raise ClickHouseError(str(exc)) from None
        body = res.bytes() or b""
        raw = sql.encode() if isinstance(sql, str) else sql
        head = raw[_LEADING_COMMENTS.match(raw).end() :]
        produces_result = bool(body) or _RESULT_STATEMENT.match(head) is not None
        trailing = _TRAILING_FORMAT.search(raw)
        out_fmt = trailing.group(1).decode() if trailing else fmt
        summary = {
            "read_rows": res.rows_read(),
            "read_bytes": res.bytes_read(),
            "written_rows": res.rows_written(),
            "written_bytes": res.bytes_written(),
            "elapsed_ns": int(res.elapsed() * 1e9),
        }
        return Result(body, out_fmt if produces_result else None, _strings(summary))

    def _insert(self, statement: str, fmt: str, data: bytes) -> Result:
        started = time.perf_counter()  # chDB's InsertResult.elapsed counts from the last query
        try:
            inserter = self._conn.send_insert(statement, fmt)
            try:
                if data:
                    inserter.append(data)
                res = inserter.finish()
            except BaseException:
                inserter.cancel()
                raise
        except RuntimeError as exc:
            raise ClickHouseError(str(exc)) from None
        summary = {
            "written_rows": res.rows_written,
            "written_bytes": res.bytes_written,
            "elapsed_ns": int((time.perf_counter() - started) * 1e9),
        }
        return Result(b"", None, _strings(summary))

    def _use(self, database: str) -> None:
        if database != self._database:
            self._run(f"USE `{database.replace('`', '``')}`")
            self._database = database

    def _apply(self, settings: dict[str, str]) -> None:
        for name in [name for name in self._applied if name not in settings]:
            baseline = self._baseline.get(name)
            self._run(f"SET {name} = {'DEFAULT' if baseline is None else _quote(baseline)}")
            del self._applied[name]
        for name, value in settings.items():
            if self._applied.get(name) != value:
                if not _SETTING_NAME.match(name):
                    raise ClickHouseError(
                        f"Code: 115. DB::Exception: Unknown setting '{name}'. (UNKNOWN_SETTING)"
                    )
                self._run(f"SET {name} = {_quote(value)}")
                self._applied[name] = value

    def _changed_settings(self) -> dict[str, str]:
        rows = self._run("SELECT name, value FROM system.settings WHERE changed", "JSONEachRow")
        settings = (json.loads(line) for line in rows.body.splitlines())
        # The current database is a "setting" in chDB; _use manages it.
        return {row["name"]: row["value"] for row in settings if row["name"] != "database"}


def _strings(summary: dict[str, int]) -> dict[str, str]:
    """ClickHouse sends every X-ClickHouse-Summary number as a JSON string."""
    return {key: str(value) for key, value in summary.items()}


def decode_body(body: bytes, encoding: str) -> bytes:
    """Undo a request's Content-Encoding. clickhouse-connect compresses each insert block as
    its own lz4 frame, so an lz4 body is a sequence of frames and all of them are decoded."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("lz4", "zstd", "gzip", "deflate"):
        raise ClickHouseError(
            f"Code: 48. DB::Exception: Unsupported Content-Encoding '{encoding}'. (NOT_IMPLEMENTED)"
        )
    try:
        if encoding == "zstd":
            return zstd.decompress(body)  # reads across concatenated frames
        if encoding == "gzip":
            return gzip.decompress(body)  # reads across concatenated members
        if encoding == "deflate":
            return zlib.decompress(body)
        parts = []
        while body:
            decompressor = lz4.frame.LZ4FrameDecompressor()
            parts.append(decompressor.decompress(body))
            if not decompressor.eof:
                raise ValueError("truncated lz4 frame")
            body = decompressor.unused_data
        return b"".join(parts)
    except Exception as exc:
        raise ClickHouseError(
            f"Code: 271. DB::Exception: Cannot decompress {encoding} request body: {exc}. "
            "(CANNOT_DECOMPRESS)"
        ) from None


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The fields of a multipart/form-data body (query and param_* when they are long)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields = {}
    for part in message.iter_parts():
        if part.get_filename():
            raise ClickHouseError(
                "Code: 48. DB::Exception: External data is not supported. (NOT_IMPLEMENTED)"
            )
        name = part.get_param("name", header="content-disposition")
        fields[str(name)] = (part.get_payload(decode=True) or b"").decode()
    return fields


def parse_request(target: str, headers: Message, body: bytes) -> Request:
    """Turn an HTTP request into a Request, following ClickHouse's HTTP handler."""
    url_params = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
    if headers.get_content_type() == "multipart/form-data":
        url_params.update(form_fields(headers.get("Content-Type", ""), body))
        body = b""
    else:
        body = decode_body(body, headers.get("Content-Encoding", ""))
    for name in UNSUPPORTED_PARAMS:
        if url_params.get(name, "0") not in ("", "0"):
            raise ClickHouseError(
                f"Code: 48. DB::Exception: Parameter {name}=1 is not supported. (NOT_IMPLEMENTED)"
            )
    query = url_params.get("query", "")
    sql = (query.encode() + b"\n" + body) if query else body
    params = {k[6:]: v for k, v in url_params.items() if k.startswith("param_")}
    settings = {
        k: v
        for k, v in url_params.items()
        if k not in TRANSPORT_PARAMS and k not in UNSUPPORTED_PARAMS and not k.startswith("param_")
    }
    return Request(
        sql=sql,
        database=url_params.get("database") or "default",
        settings=settings,
        params=params,
        default_format=url_params.get("default_format") or "TabSeparated",
        query_id=url_params.get("query_id") or str(uuid.uuid4()),
    )


def content_type(fmt: str) -> str:
    """The Content-Type ClickHouse gives a format's output (close enough for clients)."""
    lower = fmt.lower()
    if lower.startswith("json"):
        return "application/json; charset=UTF-8"
    if lower.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if lower.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if lower.startswith(("native", "arrow", "parquet", "rowbinary", "orc", "avro", "msgpack")):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


class Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 connection; keep-alive so clients' connection pools are reused."""

    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        self._started = time.perf_counter()
        url = urlsplit(self.path)
        body = self._read_body()
        if url.path == "/ping" or (
            url.path == "/" and not body and "query" not in dict(parse_qsl(url.query))
        ):
            self._send(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"}, "ping")
        elif url.path != "/":
            self._send(404, f"There is no handle {url.path}\n".encode(), {}, "no handler")
        else:
            self._query(body)

    def _query(self, body: bytes) -> None:
        engine = self.server.engine
        headers = {
            "X-ClickHouse-Server-Display-Name": self.server.display_name,
            "X-ClickHouse-Query-Id": str(uuid.uuid4()),
            "X-ClickHouse-Timezone": engine.timezone,
        }
        try:
            request = parse_request(self.path, self.headers, body)
            headers["X-ClickHouse-Query-Id"] = request.query_id
            if "session_timezone" in request.settings:
                headers["X-ClickHouse-Timezone"] = request.settings["session_timezone"]
            result = engine.execute(request)
        except Exception as exc:
            # Anything else (a malformed body, a bug) must still get an HTTP answer, not a
            # dropped connection that the client would take for a network failure.
            if not isinstance(exc, ClickHouseError):
                log.exception("request failed")
            error = exc if isinstance(exc, ClickHouseError) else ClickHouseError(repr(exc))
            headers["X-ClickHouse-Exception-Code"] = str(error.code)
            headers["Content-Type"] = "text/plain; charset=UTF-8"
            text = f"{error} (version {engine.version})\n"
            self._send(error.http_status, text.encode(), headers, text[:300].strip())
            return
        headers["X-ClickHouse-Summary"] = json.dumps(result.summary)
        if result.fmt is not None:
            headers["X-ClickHouse-Format"] = result.fmt
        headers["Content-Type"] = content_type(result.fmt or "TabSeparated")
        self._send(200, result.body, headers, _snippet(request.sql))

    def _read_body(self) -> bytes:
        """The request body, de-chunked: clickhouse-connect streams inserts chunked."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline().strip():  # optional trailers, then the blank line
            pass
        return b"".join(chunks)

    def _send(self, status: int, body: bytes, headers: dict[str, str], detail: str) -> None:
        """Write the whole response, then log it as the request's one debug line."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        elapsed_ms = (time.perf_counter() - self._started) * 1000
        log.debug("%s %d %dB %.1fms %s", self.command, status, len(body), elapsed_ms, detail)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: _handle logs one richer line per request."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s: " + format, self.address_string(), *args)


def _snippet(sql: bytes) -> str:
    """The first line of a statement, short enough for a log line (never the insert data)."""
    return sql[:120].split(b"\n", 1)[0].decode(errors="replace")


class Server(ThreadingHTTPServer):
    """A thread per connection (chDB itself is serialised by Engine's lock)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: Engine) -> None:
        super().__init__(address, Handler)
        self.engine = engine
        self.display_name = socket.gethostname()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept with TCP_NODELAY: without it, Nagle's algorithm and delayed ACKs add
        ~40-50 ms to every small request/response exchange on a kept-alive connection."""
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then close chDB so the data directory is left clean."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", required=True, help="chDB data directory (owned by this process)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--log-level", default="INFO", help="DEBUG logs one line per request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        engine = Engine(args.path)
    except RuntimeError as exc:  # typically: another process already owns the directory
        log.error("cannot open chDB at %s (is another process using it?): %s", args.path, exc)
        return 1
    try:
        server = Server((args.host, args.port), engine)
    except OSError:
        engine.close()
        raise

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        # shutdown() waits for serve_forever() to return, which runs on this (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "chDB %s at %s serving ClickHouse HTTP on http://%s:%d",
        engine.version,
        args.path,
        args.host,
        server.server_address[1],
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        engine.close()
        log.info("stopped; chDB closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
