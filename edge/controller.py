"""The edge controller of one cabinet: the control loop behind :class:`shared.edge_api.EdgeControl`.

Each cycle (``[edge] cycle_ms``, drift-free deadlines):

1. read the cabinet device and the site meter once, concurrently, into a snapshot;
2. evaluate the interlocks (a snapshot that is missing too long, unreadable or shows a fault trips);
3. tripped: write 0 W, then ``SetOp`` DISCONNECT (once confirmed, only 0 W and the heartbeat);
   otherwise: run the setpoint chain (:mod:`edge.setpoint_chain`) and write ``WSet``;
4. write the heartbeat ``CtrlHb``; publish telemetry.

The loop runs in its own thread on its own event loop (:func:`edge.timing.precise_event_loop`), so the
work of whoever hosts the controller (the OPC UA server's cryptography, a test's simulators) cannot stall
a cycle for longer than the interpreter's switch interval. The EdgeControl methods may be called from any
thread: the state they share with the loop is guarded by one lock that is never held across I/O.

Safe state without the edge: at every (re)connection the device is configured to revert to 0 W by itself
when ``WSet`` is not refreshed for ``revert_timeout_s``; the heartbeat lets its watchdog stop it when this
process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from edge.device_io import Backoff, CabinetDevice, DeviceError, DeviceLink, MeterDevice
from edge.fallback import fallback_setpoint_kw
from edge.interlocks import (
    EVT1_COMMUNICATION_ERROR,
    CommWatchdog,
    Condition,
    Finding,
    FrozenDataDetector,
    InterlockLatch,
    InterlockLimits,
    Trip,
    check_cabinet,
    check_setpoint_readback,
)
from edge.persistence import EdgeDatabase
from edge.schedule_store import ScheduleStore
from edge.setpoint_chain import ChainInputs, ChainResult, run_chain
from edge.snapshot import (
    SETOP_CONNECT,
    SETOP_DISCONNECT,
    CabinetReading,
    DeviceDataError,
    MeterReading,
    Snapshot,
)
from edge.timing import CycleStats, DeadlineSchedule, run_precise
from shared.clock import Clock
from shared.edge_api import Decision, EdgeMode, EdgeTelemetry
from shared.schedule import CabinetSchedule
from shared.site import SiteConfig, parse_host_port
from shared.sunspec.layout import CABINET_MODELS, METER_MODELS, scale, unscale

_ReadingT = TypeVar("_ReadingT")

log = logging.getLogger(__name__)

STOP_WRITE_TIMEOUT_S = 0.5
THREAD_START_TIMEOUT_S = 10.0


def cabinet_share(site: SiteConfig, cabinet_id: str) -> float:
    """This cabinet's share of the site's PoC headroom and fallback duty: its power range / the site's."""
    ranges = {c.id: c.charge_limit_kw + c.discharge_limit_kw for c in site.cabinets}
    total = sum(ranges.values())
    if total <= 0.0:
        return 1.0 / len(ranges)
    return ranges[cabinet_id] / total


@dataclass(frozen=True)
class _Read:
    """What one cycle's reads returned."""

    cabinet: CabinetReading | None
    meter: MeterReading | None
    problems: tuple[str, ...]
    invalid: tuple[str, ...]  # answered with data that cannot be trusted (trips at once)


