"""The simulator's runtime SoC jump (``set_soc``), limit derating (``derate`` fault) and its timestamps of
faults and safe-state commands, over the control interface of a running simulator and over Modbus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient

from shared.clock import ManualClock
from shared.sunspec.layout import CABINET_MODELS, decode_value, device_layout, encode_value, symbol_value
from simulators import ControlError, SiteSimulator, control_request
from simulators.faults import CabinetFaults
from tests.support import free_port, write_site

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CABINET = device_layout(CABINET_MODELS)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[SiteSimulator, str]]:
    control = f"127.0.0.1:{free_port()}"
    extra = f'[sim]\nheartbeat_timeout_s = 0\nwatchdog_clock = "simulated"\ncontrol_address = "{control}"\n'
    _, site = write_site(tmp_path, 1, extra=extra)
    async with SiteSimulator(site, ManualClock(START), control=True) as sim:
        yield sim, control


async def read_point(sim: SiteSimulator, model: int, name: str) -> float:
    host, port = sim.site.cabinets[0].modbus_host_port
    client = AsyncModbusTcpClient(host, port=port, timeout=1.0, retries=0)
    await client.connect()
    try:
        point = CABINET.point(model, name)
        scale = CABINET.point(model, point.sf) if point.sf else None
        response = await client.read_holding_registers(point.address, count=point.size, device_id=1)
        raw = decode_value(point, response.registers)
        if scale is None:
            return float(raw)
        sf_response = await client.read_holding_registers(scale.address, count=1, device_id=1)
        return float(raw) * 10.0 ** float(decode_value(scale, sf_response.registers))
    finally:
        client.close()


async def test_set_soc_moves_the_stored_energy(running: tuple[SiteSimulator, str]) -> None:
    sim, control = running
    answer = await control_request(control, {"cmd": "set_soc", "device": "cab-1", "value": 73.5})
    assert answer["soc_pct"] == 73.5
    assert sim.cabinet("cab-1").state.soc_pct == pytest.approx(73.5)
    assert await read_point(sim, 802, "SoC") == pytest.approx(73.5, abs=0.01)
    for bad, message in (
        ({"cmd": "set_soc", "device": "meter", "value": 50}, "no state of charge"),
        ({"cmd": "set_soc", "device": "cab-1", "value": 120}, "0-100"),
        ({"cmd": "set_soc", "device": "cab-1", "value": "x"}, "numeric"),
        ({"cmd": "set_soc", "device": "cab-9", "value": 50}, "cab-9"),
    ):
        with pytest.raises(ControlError, match=message):
            await control_request(control, bad)
    assert sim.cabinet("cab-1").state.soc_pct == pytest.approx(73.5)


async def test_derate_lowers_the_bms_limits_until_cleared(running: tuple[SiteSimulator, str]) -> None:
    sim, control = running
    rated = sim.cabinet("cab-1").state.discharge_limit_kw
    await control_request(control, {"cmd": "set", "device": "cab-1", "fault": "derate", "value": 40})
    state = sim.cabinet("cab-1").state
    assert state.discharge_limit_kw == pytest.approx(0.4 * rated)
    assert state.charge_limit_kw == pytest.approx(0.4 * sim.site.cabinets[0].charge_limit_kw)
    assert await read_point(sim, 802, "WDisChaRteMax") == pytest.approx(0.4 * rated * 1000.0, abs=10.0)
    await control_request(control, {"cmd": "clear", "device": "cab-1", "fault": "derate"})
    assert sim.cabinet("cab-1").state.discharge_limit_kw == pytest.approx(rated)
    with pytest.raises(ControlError, match="0-100"):
        await control_request(control, {"cmd": "set", "device": "cab-1", "fault": "derate", "value": 101})


@given(share=st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=5) | st.none())
def test_derate_accepts_only_a_share(share: float | str | None) -> None:
    faults = CabinetFaults()
    try:
        faults.set("derate", share)
    except ValueError as exc:
        assert "\n" not in str(exc)
        assert faults.limit_factor == 1.0
    else:
        assert 0.0 <= faults.limit_factor <= 1.0


async def test_device_timestamps_faults_and_safe_state_commands(running: tuple[SiteSimulator, str]) -> None:
    sim, control = running
    host, port = sim.site.cabinets[0].modbus_host_port
    client = AsyncModbusTcpClient(host, port=port, timeout=1.0, retries=0)
    await client.connect()
    try:
        wset = CABINET.point(704, "WSet")
        assert not (
            await client.write_registers(wset.address, encode_value(wset, 500), device_id=1)
        ).isError()
        await control_request(
            control, {"cmd": "set", "device": "cab-1", "fault": "over_temperature", "value": 70}
        )
        timing = (await control_request(control, {"cmd": "status"}))["devices"]["cab-1"]["timing"]
        set_at = timing["fault_set_mono_s"]["over_temperature"]
        assert timing["zero_setpoint_mono_s"] is None and timing["disconnect_mono_s"] is None
        assert not (await client.write_registers(wset.address, encode_value(wset, 0), device_id=1)).isError()
        setop = CABINET.point(802, "SetOp")
        disconnect = encode_value(setop, symbol_value(802, "SetOp", "DISCONNECT"))
        assert not (await client.write_registers(setop.address, disconnect, device_id=1)).isError()
    finally:
        client.close()
    timing = (await control_request(control, {"cmd": "status"}))["devices"]["cab-1"]["timing"]
    assert set_at <= timing["zero_setpoint_mono_s"] <= timing["disconnect_mono_s"]


def test_reaction_is_zero_when_the_device_was_already_disconnected() -> None:
    from lab.demo.sampler import device_reaction_ms

    def status(**timing: object) -> dict[str, object]:
        return {"devices": {"cab-1": {"timing": {"fault_set_mono_s": {"alarm_bit": 10.0}, **timing}}}}

    assert (
        device_reaction_ms(status(disconnect_mono_s=5.0, setop_disconnected=True), "cab-1", "alarm_bit")
        == 0.0
    )
    assert (
        device_reaction_ms(status(disconnect_mono_s=5.0, setop_disconnected=False), "cab-1", "alarm_bit")
        is None
    )
    later = status(disconnect_mono_s=10.1, zero_setpoint_mono_s=10.05, setop_disconnected=True)
    assert device_reaction_ms(later, "cab-1", "alarm_bit") == pytest.approx(50.0)
    assert device_reaction_ms(status(), "cab-1", "state_fault") is None
