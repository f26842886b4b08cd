"""The edge controller against the device simulators over real Modbus TCP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from edge.controller import EdgeController
from edge.interlocks import Condition
from edge.persistence import EventKind, read_events
from shared.clock import Clock, RealClock, SimulatedClock
from shared.dayahead import DayAhead
from shared.edge_api import EdgeMode
from shared.schedule import CabinetSchedule
from shared.site import SiteConfig, load_site
from shared.sunspec.layout import encode_value
from simulators import SiteSimulator
from tests.support import site_toml

CYCLE_MS = 20.0
# A comm timeout far above the 3-cycle default: a test process hosting simulators and edges on a busy
# 2-core machine can stall for 100 ms; and a short recovery, so a hold that such a stall still causes ends
# quickly. The comm-loss policy itself is tested in test_edge_comm_loss.py.
COMM_TIMEOUT_MS = 300.0
COMM_RECOVERY_S = 0.3


def edge_settings(cycle_ms: float = CYCLE_MS) -> str:
    return f"""
[edge]
cycle_ms = {cycle_ms}
comm_timeout_ms = {COMM_TIMEOUT_MS}
comm_recovery_s = {COMM_RECOVERY_S}
modbus_timeout_ms = 25.0
frozen_data_timeout_s = 1.5
revert_timeout_s = 1.0
reconnect_min_s = 0.05
reconnect_max_s = 0.2
"""


SETOP_CONNECT, SETOP_DISCONNECT = 1, 2


def flat_profile(load_kw: float, pv_kw: float = 0.0) -> DayAhead:
    """A day-ahead profile with constant load and PV (the simulators repeat it)."""
    steps = 24
    return DayAhead(
        start=datetime(2026, 1, 1, tzinfo=UTC),
        interval_minutes=60,
        import_price_per_kwh=(0.2,) * steps,
        export_price_per_kwh=(0.05,) * steps,
        load_kw=(load_kw,) * steps,
        pv_kw=(pv_kw,) * steps,
    )


@dataclass
class Write:
    loop_s: float
    clock_s: float
    points: dict[str, int]


@dataclass
class Recorder:
    """Every client write the simulated cabinet accepted: instrumentation of the device side."""

    writes: list[Write] = field(default_factory=list)

    def values(self, name: str) -> list[int]:
        return [w.points[name] for w in self.writes if name in w.points]


def record_writes(sim: SiteSimulator, cabinet_id: str, clock: Clock) -> Recorder:
    cabinet = sim.cabinet(cabinet_id)
    recorder = Recorder()
    original = cabinet.write_registers
    loop = asyncio.get_running_loop()

    def recording(address: int, values: list[int]) -> int | None:
        changes = cabinet.image.check_write(address, values) if values else []
        code = original(address, values)
        if code is None:
            points = {point.name: raw for point, raw in changes}
            recorder.writes.append(Write(loop.time(), clock.time_s(), points))
        return code

    cabinet.write_registers = recording  # type: ignore[method-assign]
    return recorder


@dataclass
class Rig:
    site: SiteConfig
    sim: SiteSimulator
    edges: dict[str, EdgeController]
    clock: Clock
    state_dir: Path
    recorders: dict[str, Recorder]

    @property
    def edge(self) -> EdgeController:
        return self.edges["cab-1"]

    def wset_kw(self, cabinet_id: str = "cab-1") -> float:
        return self.sim.cabinet(cabinet_id).state.setpoint_kw


@asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    cabinets: int = 1,
    clock: Clock | None = None,
    load_kw: float = 50.0,
    extra: str = "",
    initial_soc_pct: float = 50.0,
    site_extra: str = "",
    cycle_ms: float = CYCLE_MS,
    **site_kwargs: object,
) -> AsyncIterator[Rig]:
    text = site_toml(cabinets, extra=edge_settings(cycle_ms) + extra, **site_kwargs)  # type: ignore[arg-type]
    path = tmp_path / "site.toml"
    path.write_text(text.replace("[site]\n", "[site]\n" + site_extra, 1), encoding="utf-8")
    site = load_site(path)
    clock = clock or RealClock()
    socs = {c.id: initial_soc_pct for c in site.cabinets}
    state_dir = tmp_path / "state"
    async with SiteSimulator(site, clock, profile=flat_profile(load_kw), initial_soc_pct=socs) as sim:
        recorders = {c.id: record_writes(sim, c.id, clock) for c in site.cabinets}
        edges = {c.id: EdgeController(site, c.id, clock, state_dir=state_dir) for c in site.cabinets}
        for edge in edges.values():
            await edge.start()
        try:
            yield Rig(site, sim, edges, clock, state_dir, recorders)
        finally:
            for edge in edges.values():
                await edge.stop()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.005)


def schedule_now(clock: Clock, values: list[float], interval_s: int = 60, sid: str = "s1") -> CabinetSchedule:
    start = datetime.fromtimestamp(int(clock.time_s()), tz=UTC)
    return CabinetSchedule(sid, start, interval_s, tuple(values))


async def running(r: Rig, setpoint_kw: float, cabinet_id: str = "cab-1") -> None:
    edge = r.edges[cabinet_id]
    await wait_for(
        lambda: edge.mode is EdgeMode.SCHEDULE and abs(r.wset_kw(cabinet_id) - setpoint_kw) < 0.05,
        what=f"{cabinet_id} following {setpoint_kw} kW",
    )


# ------------------------------------------------------------------------------------------ tracking


async def test_tracks_a_schedule_switching_exactly_at_interval_boundaries(tmp_path: Path) -> None:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    clock = SimulatedClock(start, speed=10.0, anchor_unix_s=time.time())
    async with rig(tmp_path, clock=clock) as r:
        schedule = CabinetSchedule("track", start + timedelta(seconds=10), 10, (30.0, -20.0, 45.0))
        decision = r.edge.submit_schedule(schedule)
        assert decision.accepted, decision.message
        await wait_for(lambda: r.edge.mode is EdgeMode.SCHEDULE, what="schedule mode")
        await wait_for(lambda: abs(r.sim.cabinet("cab-1").state.active_power_kw - 30.0) < 1.0, what="30 kW")
        await wait_for(lambda: clock.now() >= schedule.end + timedelta(seconds=2), timeout_s=6.0)
        telemetry = r.edge.telemetry()
        assert telemetry.mode is EdgeMode.FALLBACK and telemetry.schedule_id == ""
        sf = r.sim.cabinet("cab-1").image.scale_factor(704, "WSet")
        writes = [
            (w.clock_s, w.points["WSet"] * 10.0**sf / 1000.0)
            for w in r.recorders["cab-1"].writes
            if "WSet" in w.points
        ]
        cycle_sim_s = CYCLE_MS / 1000.0 * clock.speed
        for index, value in enumerate(schedule.setpoints_kw):
            boundary = (schedule.start + timedelta(seconds=10 * index)).timestamp()
            first_new = min(t for t, v in writes if v == pytest.approx(value))
            # Never early; at the first cycle after the boundary (2 cycles + scheduling slack at most).
            assert boundary <= first_new <= boundary + 2 * cycle_sim_s + 0.2
            held = [v for t, v in writes if boundary + 1.0 <= t < boundary + 10.0]
            assert held and all(v == pytest.approx(value) for v in held)


async def test_refused_schedules_leave_the_active_one_unchanged(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        good = schedule_now(r.clock, [40.0, 40.0], sid="good")
        assert r.edge.submit_schedule(good).accepted
        await running(r, 40.0)
        now = datetime.fromtimestamp(int(r.clock.time_s()), tz=UTC)
        bad = {
            "limit": CabinetSchedule("b1", now, 60, (150.0,)),
            "finite": CabinetSchedule("b2", now, 60, (float("nan"),)),
            "empty": CabinetSchedule("b3", now, 60, ()),
            "before now": CabinetSchedule("b4", now - timedelta(hours=2), 60, (10.0,)),
            "interval": CabinetSchedule("b5", now, 0, (10.0,)),
        }
        for reason, schedule in bad.items():
            decision = r.edge.submit_schedule(schedule)
            assert not decision.accepted and reason in decision.message, decision
        await asyncio.sleep(0.1)
        assert r.edge.telemetry().schedule_id == "good"
        assert r.wset_kw() == pytest.approx(40.0)
        await wait_for(
            lambda: len(read_events(r.edge.database_path, EventKind.SCHEDULE_REFUSED)) == len(bad),
            what="every refusal in the event log",
        )
        subjects = {e.subject for e in read_events(r.edge.database_path, EventKind.SCHEDULE_REFUSED)}
        assert subjects == {s.schedule_id for s in bad.values()}


# ------------------------------------------------------------------------------------------ interlocks


def _inject(name: str) -> Callable[[SiteSimulator], None]:
    faults: dict[str, Callable[[SiteSimulator], None]] = {
        "over_temperature": lambda s: s.cabinet("cab-1").faults.over_temperature(58.0),
        "cell_over_voltage": lambda s: s.cabinet("cab-1").faults.cell_over_voltage(3.67),
        "cell_under_voltage": lambda s: s.cabinet("cab-1").faults.cell_under_voltage(2.75),
        "alarm": lambda s: s.cabinet("cab-1").faults.alarm_bit("GROUND_FAULT"),
        "device_fault": lambda s: s.cabinet("cab-1").faults.state_fault(),
    }
    return faults[name]


@pytest.mark.parametrize(
    "condition",
    [
        Condition.OVER_TEMPERATURE,
        Condition.CELL_OVER_VOLTAGE,
        Condition.CELL_UNDER_VOLTAGE,
        Condition.ALARM,
        Condition.DEVICE_FAULT,
    ],
)
async def test_interlock_trips_within_two_cycles_stays_latched_and_resets(
    tmp_path: Path, condition: Condition
) -> None:
    async with rig(tmp_path) as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [40.0, 40.0])).accepted
        await running(r, 40.0)
        recorder = r.recorders["cab-1"]
        cycles_at_fault = r.edge.timing.cycles
        writes_before = len(recorder.writes)
        _inject(condition.value)(r.sim)
        await wait_for(lambda: r.edge.mode is EdgeMode.TRIPPED, timeout_s=2.0, what="trip")
        assert r.edge.trip_cycle is not None and r.edge.trip_cycle - cycles_at_fault <= 2
        assert condition in {t.finding.condition for t in r.edge.latched}
        # On the device: 0 W first, then DISCONNECT.
        after = recorder.writes[writes_before:]
        first_zero = next(i for i, w in enumerate(after) if w.points.get("WSet") == 0)
        first_disconnect = next(i for i, w in enumerate(after) if w.points.get("SetOp") == SETOP_DISCONNECT)
        assert first_zero < first_disconnect
        assert not r.sim.cabinet("cab-1").state.connected
        telemetry = r.edge.telemetry()
        assert telemetry.interlock_active and condition.value in telemetry.interlock_reason
        # The reset is refused while the condition is present.
        refused = r.edge.reset_interlock()
        assert not refused.accepted and condition.value in refused.message
        # Gone, but latched until reset.
        r.sim.cabinet("cab-1").faults.clear_all()
        await asyncio.sleep(0.3)
        assert r.edge.mode is EdgeMode.TRIPPED and r.wset_kw() == 0.0
        assert r.sim.cabinet("cab-1").state.state == "DISCONNECTED"
        assert r.edge.reset_interlock().accepted
        await running(r, 40.0)
        assert r.sim.cabinet("cab-1").state.state == "CONNECTED"
        await wait_for(
            lambda: (
                {EventKind.TRIP, EventKind.RESET_REFUSED, EventKind.RESET}
                <= {e.kind for e in read_events(r.edge.database_path)}
            ),
            what="trip, refused reset and reset in the event log",
        )
        [trip] = read_events(r.edge.database_path, EventKind.TRIP)
        assert trip.subject == condition.value


async def test_soc_outside_hard_limits_trips_before_any_setpoint(tmp_path: Path) -> None:
    async with rig(tmp_path, initial_soc_pct=99.0) as r:
        await wait_for(lambda: r.edge.mode is EdgeMode.TRIPPED, what="trip")
        assert [t.finding.condition for t in r.edge.latched] == [Condition.SOC_OUT_OF_LIMITS]
        assert all(v == 0 for v in r.recorders["cab-1"].values("WSet"))
        assert not r.edge.reset_interlock().accepted


async def test_frozen_data_trips(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [0.0, 0.0])).accepted
        await running(r, 0.0)
        frozen_at = time.monotonic()
        r.sim.cabinet("cab-1").faults.freeze()
        await wait_for(lambda: r.edge.mode is EdgeMode.TRIPPED, timeout_s=4.0, what="trip")
        elapsed = time.monotonic() - frozen_at
        # Hb ticks once a second: the trip comes 0.5-1.5 s (+ a cycle) after the freeze.
        assert 0.45 <= elapsed <= 1.5 + 0.3
        assert [t.finding.condition for t in r.edge.latched] == [Condition.FROZEN_DATA]
        r.sim.cabinet("cab-1").faults.clear_all()
        await asyncio.sleep(0.2)
        assert r.edge.reset_interlock().accepted


async def test_setpoint_read_back_mismatch_trips(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [20.0, 20.0])).accepted
        await running(r, 20.0)
        cabinet = r.sim.cabinet("cab-1")
        wset = cabinet.image.layout.point(704, "WSet")
        raw = round(77_000 / 10.0 ** cabinet.image.scale_factor(704, "WSet"))
        host, port = r.site.cabinet("cab-1").modbus_host_port
        intruder = AsyncModbusTcpClient(host, port=port, timeout=1.0)
        await intruder.connect()
        try:
            for _ in range(100):  # another master writes WSet behind the edge's back
                await intruder.write_registers(wset.address, encode_value(wset, raw), device_id=1)
                if r.edge.mode is EdgeMode.TRIPPED:
                    break
                await asyncio.sleep(0.005)
        finally:
            intruder.close()
        await wait_for(lambda: r.edge.mode is EdgeMode.TRIPPED, timeout_s=1.0, what="trip")
        assert Condition.SETPOINT_MISMATCH in {t.finding.condition for t in r.edge.latched}
        await wait_for(lambda: r.wset_kw() == 0.0, what="0 W")


# ------------------------------------------------------------------------------------------ fallback


@pytest.mark.parametrize(
    ("mode", "extra_site", "expected_grid_kw"),
    [
        ("idle", "", 80.0),
        ("self_consumption", "", 0.0),
        ("peak_shave", "peak_shave_threshold_kw = 60.0\n", 60.0),
    ],
)
async def test_fallback_when_the_schedule_expires(
    tmp_path: Path, mode: str, extra_site: str, expected_grid_kw: float
) -> None:
    start = datetime.now(UTC).replace(microsecond=0)
    clock = SimulatedClock(start, speed=20.0, anchor_unix_s=time.time())
    toml_extra = f'fallback_mode = "{mode}"\n{extra_site}'
    async with rig(tmp_path, clock=clock, load_kw=80.0, site_extra=toml_extra) as r:
        schedule = CabinetSchedule("short", start + timedelta(seconds=10), 10, (-25.0, -25.0))
        assert r.edge.submit_schedule(schedule).accepted
        await wait_for(lambda: r.edge.mode is EdgeMode.SCHEDULE, what="schedule")
        assert r.edge.telemetry().schedule_valid_until == schedule.end
        await wait_for(lambda: clock.now() >= schedule.end, timeout_s=3.0, what="expiry")
        await wait_for(lambda: r.edge.mode is EdgeMode.FALLBACK, what="fallback")
        await wait_for(
            lambda: abs(r.sim.meter.state.power_kw - expected_grid_kw) < 1.0,
            timeout_s=3.0,
            what=f"grid at {expected_grid_kw} kW in {mode}",
        )
        await wait_for(
            lambda: any(
                e.subject == "fallback" and "schedule -> fallback" in e.message and mode in e.message
                for e in read_events(r.edge.database_path, EventKind.MODE)
            ),
            what="the mode change in the event log",
        )


# ------------------------------------------------------------------------------------------ PoC limits


async def test_poc_limits_held_with_three_cabinets_sharing_one_meter(tmp_path: Path) -> None:
    import_limit, export_limit, load = 250.0, 100.0, 150.0
    async with rig(
        tmp_path,
        cabinets=3,
        cycle_ms=50.0,  # three edges and four devices in one test process: keep it light
        load_kw=load,
        grid_import_limit_kw=import_limit,
        grid_export_limit_kw=export_limit,
    ) as r:
        peak_import = peak_export = 0.0

        async def watch_until(target_kw: float, timeout_s: float = 30.0) -> None:
            """Track the peaks until the grid settles at ``target_kw`` (the PCS responds with a lag; on a
            busy machine the test's own simulators answer late and the edges hold meanwhile). The peaks
            are checked all along."""
            nonlocal peak_import, peak_export
            end = time.monotonic() + timeout_s
            settled_since: float | None = None
            while time.monotonic() < end:
                grid = r.sim.meter.state.power_kw
                peak_import, peak_export = max(peak_import, grid), max(peak_export, -grid)
                if abs(grid - target_kw) < 1.0:
                    settled_since = settled_since or time.monotonic()
                    if time.monotonic() - settled_since > 0.3:
                        return
                else:
                    settled_since = None
                await asyncio.sleep(0.005)
            raise AssertionError(
                f"grid did not settle at {target_kw} kW: {r.sim.meter.state.power_kw:.1f} kW"
            )

        # Every cabinet told to charge 100 kW: 450 kW import against a 250 kW limit.
        for cabinet_id, edge in r.edges.items():
            assert edge.submit_schedule(
                schedule_now(r.clock, [-100.0, -100.0], sid=f"c-{cabinet_id}")
            ).accepted
        await watch_until(import_limit)
        assert peak_import <= import_limit + 5.0, f"import peaked at {peak_import:.1f} kW"
        # Every cabinet told to discharge 100 kW: 150 kW export against a 100 kW limit.
        for cabinet_id, edge in r.edges.items():
            discharge = schedule_now(r.clock, [100.0, 100.0], sid=f"d-{cabinet_id}")
            assert edge.submit_schedule(discharge).accepted
        await watch_until(-export_limit)
        assert peak_export <= export_limit + 5.0, f"export peaked at {peak_export:.1f} kW"
        # Together they deliver load + export limit, each within its schedule. (How they divide it depends on
        # the transient: every edge sees only its own power and the meter.)
        powers = [r.sim.cabinet(c).state.active_power_kw for c in r.edges]
        assert sum(powers) == pytest.approx(load + export_limit, abs=3.0)
        assert all(0.0 < p <= 100.5 for p in powers)


# ------------------------------------------------------------------------------------------ SunSpec scan


class _PlainDevice:
    """A SunSpec device with a register image only (no physics), served like the simulators."""

    def __init__(self, model_ids: tuple[int, ...]) -> None:
        from shared.sunspec.layout import device_layout
        from simulators.faults import CommFaults
        from simulators.registers import RegisterImage

        layout = device_layout(model_ids)
        scale_factors = {
            (model.model_id, point.name): 0
            for model in layout.models.values()
            for point in model.points.values()
            if point.type == "sunssf"
        }
        scale_factors[(802, "SoC_SF")] = -1
        scale_factors[(802, "WChaDisChaMax_SF")] = 2
        self.id, self.unit_id = "plain", 1
        self.image = RegisterImage(model_ids, scale_factors)
        self.faults = CommFaults()

    def read_registers(self, address: int, count: int) -> list[int]:
        return self.image.read(address, count)

    def write_registers(self, address: int, values: list[int]) -> int | None:
        self.image.apply_write(address, values)
        return None


async def test_the_model_chain_is_scanned_so_models_may_sit_anywhere() -> None:
    from edge.device_io import Backoff, CabinetDevice, DeviceLink
    from simulators.server import DeviceServer
    from tests.support import free_port

    device = _PlainDevice((1, 802, 704, 701))  # not the simulators' order
    image = device.image
    for model_id, name, value in [
        (701, "W", -12_000.0),
        (701, "TmpCab", 31.0),
        (704, "WSet", -12_000.0),
        (802, "WChaRteMax", 90_000.0),
        (802, "WDisChaRteMax", 80_000.0),
        (802, "SoC", 55.5),
        (802, "CellVMax", 3.0),
        (802, "CellVMin", 3.0),
    ]:
        image.set(model_id, name, value)
    for model_id, name, raw in [
        (704, "WSetEna", 1),
        (704, "WSetMod", 1),
        (802, "Hb", 7),
        (802, "State", 3),
        (802, "Evt1", 0),
        (802, "SetOp", 1),
    ]:
        image.set_raw(model_id, name, raw)
    port = free_port()
    server = DeviceServer(device, "127.0.0.1", port)
    await server.start()
    good = DeviceLink("good", "127.0.0.1", port, (701, 704, 802), 0.5, Backoff(0.05, 0.1))
    lacking = DeviceLink("lacking", "127.0.0.1", port, (701, 713), 0.5, Backoff(0.05, 0.1))
    try:
        good.start()
        lacking.start()
        await wait_for(lambda: good.ready, what="scan")
        assert good.models[802].address == 40000 + 2 + 2 + 66  # right after model 1
        reading = await CabinetDevice(good).read()
        assert reading.soc_pct == pytest.approx(55.5)
        assert reading.active_power_kw == pytest.approx(-12.0)
        assert reading.charge_rate_max_kw == pytest.approx(90.0)
        assert reading.heartbeat == 7
        await asyncio.sleep(0.2)
        assert not lacking.ready and "lacks SunSpec model(s) [713]" in lacking.last_error
    finally:
        await good.stop()
        await lacking.stop()
        await server.stop()


async def test_restarted_edge_wakes_a_device_in_heartbeat_standby(tmp_path: Path) -> None:
    # The device's watchdog put it in standby and it still holds the heartbeat value a fresh edge process
    # would write first (its counter starts again): the new edge must write a value that differs, wake the
    # device and not trip on the device's COMMUNICATION_ERROR.
    async with rig(tmp_path, extra="[sim]\nheartbeat_timeout_s = 0.3\n") as r:
        await r.edge.stop()
        device = r.sim.cabinet("cab-1")
        ctrl_hb = device.image.layout.point(802, "CtrlHb")
        host, port = r.site.cabinet("cab-1").modbus_host_port
        client = AsyncModbusTcpClient(host, port=port, timeout=1.0)
        await client.connect()
        try:
            await client.write_registers(ctrl_hb.address, encode_value(ctrl_hb, 1), device_id=1)
        finally:
            client.close()
        await wait_for(lambda: device.state.standby, what="device standby after the heartbeat stopped")
        restarted = EdgeController(r.site, "cab-1", r.clock, state_dir=r.state_dir / "restarted")
        await restarted.start()
        try:
            await wait_for(lambda: restarted.mode is EdgeMode.FALLBACK, what="fallback after start")
            await wait_for(lambda: not device.state.standby, what="device awake")
            await asyncio.sleep(10 * CYCLE_MS / 1000.0)
            assert restarted.mode is EdgeMode.FALLBACK, restarted.telemetry().interlock_reason
        finally:
            await restarted.stop()
