"""Supervision of the local stack's daemons: start, health-wait, status and stop.

Why hand-rolled rather than systemd or docker-compose: these machines have neither a service
manager (PID 1 is not systemd) nor a container runtime, and every component is a plain local
process. What matters for an operator is that a daemon's output lands in a known log file, that
its pid is recorded so a later `tidemark stack down` (a different process) can find it, that a
start which never becomes healthy fails loudly with the end of its log instead of hanging, and
that a port taken by someone else is reported as such rather than mistaken for our service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tidemark.config import REPO_ROOT

LOOPBACK = "127.0.0.1"

# Popen objects of daemons started by this process. Kept so they are not garbage collected
# (which warns) and so `stop` in the same process (tests) can reap them instead of leaving
# zombies that still answer `kill -0`.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """A component could not be found, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class ComponentStatus:
    """What `stack up/status/down` report for one component."""

    name: str
    ports: tuple[int, ...]
    pids: tuple[int, ...]
    state: str  # started | already running | running | unhealthy | stopped
    healthy: bool
    detail: str = ""
    seconds: float | None = None  # start-up time, when this call started it


HealthCheck = Callable[[], bool]


@dataclass(frozen=True)
class Daemon:
    """One single-process daemon: where its log and pid live and how to tell it is ready.

    `marker` is a substring of the process's command line; it guards against a recycled pid
    in a stale pid file being taken for our daemon.
    """

    name: str
    port: int
    port_key: str  # the setting that chooses the port, quoted in "port in use" errors
    state_dir: Path
    marker: str
    health: HealthCheck
    start_timeout: float = 30.0
    stop_grace: float = 10.0
    #: any other port the daemon listens on, with its setting (a KRaft controller port)
    other_ports: tuple[tuple[int, str], ...] = ()

    @property
    def ports(self) -> dict[int, str]:
        """Every port the daemon owns -> the setting that chooses it."""
        return {self.port: self.port_key, **dict(self.other_ports)}

    @property
    def log_path(self) -> Path:
        """`<state_dir>/logs/<name>.log`: stdout and stderr of the daemon."""
        return logs_dir(self.state_dir) / f"{self.name}.log"

    @property
    def pid_path(self) -> Path:
        """`<state_dir>/pids/<name>.pid`."""
        return pids_dir(self.state_dir) / f"{self.name}.pid"


def logs_dir(state_dir: Path) -> Path:
    """Where every component writes its log."""
    return state_dir / "logs"


def pids_dir(state_dir: Path) -> Path:
    """Where every component's pid file lives."""
    return state_dir / "pids"


def venv_python() -> str:
    """The venv's interpreter, unresolved: resolving the symlink would leave the venv."""
    candidate = Path(sys.prefix) / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def venv_site_packages() -> str:
    """The venv's site-packages; child interpreters embedded in JVMs need it on PYTHONPATH."""
    return sysconfig.get_paths()["purelib"]


def python_path_env() -> str:
    """PYTHONPATH for child Python code: the venv's packages, the repository, then the caller's."""
    inherited = [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part]
    ours = [venv_site_packages(), str(REPO_ROOT)]
    return os.pathsep.join(ours + [part for part in inherited if part not in ours])


def resolve_binary(default: str, env_var: str | None, fix: str) -> str:
    """Find an executable (an `env_var` override wins) or fail with the fix in the message."""
    wanted = (os.environ.get(env_var) if env_var else None) or default
    found = shutil.which(wanted)
    if found is None:
        name = Path(default).name
        raise StackError(f"{name} not found ({wanted}): {fix}")
    return found


def tcp_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port (a cheap pre-check)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether we could listen on host:port.

    Binding (with SO_REUSEADDR, as servers do) rather than connecting: a listener on 0.0.0.0
    or one that accepts slowly still blocks us, while TIME_WAIT leftovers of a stopped
    daemon do not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_ports_free(component: str, ports: Mapping[int, str]) -> None:
    """Fail naming the port and the component if a foreign process holds one of `ports`.

    `ports` maps each port to the setting that chooses it, so the error says how to move.
    """
    for port, key in ports.items():
        if not port_is_free(port):
            raise StackError(
                f"port {port} for {component} is already in use: stop whatever listens "
                f"there, or choose another port with --set {key}=<port>"
            )


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs; zombies (exited, not yet reaped) count as gone."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def cmdline(pid: int) -> list[str]:
    """The argument vector of `pid` (empty if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_pid(path: Path) -> int | None:
    """The pid recorded in `path`, or None if there is no usable one."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(daemon: Daemon) -> int | None:
    """The pid of our running daemon per its pid file; a stale file is removed."""
    pid = read_pid(daemon.pid_path)
    if pid is None:
        return None
    if pid_alive(pid) and daemon.marker in " ".join(cmdline(pid)):
        return pid
    daemon.pid_path.unlink(missing_ok=True)
    return None


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log, indented for quoting in an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"    (no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (log is empty)"


