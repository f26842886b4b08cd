"""The ``ems`` command line: one console script, subcommands registered by the modules that own them.

Each command module exposes ``register(subparsers)`` that adds its parser and sets ``handler`` (a function
taking the parsed namespace and returning the exit code). ``ems bench`` subcommands register through
``register_bench(bench_subparsers)``. Command modules import their heavy dependencies inside the handler,
so ``ems validate`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from shared import __version__
from shared.errors import InputError

# Modules that add top-level subcommands, in help order.
COMMAND_MODULES: tuple[str, ...] = (
    "shared.cli_validate",
    "central.cli_optimize",
    "central.cli_central",
    "central.cli_upload",
    "edge.cli_edge",
    "edge.cli_sim",
    "shared.cli_certs",
    "central.cli_demo",
)
# Modules that add ``ems bench`` subcommands.
BENCH_MODULES: tuple[str, ...] = (
    "edge.bench_edge",
    "edge.cli_sim",
    "central.bench_dispatch",
    "central.bench_push",
    "central.cli_upload",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ems",
        description="hybrid-ems: centralized optimization, distributed execution for battery storage sites.",
    )
    parser.add_argument("--version", action="version", version=f"hybrid-ems {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    if BENCH_MODULES:
        bench = subparsers.add_parser("bench", help="measure performance on this machine")
        bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
        for name in BENCH_MODULES:
            importlib.import_module(name).register_bench(bench_sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.handler(args)
    except InputError as exc:
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
