"""OPC UA's secure channel through a fault proxy port: the central's view of an edge is the proxy's address.

The edge serves on its real port with its certificate naming 127.0.0.1/localhost; the central's copy of the
site points the cabinet's ``opcua_endpoint`` at the proxy. The session must come up with SignAndEncrypt
(the central pins the edge's certificate by application URI, not by port), a push must go through, and a
partition of the proxy must make the push unreachable until it heals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from central.edge_link import EdgeFleet, PushStatus
from edge.opcua import EdgeOpcUaServer
from lab.faultproxy import FaultProxy
from lab.loopback import opcua_node_cache_dir
from lab.memory_edge import InMemoryEdgeControl
from shared.clock import RealClock
from shared.opcua.pki import pki_layout
from shared.opcua.provision import ensure_site_pki
from shared.opcua.users import Role, UserEntry, Users, hash_password, write_users
from shared.plan import Plan
from shared.site import parse_host_port
from tests.support import write_site

PASSWORD = "operator-password-1"
FAST_LINK = "[opcua]\nreconnect_min_s = 0.2\nreconnect_max_s = 0.5\npush_retry_s = 1.0\n"


async def test_secure_session_and_push_through_the_proxy(tmp_path: Path) -> None:
    _, site = write_site(tmp_path, 1, extra=FAST_LINK)
    layout = pki_layout(site, tmp_path / "pki")
    ensure_site_pki(site, layout, central_hosts=["localhost"])
    write_users(
        layout.default_users_file, Users((UserEntry("central", Role.OPERATOR, hash_password(PASSWORD)),))
    )
    cabinet = site.cabinet("cab-1")
    host, port = parse_host_port(cabinet.opcua_endpoint.removeprefix("opc.tcp://").split("/", 1)[0])
    clock = RealClock()
    control = InMemoryEdgeControl(cabinet, clock)
    server = EdgeOpcUaServer(site, "cab-1", control, clock, layout.root, opcua_node_cache_dir())
    await server.start()
    try:
        async with FaultProxy("opcua-cab-1", host, port) as proxy:
            central_view = site.model_copy(
                update={
                    "cabinets": [
                        cabinet.model_copy(update={"opcua_endpoint": f"opc.tcp://{proxy.address}/ems/edge"})
                    ]
                }
            )
            async with EdgeFleet(central_view, clock, "central", PASSWORD, layout.root) as fleet:
                assert await fleet.wait_connected(20.0)
                assert proxy.stats.accepted >= 1 and proxy.stats.bytes_forwarded > 0
                plan = one_cabinet_plan("p1", 10.0)
                assert (await fleet.push_plan(plan))["cab-1"].status is PushStatus.ACCEPTED
                assert control.telemetry().schedule_id == "p1/cab-1"
                proxy.partition()
                await wait_until(lambda: not fleet.connected()["cab-1"])
                assert not fleet.connected()["cab-1"]
                outcome = (await fleet.push_plan(one_cabinet_plan("p2", 5.0)))["cab-1"]
                assert outcome.status is PushStatus.UNREACHABLE
                proxy.heal()
                assert await fleet.wait_connected(20.0)
                # The fleet re-pushes the latest schedule when the edge comes back.
                await wait_until(lambda: control.telemetry().schedule_id == "p2/cab-1")
                assert control.telemetry().schedule_id == "p2/cab-1"
    finally:
        await server.stop()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.05) + 1):
        if condition() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def one_cabinet_plan(plan_id: str, setpoint_kw: float) -> Plan:
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    return Plan.model_validate(
        {
            "plan_id": plan_id,
            "created_at": start,
            "start": start,
            "interval_minutes": 15,
            "status": "optimal",
            "objective": {},
            "grid_kw": [0.0] * 4,
            "pv_used_kw": [0.0] * 4,
            "cabinets": {"cab-1": {"setpoint_kw": [setpoint_kw] * 4, "soc_pct": [50.0] * 4}},
            "solver": {"backend": "test"},
        }
    )
