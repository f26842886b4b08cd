"""Runs one demo: prepare, start, run the day, stop everything, report.

1. the output directory is prepared and the site file rewritten onto free loopback ports, with every
   state directory under the output directory;
2. ``ems certs`` makes the PKI and users; the demo adds its own observer identity and operator user;
3. the simulated clock is fixed: it starts at the day-ahead's start, anchored a little in the wall-clock
   future so every process is up before the day begins, and every child gets it as ``--clock``;
4. :class:`lab.demo.live.LiveRun` starts ``ems sim``, one ``ems edge`` per cabinet and ``ems central``,
   uploads the day-ahead, and samples the day while the scenario's actions happen;
5. every child is stopped (also on Ctrl-C, SIGTERM or any failure), their state files are read, and the
   report is written.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.persistence import EventKind
from lab.demo import statefiles
from lab.demo.central_client import CentralError
from lab.demo.checks import (
    Check,
    central_outage_checks,
    device_fault_checks,
    edge_restart_checks,
    grid_checks,
    mostly_in_schedule,
    never_tripped,
    observation_grace_s,
)
from lab.demo.edge_observer import ObserverCredentials, add_observer_identity
from lab.demo.live import (
    CENTRAL,
    SIM,
    DemoFailedError,
    LateStartError,
    LiveRun,
    LiveSetup,
    child_environment,
)
from lab.demo.options import DemoOptions, prepare_out_dir, truncate
from lab.demo.processes import ChildFailedError, ProcessSupervisor
from lab.demo.progress import ProgressDisplay
from lab.demo.records import RunRecord
from lab.demo.report import (
    LIMIT_TOLERANCE_KW,
    ReportInputs,
    build_summary,
    window_samples,
    write_samples_csv,
    write_summary,
)
from lab.demo.sampler import sample_period_s
from lab.demo.scenarios import ActionKind, timeline
from lab.demo.sim_client import SimControlError
from lab.demo.sitecopy import DemoPaths, PortPicker, rewrite_site
from shared.clock import SimulatedClock
from shared.dayahead import DayAhead
from shared.edge_api import EdgeMode
from shared.opcua.pki import PkiLayout, pki_layout, users_path
from shared.plan import Plan
from shared.site import SiteConfig
from shared.timeutil import format_utc

# Wall seconds from fixing the clock to the day's start, while the processes start: an asyncua server and
# the interpreter cost an edge about 2 s of CPU on a small machine, so the lead grows with the cabinets.
STARTUP_LEAD_BASE_S = 4.0
STARTUP_LEAD_PER_PROCESS_S = 2.0
# A start that ends after the day began is repeated with a longer lead this many times in all.
STARTUP_ATTEMPTS = 3
CERTS_TIMEOUT_S = 120.0
DEVICE_WATCHDOG_WALL_S = 1.0  # device-side revert and heartbeat timeouts, in wall seconds
OPCUA_RECONNECT_MAX_S = 1.0  # the central's reconnect backoff cap, in wall seconds
COMM_RECOVERY_MAX_S = 0.5  # an edge's wait for valid data after a comm-loss hold, in wall seconds
NORMAL_MIN_SCHEDULE_SHARE = 0.9


def run_demo(options: DemoOptions) -> int:
    """Run the demo; the exit code (0 all checks passed, 1 a check or the run failed, 130 interrupted)."""
    display = ProgressDisplay()
    try:
        return asyncio.run(_main(options, display))
    except KeyboardInterrupt:
        display.message("interrupted")
        return 130


async def _main(options: DemoOptions, display: ProgressDisplay) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    received: list[str] = []

    demo = Demo(options, display)

    def interrupt(name: str) -> None:
        if demo.console_hold is not None and not demo.console_hold.is_set():
            demo.console_hold.set()  # the day is over: Ctrl+C closes the console and writes the report
            return
        received.append(name)
        if task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt, sig.name)
    try:
        return await demo.run()
    except asyncio.CancelledError:
        display.finish()
        display.message(
            f"{received[0] if received else 'cancelled'}: stopping every process the demo started"
        )
        return 130
    except (DemoFailedError, ChildFailedError, CentralError, SimControlError) as exc:
        display.finish()
        display.message(f"error: {exc}")
        display.message(f"logs: {options.out_dir / 'logs'}")
        return 1
    finally:
        demo.stop_children()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class Demo:
    """One demo run (see the module docstring)."""

    def __init__(self, options: DemoOptions, display: ProgressDisplay) -> None:
        self.options = options
        self.display = display
        self.paths = DemoPaths(options.out_dir)
        self.record = RunRecord()
        self.supervisor: ProcessSupervisor | None = None
        self.period_s = sample_period_s(options.speed)
        self.console_hold: asyncio.Event | None = None  # set while the console is kept open after the day

    async def run(self) -> int:
        options, paths = self.options, self.paths
        started = time.monotonic()
        window = options.dayahead
        site = self._prepare_files()
        self.display.message(
            f"ems demo: scenario {options.scenario.name}, site {site.site.name!r} ({len(site.cabinets)} "
            f"cabinets), {window.steps * window.interval_minutes / 60:g} h from {format_utc(window.start)} "
            f"at {options.speed:g}x; output in {paths.out_dir}"
        )
        api_token = secrets.token_urlsafe(24)
        env = child_environment(api_token, site.opcua.central_password_env, secrets.token_urlsafe(18))
        supervisor = ProcessSupervisor(paths.logs_dir, paths.out_dir, env)
        self.supervisor = supervisor
        await asyncio.to_thread(supervisor.run, "certs", self._certs_args(site), CERTS_TIMEOUT_S)
        layout = pki_layout(site)
        credentials = add_observer_identity(site, layout, users_path(site, layout), secrets.token_urlsafe(18))
        plan_task = asyncio.create_task(asyncio.to_thread(day_ahead_plan, site, window))
        try:
            await self._run_live(site, layout, credentials, api_token, supervisor)
        finally:
            self.stop_children()
            plan = await plan_task
        self.record.wall_time_s = time.monotonic() - started
        return self._report(site, window, plan)

    def _prepare_files(self) -> SiteConfig:
        options, paths = self.options, self.paths
        prepare_out_dir(paths.out_dir)
        paths.create()
        window = options.dayahead
        paths.dayahead_file.write_text(json.dumps(window.to_json_dict(), indent=1) + "\n", encoding="utf-8")
        first_steps = first_upload_steps(options)
        uploads = [truncate(window, first_steps)]
        if first_steps < window.steps:
            uploads.append(window)
        for index, upload in enumerate(uploads, start=1):
            (paths.out_dir / f"upload-{index}.json").write_text(upload.to_json() + "\n", encoding="utf-8")
        return rewrite_site(
            options.site_path, paths, paths.dayahead_file, PortPicker(), self._timing_overrides()
        )

    def _certs_args(self, site: SiteConfig) -> list[str]:
        return ["certs", "--site", str(self.paths.site_file)]

    def _timing_overrides(self) -> dict[str, dict[str, Any]]:
        """Site settings the time compression needs (docs/demo.md, "Time compression").

        Never stricter than the user's own values: at low speeds their site's settings stand.
        """
        site, speed = self.options.site, self.options.speed
        watchdog_s = float(max(1, round(DEVICE_WATCHDOG_WALL_S * speed)))
        heartbeat_s = site.sim.heartbeat_timeout_s
        if heartbeat_s is None:
            heartbeat_s = site.edge.heartbeat_timeout_s
        return {
            "edge": {
                "revert_timeout_s": max(site.edge.revert_timeout_s, watchdog_s),
                "comm_recovery_s": min(site.edge.comm_recovery_s, COMM_RECOVERY_MAX_S),
            },
            # 0 switches the device's heartbeat watchdog off: keep that choice.
            "sim": {"heartbeat_timeout_s": heartbeat_s if heartbeat_s == 0 else max(heartbeat_s, watchdog_s)},
            "opcua": {
                "reconnect_max_s": max(
                    site.opcua.reconnect_min_s, min(site.opcua.reconnect_max_s, OPCUA_RECONNECT_MAX_S)
                )
            },
        }

    async def _run_live(
        self,
        site: SiteConfig,
        layout: PkiLayout,
        credentials: ObserverCredentials,
        api_token: str,
        supervisor: ProcessSupervisor,
    ) -> None:
        """Start the processes and run the day; when they come up only after the day began (a busy
        machine), stop them and start again with a longer lead, at most STARTUP_ATTEMPTS times."""
        options, window = self.options, self.options.dayahead
        lead_s = STARTUP_LEAD_BASE_S + STARTUP_LEAD_PER_PROCESS_S * (len(site.cabinets) + 1)
        for attempt in range(1, STARTUP_ATTEMPTS + 1):
            clock = SimulatedClock(window.start, options.speed, time.time() + lead_s)
            setup = LiveSetup(options, self.paths, site, clock, layout, credentials, api_token, self.period_s)
            try:
                live = LiveRun(setup, supervisor, self.display, self.record)
                await live.run()
                if options.console:
                    await self._hold_console(live.console_url)
                return
            except LateStartError as late:
                if attempt == STARTUP_ATTEMPTS:
                    raise DemoFailedError(f"{late}, after the day had begun, {attempt} times") from None
                lead_s = max(2.0 * lead_s, 1.5 * late.startup_wall_s)
                self.display.message(
                    f"{late}, after the day had begun (a busy machine): starting again, "
                    f"with {lead_s:.0f} s for the processes to come up"
                )
                self.stop_children()
                self._forget_state()

    async def _hold_console(self, url: str) -> None:
        self.console_hold = asyncio.Event()
        self.display.message(
            f"the day is over; the console stays open at {url}/ :"
            " press Ctrl+C to close it and write the report"
        )
        await self.console_hold.wait()

    def _forget_state(self) -> None:
        """Remove what a failed start left (the central's upload, the edges' schedules), so the next
        attempt starts as the first did."""
        for path in (self.paths.edge_state_dir, self.paths.central_database.parent):
            for file in path.glob("*.sqlite3*"):
                file.unlink(missing_ok=True)
        self.record.samples.clear()
        self.record.events.clear()
        self.record.fault_reactions.clear()

    def stop_children(self) -> None:
        if self.supervisor is not None:
            edges = [n for n in self.supervisor.children if n.startswith("edge-")]
            self.supervisor.stop_all([[CENTRAL], edges, [SIM]])

    # ----------------------------------------------------------------------------------- report

    def _report(self, site: SiteConfig, window: DayAhead, plan: Plan | None) -> int:
        from lab.demo.plots import write_plots

        record = self.record
        record.pushes = statefiles.push_counts(self.paths.central_database, site.cabinet_ids)
        for cabinet_id in site.cabinet_ids:
            record.edge_logs[cabinet_id] = statefiles.edge_events(self.paths.edge_state_dir, cabinet_id)
        inputs = ReportInputs(
            site, window, plan, self.options.scenario.name, self.options.speed, self.period_s, record
        )
        checks = [c.as_dict() for c in scenario_checks(self.options, inputs)]
        summary = build_summary(inputs, checks)
        write_summary(self.paths.out_dir / "summary.json", summary)
        write_samples_csv(
            self.paths.out_dir / "samples.csv", window_samples(record.samples, window), site.cabinet_ids
        )
        plots = write_plots(inputs, self.paths.out_dir)
        self._print_result(summary, plots)
        return 0 if summary["passed"] else 1

    def _print_result(self, summary: dict[str, Any], plots: list[Path]) -> None:
        cost = summary["cost"]
        lines = [f"report: {self.paths.out_dir / 'summary.json'}; plots: {', '.join(p.name for p in plots)}"]
        if "planned" in cost:
            lines.append(
                f"cost: planned {cost['planned']['total']:.2f}, realised {cost['realised']['total']:.2f}"
            )
        grid = summary["grid"]
        lines.append(f"peak import {grid['peak_import_kw']:.1f} kW (limit {grid['import_limit_kw']:g} kW)")
        for check in summary["checks"]:
            lines.append(f"  [{'PASS' if check['passed'] else 'FAIL'}] {check['name']}: {check['detail']}")
        verdict = "all checks passed" if summary["passed"] else "SOME CHECKS FAILED"
        lines.append(f"{verdict} (wall time {summary['wall_time_s']:.0f} s)")
        for line in lines:
            self.display.message(line)


def first_upload_steps(options: DemoOptions) -> int:
    """Intervals the first upload covers (all of the window except in the central-outage scenario)."""
    return max(1, round(options.scenario.first_upload_fraction * options.dayahead.steps))


def scenario_checks(options: DemoOptions, inputs: ReportInputs) -> list[Check]:
    site, window = inputs.site, inputs.dayahead
    samples = window_samples(inputs.record.samples, window)
    ids = site.cabinet_ids
    window_s = (window.end - window.start).total_seconds()
    actions = timeline(options.scenario, window.start.timestamp(), window_s, ids)
    checks = grid_checks(
        samples, site.site.grid_import_limit_kw, site.site.grid_export_limit_kw, LIMIT_TOLERANCE_KW
    )
    name = options.scenario.name
    grace = observation_grace_s(inputs.sample_period_s, inputs.speed)
    if name == "normal":
        checks += [never_tripped(samples, ids), mostly_in_schedule(samples, ids, NORMAL_MIN_SCHEDULE_SHARE)]
    elif name == "central-outage":
        schedule_end_s = window.interval_start(first_upload_steps(options)).timestamp()
        checks += central_outage_checks(samples, ids, schedule_end_s, actions, grace)
    elif name == "edge-restart":
        victim = next((a.cabinet_id for a in actions if a.kind is ActionKind.KILL_EDGE), None)
        restored, detail = restored_from_store(inputs.record, victim)
        checks += edge_restart_checks(samples, ids, actions, restored, detail)
    elif name == "device-fault":
        checks += device_fault_checks(samples, ids, actions, inputs.record, grace)
    return checks


def day_ahead_plan(site: SiteConfig, window: DayAhead) -> Plan | None:
    """The plan ``central.dispatch`` makes for the window from the day-ahead's initial SoC."""
    from central.dispatch.inputs import DEFAULT_INITIAL_SOC_PCT
    from central.service.interfaces import dispatch_optimizer

    initial = {c.id: window.initial_soc_pct.get(c.id, DEFAULT_INITIAL_SOC_PCT) for c in site.cabinets}
    try:
        return dispatch_optimizer(
            site,
            window,
            time_limit_s=site.central.solver_time_limit_s,
            initial_soc_pct=initial,
            plan_id="demo-day-ahead",
            created_at=datetime.now(UTC),
        )
    except Exception as exc:  # the report still has the realised side
        print(f"warning: the day-ahead plan for the report failed: {exc}", file=sys.stderr)
        return None


def restored_from_store(record: RunRecord, cabinet_id: str | None) -> tuple[str | None, str]:
    """The schedule the restarted edge restored from its local store (its event log), and a detail line.

    The restore is logged when the new process opens its database, before its control loop runs; the
    detail also says which schedule the edge ran first after the restart (the central may already have
    pushed a newer one by then).
    """
    if cabinet_id is None:
        return None, ""
    events = record.edge_logs.get(cabinet_id, [])
    starts = [i for i, e in enumerate(events) if e.kind is EventKind.START]
    if len(starts) < 2:
        return None, "the edge's event log does not show a restart"
    tail = events[starts[-2] + 1 :]
    restored = next((e for e in tail if e.kind is EventKind.SCHEDULE_RESTORED and e.subject), None)
    if restored is None:
        return None, "the edge's event log shows no schedule restored (and active) after its restart"
    after = tail[tail.index(restored) + 1 :]
    first_run = next(
        (e for e in after if e.kind is EventKind.MODE and e.subject == EdgeMode.SCHEDULE.value), None
    )
    ran = f"; then {first_run.at}: {first_run.message}" if first_run is not None else ""
    return restored.subject, f"edge event log {restored.at}: {restored.message}{ran}"