def healthy(check: HealthCheck) -> bool:
    """Run a health check; any exception means not healthy (the daemon may be starting)."""
    try:
        return bool(check())
    except Exception:
        return False


def wait_until(
    check: HealthCheck, timeout: float, still_alive: Callable[[], bool] | None = None
) -> str:
    """Poll `check` until it passes ("ok"), `still_alive` fails ("died") or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if healthy(check):
            return "ok"
        if still_alive is not None and not still_alive():
            return "died"
        if time.monotonic() >= deadline:
            return "timeout"
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def terminate(pids: Sequence[int], grace: float) -> list[int]:
    """SIGTERM `pids` (their process groups if they lead one), SIGKILL what outlives `grace`.

    Returns the pids that had to be killed.
    """
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.1)
    killed = [pid for pid in pids if pid_alive(pid)]
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in killed):
        time.sleep(0.05)
    return killed


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` detached (own session) with stdout and stderr appended to `log_path`.

    Its own session so that a Ctrl-C in the terminal that ran `stack up`, or the end of that
    shell, does not take the stack down with it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode()
        )
        log.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(REPO_ROOT),
            start_new_session=True,
        )
    _CHILDREN[child.pid] = child
    return child


def start(
    daemon: Daemon, argv: Sequence[str], env: Mapping[str, str] | None = None
) -> ComponentStatus:
    """Start `daemon` unless it already runs; wait until healthy or fail with its log's tail."""
    pid = running_pid(daemon)
    if pid is not None:
        return status(daemon, state_if_healthy="already running")
    ensure_ports_free(daemon.name, daemon.ports)
    began = time.monotonic()
    child = spawn(argv, daemon.log_path, env)
    daemon.pid_path.parent.mkdir(parents=True, exist_ok=True)
    daemon.pid_path.write_text(f"{child.pid}\n")
    outcome = wait_until(daemon.health, daemon.start_timeout, lambda: pid_alive(child.pid))
    if outcome != "ok":
        terminate([child.pid], grace=2)
        daemon.pid_path.unlink(missing_ok=True)
        why = (
            "exited" if outcome == "died" else f"was not healthy after {daemon.start_timeout:.0f} s"
        )
        raise StackError(
            f"{daemon.name} {why} (port {daemon.port}); last lines of {daemon.log_path}:\n"
            f"{log_tail(daemon.log_path)}"
        )
    return ComponentStatus(
        daemon.name,
        (daemon.port,),
        (child.pid,),
        "started",
        True,
        seconds=round(time.monotonic() - began, 3),
    )


def stop(daemon: Daemon) -> ComponentStatus:
    """Stop `daemon` if it runs (SIGTERM, then SIGKILL after its grace period); idempotent."""
    pid = running_pid(daemon)
    detail = ""
    if pid is not None:
        killed = terminate([pid], daemon.stop_grace)
        if killed:
            detail = f"killed after {daemon.stop_grace:.0f} s grace"
    daemon.pid_path.unlink(missing_ok=True)
    return ComponentStatus(daemon.name, (daemon.port,), (), "stopped", False, detail)


def status(daemon: Daemon, state_if_healthy: str = "running") -> ComponentStatus:
    """Pid alive (per the pid file) and the health check passing."""
    pid = running_pid(daemon)
    if pid is None:
        return ComponentStatus(daemon.name, (daemon.port,), (), "stopped", False)
    ok = healthy(daemon.health)
    return ComponentStatus(
        daemon.name,
        (daemon.port,),
        (pid,),
        state_if_healthy if ok else "unhealthy",
        ok,
        "" if ok else f"pid {pid} runs but fails its health check; see {daemon.log_path}",
    )
