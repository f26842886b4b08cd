"""``ems central --site S [--clock SPEC]``: run the central service until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.cli_clock import add_clock_option, clock_from_option

if TYPE_CHECKING:
    from shared.clock import Clock
    from shared.site import SiteConfig

log = logging.getLogger("central")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "central",
        help="run the central service (day-ahead upload API, re-optimization, push to the edges)",
        description="Run the central service of a site: the HTTP API for day-ahead uploads, plans and edge "
        "status; re-optimization every [central] reoptimize_every_minutes and at once after each upload; "
        "pushes to every edge over OPC UA; persistence in SQLite ([central] database_path). Stops cleanly "
        "on Ctrl-C or SIGTERM. See docs/central.md.",
    )
    parser.add_argument("--site", type=Path, required=True, help="site file (TOML)")
    add_clock_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shared.site import load_site

    site = load_site(args.site)  # a bad file or clock raises InputError: `ems` prints it and exits 2
    return asyncio.run(_serve(site, clock_from_option(args.clock)))


async def _serve(site: SiteConfig, clock: Clock) -> int:
    from central.service.app import CentralService, ServiceConfig
    from shared.errors import InputError
    from shared.systemd import SystemdNotifier

    # APScheduler logs every job run at INFO (several per second at high clock speeds); the service logs
    # what matters itself.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        service = CentralService(site, clock, ServiceConfig.from_site(site))
        try:
            await service.__aenter__()
        except InputError as exc:  # a missing password, key, certificate or users file
            for line in exc.lines():
                print(f"error: {line}", file=sys.stderr)
            return 2
        except Exception as exc:
            log.debug("start failed", exc_info=True)
            print(f"error: cannot start the central service: {exc}", file=sys.stderr)
            return 1
        try:
            print(f"central service of site {site.site.name!r} on {service.url} (Ctrl-C stops)", flush=True)
            notifier = SystemdNotifier()
            notifier.ready(f"site {site.site.name}: serving on {service.url}")
            waiter = asyncio.create_task(service.wait_stopped())
            stopper = asyncio.create_task(stop.wait())
            watchdog = asyncio.create_task(_feed_watchdog(notifier))
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiter, stopper, watchdog):
                task.cancel()
            notifier.stopping()
            print("stopping", flush=True)
        finally:
            await service.__aexit__(None, None, None)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 0


async def _feed_watchdog(notifier: Any) -> None:
    """Under systemd with ``WatchdogSec=``: ping while this event loop (HTTP, OPC UA link, scheduler) runs;
    a blocked loop stops the pings and systemd restarts the service."""
    interval_s = notifier.watchdog_interval_s
    if interval_s is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)
