"""``ems demo``: run the whole system on one machine through a simulated day and write a report.

Starts the device simulators, one edge per cabinet and the central service as separate processes on
loopback (the real ``ems`` commands), uploads the day-ahead file, runs a scenario on a shared simulated
clock, and writes ``summary.json``, ``samples.csv`` and PNG plots into the output directory. See
docs/demo.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lab.demo.options import DEFAULT_DAYAHEAD, DEFAULT_OUT, DEFAULT_SITE, MAX_SPEED, TARGET_WALL_S
from lab.demo.scenarios import SCENARIOS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo: simulators, edges and central through a simulated day, with a report",
        description="Run the end-to-end demo: start the device simulators, one edge per cabinet and the "
        "central service as separate processes on free loopback ports, upload the day-ahead file, run a "
        "scenario on a shared simulated clock and write a report (summary.json, samples.csv, PNG plots) "
        "into --out. Everything the demo creates (PKI, state, logs) stays in --out. Exit status: 0 every "
        "check of the scenario passed; 1 a check failed or a process failed; 2 bad arguments. "
        "See docs/demo.md.",
    )
    parser.add_argument(
        "--site",
        type=Path,
        default=None,
        help=f"site file (default: {DEFAULT_SITE}); ports and directories are rewritten",
    )
    parser.add_argument(
        "--day-ahead",
        dest="day_ahead",
        type=Path,
        default=None,
        help=f"day-ahead file, .json or .csv (default: {DEFAULT_DAYAHEAD}); its start is the "
        "simulated clock's start",
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=None,
        help="simulated hours to run from the day-ahead's start (default: its whole horizon)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help=f"simulated seconds per wall second, 1-{MAX_SPEED:g} (default: the window in "
        f"about {TARGET_WALL_S / 60:g} minutes; 480 for a 24 h day)",
    )
    parser.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="normal",
        help="what happens during the day (default: normal)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output directory for the report, logs and state (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--console",
        action="store_true",
        help="print the operator console's URL and an operator token, and keep the console open after "
        "the day until Ctrl+C (then the report is written)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lab.demo.options import default_input, resolve_options
    from lab.demo.runner import run_demo

    if not args.verbose:
        # The demo's own OPC UA sessions and HTTP calls are routine; the children log to OUT/logs.
        # Connection retries while the edges start up, and lost sessions when a scenario kills an edge,
        # are expected: the report says what happened.
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        for name in ("central.edge_link", "shared.opcua"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for name in ("httpx", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)

    options = resolve_options(
        site_path=default_input(args.site, DEFAULT_SITE),
        dayahead_path=default_input(args.day_ahead, DEFAULT_DAYAHEAD),
        hours=args.hours,
        speed=args.speed,
        scenario=args.scenario,
        out_dir=args.out,
        console=args.console,
    )
    return run_demo(options)