@dataclass(frozen=True)
class _Plan:
    """The setpoint a cycle decided on (under the lock), written after it (without the lock)."""

    result: ChainResult
    schedule: CabinetSchedule | None
    clock_s: float


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EdgeController:
    """One cabinet's edge. Use as ``async with EdgeController(site, cabinet_id, clock) as edge``."""

    def __init__(
        self,
        site: SiteConfig,
        cabinet_id: str,
        clock: Clock,
        state_dir: Path | None = None,
        *,
        keep_timing_samples: bool = False,
    ) -> None:
        self.site = site
        self.cabinet_config = site.cabinet(cabinet_id)  # KeyError names the known cabinets
        self.cabinet_id = cabinet_id
        self.clock = clock
        settings = site.edge
        self.settings = settings
        self.cycle_s = settings.cycle_ms / 1000.0
        self.comm_timeout_s = settings.effective_comm_timeout_ms / 1000.0
        directory = Path(state_dir) if state_dir is not None else Path(settings.state_dir)
        self.database_path = directory / f"{cabinet_id}.sqlite3"
        self.share = cabinet_share(site, cabinet_id)
        self.peak_shave_threshold_kw = (
            site.site.peak_shave_threshold_kw
            if site.site.peak_shave_threshold_kw is not None
            else site.site.grid_import_limit_kw
        )
        self.limits = InterlockLimits.from_settings(settings)
        self.timing = CycleStats(self.cycle_s, keep_all=keep_timing_samples)
        self.schedules = ScheduleStore(
            self.cabinet_config.charge_limit_kw, self.cabinet_config.discharge_limit_kw
        )
        backoff = Backoff(settings.reconnect_min_s, max(settings.reconnect_min_s, settings.reconnect_max_s))
        timeout_s = settings.modbus_timeout_ms / 1000.0
        host, port = self.cabinet_config.modbus_host_port
        self.cabinet = CabinetDevice(
            DeviceLink(f"{cabinet_id}/device", host, port, CABINET_MODELS[1:], timeout_s, backoff)
        )
        meter_host, meter_port = parse_host_port(site.site.meter_modbus_address)
        self.meter = MeterDevice(
            DeviceLink(f"{cabinet_id}/meter", meter_host, meter_port, METER_MODELS[1:], timeout_s, backoff)
        )
        # Shared between the loop's thread and callers of the EdgeControl methods; never held across I/O.
        self._lock = threading.RLock()
        self._db: EdgeDatabase | None = None
        self._latch = InterlockLatch()
        self._present: list[Finding] = []  # conditions present in the latest evaluation
        self._last_valid_monotonic_s: float | None = None
        self._connect_wanted = True  # SetOp CONNECT to (re)send when not tripped
        self._mode = EdgeMode.STARTING
        # The loop's own state (its thread only).
        self._frozen = FrozenDataDetector(settings.frozen_data_timeout_s)
        self._watchdog: CommWatchdog | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Future[None] | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        self._stopping = False
        self._latest: Snapshot | None = None
        self._last_cabinet: CabinetReading | None = None
        self._written_kw: float | None = None  # WSet as last written on this connection (read-back check)
        self._previous_kw = 0.0  # ramp origin
        self._previous_write_clock_s: float | None = None
        self._configured_connection = -1
        self._beat_connection = -1  # connection number on which our heartbeat last landed
        self._heartbeat = 0
        self._first_write_logged = False
        self._last_prune_s = 0.0
        self._links_ok = (False, False)
        self._stopped_safely = False
        self.trip_write_loop_s: float | None = None  # loop (monotonic) time the last trip's 0 W write ended
        self.trip_cycle: int | None = None  # number of the cycle (timing.cycles) that last tripped
        self._telemetry = self._build_telemetry()

    # ------------------------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> EdgeController:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the local database, restore schedules and a latched trip, start the loop's thread."""
        if self._thread is not None:
            return
        with self._lock:
            self._db = EdgeDatabase(self.database_path)
            self._restore(self.clock.now())
        self._thread = threading.Thread(target=self._thread_main, name=f"edge-{self.cabinet_id}", daemon=True)
        self._thread.start()
        started = await asyncio.to_thread(self._started.wait, THREAD_START_TIMEOUT_S)
        if self._failure is not None or not started:
            await self.stop()
            raise RuntimeError(f"edge {self.cabinet_id}: control loop did not start: {self._failure}")

    async def stop(self) -> None:
        """Stop the loop, write 0 W (best effort, bounded), disconnect, close the database."""
        self._stopping = True
        thread, self._thread = self._thread, None
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may have ended already
                loop.call_soon_threadsafe(_resolve, wake)
        if thread is not None:
            await asyncio.to_thread(thread.join, max(5.0, 3 * self.cycle_s))
            if thread.is_alive():
                log.error("%s: control loop did not stop in time", self.cabinet_id)
        with self._lock:
            if self._db is not None:
                self._event("stop", "edge stopped; 0 W written" if self._stopped_safely else "edge stopped")
                self._db.close()
                self._db = None

    def _thread_main(self) -> None:
        try:
            run_precise(self._thread_body())
        except BaseException as exc:  # report to start()/stop(); the thread must end quietly
            self._failure = exc
            log.exception("%s: control loop failed", self.cabinet_id)
        finally:
            self._started.set()

    async def _thread_body(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._watchdog = CommWatchdog(self.comm_timeout_s, loop.time())
        self.cabinet.link.start()
        self.meter.link.start()
        with self._lock:
            self._event("start", f"edge {self.cabinet_id} started, cycle {self.settings.cycle_ms:g} ms")
        self._started.set()
        try:
            await self._run()
        finally:
            await self._write_zero_on_stop()
            await self.cabinet.link.stop()
            await self.meter.link.stop()

    async def _write_zero_on_stop(self) -> None:
        reading = self._last_cabinet
        if not self.cabinet.link.ready or reading is None:
            return
        try:
            await asyncio.wait_for(self._write_setpoint(0.0, reading), STOP_WRITE_TIMEOUT_S)
            self._stopped_safely = True
        except (TimeoutError, DeviceError) as exc:
            log.warning("%s: could not write 0 W on stop: %s", self.cabinet_id, exc)

    def _restore(self, now: datetime) -> None:
        db = self._require_db()
        persisted = db.load_schedules()
        for item in persisted:
            if item.schedule.end > now:
                self.schedules.add(item.schedule, item.accepted_at, item.sequence)
        ended = [item.schedule.schedule_id for item in persisted if item.schedule.end <= now]
        if ended:
            db.delete_schedules(ended)
        active = self.schedules.active(now)
        if active is not None:
            self._event("schedule", f"restored schedule {active.describe()}")
        restored = db.load_latch()
        if restored:
            self._latch = InterlockLatch(restored)
            self._event("trip", f"latched interlock restored from before the restart: {self._latch.reason}")
            log.warning("%s: interlock latched before the restart: %s", self.cabinet_id, self._latch.reason)

    # ------------------------------------------------------------------------------------ EdgeControl

    def submit_schedule(self, schedule: CabinetSchedule) -> Decision:
        """Validate and keep a schedule; refused (with the reason) leaves the active one unchanged."""
        with self._lock:
            if self._db is None:
                return Decision(False, "edge is not running")
            now = self.clock.now()
            try:
                problem = self.schedules.problem(schedule, now)
            except (TypeError, ValueError, AttributeError) as exc:
                problem = f"malformed schedule: {exc}"
            if problem is not None:
                sid = getattr(schedule, "schedule_id", "?")
                self._event("refused", f"schedule {sid!r} refused: {problem}")
                return Decision(False, problem)
            if self.schedules.is_known(schedule):
                return Decision(True, f"schedule {schedule.schedule_id} was already accepted")
            sequence = self.schedules.next_sequence
            try:
                self._db.save_schedule(schedule, now, sequence)
            except sqlite3.Error as exc:
                return Decision(False, f"cannot store the schedule locally: {exc}")
            self.schedules.add(schedule, now, sequence)
            self._event("schedule", f"accepted {schedule.describe()}")
            return Decision(True, f"accepted {schedule.describe()}")

    def reset_interlock(self) -> Decision:
        """Clear the latch if every latched condition is gone in fresh, valid data."""
        with self._lock:
            if not self._latch.active:
                return Decision(True, "no interlock is latched")
            last_valid = self._last_valid_monotonic_s
            if last_valid is None or time.monotonic() - last_valid > self.comm_timeout_s:
                message = "cannot reset: no fresh valid data from the device and the meter"
                self._event("reset", message)
                return Decision(False, message)
            if self._present:
                message = "cannot reset: still present: " + "; ".join(str(f) for f in self._present)
                self._event("reset", message)
                return Decision(False, message)
            cleared = self._latch.reset()
            with contextlib.suppress(sqlite3.Error):
                self._require_db().clear_latch()
            self._connect_wanted = True
            what = ", ".join(t.finding.condition.value for t in cleared)
            self._event("reset", f"interlock reset; cleared: {what}")
            log.info("%s: interlock reset (cleared: %s)", self.cabinet_id, what)
            return Decision(True, f"interlock reset; cleared: {what}")

    def telemetry(self) -> EdgeTelemetry:
        return self._telemetry

    # ------------------------------------------------------------------------------------ introspection

    @property
    def mode(self) -> EdgeMode:
        return self._mode

    @property
    def latched(self) -> list[Trip]:
        with self._lock:
            return self._latch.trips

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest valid snapshot."""
        return self._latest

    # ------------------------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadlines = DeadlineSchedule(self.cycle_s, loop.time())
        while not self._stopping:
            started_s = loop.time()
            self.timing.cycle_started(started_s)
            try:
                await self._cycle()
            except Exception as exc:  # a bug must not end the loop: trip and go on
                log.exception("%s: cycle failed", self.cabinet_id)
                try:
                    bug = Finding(Condition.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
                    await self._trip_now([bug], self._last_cabinet)
                except Exception:
                    log.exception("%s: tripping after a failed cycle failed too", self.cabinet_id)
            finished_s = loop.time()
            deadline_s, missed = deadlines.next_after(finished_s)
            self.timing.cycle_finished(finished_s - started_s, missed)
            if self._stopping:
                break
            self._wake = loop.create_future()
            timer = loop.call_at(deadline_s, _resolve, self._wake)
            await self._wake
            timer.cancel()

    async def _cycle(self) -> None:
        watchdog = self._watchdog
        if watchdog is None:
            raise RuntimeError("edge loop running before start()")
        read = await self._read()
        loop_now = asyncio.get_running_loop().time()
        reading = read.cabinet
        if reading is not None:
            self._last_cabinet = reading
            if self._configured_connection != self.cabinet.link.connections:
                await self._on_new_connection(reading)
        findings, snapshot = self._evaluate(read, loop_now, watchdog)
        with self._lock:
            self._present = findings
            if snapshot is not None:
                self._last_valid_monotonic_s = time.monotonic()
            newly = self._latch.trip(findings, self.clock.time_s()) if findings else []
            tripped = self._latch.active
            plan = self._plan(snapshot) if snapshot is not None and not tripped else None
        if newly:
            self.trip_cycle = self.timing.cycles
            await self._write_trip(reading or self._last_cabinet)
        elif tripped:
            await self._hold_safe(reading)
        elif plan is not None and snapshot is not None:
            await self._apply(plan, snapshot.cabinet)
        elif reading is not None and not watchdog.ever_valid:
            await self._guarded(self._beat)  # starting (no meter yet): keep the device's watchdog fed
        # Otherwise (a short gap within comm_timeout_ms) write nothing: the device holds its last setpoint
        # and reverts to 0 W by itself after revert_timeout_s without a fresh WSet.
        with self._lock:
            if newly:
                self._record_trips(newly)
            self._note_links()
            self._update_mode()
            self._prune()
            self._telemetry = self._build_telemetry()

    def _evaluate(
        self, read: _Read, loop_now: float, watchdog: CommWatchdog
    ) -> tuple[list[Finding], Snapshot | None]:
        """Every condition present now, and the snapshot when the reads were valid."""
        findings: list[Finding] = []
        snapshot: Snapshot | None = None
        reading = read.cabinet
        if read.invalid:
            findings.append(Finding(Condition.INVALID_DATA, "; ".join(read.invalid)))
        if reading is not None:
            # Until a heartbeat of ours landed on this connection, the device's COMMUNICATION_ERROR (its
            # watchdog on our heartbeat) describes the time before we were here: not a reason to trip.
            ignore = 0 if self._beat_connection == self.cabinet.link.connections else EVT1_COMMUNICATION_ERROR
            findings += check_cabinet(reading, self.limits, ignore)
            mismatch = check_setpoint_readback(reading, self._written_kw, self.limits.setpoint_mismatch_kw)
            if mismatch is not None:
                findings.append(mismatch)
            frozen = self._frozen.update(reading.heartbeat, loop_now)
            if frozen is not None:
                findings.append(frozen)
        if reading is not None and read.meter is not None and not read.invalid:
            snapshot = Snapshot(reading, read.meter, loop_now)
            self._latest = snapshot
            watchdog.valid(loop_now)
        elif watchdog.ever_valid:
            lost = watchdog.check(loop_now, "; ".join(read.problems) or "no data")
            if lost is not None:
                findings.append(lost)
        return findings, snapshot

    async def _read(self) -> _Read:
        cabinet_result, meter_result = await asyncio.gather(
            _read_device("device", self.cabinet.link, self.cabinet.read),
            _read_device("meter", self.meter.link, self.meter.read),
        )
        cabinet, cabinet_problem, cabinet_invalid = cabinet_result
        meter, meter_problem, meter_invalid = meter_result
        problems = tuple(p for p in (cabinet_problem, meter_problem) if p)
        invalid = tuple(p for p in (cabinet_invalid, meter_invalid) if p)
        return _Read(cabinet, meter, problems, invalid)

    async def _on_new_connection(self, reading: CabinetReading) -> None:
        """First good read on a (re)connection: configure the device-side protections, start afresh."""
        self._written_kw = None
        self._frozen.forget()
        self._previous_kw = reading.active_power_kw
        self._previous_write_clock_s = None
        with self._lock:
            self._connect_wanted = True
        await self._guarded(lambda: self.cabinet.configure(self.settings.revert_timeout_s, reading.wset_sf))
        self._configured_connection = self.cabinet.link.connections

    # ------------------------------------------------------------------------------------ decisions

    def _plan(self, snapshot: Snapshot) -> _Plan:
        """Step 1 and the setpoint chain for this cycle (called under the lock: reads the schedules)."""
        reading = snapshot.cabinet
        now = self.clock.now()
        clock_s = now.timestamp()
        schedule = self.schedules.active(now)
        scheduled_kw = schedule.setpoint_at(now) if schedule is not None else None
        if scheduled_kw is not None:
            target_kw = scheduled_kw
        else:
            target_kw = fallback_setpoint_kw(
                self.site.site.fallback_mode,
                reading.active_power_kw,
                snapshot.meter.grid_power_kw,
                self.share,
                self.peak_shave_threshold_kw,
            )
        elapsed_s = (
            clock_s - self._previous_write_clock_s
            if self._previous_write_clock_s is not None
            else self.cycle_s * self.clock.speed
        )
        config = self.cabinet_config
        result = run_chain(
            ChainInputs(
                target_kw=target_kw,
                previous_kw=self._previous_kw,
                elapsed_s=elapsed_s,
                soc_pct=reading.soc_pct,
                active_power_kw=reading.active_power_kw,
                grid_power_kw=snapshot.meter.grid_power_kw,
                charge_rate_max_kw=reading.charge_rate_max_kw,
                discharge_rate_max_kw=reading.discharge_rate_max_kw,
                soc_min_pct=config.soc_min_pct,
                soc_max_pct=config.soc_max_pct,
                ramp_kw_per_s=self.settings.ramp_kw_per_s,
                import_limit_kw=self.site.site.grid_import_limit_kw,
                export_limit_kw=self.site.site.grid_export_limit_kw,
                share=self.share,
                charge_limit_kw=config.charge_limit_kw,
                discharge_limit_kw=config.discharge_limit_kw,
            )
        )
        return _Plan(result, schedule if scheduled_kw is not None else None, clock_s)

    # ------------------------------------------------------------------------------------ actions

    async def _trip_now(self, findings: list[Finding], reading: CabinetReading | None) -> None:
        """Latch ``findings`` outside the normal cycle (a failed cycle) and act on them."""
        with self._lock:
            newly = self._latch.trip(findings, self.clock.time_s())
        if newly:
            self.trip_cycle = self.timing.cycles
            await self._write_trip(reading)
            with self._lock:
                self._record_trips(newly)

    async def _write_trip(self, reading: CabinetReading | None) -> None:
        """Safe state first, bookkeeping after: 0 W, then DISCONNECT, then the heartbeat."""
        if reading is None:
            return
        if await self._guarded(lambda: self._write_setpoint(0.0, reading)):
            self.trip_write_loop_s = asyncio.get_running_loop().time()
        await self._guarded(lambda: self.cabinet.write_set_op(SETOP_DISCONNECT))
        await self._guarded(self._beat)

    def _record_trips(self, newly: list[Trip]) -> None:
        for trip in newly:
            log.error("%s: TRIP %s", self.cabinet_id, trip.finding)
            self._event("trip", str(trip.finding))
        with contextlib.suppress(sqlite3.Error):
            self._require_db().save_latch(newly)

    async def _hold_safe(self, reading: CabinetReading | None) -> None:
        """While tripped: keep 0 W and DISCONNECT on the device (re-sent after a reconnection)."""
        if reading is None:
            return
        await self._guarded(lambda: self._write_setpoint(0.0, reading))
        if reading.set_op != SETOP_DISCONNECT:
            await self._guarded(lambda: self.cabinet.write_set_op(SETOP_DISCONNECT))
        await self._guarded(self._beat)

    async def _apply(self, plan: _Plan, reading: CabinetReading) -> None:
        with self._lock:
            wants_connect = self._connect_wanted or reading.set_op != SETOP_CONNECT
        if wants_connect and await self._guarded(lambda: self.cabinet.write_set_op(SETOP_CONNECT)):
            with self._lock:
                self._connect_wanted = False
        setpoint_kw = plan.result.setpoint_kw
        if await self._guarded(lambda: self._write_setpoint(setpoint_kw, reading)):
            self._previous_kw = setpoint_kw
            self._previous_write_clock_s = plan.clock_s
            if not self._first_write_logged:
                self._first_write_logged = True
                schedule = plan.schedule
                mode = EdgeMode.SCHEDULE if schedule is not None else EdgeMode.FALLBACK
                detail = f" (schedule {schedule.schedule_id})" if schedule is not None else ""
                with self._lock:
                    self._event(
                        "setpoint", f"first setpoint {setpoint_kw:.3f} kW in mode {mode.value}{detail}"
                    )
        await self._guarded(self._beat)

    async def _write_setpoint(self, setpoint_kw: float, reading: CabinetReading) -> None:
        await self.cabinet.write_setpoint(setpoint_kw, reading.wset_sf)
        # What the device holds is the value after scaling/rounding; compare the read-back with that.
        self._written_kw = scale(unscale(setpoint_kw * 1000.0, reading.wset_sf), reading.wset_sf) / 1000.0
        if setpoint_kw == 0.0:
            self._previous_kw = 0.0  # after a trip the ramp starts from 0 W
            self._previous_write_clock_s = self.clock.time_s()

    async def _beat(self) -> None:
        reading = self._last_cabinet
        if self._beat_connection != self.cabinet.link.connections and reading is not None:
            # The first beat on a connection must differ from what the device holds: a restarted edge
            # counting from 1 again could write the value its predecessor left, which the device's
            # watchdog would not see as a heartbeat.
            self._heartbeat = reading.control_heartbeat
        self._heartbeat = (self._heartbeat + 1) & 0xFFFF
        await self.cabinet.write_heartbeat(self._heartbeat)
        self._beat_connection = self.cabinet.link.connections

    async def _guarded(self, action: Callable[[], Awaitable[None]]) -> bool:
        """Run a device write; on failure drop the connection (reconnect in the background).

        Skipped (False) when the link is down, e.g. after an earlier write of the same cycle failed.
        """
        if not self.cabinet.link.ready:
            return False
        try:
            await action()
        except DeviceError as exc:
            if exc.connection_broken:
                self.cabinet.link.lose(str(exc))
                self._written_kw = None
            log.warning("%s: write failed: %s", self.cabinet_id, exc)
            return False
        return True

    # ------------------------------------------------------------------------------------ bookkeeping
    # (called with the lock held)

    def _update_mode(self) -> None:
        watchdog = self._watchdog
        active = self.schedules.active(self.clock.now())
        if self._latch.active:
            mode, detail = EdgeMode.TRIPPED, f" ({self._latch.reason})"
        elif watchdog is None or not watchdog.ever_valid:
            mode, detail = EdgeMode.STARTING, ""
        elif active is not None:
            mode, detail = EdgeMode.SCHEDULE, f" ({active.schedule_id})"
        else:
            mode, detail = EdgeMode.FALLBACK, f" ({self.site.site.fallback_mode.value})"
        if mode is not self._mode:
            message = f"mode {self._mode.value} -> {mode.value}{detail}"
            log.info("%s: %s", self.cabinet_id, message)
            self._event("mode", message)
            self._mode = mode

    def _note_links(self) -> None:
        """Log losing and regaining the device and the meter (the event log shows comm history)."""
        links = (self.cabinet.link, self.meter.link)
        state = (links[0].ready, links[1].ready)
        for link, was, now in zip(links, self._links_ok, state, strict=True):
            if was and not now:
                self._event("comm", f"{link.name} lost: {link.last_error}")
            elif now and not was:
                self._event("comm", f"{link.name} connected")
        self._links_ok = state

    def _prune(self) -> None:
        clock_s = self.clock.time_s()
        if abs(clock_s - self._last_prune_s) < 1.0:
            return
        self._last_prune_s = clock_s
        ended = self.schedules.prune(self.clock.now())
        if ended:
            with contextlib.suppress(sqlite3.Error):
                self._require_db().delete_schedules(ended)

    def _build_telemetry(self) -> EdgeTelemetry:
        now = self.clock.now()
        reading = self._last_cabinet
        config = self.cabinet_config
        active = self.schedules.active(now)
        charge_kw, discharge_kw = config.charge_limit_kw, config.discharge_limit_kw
        if reading is not None:
            charge_kw = min(charge_kw, reading.charge_rate_max_kw)
            discharge_kw = min(discharge_kw, reading.discharge_rate_max_kw)
        return EdgeTelemetry(
            cabinet_id=self.cabinet_id,
            soc_pct=reading.soc_pct if reading is not None else float("nan"),
            active_power_kw=reading.active_power_kw if reading is not None else float("nan"),
            setpoint_kw=self._written_kw if self._written_kw is not None else 0.0,
            charge_limit_kw=charge_kw,
            discharge_limit_kw=discharge_kw,
            mode=self._mode,
            schedule_id=active.schedule_id if active is not None else "",
            schedule_valid_until=self.schedules.valid_until(now),
            interlock_active=self._latch.active,
            interlock_reason=self._latch.reason,
            cycle_time_p99_ms=self.timing.period_p99_ms(),
        )

    def _event(self, kind: str, message: str) -> None:
        if self._db is None:
            return
        try:
            self._db.log_event(self.clock.now(), kind, message)
        except sqlite3.Error as exc:  # the log must never stop the loop
            log.warning("%s: event log write failed: %s", self.cabinet_id, exc)

    def _require_db(self) -> EdgeDatabase:
        if self._db is None:
            raise RuntimeError("edge is not running")
        return self._db


async def _read_device(
    label: str, link: DeviceLink, read: Callable[[], Awaitable[_ReadingT]]
) -> tuple[_ReadingT | None, str, str]:
    """One read of a device: (reading, communication problem, invalid-data problem); never raises
    :class:`DeviceError`. A broken connection is dropped here (the link reconnects in the background)."""
    if not link.ready:
        return None, f"{label}: {link.last_error}", ""
    try:
        return await read(), "", ""
    except DeviceDataError as exc:
        return None, "", f"{label}: {exc}"
    except DeviceError as exc:
        if exc.connection_broken:
            link.lose(str(exc))
        return None, f"{label}: {exc}", ""
