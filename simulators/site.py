"""Every device of a site in one process: cabinets, site meter, their Modbus servers, the physics task.

``async with SiteSimulator(site, clock) as sim:`` listens on every cabinet's ``modbus_address`` and on the
site's ``meter_modbus_address`` (unit id 1), steps the physics every ``[sim] step_ms`` of wall time (and on
every request, so an answer is never older than the request), and stops everything on exit. With
``control=True`` it also serves the fault-injection control interface on ``[sim] control_address``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from shared.clock import Clock
from shared.dayahead import DayAhead
from shared.site import SiteConfig, parse_host_port
from simulators.cabinet_device import CabinetSimulator
from simulators.control import ControlServer
from simulators.meter import MeterSimulator
from simulators.profile import LoadProfile, default_profile
from simulators.server import DeviceServer, ServedDevice

log = logging.getLogger(__name__)

DEFAULT_INITIAL_SOC_PCT = 50.0


class SiteSimulator:
    """The simulated devices of ``site`` on ``clock`` (see the module docstring)."""

    def __init__(
        self,
        site: SiteConfig,
        clock: Clock,
        profile: DayAhead | None = None,
        initial_soc_pct: Mapping[str, float] | None = None,
        host_override: str | None = None,
        *,
        control: bool = False,
        rng: random.Random | None = None,
    ) -> None:
        self.site = site
        self.clock = clock
        self.profile = LoadProfile(profile) if profile is not None else default_profile(site.sim.profile)
        self._host_override = host_override
        self._control_enabled = control
        socs = self._initial_socs(initial_soc_pct, profile)
        heartbeat_s = site.sim.heartbeat_timeout_s
        if heartbeat_s is None:
            heartbeat_s = site.edge.heartbeat_timeout_s
        wall_time = time.monotonic if site.sim.watchdog_clock == "wall" else None
        self._cabinets: dict[str, CabinetSimulator] = {
            cabinet.id: CabinetSimulator(
                cabinet,
                site.sim,
                clock,
                initial_soc_pct=socs[cabinet.id],
                heartbeat_timeout_s=heartbeat_s,
                wall_time=wall_time,
            )
            for cabinet in site.cabinets
        }
        self.meter = MeterSimulator(site, clock, self.profile, list(self._cabinets.values()), rng=rng)
        self._servers: list[DeviceServer] = []
        self._control: ControlServer | None = None
        self._step_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None  # set when the physics task died: devices go silent
        self._lags_ms: collections.deque[float] = collections.deque(maxlen=2000)
        self._ticks = 0
        self._late_ticks = 0
        self._max_lag_ms = 0.0

    # ---------------------------------------------------------------------------------- devices

    def cabinet(self, cabinet_id: str) -> CabinetSimulator:
        try:
            return self._cabinets[cabinet_id]
        except KeyError:
            known = ", ".join(self._cabinets)
            raise KeyError(f"no cabinet {cabinet_id!r} in the simulator (cabinets: {known})") from None

    @property
    def cabinets(self) -> Mapping[str, CabinetSimulator]:
        return dict(self._cabinets)

    def device(self, name: str) -> CabinetSimulator | MeterSimulator:
        """A cabinet by id, or ``"meter"``."""
        return self.meter if name == "meter" else self.cabinet(name)

    @property
    def addresses(self) -> dict[str, str]:
        """``host:port`` each device listens on (after ``start``), by cabinet id and ``"meter"``."""
        return {server.device.id: server.address for server in self._servers}

    def step(self) -> None:
        """Bring every device to the clock's now (the physics task does this every ``step_ms``)."""
        self.meter.step(self.clock.time_s())

    # ---------------------------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on every device address (and the control address); start the physics task."""
        if self._step_task is not None:
            raise RuntimeError("the simulator is already running")
        devices: list[tuple[ServedDevice, str]] = [
            (self._cabinets[c.id], c.modbus_address) for c in self.site.cabinets
        ]
        devices.append((self.meter, self.site.site.meter_modbus_address))
        try:
            for device, address in devices:
                host, port = parse_host_port(address)
                server = DeviceServer(device, self._host_override or host, port)
                await server.start()
                self._servers.append(server)
            if self._control_enabled:
                host, port = parse_host_port(self.site.sim.control_address)
                self._control = ControlServer(self, self._host_override or host, port)
                await self._control.start()
        except BaseException:
            await self._close_servers()
            raise
        self._step_task = asyncio.get_running_loop().create_task(self._run_steps(), name="sim-physics")
        self._step_task.add_done_callback(self._step_task_done)

    async def stop(self) -> None:
        """Stop the physics task and close every listener and connection."""
        task, self._step_task = self._step_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        closing, self._closing = self._closing, None
        if closing is not None:
            await asyncio.gather(closing, return_exceptions=True)
        await self._close_servers()

    async def _close_servers(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            await control.stop()
        servers, self._servers = self._servers, []
        for server in servers:
            await server.stop()

    # ---------------------------------------------------------------------------------- physics task

    async def _run_steps(self) -> None:
        loop = asyncio.get_running_loop()
        period_s = self.site.sim.step_ms / 1000.0
        due = loop.time() + period_s
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            lag_s = loop.time() - due
            self._record_lag(lag_s * 1000.0, period_s * 1000.0)
            self.step()
            due += period_s
            if loop.time() > due + period_s:  # fell more than a period behind: skip, do not burst
                due = loop.time() + period_s

    def _record_lag(self, lag_ms: float, period_ms: float) -> None:
        self._ticks += 1
        self._lags_ms.append(lag_ms)
        self._max_lag_ms = max(self._max_lag_ms, lag_ms)
        if lag_ms > period_ms:
            self._late_ticks += 1

    def _step_task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        # Fail safe: a device whose physics stopped must not keep answering with stale values.
        self.failure = exc
        log.critical("simulator physics failed; closing every device", exc_info=exc)
        self._closing = asyncio.get_running_loop().create_task(self._close_servers())

    # ---------------------------------------------------------------------------------- reporting

    def stats(self) -> dict[str, Any]:
        """Requests served per device and how punctual the physics task is (wall-clock ms)."""
        lags = sorted(self._lags_ms)
        p99 = lags[min(len(lags) - 1, math.ceil(0.99 * len(lags)) - 1)] if lags else 0.0
        return {
            "requests": {server.device.id: server.requests for server in self._servers},
            "step_period_ms": self.site.sim.step_ms,
            "step_ticks": self._ticks,
            "step_late_ticks": self._late_ticks,
            "step_lag_p99_ms": p99,
            "step_lag_max_ms": self._max_lag_ms,
            "sim_time_s": self.clock.time_s(),
            "failed": None if self.failure is None else repr(self.failure),
        }

    def status(self) -> dict[str, Any]:
        """Every device's state and faults."""
        devices: dict[str, Any] = {cid: cab.status() for cid, cab in self._cabinets.items()}
        devices["meter"] = self.meter.status()
        return {"devices": devices, "addresses": self.addresses}

    # ---------------------------------------------------------------------------------- helpers

    def _initial_socs(self, given: Mapping[str, float] | None, profile: DayAhead | None) -> dict[str, float]:
        source = given
        if source is None:
            dayahead = profile if profile is not None else self.profile.dayahead
            source = dayahead.initial_soc_pct if dayahead is not None else {}
        known = set(self.site.cabinet_ids)
        for cabinet_id, soc in source.items():
            if given is not None and cabinet_id not in known:
                raise ValueError(
                    f"initial SoC for unknown cabinet {cabinet_id!r} (cabinets: {', '.join(known)})"
                )
            if not (math.isfinite(soc) and 0.0 <= soc <= 100.0):
                raise ValueError(f"initial SoC of {cabinet_id!r} must be 0-100 %, got {soc}")
        return {cid: float(source.get(cid, DEFAULT_INITIAL_SOC_PCT)) for cid in self.site.cabinet_ids}
