"""`tidemark stack up | down | status`, and the Python API the tests and other commands use.

Why a fixed order: the broker, Redis and ClickHouse are what Flink jobs connect to, so they
come up first and go down last; Flink, the slowest to start, comes last so a failure of a
cheap component is reported within a second.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from types import ModuleType

from tidemark.config import Config, load_config
from tidemark.stack import clickhouse, flink, kafka, redis
from tidemark.stack.process import ComponentStatus, StackError

COMPONENTS: dict[str, ModuleType] = {
    "kafka": kafka,
    "redis": redis,
    "clickhouse": clickhouse,
    "flink": flink,
}
ORDER = tuple(COMPONENTS)

Reporter = Callable[[ComponentStatus], None]


def _select(components: Iterable[str] | None) -> list[str]:
    """The requested components in start order; unknown names fail naming the known ones."""
    wanted = list(components or ORDER)
    unknown = [name for name in wanted if name not in COMPONENTS]
    if unknown:
        raise StackError(f"unknown component {unknown[0]!r} (known: {', '.join(ORDER)})")
    return [name for name in ORDER if name in wanted]


def _check_distinct_ports(cfg: Config) -> None:
    """Two components on one port would pass the free-port check and then fight over it."""
    seen: dict[int, str] = {}
    for key in ("kafka_port", "redis_port", "clickhouse_port", "flink_rest_port", "flink_rpc_port"):
        port = getattr(cfg.stack, key)
        if port in seen:
            raise StackError(
                f"stack.{seen[port]} and stack.{key} are both {port}: choose two ports"
            )
        seen[port] = key


def start_stack(
    cfg: Config, components: Iterable[str] | None = None, report: Reporter | None = None
) -> list[ComponentStatus]:
    """Start the components (all by default) in order; running ones are left alone.

    Stops at the first failure (raising StackError) and leaves what already runs running.
    """
    selected = _select(components)
    _check_distinct_ports(cfg)
    started = []
    for name in selected:
        result = COMPONENTS[name].start(cfg)
        started.append(result)
        if report:
            report(result)
    return started


def stop_stack(
    cfg: Config, components: Iterable[str] | None = None, report: Reporter | None = None
) -> list[ComponentStatus]:
    """Stop the components in reverse order; idempotent, and tries all even if one fails."""
    stopped, errors = [], []
    for name in reversed(_select(components)):
        try:
            result = COMPONENTS[name].stop(cfg)
        except (StackError, OSError) as exc:
            errors.append(f"{name}: {exc}")
            continue
        stopped.append(result)
        if report:
            report(result)
    if errors:
        raise StackError("; ".join(errors))
    return stopped


def stack_status(cfg: Config, components: Iterable[str] | None = None) -> list[ComponentStatus]:
    """Each component's status: pid alive and health check passing."""
    return [COMPONENTS[name].status(cfg) for name in _select(components)]


HEADER = f"{'COMPONENT':<11} {'PORT':<12} {'PID':<18} {'STATUS':<16} DETAIL"


def format_row(item: ComponentStatus) -> str:
    """One table line: name, port(s), pid(s), state, and start-up time or detail."""
    ports = ",".join(str(port) for port in item.ports)
    pids = ",".join(str(pid) for pid in item.pids) or "-"
    notes = []
    if item.seconds is not None:
        notes.append(f"in {item.seconds:.2f} s")
    if item.detail:
        notes.append(item.detail)
    return f"{item.name:<11} {ports:<12} {pids:<18} {item.state:<16} {'; '.join(notes)}".rstrip()


def _print_row(item: ComponentStatus) -> None:
    print(format_row(item), flush=True)


def _up(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(HEADER, flush=True)
    try:
        started = start_stack(cfg, args.components, report=_print_row)
    except StackError as exc:
        print(f"tidemark: stack up failed: {exc}", file=sys.stderr)
        return 1
    return 0 if all(item.healthy for item in started) else 1


def _down(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    print(HEADER, flush=True)
    try:
        stop_stack(cfg, args.components, report=_print_row)
    except StackError as exc:
        print(f"tidemark: stack down failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _status(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    try:
        statuses = stack_status(cfg, args.components)
    except StackError as exc:
        print(f"tidemark: stack status failed: {exc}", file=sys.stderr)
        return 1
    print(HEADER)
    for item in statuses:
        print(format_row(item))
    return 0 if all(item.healthy for item in statuses) else 1


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace], int],
) -> None:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument(
        "components",
        nargs="*",
        metavar="component",
        help=f"any of: {', '.join(ORDER)} (default: all)",
    )
    parser.set_defaults(func=func)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `stack up | down | status` to the `tidemark` command."""
    stack = subparsers.add_parser(
        "stack", help="the local stack: Apache Kafka, Redis, ClickHouse, Flink"
    )
    sub = stack.add_subparsers(dest="stack_command", required=True)
    _add(sub, "up", "start the local stack (already running components are left alone)", _up)
    _add(sub, "down", "stop the local stack (reverse order; safe to repeat)", _down)
    _add(sub, "status", "show each component; exit 1 if any is down or unhealthy", _status)
