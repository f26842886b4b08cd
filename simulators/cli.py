"""``ems sim --site S``: run every SunSpec device of a site (``ems bench sim`` lives in :mod:`lab.bench.sim`).

``ems sim`` with ``--fault``, ``--clear`` or ``--status`` does not start devices: it talks to a running
simulator's control interface (``[sim] control_address``) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli_clock import add_clock_option, clock_from_option

if TYPE_CHECKING:
    from simulators.site import SiteSimulator

HEALTH_CHECK_S = 0.5  # how often `ems sim` checks that the physics task is alive


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run the SunSpec device simulators of a site (cabinets and meter)",
        description="Start every cabinet device (SunSpec models 1, 701, 704, 802) and the site meter "
        "(models 1, 203) of the site file on their Modbus TCP addresses, with battery physics on the given "
        "clock and a fault-injection control interface. Stops cleanly on Ctrl-C or SIGTERM. With --fault, "
        "--clear or --status it instead sends that request to a running simulator and exits.",
    )
    parser.add_argument("--site", type=Path, required=True, help="site file (.toml)")
    add_clock_option(parser)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DAYAHEAD",
        help="day-ahead file (.json/.csv) with the load and PV profile "
        "(default: [sim] profile, else examples/day-ahead.json)",
    )
    parser.add_argument(
        "--initial-soc",
        action="append",
        default=[],
        metavar="CABINET=PCT",
        help="initial SoC of a cabinet, repeatable (default: the profile's initial_soc_pct, else 50)",
    )
    parser.add_argument(
        "--host", help="listen on this host for every device instead of the site file's hosts"
    )
    parser.add_argument("--no-control", action="store_true", help="do not serve the control interface")
    parser.add_argument(
        "--progress-every-s",
        type=float,
        default=10.0,
        metavar="S",
        help="wall-clock seconds between status lines (0: none; default 10)",
    )
    client = parser.add_mutually_exclusive_group()
    client.add_argument(
        "--fault",
        metavar="DEVICE:NAME[:VALUE]",
        help="set a fault on a running simulator, e.g. cab-1:delay:200, cab-2:over_temperature, meter:freeze",
    )
    client.add_argument(
        "--clear", metavar="DEVICE:NAME", help="clear a fault (NAME 'all' clears every fault)"
    )
    client.add_argument("--status", action="store_true", help="print a running simulator's state as JSON")
    parser.set_defaults(handler=run)


# ------------------------------------------------------------------------------------------ ems sim


def run(args: argparse.Namespace) -> int:
    from shared.site import load_site
    from simulators.control import ControlError, control_request

    site = load_site(args.site)
    request = _client_request(args)
    if request is not None:
        try:
            response = asyncio.run(control_request(site.sim.control_address, request))
        except ControlError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(response, indent=2 if args.status else None))
        return 0
    try:
        options = _options(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_serve(site, args, *options))


def _client_request(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.status:
        return {"cmd": "status"}
    if args.fault is not None:
        device, _, rest = str(args.fault).partition(":")
        name, _, value = rest.partition(":")
        request: dict[str, Any] = {"cmd": "set", "device": device, "fault": name}
        if value:
            request["value"] = value
        return request
    if args.clear is not None:
        device, _, name = str(args.clear).partition(":")
        return {"cmd": "clear", "device": device, "fault": name}
    return None


def _options(args: argparse.Namespace) -> tuple[Any, Any, dict[str, float]]:
    from shared.dayahead import load_dayahead

    clock = clock_from_option(args.clock)
    profile = load_dayahead(args.profile) if args.profile is not None else None
    socs: dict[str, float] = {}
    for item in args.initial_soc:
        cabinet, sep, value = str(item).partition("=")
        try:
            socs[cabinet.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--initial-soc {item!r}: expected CABINET=PCT") from None
        if not sep:
            raise ValueError(f"--initial-soc {item!r}: expected CABINET=PCT")
    if args.progress_every_s < 0:
        raise ValueError("--progress-every-s must be >= 0")
    return clock, profile, socs


async def _serve(
    site: Any, args: argparse.Namespace, clock: Any, profile: Any, socs: dict[str, float]
) -> int:
    from simulators.site import SiteSimulator

    try:
        sim = SiteSimulator(
            site,
            clock,
            profile,
            socs or None,
            args.host,
            control=not args.no_control,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await sim.start()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        _print_addresses(sim, args)
        print("ems sim: ready (Ctrl-C to stop)", flush=True)
        interval_s = float(args.progress_every_s)
        next_progress_s = loop.time() + interval_s
        while not stop.is_set():
            timeout_s = (
                min(HEALTH_CHECK_S, next_progress_s - loop.time()) if interval_s > 0 else HEALTH_CHECK_S
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, timeout_s))
            if sim.failure is not None:
                print(f"error: simulator physics failed: {sim.failure!r}", file=sys.stderr)
                return 1
            if interval_s > 0 and loop.time() >= next_progress_s and not stop.is_set():
                print(_progress_line(sim), flush=True)
                next_progress_s += interval_s
    finally:
        await sim.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    print("ems sim: stopped", flush=True)
    return 0


def _print_addresses(sim: SiteSimulator, args: argparse.Namespace) -> None:
    addresses = sim.addresses
    print(f"site {sim.site.site.name!r}, clock {sim.clock.spec()}", flush=True)
    for cabinet in sim.site.cabinets:
        print(f"  {cabinet.id}: SunSpec cabinet (models 1, 701, 704, 802) on {addresses[cabinet.id]} unit 1")
    print(f"  meter: SunSpec site meter (models 1, 203, W + import) on {addresses['meter']} unit 1")
    if not args.no_control:
        host, _, port = sim.site.sim.control_address.rpartition(":")
        print(f"  control interface (JSON lines) on {args.host or host}:{port}", flush=True)


def _progress_line(sim: SiteSimulator) -> str:
    from shared.timeutil import format_utc

    parts: list[str] = []
    for cabinet_id, cabinet in sim.cabinets.items():
        state = cabinet.state
        parts.append(f"{cabinet_id} {state.soc_pct:.1f}% {state.active_power_kw:+.1f}kW {state.state}")
    meter = sim.meter.state
    parts.append(f"meter {meter.power_kw:+.1f}kW")
    return f"[{format_utc(sim.clock.now().replace(microsecond=0))}] " + " | ".join(parts)
