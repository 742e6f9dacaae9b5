"""The `tidemark` command: one entry point for operators, dispatching to command modules.

Each module in COMMAND_MODULES exposes `register(subparsers)`, which adds its sub-command(s)
and sets `func` on the parsed arguments. Keeping registration in the modules keeps this file
a table of contents rather than a pile of option definitions.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tidemark.config import ConfigError

COMMAND_MODULES = (
    "tidemark.stack.commands",  # stack up | down | status
    "tidemark.topics",  # topics create | describe
    "tidemark.gen",
    "tidemark.gen_dimensions",  # gen
    "tidemark.produce",  # produce
    "tidemark.schema",  # schema apply | status
    "tidemark.run",  # run (submit a job), jobs (list, cancel, stop with savepoint)
    "tidemark.demo",  # demo (the ingest job end to end on the local stack)
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command module's sub-commands registered."""
    parser = argparse.ArgumentParser(prog="tidemark", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="settings file (default: flink-conf/tidemark.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting; repeatable",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; configuration and runtime errors become one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"tidemark: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
