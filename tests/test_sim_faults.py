"""Every injectable fault, observed by a plain pymodbus client; the control interface; ``ems sim``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from shared.clock import ManualClock
from shared.site import parse_host_port
from shared.sunspec.layout import CABINET_MODELS, METER_MODELS, decode_value, device_layout, symbol_value
from simulators import ControlError, SiteSimulator, control_request
from simulators.control import handle_request
from simulators.faults import CabinetFaults, CommFaults, FaultName
from tests.support import free_port, write_site

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
CABINET = device_layout(CABINET_MODELS)
METER = device_layout(METER_MODELS)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[SiteSimulator, ManualClock, int]]:
    """A 1-cabinet site on a ManualClock with the control interface on a free port."""
    control_port = free_port()
    extra = "\n".join(
        [
            "[sim]",
            "heartbeat_timeout_s = 0",
            'watchdog_clock = "simulated"',
            f'control_address = "127.0.0.1:{control_port}"',
            "",
        ]
    )
    _, site = write_site(tmp_path, 1, extra=extra)
    clock = ManualClock(START)
    async with SiteSimulator(site, clock, control=True) as sim:
        yield sim, clock, control_port


@pytest.fixture
async def client(running: tuple[SiteSimulator, ManualClock, int]) -> AsyncIterator[AsyncModbusTcpClient]:
    sim, _, _ = running
    host, port = sim.site.cabinets[0].modbus_host_port
    modbus = AsyncModbusTcpClient(host, port=port, timeout=1.0, retries=0)
    assert await modbus.connect()
    yield modbus
    modbus.close()


async def read(client: AsyncModbusTcpClient, model_id: int, name: str, layout: Any = CABINET) -> Any:
    point = layout.point(model_id, name)
    response = await client.read_holding_registers(point.address, count=point.size)
    assert not response.isError(), response
    raw = decode_value(point, response.registers)
    if point.sf is None or raw is None:
        return raw
    sf_point = layout.point(model_id, point.sf)
    sf_response = await client.read_holding_registers(sf_point.address, count=1)
    sf = decode_value(sf_point, sf_response.registers)
    assert isinstance(sf, int)
    return raw * 10.0**sf


def bit(name: str) -> int:
    return 1 << symbol_value(802, "Evt1", name)


# ------------------------------------------------------------------------------------------ battery faults


async def test_over_temperature(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient
) -> None:
    sim, _, _ = running
    faults = sim.cabinet("cab-1").faults
    assert await read(client, 701, "TmpCab") == pytest.approx(25.0)
    faults.over_temperature(70.0)
    assert await read(client, 701, "TmpCab") == pytest.approx(70.0)
    assert await read(client, 802, "Evt1") & bit("OVER_TEMP_ALARM")
    assert await read(client, 701, "Alrm") & (1 << symbol_value(701, "Alrm", "OVER_TEMP"))
    assert await read(client, 802, "WChaRteMax") == 0.0  # derated to nothing above 60 degC
    faults.clear("over_temperature")
    assert await read(client, 701, "TmpCab") == pytest.approx(25.0)
    assert await read(client, 802, "Evt1") == 0
    assert await read(client, 802, "WChaRteMax") == pytest.approx(100_000.0)


async def test_cell_over_and_under_voltage(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient
) -> None:
    sim, _, _ = running
    faults = sim.cabinet("cab-1").faults
    faults.cell_over_voltage(3.85)
    assert await read(client, 802, "CellVMax") == pytest.approx(3.85)
    assert await read(client, 802, "Evt1") == bit("OVER_VOLT_ALARM")
    faults.cell_under_voltage(2.45)
    assert await read(client, 802, "CellVMin") == pytest.approx(2.45)
    assert await read(client, 802, "Evt1") == bit("OVER_VOLT_ALARM") | bit("UNDER_VOLT_ALARM")
    faults.clear("cell_over_voltage")
    faults.clear("cell_under_voltage")
    assert await read(client, 802, "CellVMax") < 3.4
    assert await read(client, 802, "CellVMin") > 3.2
    assert await read(client, 802, "Evt1") == 0


async def test_every_evt1_alarm_bit(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient
) -> None:
    sim, _, _ = running
    faults = sim.cabinet("cab-1").faults
    for number in range(32):
        faults.alarm_bit(number)
        assert await read(client, 802, "Evt1") == 1 << number
        faults.clear_alarm_bit(number)
    faults.alarm_bit("GROUND_FAULT")
    faults.alarm_bit(3)
    assert await read(client, 802, "Evt1") == bit("GROUND_FAULT") | (1 << 3)
    faults.clear("alarm_bit")
    assert await read(client, 802, "Evt1") == 0


async def test_state_fault_stops_the_pcs(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient
) -> None:
    sim, clock, _ = running
    cabinet = sim.cabinet("cab-1")
    enabled, watts = symbol_value(704, "WSetEna", "ENABLED"), symbol_value(704, "WSetMod", "WATTS")
    sf = await read(client, 704, "WSet_SF")
    raw = round(60_000 / 10**sf)
    await client.write_registers(
        CABINET.point(704, "WSetEna").address, [enabled, watts, raw >> 16, raw & 0xFFFF]
    )
    clock.advance(10.0)
    assert await read(client, 701, "W") == pytest.approx(60_000.0, abs=10.0)
    cabinet.faults.state_fault()
    clock.advance(10.0)
    assert await read(client, 802, "State") == symbol_value(802, "State", "FAULT")
    assert await read(client, 701, "InvSt") == symbol_value(701, "InvSt", "FAULT")
    assert abs(await read(client, 701, "W")) < 10.0
    cabinet.faults.clear("state_fault")
    clock.advance(10.0)
    assert await read(client, 802, "State") == symbol_value(802, "State", "CONNECTED")
    assert await read(client, 701, "W") == pytest.approx(60_000.0, abs=10.0)


# ------------------------------------------------------------------------------ communication faults


async def test_no_response(running: tuple[SiteSimulator, ManualClock, int]) -> None:
    sim, _, _ = running
    host, port = sim.site.cabinets[0].modbus_host_port
    sim.cabinet("cab-1").faults.no_response()
    quiet = AsyncModbusTcpClient(host, port=port, timeout=0.2, retries=0)
    assert await quiet.connect()
    try:
        with pytest.raises(ModbusException):
            await quiet.read_holding_registers(40000, count=2)
    finally:
        quiet.close()
    sim.cabinet("cab-1").faults.clear("no_response")
    again = AsyncModbusTcpClient(host, port=port, timeout=1.0, retries=0)
    assert await again.connect()
    try:
        assert (await again.read_holding_registers(40000, count=2)).registers == [0x5375, 0x6E53]
    finally:
        again.close()


async def test_delay_answers_late_in_order_with_the_right_transaction(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient
) -> None:
    sim, _, _ = running
    faults = sim.cabinet("cab-1").faults
    faults.delay(150)
    started = time.perf_counter()
    response = await client.read_holding_registers(40000, count=2)
    assert time.perf_counter() - started >= 0.14
    assert response.registers == [0x5375, 0x6E53]
    # A client that gives up early does not get the stale answer as the answer to its next request.
    host, port = sim.site.cabinets[0].modbus_host_port
    impatient = AsyncModbusTcpClient(host, port=port, timeout=0.05, retries=0)
    assert await impatient.connect()
    try:
        with pytest.raises(ModbusException):
            await impatient.read_holding_registers(40000, count=2)
        faults.clear("delay")
        model_id = CABINET.model(701).address
        answers = []
        for _ in range(3):
            try:
                answers.append((await impatient.read_holding_registers(model_id, count=1)).registers)
            except ModbusException:
                answers.append(None)  # the late answer arrived now and was refused by transaction id
        assert [701] in answers and [0x5375, 0x6E53] not in answers
    finally:
        impatient.close()
    started = time.perf_counter()
    await client.read_holding_registers(40000, count=2)
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize("code", [2, 4, 6, 11])
async def test_modbus_exception(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient, code: int
) -> None:
    sim, _, _ = running
    sim.cabinet("cab-1").faults.modbus_exception(code)
    response = await client.read_holding_registers(40000, count=2)
    assert response.isError() and response.exception_code == code
    write = await client.write_registers(CABINET.point(704, "WSetEna").address, [1])
    assert write.isError() and write.exception_code == code
    assert sim.cabinet("cab-1").image.get_raw(704, "WSetEna") == 0  # refused writes are not applied
    sim.cabinet("cab-1").faults.clear("modbus_exception")
    assert not (await client.read_holding_registers(40000, count=2)).isError()


async def test_freeze_holds_every_value_but_writes_still_land(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient
) -> None:
    sim, clock, _ = running
    cabinet = sim.cabinet("cab-1")
    cabinet.faults.freeze()
    hb, soc = await read(client, 802, "Hb"), await read(client, 802, "SoC")
    enabled, watts = symbol_value(704, "WSetEna", "ENABLED"), symbol_value(704, "WSetMod", "WATTS")
    response = await client.write_registers(CABINET.point(704, "WSetEna").address, [enabled, watts, 0, 5000])
    assert not response.isError()
    clock.advance(600.0)
    assert cabinet.state.soc_pct < soc - 1.0  # the battery discharged...
    assert await read(client, 802, "Hb") == hb  # ...while the device reports the frozen image
    assert await read(client, 802, "SoC") == soc
    assert await read(client, 701, "W") == 0.0
    assert await read(client, 704, "WSetEna") == enabled  # written registers read back
    cabinet.faults.clear("freeze")
    assert await read(client, 802, "Hb") != hb
    assert await read(client, 802, "SoC") == pytest.approx(cabinet.state.soc_pct, abs=0.01)


async def test_meter_communication_faults(running: tuple[SiteSimulator, ManualClock, int]) -> None:
    sim, clock, _ = running
    host, port = parse_host_port(sim.site.site.meter_modbus_address)
    meter = AsyncModbusTcpClient(host, port=port, timeout=1.0, retries=0)
    assert await meter.connect()
    try:
        sim.meter.faults.freeze()
        imported = await read(meter, 203, "TotWhImp", METER)
        clock.advance(3600.0)
        assert await read(meter, 203, "TotWhImp", METER) == imported
        sim.meter.faults.clear_all()
        assert await read(meter, 203, "TotWhImp", METER) > imported
        sim.meter.faults.modbus_exception(6)
        response = await meter.read_holding_registers(40000, count=2)
        assert response.isError() and response.exception_code == 6
        with pytest.raises(ValueError, match="unknown fault 'over_temperature'"):
            sim.meter.faults.set("over_temperature")
    finally:
        meter.close()


# ------------------------------------------------------------------------------------------ fault API


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("delay", -5, "delay must be > 0"),
        ("delay", None, "needs a value"),
        ("delay", "soon", "must be a number"),
        ("modbus_exception", 9, "unknown Modbus exception code 9"),
        ("alarm_bit", 32, "alarm bit must be 0-31"),
        ("alarm_bit", "NO_SUCH_ALARM", "unknown Evt1 alarm"),
        ("over_temperature", float("nan"), "must be finite"),
        ("cell_over_voltage", 0.0, "cell voltage must be > 0"),
        ("freeze", 1, "takes no value"),
        ("meltdown", None, "unknown fault 'meltdown'"),
    ],
)
def test_bad_fault_arguments_are_refused_and_change_nothing(name: str, value: Any, message: str) -> None:
    faults = CabinetFaults()
    faults.delay(10)
    with pytest.raises(ValueError, match=message):
        faults.set(name, value)
    assert faults.active == {"delay": 10.0}


def test_change_hook_sees_every_change() -> None:
    seen: list[tuple[str, bool]] = []
    faults = CommFaults(on_change=lambda name, active: seen.append((name.value, active)))
    faults.freeze()
    faults.no_response()
    faults.clear_all()
    faults.clear("freeze")  # not set: no change
    assert seen == [("freeze", True), ("no_response", True), ("freeze", False), ("no_response", False)]


# ------------------------------------------------------------------------------------------ control interface


async def test_control_interface_sets_and_clears_faults(
    running: tuple[SiteSimulator, ManualClock, int], client: AsyncModbusTcpClient
) -> None:
    sim, _, control_port = running
    address = f"127.0.0.1:{control_port}"
    answer = await control_request(
        address, {"cmd": "set", "device": "cab-1", "fault": "cell_over_voltage", "value": 3.9}
    )
    assert answer["faults"] == {"cell_over_voltage": 3.9}
    assert await read(client, 802, "CellVMax") == pytest.approx(3.9)
    await control_request(
        address, {"cmd": "set", "device": "cab-1", "fault": "alarm_bit", "value": "FAN_ERROR"}
    )
    assert await read(client, 802, "Evt1") & bit("FAN_ERROR")
    status = await control_request(address, {"cmd": "status"})
    assert status["devices"]["cab-1"]["faults"] == {"cell_over_voltage": 3.9, "alarm_bit": [21]}
    assert status["devices"]["cab-1"]["state"]["cell_voltage_max_v"] == pytest.approx(3.9)
    assert status["devices"]["meter"]["kind"] == "meter"
    await control_request(address, {"cmd": "clear", "device": "cab-1", "fault": "all"})
    assert sim.cabinet("cab-1").faults.active == {}
    stats = await control_request(address, {"cmd": "stats"})
    assert stats["requests"]["cab-1"] == 3  # CellVMax, its scale factor, Evt1
    for bad, reason in [
        ({"cmd": "set", "device": "cab-9", "fault": "freeze"}, "no cabinet 'cab-9'"),
        ({"cmd": "set", "device": "cab-1", "fault": "delay", "value": [1]}, "'value' must be"),
        ({"cmd": "explode"}, "unknown cmd"),
        ({"cmd": "set", "device": "cab-1"}, "need 'device' and 'fault'"),
    ]:
        with pytest.raises(ControlError, match=reason):
            await control_request(address, bad)
    assert sim.cabinet("cab-1").faults.active == {}


async def test_control_interface_answers_garbage_with_an_error_line(
    running: tuple[SiteSimulator, ManualClock, int],
) -> None:
    _, _, control_port = running
    reader, writer = await asyncio.open_connection("127.0.0.1", control_port)
    try:
        writer.write(b"this is not json\n[1, 2]\n" + b'{"cmd": "ping"}\n')
        answers = [json.loads(await reader.readline()) for _ in range(3)]
    finally:
        writer.close()
        await writer.wait_closed()
    assert answers[0]["ok"] is False and "not a JSON object" in answers[0]["error"]
    assert answers[1]["ok"] is False
    assert answers[2] == {"ok": True}


async def test_control_request_to_nothing_is_a_clear_error() -> None:
    with pytest.raises(ControlError, match="no simulator control interface"):
        await control_request(f"127.0.0.1:{free_port()}", {"cmd": "ping"}, timeout_s=1.0)


# ------------------------------------------------------------------------------------------ ems sim process


def test_ems_sim_process_serves_takes_faults_from_another_process_and_stops_on_sigint(tmp_path: Path) -> None:
    control_port = free_port()
    site_path, site = write_site(tmp_path, 2, extra=f'[sim]\ncontrol_address = "127.0.0.1:{control_port}"\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "simulators",
        "--site",
        str(site_path),
        "--clock",
        "sim:2026-11-24T12:00:00Z:60",
    ]
    child = subprocess.Popen(
        [*command, "--progress-every-s", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        lines = []
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            lines.append(line)
            if "ready" in line or not line:
                break
        assert "ready" in lines[-1], "".join(lines)
        output = "".join(lines)
        for cabinet in site.cabinets:
            assert cabinet.modbus_address in output
        assert site.site.meter_modbus_address in output

        fault = subprocess.run(
            [*command, "--fault", "cab-2:state_fault"], capture_output=True, text=True, env=env, timeout=30
        )
        assert fault.returncode == 0, fault.stderr
        bad = subprocess.run(
            [*command, "--fault", "cab-2:delay:-1"], capture_output=True, text=True, env=env, timeout=30
        )
        assert bad.returncode == 1 and "delay must be > 0" in bad.stderr and len(bad.stderr.splitlines()) == 1

        async def state_of_cab2() -> Any:
            host, port = site.cabinets[1].modbus_host_port
            modbus = AsyncModbusTcpClient(host, port=port, timeout=2.0, retries=0)
            assert await modbus.connect()
            try:
                return await read(modbus, 802, "State")
            finally:
                modbus.close()

        assert asyncio.run(state_of_cab2()) == symbol_value(802, "State", "FAULT")
        progress = []
        for _ in range(40):  # status lines every 0.2 s; earlier ones may predate the fault
            progress.append(child.stdout.readline())
            if "cab-2 50.0% +0.0kW FAULT" in progress[-1]:
                break
        assert "cab-2 50.0% +0.0kW FAULT" in progress[-1], progress
    finally:
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=20)
    assert child.returncode == 0, err
    assert "stopped" in out


def test_ems_sim_refuses_bad_options_with_one_line(tmp_path: Path) -> None:
    site_path, _ = write_site(tmp_path, 1)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "simulators", "--site", str(site_path)]
    for extra, reason in [
        (["--clock", "fast"], "clock spec"),
        (["--initial-soc", "cab-1"], "expected CABINET=PCT"),
        (["--initial-soc", "cab-7=50"], "unknown cabinet 'cab-7'"),
        (["--initial-soc", "cab-1=150"], "must be 0-100"),
        (["--profile", str(tmp_path / "missing.json")], "cannot read"),
    ]:
        result = subprocess.run([*base, *extra], capture_output=True, text=True, env=env, timeout=30)
        assert result.returncode == 2, (extra, result.stderr)
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    bad_site = tmp_path / "bad.toml"
    bad_site.write_text(site_path.read_text().replace("capacity_kwh = 200.0", "capacity_kwh = -1.0", 1))
    result = subprocess.run([*base[:-1], str(bad_site)], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert "cabinets[0].capacity_kwh" in result.stderr and len(result.stderr.strip().splitlines()) == 1


class _Target:
    """The control interface's view of a simulator, with real fault objects."""

    def __init__(self) -> None:
        self.cabinet = CabinetFaults()
        self.meter = CommFaults()

    def device(self, name: str) -> Any:
        devices = {"cab-1": self.cabinet, "meter": self.meter}
        if name not in devices:
            raise KeyError(f"no device {name!r}")
        return type("Device", (), {"faults": devices[name]})()

    def status(self) -> dict[str, Any]:
        return {"devices": {}}

    def stats(self) -> dict[str, Any]:
        return {}


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
_REQUESTS = st.fixed_dictionaries(
    {
        "cmd": st.sampled_from(["set", "clear", "status", "stats", "ping", "boom"]) | _JSON,
        "device": st.sampled_from(["cab-1", "meter", "cab-2"]) | _JSON,
        "fault": st.sampled_from([*(f.value for f in FaultName), "all", "x"]) | _JSON,
        "value": _JSON,
    }
)


@settings(max_examples=100, deadline=None)
@given(request=_REQUESTS | _JSON, raw=st.binary(max_size=40))
def test_control_requests_never_crash_and_refusals_change_nothing(request: Any, raw: bytes) -> None:
    target = _Target()
    target.cabinet.freeze()
    before = (target.cabinet.active, target.meter.active)
    answer = handle_request(target, json.dumps(request))
    assert isinstance(answer["ok"], bool)
    if not answer["ok"]:
        assert isinstance(answer["error"], str) and "\n" not in answer["error"]
        assert (target.cabinet.active, target.meter.active) == before
    garbage = handle_request(target, raw)
    assert isinstance(garbage["ok"], bool)
