"""The live part of a demo: the children, the shared clock, the day's timeline and the sampling loop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lab.demo.central_client import CentralClient
from lab.demo.edge_observer import EdgeObserver, ObserverCredentials
from lab.demo.options import DemoOptions
from lab.demo.processes import ProcessSupervisor
from lab.demo.progress import ProgressDisplay
from lab.demo.records import RunRecord, TimelineEvent
from lab.demo.sampler import Sampler, inject_and_probe
from lab.demo.scenarios import ActionKind, TimedAction, timeline
from lab.demo.sim_client import SimControlClient
from lab.demo.sitecopy import DemoPaths
from shared.clock import SimulatedClock
from shared.opcua.pki import PkiLayout
from shared.site import SiteConfig
from shared.timeutil import format_utc

READY_TIMEOUT_S = 60.0  # wall seconds a child may take to answer after it started
OVER_TEMPERATURE_MARGIN_DEGC = 10.0  # injected temperature above the edge's limit
RESET_RETRY_S = 3.0  # wall seconds the operator keeps trying a refused reset (the device cools first)
CENTRAL = "central"
SIM = "sim"


class LateStartError(RuntimeError):
    """The processes came up after the simulated day had begun (a busy machine): run again, later."""

    def __init__(self, startup_wall_s: float) -> None:
        super().__init__(f"the processes took {startup_wall_s:.1f} s to start")
        self.startup_wall_s = startup_wall_s


class DemoFailedError(RuntimeError):
    """The demo cannot go on (a child failed, a service refused); the message says why in one line."""


def edge_name(cabinet_id: str) -> str:
    return f"edge-{cabinet_id}"


@dataclass(frozen=True)
class LiveSetup:
    """Everything the live run needs, prepared before any service starts."""

    options: DemoOptions
    paths: DemoPaths
    site: SiteConfig
    clock: SimulatedClock
    layout: PkiLayout
    credentials: ObserverCredentials
    api_token: str
    sample_period_s: float


class LiveRun:
    """Starts the services, runs the day and fills a :class:`RunRecord`."""

    def __init__(
        self, setup: LiveSetup, supervisor: ProcessSupervisor, display: ProgressDisplay, record: RunRecord
    ) -> None:
        self.setup = setup
        self.site = setup.site
        self.clock = setup.clock
        self.supervisor = supervisor
        self.display = display
        self.record = record
        self.expected: list[str] = []  # children that must be running now
        self.started_wall = time.monotonic()
        self.sim = SimControlClient(setup.site.sim.control_address)
        self.console_url = f"http://{setup.site.central.http_address}"
        self.central = CentralClient(self.console_url, setup.api_token)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.sim.aclose()
            await self.central.aclose()

    async def _run(self) -> None:
        setup, site = self.setup, self.site
        window = setup.options.dayahead
        self._start(
            SIM,
            [
                "sim",
                "--site",
                str(setup.paths.site_file),
                "--clock",
                self.clock.spec(),
                "--progress-every-s",
                "0",
            ],
        )
        # Everything starts at once: an edge whose device does not answer yet waits in mode starting (its
        # communication-loss interlock arms with the first valid reading), and the central connects to
        # each edge as it comes up.
        for cabinet_id in site.cabinet_ids:
            self._start(edge_name(cabinet_id), self._edge_args(cabinet_id))
        self._start(CENTRAL, self._central_args())
        await self._wait_for(SIM, self.sim.ping)
        async with EdgeObserver(site, self.clock, setup.layout, setup.credentials) as observer:
            self.observer = observer
            await self._wait_for("the edges", observer.ready)
            if self.clock.now() < window.start:
                await observer.hold_until(window.start)
            await self._wait_for(CENTRAL, self.central.healthy)
            await self._wait_for("the central's sessions to the edges", self.central.all_edges_connected)
            if setup.options.console:
                self.display.message(
                    f"operator console: {self.console_url}/  (operator token for its actions: "
                    f"{setup.api_token})"
                )
            if self.clock.now() >= window.start:
                # The day would begin without a plan on the edges and the checks would judge the start-up,
                # not the EMS: the runner starts again with a longer lead.
                raise LateStartError(time.monotonic() - self.started_wall)
            await self._upload(1)
            self.record.startup_wall_s = time.monotonic() - self.started_wall
            await self._run_day()

    async def _run_day(self) -> None:
        window = self.setup.options.dayahead
        speed, clock = self.clock.speed, self.clock
        start_s, end_s = window.start.timestamp(), window.end.timestamp()
        wait_s = (start_s - clock.time_s()) / speed
        if wait_s > 0:
            self.display.message(
                f"all processes up after {self.record.startup_wall_s:.1f} s; the day starts in {wait_s:.1f} s"
            )
            await asyncio.sleep(wait_s)
        else:
            self.display.message(
                f"warning: the processes took {self.record.startup_wall_s:.1f} s to start; the day began "
                f"{-wait_s * speed / 60:.0f} simulated minutes before they were ready"
            )
        actions = timeline(self.setup.options.scenario, start_s, end_s - start_s, self.site.cabinet_ids)
        sampler = Sampler(self.sim, self.observer, self.site.cabinet_ids, clock)
        period_s = self.setup.sample_period_s
        action_task = asyncio.create_task(self._perform(actions))
        try:
            tick = 0
            while (due_s := start_s + tick * period_s) < end_s:
                delay_s = (due_s - clock.time_s()) / speed
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                if action_task.done():
                    action_task.result()  # an action's failure ends the demo with its reason
                self.supervisor.check_running(self.expected)
                sample = await sampler.sample()
                self.record.samples.append(sample)
                self.display.update(sample, min(1.0, (sample.at_s - start_s) / (end_s - start_s)))
                # Skip ticks already past: a slow sample must not cause a burst of samples.
                tick = max(tick + 1, int((clock.time_s() - start_s) // period_s) + 1)
            if action_task.done():
                action_task.result()
        finally:
            if not action_task.done():
                action_task.cancel()
                await asyncio.gather(action_task, return_exceptions=True)
            self.display.finish()

    # ----------------------------------------------------------------------------------- actions

    async def _perform(self, actions: list[TimedAction]) -> None:
        for action in actions:
            delay_s = (action.at_s - self.clock.time_s()) / self.clock.speed
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            at_s = self.clock.time_s()
            detail = await self._act(action)
            self.record.events.append(TimelineEvent(at_s, action.kind.value, action.cabinet_id, detail))
            when = format_utc(datetime.fromtimestamp(at_s, tz=UTC))[11:16]
            target = f" {action.cabinet_id}" if action.cabinet_id else ""
            self.display.message(f"{when}Z {action.kind.value}{target}: {detail}")

    async def _act(self, action: TimedAction) -> str:
        kind, cabinet_id = action.kind, action.cabinet_id
        if kind is ActionKind.KILL_CENTRAL:
            self.expected.remove(CENTRAL)
            await asyncio.to_thread(self.supervisor.kill, CENTRAL)
            return "central service killed with SIGKILL"
        if kind is ActionKind.START_CENTRAL:
            self._start(CENTRAL, self._central_args())
            started = time.monotonic()
            await self._wait_for(CENTRAL, self.central.healthy)
            return f"central service started again, answering after {time.monotonic() - started:.1f} s"
        if kind is ActionKind.UPLOAD:
            return await self._upload(2)
        if cabinet_id is None:
            raise DemoFailedError(f"action {kind.value} needs a cabinet")
        return await self._act_on_cabinet(kind, cabinet_id)

    async def _act_on_cabinet(self, kind: ActionKind, cabinet_id: str) -> str:
        if kind is ActionKind.KILL_EDGE:
            self.expected.remove(edge_name(cabinet_id))
            await asyncio.to_thread(self.supervisor.kill, edge_name(cabinet_id))
            return f"edge {cabinet_id} killed with SIGKILL"
        if kind is ActionKind.START_EDGE:
            self._start(edge_name(cabinet_id), self._edge_args(cabinet_id))
            return f"edge {cabinet_id} started again on its state directory"
        if kind is ActionKind.INJECT_OVER_TEMPERATURE:
            edge = self.site.edge
            temperature = edge.temperature_max_degc + OVER_TEMPERATURE_MARGIN_DEGC
            reaction = await inject_and_probe(self.sim, self.clock, cabinet_id, temperature, edge.cycle_ms)
            self.record.fault_reactions.append(reaction)
            shown = "never" if reaction.reaction_ms is None else f"{reaction.reaction_ms:.0f} ms"
            return f"cabinet at {temperature:g} degC; the edge's safe state reached the device after {shown}"
        if kind is ActionKind.CLEAR_FAULT:
            await self.sim.clear_fault(cabinet_id, "all")
            return "fault cleared at the device"
        if kind is ActionKind.RESET_INTERLOCK:
            deadline = time.monotonic() + RESET_RETRY_S
            decision = await self.observer.reset_interlock(cabinet_id)
            while not decision.accepted and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                decision = await self.observer.reset_interlock(cabinet_id)
            return f"ResetInterlock {'accepted' if decision.accepted else 'refused'}: {decision.message}"
        raise DemoFailedError(f"unknown action {kind.value}")

    async def _upload(self, number: int) -> str:
        path = self.setup.paths.out_dir / f"upload-{number}.json"
        answer = await self.central.upload(path.read_bytes())
        run = answer.get("run") or {}
        pushes: dict[str, Any] = run.get("push") or {}
        accepted = sum(1 for p in pushes.values() if p.get("status") == "accepted")
        plan = (run.get("plan") or {}).get("plan_id", "none")
        message = run.get("message", answer.get("message", ""))
        detail = f"{path.name}: {message}; plan {plan} accepted by {accepted}/{len(pushes)} edges"
        if number == 1:
            self.record.events.append(TimelineEvent(self.clock.time_s(), "upload", None, detail))
        return detail

    # ----------------------------------------------------------------------------------- children

    def _start(self, name: str, args: list[str]) -> None:
        self.supervisor.start(name, args)
        if name not in self.expected:
            self.expected.append(name)

    async def _wait_for(self, what: str, probe: Callable[[], Awaitable[bool]]) -> None:
        """Wait until ``probe`` says yes, while every expected child keeps running."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not await probe():
            self.supervisor.check_running(self.expected)
            if time.monotonic() > deadline:
                raise DemoFailedError(
                    f"{what} did not answer within {READY_TIMEOUT_S:g} s (logs: {self.setup.paths.logs_dir})"
                )
            await asyncio.sleep(0.1)

    def _edge_args(self, cabinet_id: str) -> list[str]:
        site_file = str(self.setup.paths.site_file)
        return ["edge", "--site", site_file, "--cabinet", cabinet_id, "--clock", self.clock.spec()]

    def _central_args(self) -> list[str]:
        return ["central", "--site", str(self.setup.paths.site_file), "--clock", self.clock.spec()]


def child_environment(api_token: str, password_variable: str, password: str) -> dict[str, str]:
    """The children's environment: ours, without a clock override, with the demo's secrets."""
    env = {k: v for k, v in os.environ.items() if k != "EMS_CLOCK"}
    env["PYTHONUNBUFFERED"] = "1"
    env["EMS_API_TOKEN"] = api_token
    env[password_variable] = password
    return env
