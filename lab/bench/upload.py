"""``ems bench upload``: time from a day-ahead upload to every edge running the new schedule.

A throw-away site in a temporary directory: simulated devices, N edges (controller + secure OPC UA server)
and the central service, all in this process on loopback, on a simulated clock. Each run POSTs a fresh
day-ahead (prices vary, so every run makes a new plan) and measures, with a 1 ms poll of the edge
controllers, when the last edge reports the new plan's schedule in ``schedule`` mode.

Everything shares one event loop and the solver competes with the edges for the GIL, so the figure is
pessimistic against a deployment where the central and each edge have their own process or machine. The
edges' communication timeouts are relaxed for the same reason (they are not what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from central.service.app import API_TOKEN_ENV, CentralService, ServiceConfig
from lab.localsite import LocalSite, prepare_security
from lab.loopback import free_port, loopback_site_toml
from shared.clock import SimulatedClock
from shared.site import SiteConfig, load_site

INTERVAL_MINUTES = 15
STEPS = 96


@dataclass(frozen=True)
class RunTiming:
    """One upload [s, wall time]."""

    upload_to_all_running_s: float
    upload_to_response_s: float
    optimize_s: float
    push_max_ms: float


@dataclass(frozen=True)
class BenchResult:
    cabinets: int
    runs: int
    speed: float
    target_s: float
    median_upload_to_all_running_s: float
    min_upload_to_all_running_s: float
    max_upload_to_all_running_s: float
    median_upload_to_response_s: float
    median_optimize_s: float
    median_push_max_ms: float
    first_upload_to_all_running_s: float  # the first upload (warm-up: imports, first solve)
    target_met: bool
    timings: list[RunTiming]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_site_toml(directory: Path, cabinets: int) -> str:
    extra = "\n".join(
        [
            "[edge]",
            "modbus_timeout_ms = 1000.0",
            "comm_timeout_ms = 3000.0",
            "",
            "[central]",
            f'http_address = "127.0.0.1:{free_port()}"',
            f'database_path = "{directory / "central.sqlite3"}"',
            "reoptimize_every_minutes = 1440.0",  # only the uploads make plans during the bench
            "",
            "[opcua]",
            f'pki_dir = "{directory / "pki"}"',
            "",
            "[sim]",
            f'control_address = "127.0.0.1:{free_port()}"',
        ]
    )
    return loopback_site_toml(
        cabinets, name="bench-site", grid_import_limit_kw=1000.0, grid_export_limit_kw=800.0, extra=extra
    )


def dayahead_body(start: datetime, seed: int) -> bytes:
    """A day of prices with a daily shape; ``seed`` shifts them so each run makes a different plan."""
    prices = [
        round(0.15 + 0.08 * math.sin(2 * math.pi * (i / STEPS - 0.3)) + 0.002 * ((i * 7 + seed * 13) % 11), 5)
        for i in range(STEPS)
    ]
    load = [round(150.0 + 60.0 * math.sin(2 * math.pi * (i / STEPS - 0.25)), 2) for i in range(STEPS)]
    data = {
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "interval_minutes": INTERVAL_MINUTES,
        "import_price_per_kwh": prices,
        "export_price_per_kwh": [round(p * 0.6, 5) for p in prices],
        "load_kw": load,
    }
    return json.dumps(data).encode()


async def run_upload_bench(
    *, cabinets: int, runs: int, speed: float, target_s: float, progress: Callable[[str], None]
) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="ems-bench-upload-") as temp:
        directory = Path(temp)
        site_path = directory / "site.toml"
        site_path.write_text(bench_site_toml(directory, cabinets), encoding="utf-8")
        site = load_site(site_path)
        progress(f"site with {cabinets} cabinets in {directory}: creating keys and certificates")
        password = await asyncio.to_thread(prepare_security, site, directory / "pki")
        day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        clock = SimulatedClock(day + timedelta(minutes=1), speed)
        token = secrets.token_urlsafe(24)
        env = {API_TOKEN_ENV: token, site.opcua.central_password_env: password}
        config = ServiceConfig.from_site(site, env)
        progress("starting the simulators and the edges")
        async with LocalSite(site, clock, directory) as local:
            progress("starting the central service")
            async with (
                CentralService(site, clock, config) as service,
                httpx.AsyncClient(base_url=service.url, timeout=120.0) as client,
            ):
                await _wait(lambda: all(service.connected().values()), 30.0, "the edges to connect")
                timings = []
                for index in range(runs + 1):
                    timing = await _one_upload(site, local, client, token, day, index)
                    label = "warm-up" if index == 0 else f"run {index}/{runs}"
                    progress(
                        f"{label}: upload -> all {cabinets} edges running "
                        f"{timing.upload_to_all_running_s:.3f} s "
                        f"(answer {timing.upload_to_response_s:.3f} s, optimize {timing.optimize_s:.3f} s, "
                        f"slowest push {timing.push_max_ms:.0f} ms)"
                    )
                    timings.append(timing)
    measured = timings[1:]
    totals = [t.upload_to_all_running_s for t in measured]
    median = statistics.median(totals)
    return BenchResult(
        cabinets=cabinets,
        runs=runs,
        speed=speed,
        target_s=target_s,
        median_upload_to_all_running_s=median,
        min_upload_to_all_running_s=min(totals),
        max_upload_to_all_running_s=max(totals),
        median_upload_to_response_s=statistics.median(t.upload_to_response_s for t in measured),
        median_optimize_s=statistics.median(t.optimize_s for t in measured),
        median_push_max_ms=statistics.median(t.push_max_ms for t in measured),
        first_upload_to_all_running_s=timings[0].upload_to_all_running_s,
        target_met=median < target_s,
        timings=measured,
    )


async def _one_upload(
    site: SiteConfig, local: LocalSite, client: httpx.AsyncClient, token: str, day: datetime, seed: int
) -> RunTiming:
    seen: dict[str, list[tuple[float, str]]] = {cab: [] for cab in site.cabinet_ids}
    stop = asyncio.Event()

    async def poll() -> None:
        # Record when each edge first reports each schedule (in schedule mode).
        while not stop.is_set():
            now = time.perf_counter()
            for cabinet_id, edge in local.edges.items():
                telemetry = edge.telemetry()
                if telemetry is None or telemetry.mode.value != "schedule":
                    continue
                history = seen[cabinet_id]
                if not history or history[-1][1] != telemetry.schedule_id:
                    history.append((now, telemetry.schedule_id))
            await asyncio.sleep(0.001)

    poller = asyncio.create_task(poll())
    started = time.perf_counter()
    try:
        answer = await client.post(
            "/api/v1/day-ahead",
            content=dayahead_body(day, seed),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        answered = time.perf_counter()
        if answer.status_code != 201:
            raise RuntimeError(f"upload answered HTTP {answer.status_code}: {answer.text[:300]}")
        run = answer.json()["run"]
        if not run["ok"]:
            raise RuntimeError(f"no plan: {run['message']}")
        plan_id = run["plan"]["plan_id"]
        wanted = {cab: f"{plan_id}/{cab}" for cab in site.cabinet_ids}
        await _wait(
            lambda: all(any(sid == wanted[cab] for _, sid in seen[cab]) for cab in wanted),
            10.0,
            "every edge to run the new plan",
        )
    finally:
        stop.set()
        await poller
    last = max(next(t for t, sid in seen[cab] if sid == wanted[cab]) for cab in wanted)
    pushes = [float(p["duration_ms"]) for p in run["push"].values()]
    return RunTiming(
        upload_to_all_running_s=last - started,
        upload_to_response_s=answered - started,
        optimize_s=float(run["optimize_wall_s"]),
        push_max_ms=max(pushes) if pushes else 0.0,
    )


async def _wait(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:g} s for {what}")
        await asyncio.sleep(0.002)


# ------------------------------------------------------------------------------------------- benchmark


def register_bench(bench_subparsers: Any) -> None:
    parser = bench_subparsers.add_parser(
        "upload",
        help="time from a day-ahead upload to every edge running the new schedule",
        description="Start a throw-away site in this process (simulated devices, edges with secure OPC UA, "
        "the central service, all on loopback) and time N uploads from the HTTP request until every edge "
        "runs the new plan. Reports medians; exits 1 when the median misses --target-s. See "
        "docs/central.md.",
    )
    parser.add_argument("--runs", type=int, default=5, help="measured uploads after one warm-up (default 5)")
    parser.add_argument("--cabinets", type=int, default=3, help="cabinets/edges (default 3)")
    parser.add_argument("--speed", type=float, default=60.0, help="simulated clock speed (default 60)")
    parser.add_argument("--target-s", type=float, default=2.0, help="target for the median [s] (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    if not 1 <= args.runs <= 1000 or not 1 <= args.cabinets <= 50:
        print("error: --runs must be 1-1000 and --cabinets 1-50", file=sys.stderr)
        return 2
    if not 1.0 <= args.speed <= 10_000.0 or not args.target_s > 0:
        print("error: --speed must be 1-10000 and --target-s > 0", file=sys.stderr)
        return 2
    # The site's own components log a lot at INFO (connections, pushes): keep the bench output readable.
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))

    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        result = asyncio.run(
            run_upload_bench(
                cabinets=args.cabinets,
                runs=args.runs,
                speed=args.speed,
                target_s=args.target_s,
                progress=progress,
            )
        )
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verdict = "met" if result.target_met else "MISSED"
    print(
        f"upload -> all {result.cabinets} edges running: "
        f"median {result.median_upload_to_all_running_s:.3f} s "
        f"(min {result.min_upload_to_all_running_s:.3f}, max {result.max_upload_to_all_running_s:.3f}, "
        f"{result.runs} runs); answer {result.median_upload_to_response_s:.3f} s, optimize "
        f"{result.median_optimize_s:.3f} s, slowest push {result.median_push_max_ms:.0f} ms; "
        f"target < {result.target_s:g} s {verdict}"
    )
    if args.json:
        print(json.dumps(result.as_dict()))
    return 0 if result.target_met else 1
