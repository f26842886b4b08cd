"""The ``--clock`` option shared by the long-running commands (``ems sim``, ``ems edge``, ``ems central``)."""

from __future__ import annotations

import argparse

from shared.clock import RealClock, SimulatedClock, clock_from_env, clock_from_spec
from shared.errors import InputError, Problem


def add_clock_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clock",
        help="clock spec: 'real' or 'sim:START:SPEED[:ANCHOR_UNIX_S]' (default: $EMS_CLOCK, else real)",
    )


def clock_from_option(spec: str | None) -> RealClock | SimulatedClock:
    """The clock ``--clock`` names, else ``$EMS_CLOCK``, else real time; a bad spec is an InputError."""
    try:
        return clock_from_spec(spec) if spec else clock_from_env()
    except ValueError as exc:
        raise InputError("--clock", [Problem("", str(exc))]) from None
