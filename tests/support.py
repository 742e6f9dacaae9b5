"""Helpers shared by the tests: free ports and private stack settings.

Every test that starts real components uses free, non-default ports and its own state_dir,
so a developer's running stack (default ports, .tidemark/stack) is never touched.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path


def free_ports(count: int) -> list[int]:
    """Distinct ports nobody listens on right now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stack_overrides(state_dir: Path, taskmanagers: int = 1) -> list[str]:
    """`--set`-style overrides: a private state_dir and six free ports."""
    kafka, controller, redis, clickhouse, rest, rpc = free_ports(6)
    return [
        f"stack.state_dir={state_dir}",
        f"stack.kafka_port={kafka}",
        f"stack.kafka_controller_port={controller}",
        f"stack.redis_port={redis}",
        f"stack.clickhouse_port={clickhouse}",
        f"stack.flink_rest_port={rest}",
        f"stack.flink_rpc_port={rpc}",
        f"stack.taskmanagers={taskmanagers}",
    ]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.5):
    """Poll `condition` until it holds; fail the test naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def pid_listening_on(port: int) -> int | None:
    """The pid of the process with a listening TCP socket on `port` (from /proc, as `ss -p`)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if str(fd.readlink()) in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def child_pids(parent: int) -> list[int]:
    """Direct children of `parent`, from /proc."""
    children = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        # field 4 (ppid) follows the parenthesised command name, which may hold spaces
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            children.append(int(proc.name))
    return children


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
