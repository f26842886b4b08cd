"""One fault campaign from start to report (``ems soak``).

1. the output directory is prepared; the site is written in three views (simulator, edges, central) on
   free loopback ports with a fault proxy on every link (:mod:`lab.soak.sites`);
2. ``ems certs`` makes the PKI; the campaign adds its observer identity (the demo's);
3. the fault schedule is drawn from the seed (or read from ``--replay-from``) and written to
   ``faults.json``;
4. :class:`lab.soak.runner.Live` starts the proxies, ``ems sim``, one ``ems edge`` per cabinet and
   ``ems central`` on one simulated clock, uploads the first day and runs the schedule while sampling;
5. every child and proxy is stopped (also on Ctrl-C, SIGTERM or a failure), the databases are checked
   once more, every invariant is evaluated, and the report is written (:mod:`lab.soak.report`).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.demo.checks import observation_grace_s
from lab.demo.edge_observer import add_observer_identity
from lab.demo.live import CENTRAL, SIM, child_environment
from lab.demo.processes import ChildFailedError, ProcessSupervisor
from lab.demo.progress import ProgressDisplay
from lab.demo.runner import STARTUP_LEAD_BASE_S, STARTUP_LEAD_PER_PROCESS_S
from lab.demo.sampler import PROBE_POLL_MS, sample_period_s
from lab.demo.sitecopy import DemoPaths
from lab.soak import invariants
from lab.soak.monitor import integrity_check, process_groups, read_central_state
from lab.soak.records import IntegrityCheck, SoakRecord
from lab.soak.runner import CampaignFailedError, Live, LiveSetup
from lab.soak.schedule import CampaignSchedule, generate_schedule
from lab.soak.sites import write_site_views
from shared.clock import SimulatedClock
from shared.dayahead import DayAhead
from shared.errors import InputError, Problem
from shared.opcua.pki import CENTRAL_HTTP_NODE, PkiLayout, pki_layout, users_path
from shared.site import SiteConfig

DEFAULT_SPEED = 360.0  # a simulated day in 4 minutes: 7 days in about 30 minutes
MAX_SPEED = 2000.0
CERTS_TIMEOUT_S = 120.0
OUT_MARKER = ".ems-soak"
OWNED_ENTRIES = (
    "logs",
    "state",
    "pki",
    "site.toml",
    "site-edges.toml",
    "site-central.toml",
    "day-ahead.json",
    "faults.json",
    "replay.json",
    "summary.json",
    "timeline.png",
)
# Time compression (docs/soak.md, "Bounds"): device watchdogs and the edges' timers are wall time.
REVERT_TIMEOUT_WALL_S = 2.0  # the device falls back to 0 W this long after its edge stops writing
FROZEN_DATA_TIMEOUT_WALL_S = 3.0
OPCUA_RECONNECT_MAX_WALL_S = 1.0
POC_REACTION_MARGIN_WALL_S = 0.5  # on top of the device revert and two control cycles
# Reconnect backoff (1 s) + a secure session (RSA handshakes on both sides, measured up to 6 s on this
# 2-core machine at load average 10) + the push.
HEAL_FLOOR_WALL_S = 10.0
LIMIT_TOLERANCE_KW = 1.0
COST_REL = 0.05
COST_ABS_PER_INTERVAL = 0.5
FAULT_SETTLE_S = 900.0


@dataclass(frozen=True)
class SoakOptions:
    site_path: Path
    dayahead_path: Path
    out_dir: Path
    site: SiteConfig
    dayahead: DayAhead  # the first day (its load and PV repeat every day)
    schedule: CampaignSchedule
    speed: float
    json_line: bool
    replayed_from: Path | None = None


def check_speed(speed: float) -> float:
    if not (math.isfinite(speed) and 1.0 <= speed <= MAX_SPEED):
        raise InputError("--speed", [Problem("", f"must be between 1 and {MAX_SPEED:g}, got {speed:g}")])
    return speed


def new_schedule(seed: int, days: float, site: SiteConfig) -> CampaignSchedule:
    if not (math.isfinite(days) and 0 < days <= 366):
        raise InputError("--days", [Problem("", f"must be > 0 and at most 366, got {days:g}")])
    return generate_schedule(seed, days, site.cabinet_ids)


def check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out", [Problem("", f"{out_dir} exists and is not a directory")])
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / OUT_MARKER).exists():
        raise InputError(
            "--out",
            [Problem("", f"{out_dir} is not empty and not a previous campaign's output; choose another")],
        )


def _prepare_out_dir(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OWNED_ENTRIES:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (out_dir / OUT_MARKER).write_text(
        "written by `ems soak`; it may clear this directory\n", encoding="utf-8"
    )


def timing_overrides(site: SiteConfig, seed: int, pki_dir: Path) -> dict[str, dict[str, Any]]:
    """Site settings for a compressed clock: the devices' watchdogs and the edges' timers run on wall time.
    A site whose HTTP API has TLS keeps it, with the certificate `ems certs` makes in the campaign's PKI."""
    tls: dict[str, dict[str, Any]] = {}
    if site.central.tls_cert_file is not None:
        layout = PkiLayout(pki_dir.resolve())
        tls["central"] = {
            "tls_cert_file": str(layout.http_cert_path),
            "tls_key_file": str(layout.key_path(CENTRAL_HTTP_NODE)),
        }
    return tls | {
        "edge": {
            "revert_timeout_s": min(site.edge.revert_timeout_s, REVERT_TIMEOUT_WALL_S),
            "frozen_data_timeout_s": min(site.edge.frozen_data_timeout_s, FROZEN_DATA_TIMEOUT_WALL_S),
        },
        "opcua": {
            "reconnect_max_s": max(
                site.opcua.reconnect_min_s, min(site.opcua.reconnect_max_s, OPCUA_RECONNECT_MAX_WALL_S)
            )
        },
        "sim": {"seed": seed, "watchdog_clock": "wall"},
    }


