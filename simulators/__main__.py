"""``python -m simulators --site S ...``: the same as ``ems sim`` (``ems bench sim`` runs its child so)."""

from __future__ import annotations

import argparse
import logging
import sys

from shared.errors import InputError
from simulators import cli as cli_sim


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli_sim.register(subparsers)
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.handler(args)
    except InputError as exc:  # a bad site or profile file: one line per problem, as `ems` does
        for line in exc.lines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
