"""The edge controller of one cabinet: the control loop behind :class:`shared.edge_api.EdgeControl`.

Each cycle (``[edge] cycle_ms``, drift-free deadlines):

1. read the cabinet device and the site meter once, concurrently, into a snapshot;
2. evaluate the interlocks on it (a device fault latches) and the communication-loss policy
   (:mod:`edge.comm_loss`: missing data holds, and resumes by itself);
3. tripped: write 0 W, then ``SetOp`` DISCONNECT; holding or no valid snapshot: no setpoint, only the
   heartbeat when the device answered; otherwise run the setpoint chain and write ``WSet``;
4. publish telemetry.

The loop runs in its own thread on its own event loop (:func:`edge.timing.precise_event_loop`), so the
work of whoever hosts the controller (the OPC UA server's cryptography, a test's simulators) cannot stall
a cycle for longer than the interpreter's switch interval. The EdgeControl methods may be called from any
thread: the state they share with the loop is guarded by one lock that is never held across I/O. The
device connection's own state lives in :class:`edge.device_session.DeviceSession` (the loop's thread only),
and every SQLite write is queued to :class:`edge.store_worker.StoreWorker`, never done in a cycle.

Safe state without the edge: every (re)connection starts with ``WSet`` = 0 W (so a reverted setpoint of an
earlier connection cannot come back), and the device is configured to revert to 0 W by itself
when ``WSet`` is not refreshed for ``revert_timeout_s``; the heartbeat lets its watchdog stop it when this
process dies.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from types import TracebackType

from edge.comm_loss import CommLossMonitor, CommPolicy, CommUpdate
from edge.device_io import Backoff, CabinetDevice, DeviceLink, MeterDevice
from edge.device_session import DeviceSession
from edge.interlocks import Condition, Finding, InterlockLatch, InterlockLimits, Trip, check_cabinet
from edge.log_limit import LogLimit
from edge.persistence import EdgeDatabase, EventKind, RestoredState
from edge.planner import Plan, SetpointPlanner
from edge.plant_read import CycleRead, read_plant
from edge.schedule_keeper import SCHEDULE_STORE_TIMEOUT_S, ScheduleKeeper
from edge.snapshot import SETOP_CONNECT, CabinetReading, Snapshot
from edge.status import StatusInputs, build_telemetry, decide_mode
from edge.store_worker import StoreWorker
from edge.timing import CycleLoop, CycleStats, LatePolicy, run_precise
from shared.clock import Clock
from shared.edge_api import Decision, EdgeMode, EdgeTelemetry
from shared.schedule import CabinetSchedule
from shared.site import SiteConfig, parse_host_port
from shared.sunspec.layout import CABINET_MODELS, METER_MODELS

log = logging.getLogger(__name__)

STOP_WRITE_TIMEOUT_S = 0.5
THREAD_START_TIMEOUT_S = 10.0
# A cycle makes at most this many requests in a row (2 reads, 3 writes of the configuration, SetOp, WSet,
# CtrlHb), each bounded by modbus_timeout_ms: a cycle that takes far longer was not running.
MAX_REQUESTS_PER_CYCLE = 8


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
        self.planner = SetpointPlanner(site, cabinet_id)
        self.limits = InterlockLimits.from_settings(settings)
        self.timing = CycleStats(self.cycle_s, keep_all=keep_timing_samples)
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
        self.session = DeviceSession(self.cabinet, settings, clock, self.cycle_s)
        self.store = StoreWorker(self.database_path, cabinet_id)
        self.schedules = ScheduleKeeper(
            self.cabinet_config.charge_limit_kw,
            self.cabinet_config.discharge_limit_kw,
            self.store,
            self._event,
        )
        # Shared between the loop's thread and callers of the EdgeControl methods; never held across I/O.
        self._lock = threading.RLock()
        self._latch = InterlockLatch()
        self.comm = CommLossMonitor(CommPolicy.from_settings(settings))
        self._present: list[Finding] = []  # conditions present in the latest evaluation
        self._last_valid_monotonic_s: float | None = None
        self._mode = EdgeMode.STARTING
        # The loop's own state (its thread only).
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None
        late = LatePolicy(
            wake_late_s=self.comm_timeout_s,
            cycle_s=self.comm_timeout_s + MAX_REQUESTS_PER_CYCLE * settings.modbus_timeout_ms / 1000.0,
        )
        self._cycles = CycleLoop(self.timing, late, self._loop_late, self._cycle_failed)
        self._latest: Snapshot | None = None
        self._first_write_logged = False
        self._last_prune_s = 0.0
        self._links_ok = (False, False)
        self._stopped_safely = False
        self._late_log = LogLimit(log, logging.WARNING)
        self._failed_cycle_log = LogLimit(log, logging.ERROR)
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
        self.store.start()
        try:
            restored = await asyncio.to_thread(
                self.store.call, EdgeDatabase.load_state, "restore", SCHEDULE_STORE_TIMEOUT_S
            )
        except BaseException:
            self.store.close()
            raise
        self._restore(restored)
        self._thread = threading.Thread(target=self._thread_main, name=f"edge-{self.cabinet_id}", daemon=True)
        self._thread.start()
        started = await asyncio.to_thread(self._started.wait, THREAD_START_TIMEOUT_S)
        if self._failure is not None or not started:
            await self.stop()
            raise RuntimeError(f"edge {self.cabinet_id}: control loop did not start: {self._failure}")

    async def stop(self) -> None:
        """Stop the loop, write 0 W (best effort, bounded), disconnect, write the log, close the database."""
        self._cycles.stop()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, max(5.0, 3 * self.cycle_s))
            if thread.is_alive():
                log.error("%s: control loop did not stop in time", self.cabinet_id)
        if self.store.running:
            self._event(
                EventKind.STOP, "edge stopped; 0 W written" if self._stopped_safely else "edge stopped"
            )
            await asyncio.to_thread(self.store.close)

    def _thread_main(self) -> None:
        try:
            run_precise(self._thread_body())
        except BaseException as exc:  # report to start()/stop(); the thread must end quietly
            self._failure = exc
            log.exception("%s: control loop failed", self.cabinet_id)
        finally:
            self._started.set()

    async def _thread_body(self) -> None:
        self.cabinet.link.start()
        self.meter.link.start()
        self._event(EventKind.START, f"edge {self.cabinet_id} started, cycle {self.settings.cycle_ms:g} ms")
        self._started.set()
        try:
            await self._cycles.run(self._cycle)
        finally:
            self._stopped_safely = await self.session.write_zero(STOP_WRITE_TIMEOUT_S)
            await self.cabinet.link.stop()
            await self.meter.link.stop()

    def _restore(self, restored: RestoredState) -> None:
        """Schedules that have not ended and a latched trip, from before the restart."""
        self.schedules.restore(restored.schedules, self.clock.now())
        if not restored.latch:
            return
        with self._lock:
            self._latch = InterlockLatch(restored.latch)
            reason, trips = self._latch.reason, self._latch.trips
        conditions = ",".join(t.finding.condition.value for t in trips)
        self._event(
            EventKind.TRIP_RESTORED,
            f"latched interlock restored from before the restart: {reason}",
            conditions,
        )
        log.warning("%s: interlock latched before the restart: %s", self.cabinet_id, reason)

    # ------------------------------------------------------------------------------------ EdgeControl

    def submit_schedule(self, schedule: CabinetSchedule) -> Decision:
        """Validate and keep a schedule; refused (with the reason) leaves the active one unchanged.

        Accepted only once committed to the local database, outside the control loop's lock
        (:class:`edge.schedule_keeper.ScheduleKeeper`)."""
        return self.schedules.submit(schedule, self.clock.now())

    def reset_interlock(self) -> Decision:
        """Clear the latch if every latched condition is gone in fresh, valid data."""
        with self._lock:
            if not self._latch.active:
                if self.comm.holding:
                    return Decision(
                        True,
                        "no interlock is latched; the comm_loss hold ends by itself after "
                        f"{self.settings.comm_recovery_s:g} s of valid data",
                    )
                return Decision(True, "no interlock is latched")
            last_valid = self._last_valid_monotonic_s
            if last_valid is None or time.monotonic() - last_valid > self.comm_timeout_s:
                return self._refuse_reset("cannot reset: no fresh valid data from the device and the meter")
            if self._present:
                return self._refuse_reset(
                    "cannot reset: still present: " + "; ".join(str(f) for f in self._present)
                )
            cleared = self._latch.reset()
            self.store.post(lambda db: db.clear_latch(), "latch reset")
            self.session.connect_wanted = True
            self.comm.forget_episodes()
            what = ", ".join(t.finding.condition.value for t in cleared)
            self._event(EventKind.RESET, f"interlock reset; cleared: {what}", what.replace(" ", ""))
            log.info("%s: interlock reset (cleared: %s)", self.cabinet_id, what)
            return Decision(True, f"interlock reset; cleared: {what}")

    def _refuse_reset(self, message: str) -> Decision:
        self._event(EventKind.RESET_REFUSED, message)
        log.info("%s: reset refused: %s", self.cabinet_id, message)
        return Decision(False, message)

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

    async def _cycle_failed(self, exc: Exception) -> None:
        """A bug in a cycle: logged with its traceback, and the edge trips (the loop goes on)."""
        self._failed_cycle_log.log(f"{self.cabinet_id}: cycle failed", exc_info=True)
        try:
            await self._trip_now([Finding(Condition.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")])
        except Exception:
            log.exception("%s: tripping after a failed cycle failed too", self.cabinet_id)

    async def _cycle(self, started_s: float) -> None:
        read = await read_plant(self.cabinet, self.meter)
        now_s = time.monotonic()
        reading = read.cabinet
        if reading is not None:
            await self.session.on_reading(reading)
        findings, snapshot = self._evaluate(read, now_s)
        with self._lock:
            if snapshot is not None:
                comm = self.comm.valid(now_s)
                self._last_valid_monotonic_s = now_s
            else:
                comm = self.comm.failed(started_s, now_s, read.problems)
            if comm.flapping is not None:
                findings.append(comm.flapping)
            self._present = findings
            newly = self._latch.trip(findings, self.clock.time_s()) if findings else []
            tripped = self._latch.active
            if comm.ended is not None and snapshot is not None:
                self.session.restart_ramp(snapshot.cabinet)
            plan = (
                self._plan(snapshot)
                if snapshot is not None and not tripped and not self.comm.holding
                else None
            )
        if newly:
            self.trip_cycle = self.timing.cycles
            await self.session.write_trip(reading or self.session.last_reading)
        elif tripped:
            await self.session.hold_tripped(reading)
        elif plan is not None and snapshot is not None:
            await self._apply(plan, snapshot.cabinet)
        elif reading is not None:
            # No setpoint this cycle (starting, a comm-loss hold, a short gap of the meter): the device
            # holds its last setpoint and reverts to 0 W by itself; keep its heartbeat watchdog fed.
            await self.session.guarded(self.session.beat)
        with self._lock:
            if newly:
                self._record_trips(newly)
            self._record_comm(comm)
            self._note_links()
            self._update_mode()
            self._prune()
            self._telemetry = self._build_telemetry()

    def _evaluate(self, read: CycleRead, now_s: float) -> tuple[list[Finding], Snapshot | None]:
        """Every device condition present now, and the snapshot when the reads were valid."""
        findings: list[Finding] = []
        reading = read.cabinet
        if read.invalid:
            findings.append(Finding(Condition.INVALID_DATA, "; ".join(read.invalid)))
        if reading is not None:
            findings += check_cabinet(reading, self.limits, self.session.ignored_alarm_bits(now_s))
            for finding in (
                self.session.readback_finding(reading, now_s),
                self.session.frozen_finding(reading, now_s),
            ):
                if finding is not None:
                    findings.append(finding)
        if reading is None or read.meter is None or read.invalid:
            return findings, None
        snapshot = Snapshot(reading, read.meter, now_s)
        self._latest = snapshot
        return findings, snapshot

    def _plan(self, snapshot: Snapshot) -> Plan:
        """Step 1 and the setpoint chain for this cycle (called under the lock: reads the schedules)."""
        now = self.clock.now()
        schedule = self.schedules.active(now)
        return self.planner.plan(snapshot, schedule, now, self.session.ramp_origin(now.timestamp()))

    # ------------------------------------------------------------------------------------ actions

    async def _trip_now(self, findings: list[Finding]) -> None:
        """Latch ``findings`` outside the normal cycle (a failed cycle) and act on them."""
        with self._lock:
            newly = self._latch.trip(findings, self.clock.time_s())
        if newly:
            self.trip_cycle = self.timing.cycles
            await self.session.write_trip(self.session.last_reading)
            with self._lock:
                self._record_trips(newly)

    async def _apply(self, plan: Plan, reading: CabinetReading) -> None:
        with self._lock:
            connect = self.session.connect_wanted or reading.set_op != SETOP_CONNECT
        setpoint_kw = plan.result.setpoint_kw
        written = await self.session.apply(setpoint_kw, plan.clock_s, reading, connect)
        if written and not self._first_write_logged:
            self._first_write_logged = True
            schedule = plan.schedule
            mode = EdgeMode.SCHEDULE if schedule is not None else EdgeMode.FALLBACK
            detail = f" (schedule {schedule.schedule_id})" if schedule is not None else ""
            self._event(
                EventKind.SETPOINT,
                f"first setpoint {setpoint_kw:.3f} kW in mode {mode.value}{detail}",
                mode.value,
            )

    # ------------------------------------------------------------------------------------ bookkeeping
    # (called with the lock held, except _loop_late)

    def _record_trips(self, newly: list[Trip]) -> None:
        for trip in newly:
            log.error("%s: TRIP %s", self.cabinet_id, trip.finding)
            self._event(EventKind.TRIP, str(trip.finding), trip.finding.condition.value)
        self.store.post(lambda db: db.save_latch(newly), "latch")

    def _record_comm(self, comm: CommUpdate) -> None:
        if comm.started is not None:
            log.warning("%s: %s", self.cabinet_id, comm.started)
            self._event(EventKind.COMM_LOSS_START, str(comm.started), comm.started.cause.value)
        if comm.ended is not None:
            log.info("%s: %s", self.cabinet_id, comm.ended)
            self._event(EventKind.COMM_LOSS_END, str(comm.ended), comm.ended.cause.value)

    def _loop_late(self, what: str) -> None:
        """The loop did not run for longer than the comm timeout: this process was not scheduled (a CPU
        stall, SIGSTOP). Told apart from the devices' failures: no evidence against them."""
        message = f"{what} (this process was not scheduled); not counted against the devices"
        self._event(EventKind.LOOP_LATE, message)
        self._late_log.log(f"{self.cabinet_id}: {message}")

    def _update_mode(self) -> None:
        active = self.schedules.active(self.clock.now())
        mode, detail = decide_mode(self._latch, self.comm, active, self.site.site.fallback_mode)
        if mode is not self._mode:
            message = f"mode {self._mode.value} -> {mode.value}" + (f" ({detail})" if detail else "")
            log.info("%s: %s", self.cabinet_id, message)
            self._event(EventKind.MODE, message, mode.value)
            self._mode = mode

    def _note_links(self) -> None:
        """Log losing and regaining the device and the meter (the event log shows comm history)."""
        links = (self.cabinet.link, self.meter.link)
        state = (links[0].ready, links[1].ready)
        for link, was, now in zip(links, self._links_ok, state, strict=True):
            if was and not now:
                self._event(EventKind.COMM, f"{link.name} lost: {link.last_error}", link.name)
            elif now and not was:
                self._event(EventKind.COMM, f"{link.name} connected", link.name)
        self._links_ok = state

    def _prune(self) -> None:
        clock_s = self.clock.time_s()
        if abs(clock_s - self._last_prune_s) < 1.0:
            return
        self._last_prune_s = clock_s
        self.schedules.prune(self.clock.now())

    def _build_telemetry(self) -> EdgeTelemetry:
        now = self.clock.now()
        return build_telemetry(
            StatusInputs(
                cabinet=self.cabinet_config,
                mode=self._mode,
                reading=self.session.last_reading,
                device_setpoint_kw=self.session.device_setpoint_kw(time.monotonic()),
                active=self.schedules.active(now),
                valid_until=self.schedules.valid_until(now),
                latch=self._latch,
                comm=self.comm,
                timing=self.timing,
            )
        )

    def _event(self, kind: EventKind, message: str, subject: str = "") -> None:
        """Queue one line of the local event log (written by the store's thread; any thread may call)."""
        at = self.clock.now()
        self.store.post(lambda db: db.log_event(at, kind, message, subject), kind.value)