def campaign_bounds(site: SiteConfig, speed: float, period_s: float) -> invariants.Bounds:
    """Every invariant's bound for this site and speed (docs/soak.md explains each)."""
    cycle_s = site.edge.cycle_ms / 1000.0
    revert_s = min(site.edge.revert_timeout_s, REVERT_TIMEOUT_WALL_S)
    poc_wall_s = revert_s + 2 * cycle_s + POC_REACTION_MARGIN_WALL_S
    return invariants.Bounds(
        import_limit_kw=site.site.grid_import_limit_kw,
        export_limit_kw=site.site.grid_export_limit_kw,
        limit_tolerance_kw=LIMIT_TOLERANCE_KW,
        poc_reaction_s=max(poc_wall_s * speed, 2 * period_s),
        reaction_ms=2 * site.edge.cycle_ms,
        probe_poll_ms=PROBE_POLL_MS,
        observation_grace_s=observation_grace_s(period_s, speed),
        heal_bound_s=max(site.central.reoptimize_every_minutes * 60.0, HEAL_FLOOR_WALL_S * speed),
        fault_settle_s=FAULT_SETTLE_S,
        cost_rel=COST_REL,
        cost_abs_per_interval=COST_ABS_PER_INTERVAL,
        rss_growth_mb=50.0,
        rss_growth_rel=0.3,
        threads_growth=4,
        fds_growth=16,
        warmup_wall_s=30.0,
        min_span_wall_s=60.0,
    )


def run_campaign(options: SoakOptions) -> int:
    """Run the campaign; exit code 0 every invariant held, 1 one failed or the run failed, 130 stopped."""
    display = ProgressDisplay()
    try:
        return asyncio.run(_main(options, display))
    except KeyboardInterrupt:
        display.message("interrupted")
        return 130


