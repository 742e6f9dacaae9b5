"""The Flink cluster of the local stack: a standalone session cluster from the PyFlink wheel.

Why a real cluster rather than PyFlink's in-process mini-cluster: jobs are submitted with
`flink run -py`, as operators do, and a TaskManager can be killed independently of the
JobManager to exercise recovery. The wheel carries the whole distribution (`pyflink/lib`,
`pyflink/bin`), so nothing has to be downloaded.

The daemon scripts fork and record pids in Flink's own pid files (under `env.pid.dir`); those
go stale when a JVM is killed, so the running JVMs are always looked up in the process table
by main class and `--configDir`, and stopping verifies they are really gone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tidemark.config import REPO_ROOT, Config, flatten_flink_yaml
from tidemark.stack import process
from tidemark.stack.process import LOOPBACK, ComponentStatus, StackError

NAME = "flink"
REPO_CONF = REPO_ROOT / "flink-conf" / "config.yaml"
IDENT = "tidemark"  # FLINK_IDENT_STRING: names Flink's pid and log files
JOBMANAGER_CLASS = "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint"
TASKMANAGER_CLASS = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
START_TIMEOUT = 120.0  # seconds; ~15 s is usual, two cores starting several JVMs can be slow
STOP_GRACE = 10.0
JVM_APPEAR_GRACE = 15.0  # seconds a daemon script's forked JVM may take to show up
JAVA_HINT = "run `apt-get install -y openjdk-17-jre-headless` or set JAVA_HOME"
# Environment a user may have set for another Flink: it would point the scripts elsewhere.
# FLINK_ENV_JAVA_OPTS in particular REPLACES env.java.opts.all and breaks Java 17.
FOREIGN_ENV = (
    "FLINK_ENV_JAVA_OPTS",
    "FLINK_LIB_DIR",
    "FLINK_PLUGINS_DIR",
    "FLINK_OPT_DIR",
    "_FLINK_HOME_DETERMINED",
)


def flink_home() -> Path:
    """The Flink distribution inside the installed PyFlink wheel."""
    spec = importlib.util.find_spec("pyflink")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("pyflink not found: run `pip install apache-flink==2.3.0` in the venv")
    return Path(next(iter(spec.submodule_search_locations)))


def flink_bin() -> Path:
    """The wheel's `bin/flink` CLI; run it with `flink_env(cfg)` to target this cluster."""
    return flink_home() / "bin" / "flink"


def conf_dir(cfg: Config) -> Path:
    """The generated FLINK_CONF_DIR of this stack."""
    return cfg.state_dir / "flink-conf"


def log_dir(cfg: Config) -> Path:
    """FLINK_LOG_DIR: JVM logs land here, not in site-packages where each run overwrites them."""
    return process.logs_dir(cfg.state_dir) / "flink"


def pid_dir(cfg: Config) -> Path:
    """env.pid.dir: where the daemon scripts keep Flink's own pid files."""
    return process.pids_dir(cfg.state_dir) / "flink"


def data_dir(cfg: Config) -> Path:
    """Checkpoints, savepoints and scratch space of the cluster."""
    return cfg.state_dir / "flink"


def rest_url(cfg: Config) -> str:
    """Base URL of the cluster's REST API (and web UI)."""
    return f"http://{LOOPBACK}:{cfg.stack.flink_rest_port}"


