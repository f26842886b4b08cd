"""``ems soak``: a seeded fault campaign over simulated days against the real processes, with invariants.

See docs/soak.md.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("soak-out")


def register(subparsers: Any) -> None:
    from lab.soak.campaign import DEFAULT_SPEED, MAX_SPEED

    parser = subparsers.add_parser(
        "soak",
        help="run a seeded fault campaign: kills, device faults, link faults and uploads over simulated days",
        description="Run a seeded random fault campaign against the real processes (ems sim, one ems edge "
        "per cabinet, ems central) on free loopback ports, with a fault proxy on every OPC UA and Modbus "
        "link, checking the system's invariants the whole time. Writes summary.json, faults.json, "
        "timeline.png and, when an invariant fails, replay.json into --out. Exit status: 0 every invariant "
        "held; 1 one failed "
        "or the run failed; 2 bad arguments; 130 stopped by Ctrl-C or SIGTERM. See docs/soak.md.",
    )
    parser.add_argument(
        "--days", type=float, default=None, help="simulated days to run (required unless --replay-from)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of the fault schedule (required unless --replay-from)"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help=f"simulated s per wall s, 1-{MAX_SPEED:g} (default {DEFAULT_SPEED:g}, or the replay's)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON object on the last line"
    )
    parser.add_argument(
        "--replay-from",
        dest="replay_from",
        type=Path,
        default=None,
        help="run the faults of a faults.json or replay.json again (its seed and days) instead of new ones",
    )
    parser.add_argument("--site", type=Path, default=None, help="site file (default: examples/site.toml)")
    parser.add_argument(
        "--day-ahead",
        dest="day_ahead",
        type=Path,
        default=None,
        help="day-ahead of the first day "
        "(default: examples/day-ahead.json); every later day repeats its load and PV",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lab.demo.options import DEFAULT_DAYAHEAD, DEFAULT_SITE, default_input
    from lab.soak.campaign import run_campaign
    from lab.soak.options import resolve_options

    if not args.verbose:
        logging.getLogger("asyncua").setLevel(logging.CRITICAL)
        for name in ("central.edge_link", "shared.opcua"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        for name in ("httpx", "matplotlib"):
            logging.getLogger(name).setLevel(logging.WARNING)
    options = resolve_options(
        site_path=default_input(args.site, DEFAULT_SITE),
        dayahead_path=default_input(args.day_ahead, DEFAULT_DAYAHEAD),
        days=args.days,
        seed=args.seed,
        speed=args.speed,
        out_dir=args.out,
        json_line=args.json,
        replay_from=args.replay_from,
    )
    return run_campaign(options)
