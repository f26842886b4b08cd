"""The live campaign: proxies, processes, the fault timeline, sampling, operator resets and live checks.

:class:`Live` is started by :mod:`lab.soak.campaign` once the files are prepared. It reuses the demo's
parts: :class:`~lab.demo.processes.ProcessSupervisor` for the children, the simulator and central clients,
the :class:`~lab.demo.edge_observer.EdgeObserver` (its own OPC UA sessions straight to the edges, not
through the proxies, so it sees the edges whatever happens to the central's links) and the
:class:`~lab.demo.sampler.Sampler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.demo.central_client import CentralClient, CentralError
from lab.demo.edge_observer import EdgeObserver, ObserverCredentials
from lab.demo.live import CENTRAL, SIM
from lab.demo.processes import ProcessSupervisor
from lab.demo.progress import ProgressDisplay
from lab.demo.sampler import Sampler
from lab.demo.sim_client import SimControlClient
from lab.demo.sitecopy import DemoPaths
from lab.soak import actions, invariants
from lab.soak.links import ProxyThread
from lab.soak.monitor import read_central_state, sample_resources
from lab.soak.records import FaultRun, OperatorReset, PlanInfo, ProcessSpan, SoakRecord
from lab.soak.resource_check import CAMPAIGN_PROCESS
from lab.soak.schedule import BATTERY_FAULTS, CampaignSchedule, FaultKind, FaultSpec
from lab.soak.sites import SiteViews
from shared.clock import SimulatedClock
from shared.dayahead import DayAhead
from shared.opcua.pki import PkiLayout
from shared.site import SiteConfig
from shared.tls import client_context

READY_TIMEOUT_S = 60.0
RESOURCES_EVERY_WALL_S = 10.0
CHECKS_EVERY_WALL_S = 30.0
RESET_EVERY_WALL_S = 1.0  # the operator retries a refused reset this often per cabinet
RESTART_READY_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_WALL_S = 20.0
START_MARGIN_S = 60.0
QUARTER_HOUR_S = 900.0
OPERATOR_SEES = frozenset({*BATTERY_FAULTS, FaultKind.LIMIT_DERATE})  # alarms shown at the cabinet


class CampaignFailedError(RuntimeError):
    """The campaign cannot go on (a service never came up); the message says why."""


@dataclass(frozen=True)
class LiveSetup:
    views: SiteViews
    paths: DemoPaths
    clock: SimulatedClock
    layout: PkiLayout
    credentials: ObserverCredentials
    api_token: str
    sample_period_s: float
    schedule: CampaignSchedule
    base_dayahead: DayAhead
    bounds: invariants.Bounds


class Live:
    """One running campaign (see the module docstring); fills :attr:`record`."""

    def __init__(
        self, setup: LiveSetup, supervisor: ProcessSupervisor, display: ProgressDisplay, record: SoakRecord
    ) -> None:
        self.setup = setup
        self.site: SiteConfig = setup.views.edges
        self.clock = setup.clock
        self.supervisor = supervisor
        self.display = display
        self.record = record
        self.base_dayahead = setup.base_dayahead
        self.campaign_start_s = setup.base_dayahead.start.timestamp()
        self.end_s = self.campaign_start_s + setup.schedule.days * 86_400.0
        self.latest_day = 0
        self.stopping = False
        self.sim = SimControlClient(setup.views.sim.sim.control_address)
        self.central = central_client(setup.views.central, setup.layout, setup.api_token)
        self.links = ProxyThread(setup.views.links)
        self.expected: list[str] = []
        self._started_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._active: list[FaultRun] = []
        self._last_reset_wall: dict[str, float] = {}
        self._http_reset: bool | None = None  # None: not tried yet
        self._reported: set[str] = set()
        self.started_wall = time.monotonic()
        self.observer: EdgeObserver

    # ----------------------------------------------------------------------------------- top level

    async def run(self) -> None:
        sys.setswitchinterval(0.001)  # the proxies' thread gets the interpreter within a millisecond
        try:
            await self._start_links()
            await self._run()
        finally:
            self.stopping = True
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await actions.clear_everything(self)
            await self.sim.aclose()
            await self.central.aclose()

    async def stop_links(self) -> None:
        await asyncio.to_thread(self.links.stop)

    async def _start_links(self) -> None:
        await asyncio.to_thread(self.links.start)

    async def _run(self) -> None:
        views = self.setup.views
        self._start(
            SIM,
            ["sim", "--site", str(views.sim_file), "--clock", self.clock.spec(), "--progress-every-s", "0"],
        )
        for cabinet_id in self.site.cabinet_ids:
            self._start(f"edge-{cabinet_id}", self._edge_args(cabinet_id))
        self._start(CENTRAL, self._central_args())
        await self._wait_for(SIM, self.sim.ping)
        async with EdgeObserver(self.site, self.clock, self.setup.layout, self.setup.credentials) as observer:
            self.observer = observer
            await self._wait_for("the edges", observer.ready)
            if self.clock.time_s() < self.campaign_start_s:
                outcomes = await observer.hold_until(self.base_dayahead.start)
                self._record_holds([o.schedule_id for o in outcomes.values()])
            await self._wait_for(CENTRAL, self.central.healthy)
            await self._wait_for("the central's sessions to the edges", self.central.all_edges_connected)
            first = FaultRun(_first_upload(), self.clock.time_s())
            self.record.faults.append(first)
            await actions.upload(self, first)
            self.record.startup_wall_s = time.monotonic() - self.started_wall
            await self._run_days()

    def _record_holds(self, schedule_ids: Sequence[str]) -> None:
        for schedule_id in schedule_ids:
            plan_id = schedule_id.rsplit("/", 1)[0]
            if all(h.plan_id != plan_id for h in self.record.holds):
                self.record.holds.append(
                    PlanInfo(-1, plan_id, "", "hold", 0.0, self.campaign_start_s, 60.0, 0.0)
                )

    async def _settle(self) -> None:
        """Start the campaign on the next quarter hour once everything runs, without a trip left over from
        the start-up (an edge that saw its device late trips comm_loss; the operator resets it)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_WALL_S
        while time.monotonic() < deadline:
            tripped = [c for c in self.site.cabinet_ids if _mode(self.observer, c) in ("tripped", None)]
            if not tripped:
                break
            for cabinet_id in tripped:
                if _mode(self.observer, cabinet_id) == "tripped":
                    accepted, message = await self._reset(cabinet_id)
                    self.record.resets.append(
                        OperatorReset(self.clock.time_s(), cabinet_id, accepted, message)
                    )
            await asyncio.sleep(0.5)
        earliest = self.clock.time_s() + START_MARGIN_S
        if earliest > self.campaign_start_s:
            self.campaign_start_s = math.ceil(earliest / QUARTER_HOUR_S) * QUARTER_HOUR_S
            self.end_s = self.campaign_start_s + self.setup.schedule.days * 86_400.0

    async def _run_days(self) -> None:
        await self._settle()
        wait_s = (self.campaign_start_s - self.clock.time_s()) / self.clock.speed
        self.display.message(
            f"all processes up after {self.record.startup_wall_s:.1f} s"
            + (f"; the campaign starts in {wait_s:.1f} s" if wait_s > 0 else "")
        )
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        self.spawn(self._timeline())
        sampler = Sampler(self.sim, self.observer, self.site.cabinet_ids, self.clock)
        period_s = self.setup.sample_period_s
        next_resources = next_checks = 0.0
        tick = 0
        while (due_s := self.campaign_start_s + tick * period_s) < self.end_s:
            delay_s = (due_s - self.clock.time_s()) / self.clock.speed
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            self._check_children()
            sample = await sampler.sample()
            self.record.samples.append(sample)
            self.display.update(
                sample, min(1.0, (sample.at_s - self.campaign_start_s) / (self.end_s - self.campaign_start_s))
            )
            await self._operator()
            wall = time.monotonic() - self.started_wall
            if wall >= next_resources:
                next_resources = wall + RESOURCES_EVERY_WALL_S
                await self._sample_resources(wall)
            if wall >= next_checks:
                next_checks = wall + CHECKS_EVERY_WALL_S
                await self._live_checks()
            tick = max(tick + 1, int((self.clock.time_s() - self.campaign_start_s) // period_s) + 1)
        self.display.finish()

    # ----------------------------------------------------------------------------------- faults

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and not self.stopping:
            self.display.message(f"campaign task failed: {task.exception()!r}")

    def active_faults(self) -> list[FaultRun]:
        return list(self._active)

    async def _timeline(self) -> None:
        """Start and end every fault at its simulated time; a fault's end waits for its start."""
        steps: list[tuple[float, int, FaultRun]] = []
        for spec in self.setup.schedule.faults:
            at_s = self.campaign_start_s + spec.at_s
            run = FaultRun(spec, at_s)
            steps.append((at_s, 1, run))
            if spec.duration_s > 0:
                steps.append((at_s + spec.duration_s, 0, run))
        steps.sort(key=lambda s: (s[0], s[1]))
        starts: dict[int, asyncio.Task[None]] = {}
        for at_s, is_start, run in steps:
            delay_s = (at_s - self.clock.time_s()) / self.clock.speed
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            if is_start:
                run.started_at_s = self.clock.time_s()
                self.record.faults.append(run)
                if run.spec.is_fault:
                    self._active.append(run)
                starts[id(run)] = asyncio.create_task(self._guarded(actions.start_fault(self, run), run))
                target = run.spec.target
                self.display.message(
                    f"{_when(run.started_at_s)} {run.spec.kind.value} {target}"
                    + (f" for {run.spec.duration_s / 60:.0f} min" if run.spec.duration_s else "")
                )
            else:
                started = starts.pop(id(run), None)
                self.spawn(self._end(run, started))

    async def _end(self, run: FaultRun, started: asyncio.Task[None] | None) -> None:
        if started is not None:
            await asyncio.gather(started, return_exceptions=True)
        await self._guarded(actions.end_fault(self, run), run)
        run.ended_at_s = self.clock.time_s()
        with contextlib.suppress(ValueError):
            self._active.remove(run)

    async def _guarded(self, action: Awaitable[None], run: FaultRun) -> None:
        try:
            await action
        except Exception as exc:  # a failed injection is recorded, never the end of the campaign
            run.failed = f"{type(exc).__name__}: {exc}"[:200]
            run.note(f"failed: {run.failed}")

    # ----------------------------------------------------------------------------------- processes

    def _start(self, name: str, args: list[str]) -> None:
        self.supervisor.start(name, args)
        if name not in self.expected:
            self.expected.append(name)
        self._started_at[name] = self.clock.time_s()

    def _close_span(self, name: str) -> None:
        started = self._started_at.pop(name, None)
        if started is not None:
            self.record.spans.append(ProcessSpan(name, started, self.clock.time_s()))

    def restarted_within(self, name: str, wall_s: float) -> bool:
        """True when child ``name`` was (re)started less than ``wall_s`` wall seconds ago."""
        child = self.supervisor.children.get(name)
        return child is not None and time.monotonic() - child.started_wall_s < wall_s

    def open_spans(self) -> list[ProcessSpan]:
        return [ProcessSpan(name, at_s, None) for name, at_s in self._started_at.items()]

    async def kill(self, name: str, run: FaultRun) -> None:
        """SIGKILL child ``name``, then check its database's integrity while it is down."""
        if name not in self.expected:
            run.note(f"{name} was not running")
            return
        self.expected.remove(name)
        await asyncio.to_thread(self.supervisor.kill, name)
        self._close_span(name)
        self.record.kills += 1
        run.note(f"{name} killed with SIGKILL")
        path = self._database(name)
        await actions.check_database(self, name, str(path))
        run.note(f"integrity of {path.name}: {self.record.integrity[-1].result}")

    async def restart(self, name: str, run: FaultRun) -> None:
        if self.supervisor.running(name):
            return
        args = self._central_args() if name == CENTRAL else self._edge_args(name.removeprefix("edge-"))
        started = time.monotonic()
        self._start(name, args)
        if name == CENTRAL:
            with contextlib.suppress(CampaignFailedError):
                await self._wait_for(CENTRAL, self.central.healthy, RESTART_READY_TIMEOUT_S)
        run.note(f"{name} started again ({time.monotonic() - started:.1f} s wall until it answered)")

    def _database(self, name: str) -> Path:
        if name == CENTRAL:
            return self.setup.paths.central_database
        return self.setup.paths.edge_state_dir / f"{name.removeprefix('edge-')}.sqlite3"

    def _check_children(self) -> None:
        for name in list(self.expected):
            child = self.supervisor.children.get(name)
            if child is None or child.running():
                continue
            code = child.popen.poll()
            self.record.crashes.append(
                f"{name} exited by itself with code {code} at {_when(self.clock.time_s())}"
            )
            self.display.message(f"{name} exited by itself (code {code}); restarting it")
            self._close_span(name)
            args = (
                self._central_args()
                if name == CENTRAL
                else (self._edge_args(name.removeprefix("edge-")) if name.startswith("edge-") else None)
            )
            if args is not None:
                self._start(name, args)

    def _edge_args(self, cabinet_id: str) -> list[str]:
        return [
            "edge",
            "--site",
            str(self.setup.views.edges_file),
            "--cabinet",
            cabinet_id,
            "--clock",
            self.clock.spec(),
        ]

    def _central_args(self) -> list[str]:
        return ["central", "--site", str(self.setup.views.central_file), "--clock", self.clock.spec()]

    async def _wait_for(
        self, what: str, probe: Callable[[], Awaitable[bool]], timeout_s: float = READY_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not await probe():
            if time.monotonic() > deadline:
                raise CampaignFailedError(
                    f"{what} did not answer within {timeout_s:g} s (logs: {self.setup.paths.logs_dir})"
                )
            await asyncio.sleep(0.1)

    # ----------------------------------------------------------------------------------- operator

    async def _operator(self) -> None:
        """Press reset on a tripped cabinet whose device shows no alarm; the edge itself refuses the reset
        while a condition is still there in fresh data (a device it cannot read included)."""
        now_wall = time.monotonic()
        for cabinet_id in self.site.cabinet_ids:
            telemetry = self.observer.telemetry(cabinet_id)
            if telemetry is None or telemetry.mode.value != "tripped":
                continue
            if now_wall - self._last_reset_wall.get(cabinet_id, 0.0) < RESET_EVERY_WALL_S:
                continue
            if any(f.spec.target == cabinet_id and f.spec.kind in OPERATOR_SEES for f in self._active):
                continue  # the alarm is still on the operator's screen
            self._last_reset_wall[cabinet_id] = now_wall
            accepted, message = await self._reset(cabinet_id)
            self.record.resets.append(OperatorReset(self.clock.time_s(), cabinet_id, accepted, message[:200]))

    async def _reset(self, cabinet_id: str) -> tuple[bool, str]:
        """Through the central's HTTP endpoint when it has one and is up, else over OPC UA like an operator
        at the cabinet."""
        if self._http_reset is not False and self.supervisor.running(CENTRAL):
            try:
                status, answer = await self.central.reset_interlock(cabinet_id)
            except CentralError:
                status, answer = 0, {}
            if status in (404, 405) and self._http_reset is None:
                self._http_reset = False
            elif status == 200:
                self._http_reset = True
                return bool(answer.get("accepted")), f"HTTP: {answer.get('message', '')}"
        decision = await self.observer.reset_interlock(cabinet_id)
        return decision.accepted, f"OPC UA: {decision.message}"

    # ----------------------------------------------------------------------------------- monitoring

    def pids(self) -> dict[str, int]:
        pids = {name: child.pid for name, child in self.supervisor.children.items() if child.running()}
        pids[CAMPAIGN_PROCESS] = os.getpid()
        return pids

    async def _sample_resources(self, wall_s: float) -> None:
        self.record.resources += await asyncio.to_thread(sample_resources, self.pids(), wall_s)

    async def _live_checks(self) -> None:
        """The invariants that can be judged while running; a new violation is reported at once."""
        central = await asyncio.to_thread(read_central_state, self.setup.paths.central_database, False)
        bounds = self.setup.bounds
        results = [
            invariants.poc_limits(self.record.samples, bounds),
            invariants.device_fault_safe_state(self.record.faults, bounds),
            invariants.no_stale_schedule(self.record.samples, central, self.record.holds, bounds),
            invariants.database_integrity(self.record.integrity, self.record.kills),
        ]
        for result in results:
            if not result.passed and result.name not in self._reported:
                self._reported.add(result.name)
                self.display.message(f"VIOLATION {result.name}: {result.detail}")


def central_client(site: SiteConfig, layout: PkiLayout, token: str) -> CentralClient:
    """The campaign's client of the central's HTTP API: HTTPS verified against the site PKI's
    ``trusted/http-ca.pem`` when the site gives the API a TLS certificate, else loopback HTTP."""
    address = site.central.http_address
    if site.central.tls_cert_file is None:
        return CentralClient(f"http://{address}", token)
    return CentralClient(f"https://{address}", token, verify=client_context(layout.http_trust_path))


def _mode(observer: EdgeObserver, cabinet_id: str) -> str | None:
    telemetry = observer.telemetry(cabinet_id)
    return None if telemetry is None else telemetry.mode.value


def _first_upload() -> FaultSpec:
    """The first day's day-ahead, uploaded before the campaign starts."""
    return FaultSpec(0.0, FaultKind.UPLOAD, "central", 0.0, 0)


def _when(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, tz=UTC).strftime("%m-%dT%H:%MZ")
