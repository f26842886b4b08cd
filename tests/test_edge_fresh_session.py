"""A new Modbus connection to a cabinet starts safely: a setpoint the device reverted cannot come back.

Found by the fault campaign (`ems soak`): a link fault made the device revert to 0 W; the edge reconnected
and configured the device-side protections, whose `WSetRvrtTms` write ends the revert, so the device ran the
previous connection's last `WSet` again, with nobody in control when the link failed once more before the
first setpoint. Real Modbus TCP against the simulated cabinet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from edge.device_io import Backoff, CabinetDevice, DeviceLink
from edge.snapshot import SETOP_CONNECT, CabinetReading
from shared.clock import RealClock
from shared.site import SiteConfig, load_site
from shared.sunspec.layout import CABINET_MODELS
from simulators import SiteSimulator
from tests.support import site_toml
from tests.test_edge_controller import flat_profile, wait_for

REVERT_TIMEOUT_S = 1.0
OLD_SETPOINT_KW = 30.0


@asynccontextmanager
async def connection(site: SiteConfig) -> AsyncIterator[tuple[CabinetDevice, CabinetReading]]:
    """One Modbus connection of an edge to cab-1's device, closed at the end (a lost link)."""
    host, port = site.cabinet("cab-1").modbus_host_port
    link = DeviceLink("cab-1/device", host, port, CABINET_MODELS[1:], 1.0, Backoff(0.05, 0.2))
    link.start()
    try:
        await wait_for(lambda: link.ready, timeout_s=20.0, what="the device connection")
        device = CabinetDevice(link)
        yield device, await device.read()
    finally:
        await link.stop()


async def test_a_new_connection_zeroes_wset_before_it_ends_a_revert(tmp_path: Path) -> None:
    # The device's heartbeat watchdog is off: only the revert timer decides what the device runs.
    path = tmp_path / "site.toml"
    path.write_text(site_toml(1, extra="[sim]\nheartbeat_timeout_s = 0\n"), encoding="utf-8")
    site = load_site(path)
    async with SiteSimulator(site, RealClock(), profile=flat_profile(50.0)) as sim:
        cabinet = sim.cabinet("cab-1")
        # The previous connection: protections configured, contactor closed, 30 kW discharge; then lost.
        async with connection(site) as (device, reading):
            await device.configure(REVERT_TIMEOUT_S, reading.wset_sf)
            await device.write_set_op(SETOP_CONNECT)
            await device.write_setpoint(OLD_SETPOINT_KW, reading.wset_sf)
            await wait_for(
                lambda: abs(cabinet.state.target_kw - OLD_SETPOINT_KW) < 0.05, what="old setpoint runs"
            )
        await wait_for(lambda: cabinet.state.reverted, timeout_s=20.0, what="the device's revert")
        assert cabinet.state.target_kw == 0.0
        # A new connection configures the device and fails again before the loop's first setpoint.
        async with connection(site) as (device, reading):
            assert reading.setpoint_readback_kw == OLD_SETPOINT_KW  # the register still holds the old WSet
            await device.configure(REVERT_TIMEOUT_S, reading.wset_sf)
        # The old setpoint must not run again, not even until the next revert.
        for _ in range(10):
            state = cabinet.state
            assert state.setpoint_kw == 0.0, state
            assert state.target_kw == 0.0, state
            await asyncio.sleep(0.05)
