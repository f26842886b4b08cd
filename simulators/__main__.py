"""``python -m simulators --site S ...``: the same as ``ems sim`` (``ems bench sim`` runs its child so)."""

from __future__ import annotations

import argparse
import sys

from shared.errors import InputError
from shared.logs import add_log_options, configure_logging, log_options
from simulators import cli as cli_sim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators")
    add_log_options(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli_sim.register(subparsers)
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    try:
        configure_logging(log_options(args))
        code: int = args.handler(args)
    except InputError as exc:  # a bad site or profile file: one line per problem, as `ems` does
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
