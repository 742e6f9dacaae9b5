"""`tidemark run` and `tidemark jobs`: submit jobs the way operators do, and control them.

`tidemark run ingest` checks the job's Kafka and ClickHouse endpoints, packs the project's
Python packages into one archive, and calls the Flink CLI:

    flink run -d -pym jobs.ingest -pyfs <state_dir>/job/tidemark-job.zip \\
        -pyexec <venv python> -pyclientexec <venv python> [-s <savepoint>] \\
        --config <settings file> [--set k=v ...]

`--local` runs the same job on an in-process mini-cluster instead, for a quick try.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import zipfile
from pathlib import Path

from tidemark import flink_rest
from tidemark.config import REPO_ROOT, Config, ConfigError, load_config
from tidemark.stack import flink
from tidemark.stack.process import python_path_env, venv_python

JOBS = {"ingest": "jobs.ingest"}
SHIPPED_PACKAGES = ("jobs", "udfs", "sinks", "tidemark")
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


def build_job_archive(cfg: Config) -> Path:
    """Zip the packages a job imports, so `-pyfs` ships them to every Python worker."""
    target = cfg.state_dir / "job" / "tidemark-job.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for package in SHIPPED_PACKAGES:
            for path in sorted((REPO_ROOT / package).rglob("*.py")):
                archive.write(path, path.relative_to(REPO_ROOT).as_posix())
    return target


def job_arguments(config_path: str | None, overrides: list[str]) -> list[str]:
    """The job's own arguments: the settings file and overrides the client resolved."""
    args = ["--config", str(Path(config_path).resolve())] if config_path else []
    for override in overrides:
        args += ["--set", override]
    return args


def submit(
    cfg: Config,
    job: str = "ingest",
    extra_overrides: list[str] | None = None,
    savepoint: str | None = None,
    flink_options: dict[str, str] | None = None,
) -> str:
    """Submit `job` detached to the local stack's cluster; return its job id.

    The job is given the settings file and overrides `cfg` was loaded from (plus
    `extra_overrides`), so it resolves exactly the settings the client checked.
    """
    from jobs.preflight import preflight

    if job not in JOBS:
        raise ConfigError(f"unknown job {job!r} (known: {', '.join(JOBS)})")
    overrides = [*cfg.overrides, *(extra_overrides or [])]
    if extra_overrides:
        cfg = load_config(cfg.source_path, overrides)
    preflight(cfg)
    python = venv_python()
    command = [str(flink.flink_bin()), "run", "-d", "-m", f"127.0.0.1:{cfg.stack.flink_rest_port}"]
    if savepoint:
        command += ["-s", savepoint]
    for key, value in (flink_options or {}).items():
        command += [f"-D{key}={value}"]
    command += ["-pym", JOBS[job], "-pyfs", str(build_job_archive(cfg))]
    command += ["-pyexec", python, "-pyclientexec", python]
    command += [*job_arguments(cfg.source_path, overrides), "--skip-preflight"]
    result = subprocess.run(
        command, env=flink.flink_env(cfg), capture_output=True, text=True, timeout=300
    )
    found = _JOB_ID.search(result.stdout + result.stderr)
    if result.returncode != 0 or not found:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"flink run failed (exit {result.returncode}):\n{tail}")
    return found.group(1)


def run_local(config_path: str | None, overrides: list[str]) -> int:
    """Run the job on an in-process mini-cluster, in the foreground."""
    env = dict(os.environ, PYTHONPATH=python_path_env())
    args = [venv_python(), "-m", JOBS["ingest"], *job_arguments(config_path, overrides)]
    return subprocess.call(args, env=env, cwd=REPO_ROOT)


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    if args.local:
        return run_local(args.config or cfg.source_path, args.overrides)
    job_id = submit(cfg, args.job, savepoint=args.from_savepoint)
    url = flink.rest_url(cfg)
    flink_rest.wait_running(url, job_id)
    print(f"{args.job} job {job_id} is running; web UI {url}/#/job/running/{job_id}")
    return 0


def _cmd_jobs(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    url = flink.rest_url(cfg)
    if args.action != "list" and not args.job_id:
        raise ConfigError(
            f"`tidemark jobs {args.action}` needs a job id (see `tidemark jobs list`)"
        )
    if args.action == "list":
        for job in flink_rest.jobs(url):
            print(f"{job['jid']}  {job['state']:<10} {job['name']}")
    elif args.action == "cancel":
        flink_rest.cancel(url, args.job_id)
        print(f"cancelled {args.job_id}")
    elif args.action == "stop":
        target = (cfg.state_dir / "flink" / "savepoints").as_uri()
        print(f"savepoint: {flink_rest.stop_with_savepoint(url, args.job_id, target)}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="submit a job to the local cluster (or run locally)")
    run.add_argument("job", choices=sorted(JOBS))
    run.add_argument("--local", action="store_true", help="in-process mini-cluster, foreground")
    run.add_argument("--from-savepoint", help="restore from this savepoint or checkpoint path")
    run.set_defaults(func=_cmd_run)
    jobs = subparsers.add_parser("jobs", help="list, cancel or stop jobs on the local cluster")
    jobs.add_argument("action", choices=["list", "cancel", "stop"])
    jobs.add_argument("job_id", nargs="?")
    jobs.set_defaults(func=_cmd_jobs)
