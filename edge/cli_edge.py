"""``ems edge --site S --cabinet ID``: run one cabinet's edge controller (and its OPC UA server)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from shared.cli_clock import add_clock_option, clock_from_option
from shared.errors import InputError, Problem

log = logging.getLogger("edge")

STATUS_EVERY_S = 10.0
SWITCH_INTERVAL_S = 0.0005


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "edge",
        help="run the edge controller of one cabinet (control loop, interlocks, OPC UA server)",
        description=(
            "Run the edge controller of one cabinet: the fast control loop against the cabinet's SunSpec "
            "device and the site meter, the safety interlocks, the local schedule store, and the cabinet's "
            "OPC UA server. Logs mode changes and trips; Ctrl-C writes 0 W and stops."
        ),
    )
    parser.add_argument("--site", required=True, type=Path, help="site file (TOML)")
    parser.add_argument("--cabinet", required=True, help="cabinet id in the site file")
    add_clock_option(parser)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="directory of the local database (default: [edge] state_dir)",
    )
    parser.add_argument(
        "--no-opcua",
        action="store_true",
        help="run the control loop without the OPC UA server (commissioning; schedules cannot be pushed)",
    )
    parser.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from shared.site import load_site

    site = load_site(args.site)
    if args.cabinet not in site.cabinet_ids:
        known = ", ".join(site.cabinet_ids)
        raise InputError(
            str(args.site), [Problem("cabinets", f"no cabinet {args.cabinet!r} (known: {known})")]
        )
    # A plan window that reaches this edge's hard SoC limits (an error) starts nothing; warnings are logged.
    from shared.plausibility import accept_site

    for finding in accept_site(site, strict=False, strict_by="", source=str(args.site)):
        log.warning("site file: %s: %s", finding.severity.value, finding)
    clock = clock_from_option(args.clock)
    from edge.timing import run_precise

    # The control loop runs in its own thread; let it take the interpreter within 0.5 ms even while the
    # OPC UA server computes (the default switch interval is 5 ms, half a 10 ms cycle).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return run_precise(_run(args, site, clock))


async def _run(args: argparse.Namespace, site: Any, clock: Any) -> int:
    from edge.controller import EdgeController

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    controller = EdgeController(site, args.cabinet, clock, state_dir=args.state_dir)
    log.info(
        "edge %s: device %s, meter %s, cycle %g ms, fallback %s, database %s",
        args.cabinet,
        controller.cabinet_config.modbus_address,
        site.site.meter_modbus_address,
        site.edge.cycle_ms,
        site.site.fallback_mode.value,
        controller.database_path,
    )
    async with contextlib.AsyncExitStack() as stack:
        if args.no_opcua:
            log.warning("edge %s: running WITHOUT the OPC UA server (--no-opcua)", args.cabinet)
        else:
            # The OPC UA server starts first (a missing PKI fails before the device is touched) and stops
            # last; it calls the controller, which answers "not running" until it has started.
            from edge.opcua import EdgeOpcUaServer

            cache_dir = controller.database_path.parent
            await stack.enter_async_context(
                EdgeOpcUaServer(site, args.cabinet, controller, clock, cache_dir=cache_dir)
            )
        await stack.enter_async_context(controller)
        # Everything loaded so far lives as long as the process: keep it out of the cyclic garbage
        # collector, whose full passes over it would stall the control loop for milliseconds.
        gc.freeze()
        await _supervise(controller, stop)
        log.info("edge %s: stopping (writing 0 W)", args.cabinet)
    return 0


async def _supervise(controller: Any, stop: asyncio.Event) -> None:
    """Until ``stop``: a status line every STATUS_EVERY_S, and under systemd readiness and the watchdog,
    fed only while the control loop completes cycles (a hung loop gets the process restarted)."""
    from shared.systemd import SystemdNotifier

    notifier = SystemdNotifier()
    notifier.ready(f"cabinet {controller.cabinet_id}: control loop running")
    tick_s = min(STATUS_EVERY_S, notifier.watchdog_interval_s or STATUS_EVERY_S)
    loop = asyncio.get_running_loop()
    next_status_s = loop.time() + STATUS_EVERY_S
    cycles = controller.timing.cycles
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), tick_s)
        if stop.is_set():
            break
        if controller.timing.cycles != cycles:
            cycles = controller.timing.cycles
            notifier.watchdog()
        else:
            log.error("edge %s: the control loop made no cycle in %.1f s", controller.cabinet_id, tick_s)
        if loop.time() >= next_status_s:
            next_status_s += STATUS_EVERY_S
            _status(controller)
            notifier.status(_status_line(controller.telemetry()))
    notifier.stopping()


def _status(controller: Any) -> None:
    log.info("edge %s", _status_line(controller.telemetry()))


def _status_line(t: Any) -> str:
    return (
        f"{t.cabinet_id}: {t.mode.value}, setpoint {t.setpoint_kw:.1f} kW, power {t.active_power_kw:.1f} kW, "
        f"SoC {t.soc_pct:.1f} %, schedule {t.schedule_id or '-'}, period p99 {t.cycle_time_p99_ms:.2f} ms"
        + _interlock_note(t)
    )


def _interlock_note(telemetry: Any) -> str:
    from shared.edge_api import EdgeMode

    if telemetry.mode is EdgeMode.TRIPPED:
        return f", TRIPPED: {telemetry.interlock_reason}"
    if telemetry.interlock_active:
        return f", HOLDING: {telemetry.interlock_reason}"
    return ""
