"""The simulated devices over real Modbus TCP: pysunspec2 scans, setpoint, protections, meter, clock."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sunspec2.modbus.client as sunspec_client
from pymodbus.client import AsyncModbusTcpClient

from shared.clock import ManualClock, SimulatedClock
from shared.dayahead import DayAhead
from shared.site import SiteConfig
from shared.sunspec.layout import CABINET_MODELS, decode_value, device_layout, symbol_value
from simulators import SiteSimulator
from tests.support import write_site

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CABINET = device_layout(CABINET_MODELS)
ENABLED = symbol_value(704, "WSetEna", "ENABLED")
WATTS = symbol_value(704, "WSetMod", "WATTS")
STATE = {name: symbol_value(802, "State", name) for name in ("CONNECTED", "STANDBY", "DISCONNECTED", "FAULT")}

SimFactory = Callable[..., Awaitable[tuple[SiteSimulator, ManualClock]]]


@pytest.fixture
async def make_sim(tmp_path: Path) -> AsyncIterator[SimFactory]:
    """Start a simulator of a 2-cabinet site on a ManualClock; stopped at teardown."""
    started: list[SiteSimulator] = []

    async def make(
        sim_section: str = "", watchdog_clock: str = "simulated", **kwargs: Any
    ) -> tuple[SiteSimulator, ManualClock]:
        extra = f'[sim]\nwatchdog_clock = "{watchdog_clock}"\n{sim_section}\n'
        _, site = write_site(tmp_path, 2, extra=extra)
        clock = ManualClock(START)
        sim = SiteSimulator(site, clock, initial_soc_pct={"cab-1": 60.0, "cab-2": 40.0}, **kwargs)
        await sim.start()
        started.append(sim)
        return sim, clock

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[[str], Awaitable[AsyncModbusTcpClient]]]:
    opened: list[AsyncModbusTcpClient] = []

    async def connect(address: str) -> AsyncModbusTcpClient:
        host, _, port = address.rpartition(":")
        client = AsyncModbusTcpClient(host, port=int(port), timeout=1.0, retries=0)
        assert await client.connect()
        opened.append(client)
        return client

    yield connect
    for client in opened:
        client.close()


# ------------------------------------------------------------------------------------------ helpers


async def read_raw(client: AsyncModbusTcpClient, model_id: int, name: str) -> Any:
    point = CABINET.point(model_id, name)
    response = await client.read_holding_registers(point.address, count=point.size)
    assert not response.isError(), response
    return decode_value(point, response.registers)


async def read_scaled(client: AsyncModbusTcpClient, model_id: int, name: str) -> float:
    point = CABINET.point(model_id, name)
    raw = await read_raw(client, model_id, name)
    assert point.sf is not None and raw is not None
    sf = await read_raw(client, model_id, point.sf)
    return float(raw) * 10.0**sf


async def write_point(client: AsyncModbusTcpClient, model_id: int, name: str, raw: int) -> None:
    point = CABINET.point(model_id, name)
    value = raw & ((1 << (16 * point.size)) - 1)
    registers = [(value >> (16 * (point.size - 1 - i))) & 0xFFFF for i in range(point.size)]
    response = await client.write_registers(point.address, registers)
    assert not response.isError(), response


async def write_setpoint(client: AsyncModbusTcpClient, power_kw: float, revert_s: int = 0) -> None:
    """Enable WSet in watts with ``power_kw`` (+ discharge), honouring WSet_SF as the edge does."""
    sf = await read_raw(client, 704, "WSet_SF")
    raw = round(power_kw * 1000.0 / 10.0**sf) & 0xFFFFFFFF
    address = CABINET.point(704, "WSetEna").address
    response = await client.write_registers(address, [ENABLED, WATTS, raw >> 16, raw & 0xFFFF])
    assert not response.isError(), response
    await write_point(client, 704, "WSetRvrtTms", revert_s)


def sf_tolerance(image_sf: int) -> float:
    return 10.0**image_sf / 2.0 + 1e-9


def scan(address: str) -> dict[int, Any]:
    """A pysunspec2 scan (blocking: run it in a thread); model id -> model, every model exactly once."""
    host, _, port = address.rpartition(":")
    device = sunspec_client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr=host, ipport=int(port), timeout=2)
    try:
        device.scan()
    finally:
        device.disconnect()
    models: dict[int, Any] = {}
    for key, instances in device.models.items():
        if isinstance(key, int):
            assert len(instances) == 1, f"model {key} appears {len(instances)} times"
            models[key] = instances[0]
    return models


# ------------------------------------------------------------------------------------------ scans


async def test_pysunspec2_scan_of_every_device_matches_the_physics(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 0\n")
    site: SiteConfig = sim.site
    client = await clients(site.cabinets[0].modbus_address)
    await write_setpoint(client, -60.0)  # cab-1 charges
    other = await clients(site.cabinets[1].modbus_address)
    await write_setpoint(other, 35.0)  # cab-2 discharges
    for _ in range(120):
        clock.advance(5.0)
        sim.step()

    for cabinet in site.cabinets:
        models = await asyncio.to_thread(scan, cabinet.modbus_address)
        assert sorted(models) == [1, 701, 704, 802]
        assert all(model.error_info == "" for model in models.values())
        state = sim.cabinet(cabinet.id).state
        image = sim.cabinet(cabinet.id).image
        m1, m701, m704, m802 = models[1], models[701], models[704], models[802]
        assert m1.Mn.value == "hybrid-ems" and m1.SN.value == f"SIM-{cabinet.id}"
        assert m701.W.cvalue == pytest.approx(
            state.active_power_kw * 1000.0, abs=sf_tolerance(m701.W_SF.value)
        )
        assert m701.TmpCab.cvalue == pytest.approx(state.temperature_degc, abs=0.05 + 1e-9)
        assert m701.TotWhAbs.cvalue == pytest.approx(state.charged_ac_kwh * 1000.0, abs=0.5 + 1e-9)
        assert m701.TotWhInj.cvalue == pytest.approx(state.discharged_ac_kwh * 1000.0, abs=0.5 + 1e-9)
        assert m704.WSet.cvalue == pytest.approx(state.setpoint_kw * 1000.0)
        assert m802.SoC.cvalue == pytest.approx(state.soc_pct, abs=0.005 + 1e-9)
        limit_tolerance = sf_tolerance(m802.WChaDisChaMax_SF.value)
        assert m802.WChaRteMax.cvalue == pytest.approx(state.charge_limit_kw * 1000.0, abs=limit_tolerance)
        assert m802.WDisChaRteMax.cvalue == pytest.approx(
            state.discharge_limit_kw * 1000.0, abs=limit_tolerance
        )
        assert m802.CellVMax.cvalue == pytest.approx(state.cell_voltage_max_v, abs=0.0005 + 1e-9)
        assert m802.CellVMin.cvalue == pytest.approx(state.cell_voltage_min_v, abs=0.0005 + 1e-9)
        assert m802.V.cvalue == pytest.approx(state.pack_voltage_v, abs=0.05 + 1e-9)
        assert m802.State.value == symbol_value(802, "State", state.state)
        assert m802.Evt1.value == state.alarms
        assert m802.WHRtg.cvalue == pytest.approx(cabinet.capacity_kwh * 1000.0)
        assert image.scale_factor(701, "W") == m701.W_SF.value  # what the scan saw is what the device uses
    assert sim.cabinet("cab-1").state.active_power_kw == pytest.approx(-60.0, abs=0.01)
    assert sim.cabinet("cab-1").state.soc_pct > 60.0
    assert sim.cabinet("cab-2").state.soc_pct < 40.0

    models = await asyncio.to_thread(scan, site.site.meter_modbus_address)
    assert sorted(models) == [1, 203]
    assert all(model.error_info == "" for model in models.values())
    meter = sim.meter.state
    m203 = models[203]
    assert m203.W.cvalue == pytest.approx(meter.power_kw * 1000.0, abs=sf_tolerance(m203.W_SF.value))
    assert meter.power_kw == pytest.approx(meter.load_kw - meter.pv_kw - (-60.0 + 35.0), abs=0.02)
    assert m203.TotWhImp.cvalue == pytest.approx(meter.imported_kwh * 1000.0, abs=0.5 + 1e-9)
    assert m203.Hz.cvalue == pytest.approx(50.0)


# ------------------------------------------------------------------------------------------ control


async def test_setpoint_is_followed_and_soc_integrates(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 0\n")
    client = await clients(sim.site.cabinets[0].modbus_address)
    assert await read_scaled(client, 701, "W") == 0.0
    await write_setpoint(client, 50.0)
    clock.advance(1800.0)  # half an hour at 50 kW AC, 0.95 discharge efficiency
    assert await read_scaled(client, 701, "W") == pytest.approx(50_000.0, abs=10.0)
    expected_soc = 60.0 - 100.0 * (25.0 / 0.95) / 200.0
    assert await read_scaled(client, 802, "SoC") == pytest.approx(expected_soc, abs=0.05)
    assert sim.cabinet("cab-1").state.setpoint_kw == pytest.approx(50.0)


async def test_revert_timeout_returns_to_zero_until_the_setpoint_is_rewritten(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 0\n")
    client = await clients(sim.site.cabinets[0].modbus_address)
    cabinet = sim.cabinet("cab-1")
    await write_setpoint(client, 40.0, revert_s=5)
    clock.advance(3.0)
    assert await read_raw(client, 704, "WSetRvrtRem") == 2
    clock.advance(1.9)
    assert not cabinet.state.reverted
    assert cabinet.state.target_kw == pytest.approx(40.0)
    clock.advance(0.2)  # 5.1 s after the last write
    assert cabinet.state.reverted
    assert cabinet.state.target_kw == 0.0
    assert await read_raw(client, 704, "WSetRvrtRem") == 0
    clock.advance(10.0)
    assert abs(await read_scaled(client, 701, "W")) < 10.0
    await write_setpoint(client, 40.0, revert_s=5)  # rewriting restarts it
    clock.advance(4.0)
    assert not cabinet.state.reverted
    assert await read_scaled(client, 701, "W") == pytest.approx(40_000.0, abs=10.0)


async def test_revert_lands_exactly_on_its_deadline_within_a_long_jump(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 0\n")
    client = await clients(sim.site.cabinets[0].modbus_address)
    await write_setpoint(client, -80.0, revert_s=60)
    start = sim.cabinet("cab-1").state.charged_ac_kwh
    clock.advance(3600.0)
    charged = sim.cabinet("cab-1").state.charged_ac_kwh - start
    # 60 s at 80 kW (less the response ramps at both ends), then nothing for the rest of the hour.
    assert charged == pytest.approx(80.0 * 60.0 / 3600.0, rel=0.02)


async def test_heartbeat_that_stops_changing_puts_the_device_in_standby(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 3.0\n")
    client = await clients(sim.site.cabinets[0].modbus_address)
    cabinet = sim.cabinet("cab-1")
    await write_setpoint(client, 30.0)
    await write_point(client, 802, "CtrlHb", 1)
    clock.advance(2.0)
    await write_point(client, 802, "CtrlHb", 2)
    clock.advance(2.0)
    await write_point(client, 802, "CtrlHb", 2)  # written, but not changed: does not count
    assert await read_raw(client, 802, "State") == STATE["CONNECTED"]
    assert await read_scaled(client, 701, "W") == pytest.approx(30_000.0, abs=10.0)
    clock.advance(1.5)  # 3.5 s since the last change
    assert cabinet.state.standby
    assert await read_raw(client, 802, "State") == STATE["STANDBY"]
    evt1 = await read_raw(client, 802, "Evt1")
    assert evt1 & (1 << symbol_value(802, "Evt1", "COMMUNICATION_ERROR"))
    clock.advance(5.0)
    assert abs(await read_scaled(client, 701, "W")) < 10.0
    await write_point(client, 802, "CtrlHb", 3)
    clock.advance(2.0)
    await write_point(client, 802, "CtrlHb", 4)
    clock.advance(2.0)
    assert not cabinet.state.standby
    assert await read_raw(client, 802, "State") == STATE["CONNECTED"]
    assert await read_scaled(client, 701, "W") == pytest.approx(30_000.0, abs=10.0)


async def test_watchdog_runs_from_power_up(make_sim: SimFactory) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 2.0\n")
    clock.advance(2.5)
    assert sim.cabinet("cab-2").state.state == "STANDBY"


async def test_watchdogs_run_on_wall_time_by_default_whatever_the_simulated_clock_does(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    # The edge's loop runs in wall time; on a 100x clock, simulated-time watchdogs would fire between cycles.
    sim, _ = await make_sim("heartbeat_timeout_s = 0.4\n", watchdog_clock="wall")
    client = await clients(sim.site.cabinets[0].modbus_address)
    cabinet = sim.cabinet("cab-1")
    await write_setpoint(client, 20.0, revert_s=1)
    for beat in range(1, 9):  # 0.8 s of heartbeats, the ManualClock never moves
        await write_point(client, 802, "CtrlHb", beat)
        await asyncio.sleep(0.1)
    assert not cabinet.state.reverted and not cabinet.state.standby
    assert await read_raw(client, 704, "WSetRvrtRem") == 1
    for beat in range(9, 13):
        await write_point(client, 802, "CtrlHb", beat)
        await asyncio.sleep(0.1)
    assert cabinet.state.reverted and not cabinet.state.standby  # 1.2 s without a new WSet
    assert cabinet.state.target_kw == 0.0
    await asyncio.sleep(0.5)  # heartbeat stopped
    assert cabinet.state.standby
    assert await read_raw(client, 802, "State") == STATE["STANDBY"]


async def test_setop_disconnect_forces_zero_power(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 0\n")
    client = await clients(sim.site.cabinets[1].modbus_address)
    await write_setpoint(client, -50.0)
    clock.advance(10.0)
    await write_point(client, 802, "SetOp", symbol_value(802, "SetOp", "DISCONNECT"))
    clock.advance(10.0)
    assert await read_raw(client, 802, "State") == STATE["DISCONNECTED"]
    assert await read_raw(client, 701, "ConnSt") == 0
    assert abs(await read_scaled(client, 701, "W")) < 10.0
    assert not sim.cabinet("cab-2").state.connected
    await write_point(client, 802, "SetOp", symbol_value(802, "SetOp", "CONNECT"))
    clock.advance(10.0)
    assert await read_scaled(client, 701, "W") == pytest.approx(-50_000.0, abs=10.0)


async def test_device_refuses_bad_requests_like_a_strict_device(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, _ = await make_sim()
    client = await clients(sim.site.cabinets[0].modbus_address)
    refused = await client.write_register(CABINET.point(802, "SoC").address, 1)
    assert refused.isError() and refused.exception_code == 2  # read-only
    refused = await client.write_register(CABINET.point(704, "WSetMod").address, 9)
    assert refused.isError() and refused.exception_code == 3  # not a WSetMod symbol
    refused = await client.write_register(CABINET.point(704, "WSet").address, 1)
    assert refused.isError() and refused.exception_code == 2  # half of an int32
    refused = await client.read_holding_registers(CABINET.end_marker_address, count=5)
    assert refused.isError() and refused.exception_code == 2  # beyond the map
    refused = await client.read_holding_registers(40000, count=2, device_id=7)
    assert refused.isError() and refused.exception_code == 0x0B  # unit id 1 only
    refused = await client.read_coils(40000, count=1)
    assert refused.isError() and refused.exception_code == 1
    assert sim.cabinet("cab-1").state.setpoint_kw == 0.0


# ------------------------------------------------------------------------------------------ meter


async def test_meter_reads_load_minus_pv_minus_cabinets_positive_on_import(
    make_sim: SimFactory, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    sim, clock = await make_sim("heartbeat_timeout_s = 0\n")
    meter_client = await clients(sim.site.site.meter_modbus_address)
    w_point = device_layout((1, 203)).point(203, "W")
    sf_point = device_layout((1, 203)).point(203, "W_SF")

    async def meter_w() -> float:
        raw = decode_value(
            w_point, (await meter_client.read_holding_registers(w_point.address, count=1)).registers
        )
        sf = decode_value(
            sf_point, (await meter_client.read_holding_registers(sf_point.address, count=1)).registers
        )
        assert isinstance(raw, int) and isinstance(sf, int)
        return raw * 10.0**sf

    state = sim.meter.state
    assert state.load_kw > state.pv_kw  # example profile at noon: importing
    assert await meter_w() == pytest.approx((state.load_kw - state.pv_kw) * 1000.0, abs=50.0)
    cabinet_client = await clients(sim.site.cabinets[0].modbus_address)
    await write_setpoint(cabinet_client, 100.0)
    clock.advance(10.0)
    state = sim.meter.state
    assert await meter_w() == pytest.approx((state.load_kw - state.pv_kw - 100.0) * 1000.0, abs=60.0)
    imported = state.imported_kwh
    clock.advance(3600.0)
    assert sim.meter.state.imported_kwh > imported


async def test_meter_noise_is_seeded_and_has_the_configured_spread(make_sim: SimFactory) -> None:
    sim, clock = await make_sim("meter_noise_kw = 2.0\nseed = 7\n")
    noise = []
    for _ in range(400):
        clock.advance(1.0)
        noise.append(sim.meter.state.noise_kw)
    mean = sum(noise) / len(noise)
    spread = math.sqrt(sum((n - mean) ** 2 for n in noise) / len(noise))
    assert abs(mean) < 0.4
    assert spread == pytest.approx(2.0, rel=0.2)


# ------------------------------------------------------------------------------------------ clock


async def test_physics_steps_on_a_fast_simulated_clock_without_requests(
    tmp_path: Path, clients: Callable[[str], Awaitable[AsyncModbusTcpClient]]
) -> None:
    _, site = write_site(tmp_path, 1, extra="[sim]\nheartbeat_timeout_s = 0\nstep_ms = 10\n")
    clock = SimulatedClock(START, speed=100.0)
    async with SiteSimulator(site, clock, initial_soc_pct={"cab-1": 50.0}) as sim:
        client = await clients(site.cabinets[0].modbus_address)
        await write_setpoint(client, -100.0)
        physics = sim.cabinet("cab-1").physics  # read without stepping: only the physics task moves it
        before_kwh, before_s = physics.energy_kwh, clock.time_s()
        await asyncio.sleep(0.5)  # ~50 simulated seconds
        gained_kwh = physics.energy_kwh - before_kwh
        elapsed_s = clock.time_s() - before_s
        assert elapsed_s > 40.0
        assert gained_kwh == pytest.approx(100.0 * 0.95 * elapsed_s / 3600.0, rel=0.1)
        assert sim.stats()["step_ticks"] > 10


# ------------------------------------------------------------------------------------------ setup


async def test_busy_address_is_a_clear_error_and_nothing_stays_open(tmp_path: Path) -> None:
    _, site = write_site(tmp_path, 2)
    host, port = site.cabinets[1].modbus_host_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind((host, port))
        blocker.listen()
        sim = SiteSimulator(site, ManualClock(START))
        with pytest.raises(OSError, match=f"cab-2: cannot listen on {host}:{port}"):
            await sim.start()
    first_host, first_port = site.cabinets[0].modbus_host_port
    with pytest.raises(OSError):  # cab-1 had started: it was closed again
        await asyncio.open_connection(first_host, first_port)


async def test_given_profile_drives_the_meter_and_initial_soc(tmp_path: Path) -> None:
    _, site = write_site(tmp_path, 2)
    profile = DayAhead(
        start=datetime(2026, 1, 1, tzinfo=UTC),
        interval_minutes=60,
        import_price_per_kwh=(0.2, 0.3),
        export_price_per_kwh=(0.0, 0.0),
        load_kw=(100.0, 200.0),
        pv_kw=(30.0, 50.0),
        initial_soc_pct={"cab-2": 77.0},
    )
    clock = ManualClock(datetime(2026, 11, 24, 1, 30, tzinfo=UTC))  # long after: the 2-hour horizon repeats
    async with SiteSimulator(site, clock, profile) as sim:
        state = sim.meter.state
        assert (state.load_kw, state.pv_kw, state.power_kw) == (200.0, 50.0, 150.0)
        clock.advance(1800.0)
        assert sim.meter.state.power_kw == 70.0
        assert sim.cabinet("cab-1").state.soc_pct == 50.0
        assert sim.cabinet("cab-2").state.soc_pct == 77.0
    with pytest.raises(ValueError, match="unknown cabinet 'cab-9'"):
        SiteSimulator(site, clock, profile, initial_soc_pct={"cab-9": 50.0})
    with pytest.raises(KeyError, match="no cabinet 'cab-9'"):
        sim.cabinet("cab-9")


async def test_failed_physics_closes_every_device(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, site = write_site(tmp_path, 1)
    async with SiteSimulator(site, ManualClock(START)) as sim:
        host, port = site.cabinets[0].modbus_host_port
        _, writer = await asyncio.open_connection(host, port)
        writer.close()

        def broken(now_s: float) -> None:
            raise RuntimeError("physics bug")

        sim.meter.step = broken  # type: ignore[method-assign]
        for _ in range(100):
            if sim.failure is not None and not sim.addresses:
                break
            await asyncio.sleep(0.02)
        assert isinstance(sim.failure, RuntimeError)
        assert sim.stats()["failed"] == "RuntimeError('physics bug')"
        with pytest.raises(OSError):  # a device without physics must not answer with stale values
            await asyncio.open_connection(host, port)
    assert "simulator physics failed" in caplog.text