async def _main(options: SoakOptions, display: ProgressDisplay) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[str] = []

    def interrupt(name: str) -> None:
        received.append(name)
        if task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt, sig.name)
    campaign = Campaign(options, display)
    try:
        return await campaign.run()
    except asyncio.CancelledError:
        display.finish()
        display.message(
            f"{received[0] if received else 'cancelled'}: stopping every process the campaign started"
        )
        await campaign.shutdown()
        return 130
    except (CampaignFailedError, ChildFailedError) as exc:
        display.finish()
        display.message(f"error: {exc}")
        await campaign.shutdown()
        return 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class Campaign:
    def __init__(self, options: SoakOptions, display: ProgressDisplay) -> None:
        self.options = options
        self.display = display
        self.paths = DemoPaths(options.out_dir)
        self.record = SoakRecord()
        self.supervisor: ProcessSupervisor | None = None
        self.live: Live | None = None
        self.period_s = sample_period_s(options.speed)

    async def run(self) -> int:
        options, paths = self.options, self.paths
        started = time.monotonic()
        check_out_dir(options.out_dir)
        _prepare_out_dir(options.out_dir)
        paths.create()
        paths.dayahead_file.write_text(
            json.dumps(options.dayahead.to_json_dict(), indent=1) + "\n", encoding="utf-8"
        )
        schedule = options.schedule
        (paths.out_dir / "faults.json").write_text(
            schedule.to_json({"speed": options.speed}), encoding="utf-8"
        )
        views = write_site_views(
            options.site_path,
            paths,
            paths.dayahead_file,
            timing_overrides(options.site, schedule.seed, paths.pki_dir),
        )
        site = views.edges
        bounds = campaign_bounds(site, options.speed, self.period_s)
        self.display.message(
            f"ems soak: seed {schedule.seed}, {schedule.days:g} day(s), {schedule.fault_count} faults, site "
            f"{site.site.name!r} ({len(site.cabinets)} cabinets) at {options.speed:g}x; "
            f"output in {paths.out_dir}"
        )
        api_token = secrets.token_urlsafe(24)
        env = child_environment(api_token, site.opcua.central_password_env, secrets.token_urlsafe(18))
        supervisor = ProcessSupervisor(paths.logs_dir, paths.out_dir, env)
        self.supervisor = supervisor
        await asyncio.to_thread(
            supervisor.run, "certs", ["certs", "--site", str(views.sim_file)], CERTS_TIMEOUT_S
        )
        layout = pki_layout(views.sim)
        credentials = add_observer_identity(
            views.sim, layout, users_path(views.sim, layout), secrets.token_urlsafe(18)
        )
        lead_s = STARTUP_LEAD_BASE_S + STARTUP_LEAD_PER_PROCESS_S * (len(site.cabinets) + 1)
        clock = SimulatedClock(options.dayahead.start, options.speed, time.time() + lead_s)
        setup = LiveSetup(
            views,
            paths,
            clock,
            layout,
            credentials,
            api_token,
            self.period_s,
            schedule,
            options.dayahead,
            bounds,
        )
        self.live = Live(setup, supervisor, self.display, self.record)
        try:
            await self.live.run()
        finally:
            await self.shutdown()
        self.record.wall_time_s = time.monotonic() - started
        return await self._report(bounds)

    async def shutdown(self) -> None:
        """Stop every child (central, edges, simulator) and every proxy; check the databases once more."""
        supervisor, self.supervisor = self.supervisor, None
        live = self.live
        if supervisor is not None:
            pids = {name: child.pid for name, child in supervisor.children.items()}
            if live is not None:
                for span in live.open_spans():
                    self.record.spans.append(span)
            edges = [n for n in supervisor.children if n.startswith("edge-")]
            await asyncio.to_thread(supervisor.stop_all, [[CENTRAL], edges, [SIM]])
            groups = await asyncio.to_thread(process_groups)
            self.record.leftover_processes = [
                f"{n} (pid {p})" for n, p in pids.items() if groups.get(p, 0) > 0
            ]
            await self._final_integrity()
        if live is not None:
            await live.stop_links()

    async def _final_integrity(self) -> None:
        paths = [self.paths.central_database, *sorted(self.paths.edge_state_dir.glob("*.sqlite3"))]
        for path in paths:
            result = await asyncio.to_thread(integrity_check, path)
            at_s = self.live.clock.time_s() if self.live is not None else 0.0
            self.record.integrity.append(IntegrityCheck(at_s, "end", str(path), result))

    async def _report(self, bounds: invariants.Bounds) -> int:
        from lab.soak.report import write_report

        central = await asyncio.to_thread(read_central_state, self.paths.central_database, True)
        assert self.live is not None
        summary = await asyncio.to_thread(
            write_report,
            self.options,
            self.record,
            central,
            bounds,
            self.period_s,
            self.live.campaign_start_s,
        )
        for name, result in summary["invariants"].items():
            self.display.message(f"  [{'PASS' if result['passed'] else 'FAIL'}] {name}: {result['detail']}")
        verdict = "every invariant held" if summary["passed"] else "SOME INVARIANTS FAILED"
        self.display.message(
            f"{verdict}: {summary['faults_injected']} faults in {summary['days']:g} day(s), wall time "
            f"{summary['wall_s']:.0f} s; report {self.paths.out_dir / 'summary.json'}"
        )
        if self.options.json_line:
            print(json.dumps(contract_line(summary)), flush=True)
        return 0 if summary["passed"] else 1


def contract_line(summary: dict[str, Any]) -> dict[str, Any]:
    """Exactly the keys of the ``--json`` line."""
    return {
        key: summary[key] for key in ("passed", "days", "seed", "faults_injected", "invariants", "wall_s")
    }
