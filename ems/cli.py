"""The ``ems`` command line: the composition root of hybrid-ems.

This is the one place allowed to import every role. Each subcommand is registered by the module that owns
it (``register(subparsers)``; ``ems bench`` subcommands through ``register_bench(bench_subparsers)``), and
each module names the extra it needs. A command whose extra is not installed (an edge PC with only
``hybrid-ems[edge]``, say) still appears in ``ems --help``, and running it exits 2 with the extra to
install, before anything of the role is imported. Command modules import their heavy dependencies inside
their handlers, so ``ems --help`` and ``ems validate`` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared import __version__
from shared.errors import InputError
from shared.logs import add_log_options, configure_logging, log_options


class Extra(StrEnum):
    """The installable parts of hybrid-ems (``pip install "hybrid-ems[EXTRA]"``)."""

    BASE = "base"  # what every install has: ems validate, ems certs
    EDGE = "edge"  # the edge controller and the device simulators
    CENTRAL = "central"  # the central service, the optimizer, ems upload
    LAB = "lab"  # the demo, the benchmarks and the fault campaign (everything)


# Import names that prove an extra is installed (its distributions' top-level modules).
EXTRA_MODULES: dict[Extra, tuple[str, ...]] = {
    Extra.BASE: ("pydantic", "cryptography"),
    Extra.EDGE: ("asyncua", "pymodbus", "sunspec2"),
    Extra.CENTRAL: ("asyncua", "pyomo", "highspy", "numpy", "fastapi", "uvicorn", "apscheduler", "httpx"),
    Extra.LAB: (
        "asyncua",
        "pymodbus",
        "sunspec2",
        "pyomo",
        "highspy",
        "numpy",
        "fastapi",
        "uvicorn",
        "apscheduler",
        "httpx",
        "matplotlib",
    ),
}


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, the module that registers it and the extra it needs."""

    name: str
    module: str
    extra: Extra
    help: str


# Top-level subcommands, in help order.
COMMANDS: tuple[Command, ...] = (
    Command("validate", "shared.cli_validate", Extra.BASE, "check a site file or a day-ahead upload"),
    Command("optimize", "central.cli_optimize", Extra.CENTRAL, "solve the economic dispatch"),
    Command("central", "central.cli_central", Extra.CENTRAL, "run the central service"),
    Command("upload", "central.cli_upload", Extra.CENTRAL, "upload a day-ahead file to the central service"),
    Command("reset-interlock", "central.cli_reset", Extra.CENTRAL, "reset a latched interlock (operator)"),
    Command("token", "central.cli_token", Extra.CENTRAL, "manage the named tokens of the central's HTTP API"),
    Command("edge", "edge.cli_edge", Extra.EDGE, "run one cabinet's edge controller"),
    Command("sim", "simulators.cli", Extra.EDGE, "run the SunSpec device simulators of a site"),
    Command("certs", "shared.cli_certs", Extra.BASE, "create the OPC UA keys and certificates of a site"),
    Command("demo", "lab.demo.cli", Extra.LAB, "run a simulated day of the whole site and report"),
    Command("soak", "lab.soak.cli", Extra.LAB, "run a seeded fault campaign over simulated days"),
)
# ``ems bench`` subcommands.
BENCHES: tuple[Command, ...] = (
    Command("edge", "lab.bench.edge", Extra.LAB, "edge cycle timing and interlock reaction"),
    Command("sim", "lab.bench.sim", Extra.LAB, "Modbus throughput of one simulator process"),
    Command("dispatch", "lab.bench.dispatch", Extra.LAB, "time the dispatch on a generated site"),
    Command(
        "replan", "lab.bench.replan", Extra.LAB, "a day of re-optimizations: cold vs warm, plan stability"
    ),
    Command("push", "lab.bench.push", Extra.LAB, "OPC UA push and telemetry latency to N edges"),
    Command("upload", "lab.bench.upload", Extra.LAB, "time from an upload to every edge running it"),
    Command("footprint", "lab.bench.footprint", Extra.LAB, "memory, CPU and start time of one role"),
    Command("console", "lab.bench.console", Extra.LAB, "operator console: first render, live latency, CPU"),
)


def missing_modules(extra: Extra) -> list[str]:
    """The import names of ``extra`` that are not installed here."""
    return [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]


def install_hint(extra: Extra) -> str:
    return f'install hybrid-ems[{extra.value}] (pip install "hybrid-ems[{extra.value}]")'


def _gate(command: Command, missing: list[str]) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        print(
            f"error: `ems {command.name}` needs the {command.extra.value} role, which is not installed "
            f"(missing: {', '.join(missing)}): {install_hint(command.extra)}",
            file=sys.stderr,
        )
        return 2

    return handler


def _register(subparsers: Any, command: Command, register_name: str, chosen: bool) -> None:
    """The real parser of ``command`` when it is the one being run, else a light entry for ``--help``
    (importing every role's command module would load every role's libraries into every process)."""
    missing = missing_modules(command.extra) if chosen else []
    if chosen and not missing:
        try:
            getattr(importlib.import_module(command.module), register_name)(subparsers)
            return
        except ModuleNotFoundError as exc:  # an installed extra that is incomplete
            missing = [exc.name or str(exc)]
    needs = "" if command.extra is Extra.BASE else f" [{command.extra.value}]"
    parser = subparsers.add_parser(command.name, help=command.help + needs, add_help=False, prefix_chars="\0")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=_gate(command, missing))


# Root options that take a value (``ems --log-file F central ...``): their values are not command names.
_VALUE_OPTIONS = ("--log-file", "--log-max-mb", "--log-backups")


def _positionals(argv: Sequence[str]) -> list[str]:
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return words


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ems`` parser for ``argv``: the command named there is registered in full, the others as
    entries of the help text. Without ``argv`` every command is registered in full."""
    words = _positionals(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="ems",
        description="hybrid-ems: centralized optimization, distributed execution for battery storage sites.",
        epilog='A role in brackets must be installed first: pip install "hybrid-ems[ROLE]".',
    )
    parser.add_argument("--version", action="version", version=f"hybrid-ems {__version__}")
    add_log_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        _register(subparsers, command, "register", words is None or words[:1] == [command.name])
    bench = subparsers.add_parser(
        "bench", help="measure performance on this machine [lab]", description="Measure on this machine."
    )
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for command in BENCHES:
        chosen = words is None or words[:2] == ["bench", command.name]
        _register(bench_sub, command, "register_bench", chosen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(arguments).parse_args(arguments)
    try:
        configure_logging(log_options(args))
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