def cluster_settings(cfg: Config) -> dict[str, Any]:
    """The repo's flink-conf/config.yaml plus what this stack decides: ports, python, dirs."""
    repo = YAML(typ="safe").load(REPO_CONF.read_text()) or {}
    data = data_dir(cfg)
    python = process.venv_python()
    return {
        **flatten_flink_yaml(repo),
        "rest.port": cfg.stack.flink_rest_port,
        "jobmanager.rpc.port": cfg.stack.flink_rpc_port,
        "taskmanager.numberOfTaskSlots": cfg.stack.taskmanager_slots,
        "python.executable": python,
        "python.client.executable": python,
        "execution.checkpointing.dir": (data / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (data / "savepoints").as_uri(),
        "io.tmp.dirs": str(data / "tmp"),
        "web.tmpdir": str(data / "web"),
        "env.log.dir": str(log_dir(cfg)),
        # a JVM crash report goes with the logs, not into whatever directory `up` ran from
        "env.java.opts.jobmanager": f"-XX:ErrorFile={log_dir(cfg)}/hs_err_pid%p.log",
        "env.java.opts.taskmanager": f"-XX:ErrorFile={log_dir(cfg)}/hs_err_pid%p.log",
        "env.pid.dir": str(pid_dir(cfg)),
    }


def lib_dir(cfg: Config) -> Path:
    """FLINK_LIB_DIR: the wheel's lib/ jars plus opt/flink-python, linked, not copied."""
    return cfg.state_dir / "flink-lib"


def write_lib_dir(cfg: Config) -> Path:
    """Put flink-python (which carries pemja) on the cluster's own classpath.

    Why: in thread mode pemja loads a native library. Shipped per job from opt/, each job's
    user-code classloader loads it again, and the second Python job on a TaskManager then
    fails with `NoSuchFieldException: loadedLibraryNames` (Java 17). Loaded once from the
    system classpath, with `pemja.` parent-first (see flink-conf/config.yaml), every job
    shares it.
    """
    target = lib_dir(cfg)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    home = flink_home()
    for jar in [*sorted((home / "lib").glob("*.jar")), *(home / "opt").glob("flink-python-*.jar")]:
        (target / jar.name).symlink_to(jar)
    return target


def write_conf_dir(cfg: Config) -> Path:
    """Generate FLINK_CONF_DIR: the merged config.yaml and the wheel's log4j files."""
    target = conf_dir(cfg)
    target.mkdir(parents=True, exist_ok=True)
    for directory in (log_dir(cfg), pid_dir(cfg), data_dir(cfg) / "tmp", data_dir(cfg) / "web"):
        directory.mkdir(parents=True, exist_ok=True)
    for log4j in (flink_home() / "conf").glob("log4j*.properties"):
        shutil.copyfile(log4j, target / log4j.name)
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.width = 1 << 16  # keep env.java.opts.all on one line
    with (target / "config.yaml").open("w") as out:
        out.write(f"# Generated by `tidemark stack up` from {REPO_CONF}; edit that file.\n")
        yaml.dump(cluster_settings(cfg), out)
    write_lib_dir(cfg)
    return target


def flink_env(cfg: Config) -> dict[str, str]:
    """Environment for Flink's scripts and for `flink run` against this cluster.

    PYTHONPATH carries the venv's site-packages because thread mode embeds Python in the
    TaskManager JVM, which otherwise cannot import pemja or the job's dependencies.
    """
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN_ENV}
    env.update(
        FLINK_HOME=str(flink_home()),
        FLINK_CONF_DIR=str(conf_dir(cfg)),
        FLINK_LOG_DIR=str(log_dir(cfg)),
        FLINK_LIB_DIR=str(lib_dir(cfg)),
        FLINK_PID_DIR=str(pid_dir(cfg)),
        FLINK_IDENT_STRING=IDENT,
        PYTHONPATH=process.python_path_env(),
    )
    return env


def _cluster_pids(cfg: Config, main_class: str) -> list[int]:
    """Pids of live JVMs running `main_class` with our `--configDir` (what `ps` would list)."""
    wanted = str(conf_dir(cfg))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = process.cmdline(int(entry.name))
        if main_class not in args or "--configDir" not in args:
            continue
        at = args.index("--configDir")
        if at + 1 < len(args) and args[at + 1] == wanted and process.pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def jobmanager_pids(cfg: Config) -> list[int]:
    """Pids of this stack's JobManager JVM(s)."""
    return _cluster_pids(cfg, JOBMANAGER_CLASS)


def taskmanager_pids(cfg: Config) -> list[int]:
    """Pids of this stack's TaskManager JVMs, e.g. for a test that kills one."""
    return _cluster_pids(cfg, TASKMANAGER_CLASS)


