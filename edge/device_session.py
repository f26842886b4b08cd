"""What the edge knows about its present connection to the cabinet device, and every write to it.

A connection (a successful connect and SunSpec scan of :class:`edge.device_io.DeviceLink`) starts a
session: the device-side protections are configured before any setpoint, the heartbeat continues from what
the device holds, the read-back expectation and the ramp start afresh. Only the control loop's thread uses
a session; the controller keeps its own state (latch, schedules, mode) under its lock.

Times: ``now_s`` is the loop's monotonic clock (wall seconds, as the device's timers count);
``clock_s`` is the EMS clock (possibly simulated), which the ramp uses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from edge.device_io import CabinetDevice, DeviceError
from edge.interlocks import (
    EVT1_COMMUNICATION_ERROR,
    Finding,
    FrozenDataDetector,
    check_setpoint_readback,
)
from edge.log_limit import LogLimit
from edge.snapshot import SETOP_CONNECT, SETOP_DISCONNECT, CabinetReading
from shared.clock import Clock
from shared.site import EdgeSettings
from shared.sunspec.layout import scale, unscale

log = logging.getLogger(__name__)

REVERT_SETPOINT_KW = 0.0  # WSetRvrt as configured at every connection


class DeviceSession:
    """The cabinet device as the control loop sees it: per-connection state and guarded writes."""

    def __init__(self, device: CabinetDevice, settings: EdgeSettings, clock: Clock, cycle_s: float) -> None:
        self.device = device
        self.clock = clock
        self.cycle_s = cycle_s
        self.revert_timeout_s = float(max(1, round(settings.revert_timeout_s)))  # what the device gets
        self._settings = settings
        # A gap in the edge's writes longer than this means the device may have acted on its own meanwhile
        # (reverted WSet, raised COMMUNICATION_ERROR): at least two cycles, at least the comm timeout.
        self.gap_s = max(settings.effective_comm_timeout_ms / 1000.0, 2.0 * cycle_s)
        self.frozen = FrozenDataDetector(settings.frozen_data_timeout_s)
        self.last_reading: CabinetReading | None = None
        # SetOp CONNECT to (re)send when not tripped; set by a reset (any thread) and at a new connection.
        # A request lost to a race is harmless: CONNECT is also sent whenever the device does not show it.
        self.connect_wanted = True
        self._configured_connection = -1
        self._written_kw: float | None = None  # WSet as last written on this connection (device rounding)
        self._written_s = 0.0  # monotonic time the last WSet write was sent
        self._previous_kw = 0.0  # ramp origin
        self._previous_write_clock_s: float | None = None
        self._heartbeat = 0
        self._beat_connection = -1  # connection number on which our heartbeat last landed
        self._beat_s = 0.0  # monotonic time that heartbeat was sent
        self._refused_log = LogLimit(log, logging.WARNING)

    @property
    def link_ready(self) -> bool:
        return self.device.link.ready

    # ------------------------------------------------------------------------------------ a new reading

    async def on_reading(self, reading: CabinetReading) -> None:
        """A good read: keep it; on the first of a (re)connection configure the device-side protections."""
        self.last_reading = reading
        connection = self.device.link.connections
        if self._configured_connection == connection:
            return
        self._written_kw = None
        self.frozen.forget()
        self.restart_ramp(reading)
        self.connect_wanted = True
        await self.guarded(lambda: self.device.configure(self.revert_timeout_s, reading.wset_sf))
        self._configured_connection = connection

    def restart_ramp(self, reading: CabinetReading) -> None:
        """Ramp from what the cabinet does now (a new connection, the end of a comm-loss hold)."""
        self._previous_kw = reading.active_power_kw
        self._previous_write_clock_s = None

    def ramp_origin(self, clock_s: float) -> tuple[float, float]:
        """The last setpoint and the clock time since it was written (one cycle when ramping afresh)."""
        if self._previous_write_clock_s is None:
            return self._previous_kw, self.cycle_s * self.clock.speed
        return self._previous_kw, clock_s - self._previous_write_clock_s

    # ------------------------------------------------------------------------------------ checks

    def ignored_alarm_bits(self, now_s: float) -> int:
        """``Evt1`` bits the edge itself explains: COMMUNICATION_ERROR (the device's watchdog on our
        heartbeat) until a heartbeat of ours landed on this connection without a gap."""
        continuous = (
            self._beat_connection == self.device.link.connections and now_s - self._beat_s <= self.gap_s
        )
        return 0 if continuous else EVT1_COMMUNICATION_ERROR

    def readback_finding(self, reading: CabinetReading, now_s: float) -> Finding | None:
        """The device must hold what the edge wrote last, unless the edge left a gap in which the device's
        revert timer may have run (a comm-loss hold, a stalled loop): then the next write sets it again."""
        expected = self._written_kw if now_s - self._written_s <= self.gap_s else None
        return check_setpoint_readback(reading, expected, self._settings.setpoint_mismatch_kw)

    def frozen_finding(self, reading: CabinetReading, now_s: float) -> Finding | None:
        return self.frozen.update(reading.heartbeat, now_s)

    def device_setpoint_kw(self, now_s: float) -> float:
        """What the device runs by the edge's writes: the last setpoint, or the revert value after the
        device's revert timeout without a write (telemetry's SetpointKw)."""
        if self._written_kw is None or now_s - self._written_s >= self.revert_timeout_s:
            return REVERT_SETPOINT_KW
        return self._written_kw

    # ------------------------------------------------------------------------------------ writes

    async def write_trip(self, reading: CabinetReading | None) -> None:
        """Safe state first: 0 W, then DISCONNECT, then the heartbeat."""
        if reading is None:
            return
        await self.guarded(lambda: self.write_setpoint(0.0, reading))
        await self.guarded(lambda: self.device.write_set_op(SETOP_DISCONNECT))
        await self.guarded(self.beat)

    async def hold_tripped(self, reading: CabinetReading | None) -> None:
        """While tripped: keep 0 W and DISCONNECT on the device (re-sent after a reconnection)."""
        if reading is None:
            return
        await self.guarded(lambda: self.write_setpoint(0.0, reading))
        if reading.set_op != SETOP_DISCONNECT:
            await self.guarded(lambda: self.device.write_set_op(SETOP_DISCONNECT))
        await self.guarded(self.beat)

    async def apply(self, setpoint_kw: float, clock_s: float, reading: CabinetReading, connect: bool) -> bool:
        """Write a setpoint (and CONNECT first when asked); True when the setpoint landed."""
        if connect and await self.guarded(lambda: self.device.write_set_op(SETOP_CONNECT)):
            self.connect_wanted = False
        written = await self.guarded(lambda: self.write_setpoint(setpoint_kw, reading))
        if written:
            self._previous_kw = setpoint_kw
            self._previous_write_clock_s = clock_s
        await self.guarded(self.beat)
        return written

    async def write_setpoint(self, setpoint_kw: float, reading: CabinetReading) -> None:
        sent_s = time.monotonic()  # the write lands after this (a stall may delay its answer, not it)
        await self.device.write_setpoint(setpoint_kw, reading.wset_sf)
        # What the device holds is the value after scaling/rounding; compare the read-back with that.
        self._written_kw = scale(unscale(setpoint_kw * 1000.0, reading.wset_sf), reading.wset_sf) / 1000.0
        self._written_s = sent_s
        if setpoint_kw == 0.0:
            self._previous_kw = 0.0  # after a trip the ramp starts from 0 W
            self._previous_write_clock_s = self.clock.time_s()

    async def beat(self) -> None:
        """Write the controller heartbeat ``CtrlHb`` (+1 per call)."""
        connection = self.device.link.connections
        reading = self.last_reading
        if self._beat_connection != connection and reading is not None:
            # The first beat on a connection must differ from what the device holds: a restarted edge
            # counting from 1 again could write the value its predecessor left, which the device's
            # watchdog would not see as a heartbeat.
            self._heartbeat = reading.control_heartbeat
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        sent_s = time.monotonic()
        await self.device.write_heartbeat(self._heartbeat)
        self._beat_connection = connection
        self._beat_s = sent_s

    async def write_zero(self, timeout_s: float) -> bool:
        """0 W on stop (best effort, bounded); True when it landed."""
        reading = self.last_reading
        if not self.link_ready or reading is None:
            return False
        try:
            await asyncio.wait_for(self.write_setpoint(0.0, reading), timeout_s)
        except (TimeoutError, DeviceError) as exc:
            log.warning("%s: could not write 0 W on stop: %s", self.device.link.name, exc)
            return False
        return True

    async def guarded(self, action: Callable[[], Awaitable[None]]) -> bool:
        """Run a device write; on failure drop the connection (reconnect in the background).

        Skipped (False) when the link is down, e.g. after an earlier write of the same cycle failed.
        """
        link = self.device.link
        if not link.ready:
            return False
        try:
            await action()
        except DeviceError as exc:
            if exc.connection_broken:
                link.lose(str(exc), edge_late=exc.edge_late)  # logged there, once per connection
            else:
                self._refused_log.log(f"{self.device.link.name}: write refused by the device: {exc}")
            return False
        return True