def overview(cfg: Config) -> dict[str, Any] | None:
    """`GET /overview` (taskmanagers, slots, jobs), or None if the REST API does not answer."""
    try:
        with urllib.request.urlopen(f"{rest_url(cfg)}/overview", timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


def taskmanager_ids(cfg: Config) -> set[str]:
    """Resource ids of the TaskManagers registered with the JobManager (`GET /taskmanagers`)."""
    try:
        with urllib.request.urlopen(f"{rest_url(cfg)}/taskmanagers", timeout=2) as response:
            listing = json.loads(response.read())
    except (OSError, ValueError):
        return set()
    return {str(item["id"]) for item in listing.get("taskmanagers", [])}


def registered_taskmanagers(cfg: Config) -> int:
    """How many TaskManagers the JobManager reports as registered (0 if unreachable)."""
    return int((overview(cfg) or {}).get("taskmanagers", 0))


def _run_script(cfg: Config, script: str, *args: str, check: bool = True) -> None:
    """Run one of the wheel's daemon scripts, its output appended to `<logs>/flink.log`."""
    log = process.logs_dir(cfg.state_dir) / f"{NAME}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(flink_home() / "bin" / script), *args]
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        try:
            result = subprocess.run(
                argv,
                env=flink_env(cfg),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
                start_new_session=True,  # the forked JVMs outlive the terminal that ran `up`
                check=False,
            )
        except subprocess.TimeoutExpired:
            if check:
                raise StackError(f"{script} {' '.join(args)} hung; see {log}") from None
            return
    if check and result.returncode != 0:
        raise StackError(
            f"{script} {' '.join(args)} failed (exit {result.returncode}); last lines of {log}:\n"
            f"{process.log_tail(log)}"
        )


def _log_excerpt(path: Path, lines: int = 8) -> str:
    """The last errors of a JVM log (its root cause), or its last lines if it has none."""
    text = path.read_text(errors="replace").splitlines()
    errors = [line for line in text if " ERROR " in line or line.startswith("Caused by")]
    picked = errors[-lines:] or text[-lines:]
    return "\n".join(f"    {line.strip()[:400]}" for line in picked)


def _log_report(cfg: Config) -> str:
    """Excerpts of the newest JobManager and TaskManager logs, for a start failure."""
    parts = []
    for pattern in ("*standalonesession*.out", "*standalonesession*.log", "*taskexecutor*.out",
                    "*taskexecutor*.log"):  # fmt: skip
        files = sorted(log_dir(cfg).glob(pattern), key=lambda path: path.stat().st_mtime)
        if files and files[-1].stat().st_size:
            parts.append(f"  {files[-1]}:\n{_log_excerpt(files[-1])}")
    return "\n".join(parts) or f"  (no logs in {log_dir(cfg)})"


def _wait_for_taskmanagers(cfg: Config, known: set[str], count: int, running: int) -> None:
    """Wait until `count` TaskManagers not in `known` have registered; fail with the logs if a
    JVM dies meanwhile (`running` TaskManager JVMs must stay alive).

    New registrations are told apart by id because the JobManager keeps listing a killed
    TaskManager until its heartbeat times out (~50 s), so a bare count can mislead.
    """

    started = time.monotonic()

    def alive() -> bool:
        # taskmanager.sh returns before its forked JVM exists: a JVM missing in the first
        # seconds is still starting, not dead.
        if time.monotonic() - started < JVM_APPEAR_GRACE:
            return True
        return bool(jobmanager_pids(cfg)) and len(taskmanager_pids(cfg)) >= running

    outcome = process.wait_until(
        lambda: len(taskmanager_ids(cfg) - known) >= count, START_TIMEOUT, alive
    )
    if outcome != "ok":
        why = "a JVM exited" if outcome == "died" else f"not ready after {START_TIMEOUT:.0f} s"
        report = _log_report(cfg)
        stop(cfg)
        raise StackError(
            f"{NAME}: {why} (waited for {count} TaskManager(s) to register at {rest_url(cfg)}); "
            f"last log lines:\n{report}"
        )


def _require_java() -> None:
    java_home = os.environ.get("JAVA_HOME")
    default = str(Path(java_home) / "bin" / "java") if java_home else "java"
    process.resolve_binary(default, None, JAVA_HINT)


def start(cfg: Config) -> ComponentStatus:
    """Start the JobManager and `stack.taskmanagers` TaskManagers; tops up missing ones."""
    began = time.monotonic()
    wanted = cfg.stack.taskmanagers
    _require_java()
    if jobmanager_pids(cfg):
        missing = wanted - len(taskmanager_pids(cfg))
        if missing <= 0:
            return status(cfg, state_if_healthy="already running")
        known = taskmanager_ids(cfg)
        for _ in range(missing):
            _run_script(cfg, "taskmanager.sh", "start")
    else:
        if taskmanager_pids(cfg):  # orphans of a dead JobManager would join the new one
            stop(cfg)
        known, missing = set(), wanted
        process.ensure_ports_free(
            NAME,
            {
                cfg.stack.flink_rest_port: "stack.flink_rest_port",
                cfg.stack.flink_rpc_port: "stack.flink_rpc_port",
            },
        )
        write_conf_dir(cfg)
        _run_script(cfg, "jobmanager.sh", "start")
        for _ in range(wanted):
            _run_script(cfg, "taskmanager.sh", "start")
    _wait_for_taskmanagers(cfg, known, missing, wanted)
    current = status(cfg, state_if_healthy="started")
    return ComponentStatus(
        current.name, current.ports, current.pids, current.state, current.healthy,
        current.detail, round(time.monotonic() - began, 3),
    )  # fmt: skip


def start_taskmanager(cfg: Config) -> int:
    """Add one TaskManager to the running cluster; returns its pid once it has registered."""
    if not jobmanager_pids(cfg):
        raise StackError(f"{NAME} is not running: run `tidemark stack up flink` first")
    before, known = set(taskmanager_pids(cfg)), taskmanager_ids(cfg)
    _run_script(cfg, "taskmanager.sh", "start")
    # The script backgrounds the JVM and returns: under load the new process can take a
    # moment to show up as a TaskManager JVM (it is a shell until it execs java).
    deadline = time.monotonic() + 15
    new = sorted(set(taskmanager_pids(cfg)) - before)
    while not new and time.monotonic() < deadline:
        time.sleep(0.2)
        new = sorted(set(taskmanager_pids(cfg)) - before)
    if not new:
        raise StackError(f"taskmanager.sh start launched no TaskManager:\n{_log_report(cfg)}")
    _wait_for_taskmanagers(cfg, known, 1, len(before) + 1)
    return new[0]


def _prune_pid_files(cfg: Config, live: set[int]) -> None:
    """Drop pids of JVMs that are gone: the stop scripts would `kill` whatever reused them."""
    for pid_file in pid_dir(cfg).glob("flink-*.pid"):
        kept = [
            line for line in pid_file.read_text().split() if line.isdigit() and int(line) in live
        ]
        if kept:
            pid_file.write_text("".join(f"{pid}\n" for pid in kept))
        else:
            pid_file.unlink()


def stop(cfg: Config) -> ComponentStatus:
    """Stop the cluster with Flink's scripts, then verify and kill any JVM left behind."""
    running = set(taskmanager_pids(cfg) + jobmanager_pids(cfg))
    _prune_pid_files(cfg, running)
    if running and (conf_dir(cfg) / "config.yaml").is_file():
        _run_script(cfg, "taskmanager.sh", "stop-all", check=False)
        _run_script(cfg, "jobmanager.sh", "stop-all", check=False)
    leftovers = taskmanager_pids(cfg) + jobmanager_pids(cfg)
    killed = process.terminate(leftovers, STOP_GRACE) if leftovers else []
    detail = f"killed leftover JVM(s) {killed}" if killed else ""
    return ComponentStatus(NAME, _ports(cfg), (), "stopped", False, detail)


def _ports(cfg: Config) -> tuple[int, ...]:
    return (cfg.stack.flink_rest_port, cfg.stack.flink_rpc_port)


def status(cfg: Config, state_if_healthy: str = "running") -> ComponentStatus:
    """JobManager alive, and the configured number of TaskManagers both alive and registered
    (per `/overview`, which lists a killed TaskManager until its heartbeat times out)."""
    jms, tms = jobmanager_pids(cfg), taskmanager_pids(cfg)
    if not jms and not tms:
        return ComponentStatus(NAME, _ports(cfg), (), "stopped", False)
    registered = registered_taskmanagers(cfg)
    wanted = cfg.stack.taskmanagers
    ok = bool(jms) and registered >= wanted and len(tms) >= wanted
    detail = f"{registered}/{wanted} TaskManager(s) registered, {len(tms)} running"
    if not jms:
        detail = "JobManager is not running; " + detail
    return ComponentStatus(
        NAME, _ports(cfg), tuple(jms + tms), state_if_healthy if ok else "unhealthy", ok, detail
    )
