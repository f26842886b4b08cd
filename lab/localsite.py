"""A whole site in this process: device simulators and one edge (controller + OPC UA server) per cabinet.

Used by ``ems bench upload`` and the central service's end-to-end tests: real Modbus TCP and real,
secure OPC UA sessions over loopback, on the injected clock. Single edges can be stopped and started again
(an edge that goes down and comes back).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from edge.controller import EdgeController
from edge.opcua import EdgeOpcUaServer
from lab.loopback import opcua_node_cache_dir
from shared.clock import Clock
from shared.dayahead import DayAhead
from shared.edge_api import EdgeMode, EdgeTelemetry
from shared.opcua.pki import pki_layout, users_path
from shared.opcua.provision import ensure_site_pki
from shared.opcua.users import Role, UserEntry, Users, hash_password, write_users
from shared.site import SiteConfig
from simulators import SiteSimulator


def prepare_security(site: SiteConfig, pki_dir: Path) -> str:
    """Keys, certificates and trust lists for the site, and the central's OPC UA user (operator) with a
    fresh random password, which is returned (what ``ems certs`` does, for a throw-away site)."""
    layout = pki_layout(site, pki_dir)
    ensure_site_pki(site, layout)
    password = secrets.token_urlsafe(18)
    entry = UserEntry(site.opcua.central_username, Role.OPERATOR, hash_password(password))
    write_users(users_path(site, layout), Users(()).with_user(entry))
    return password


class LocalEdge:
    """One cabinet's edge: controller and OPC UA server."""

    def __init__(
        self, site: SiteConfig, cabinet_id: str, clock: Clock, state_dir: Path, pki_dir: Path | None = None
    ) -> None:
        self.site = site
        self.cabinet_id = cabinet_id
        self.clock = clock
        self.state_dir = state_dir
        self.pki_dir = pki_dir
        self.controller: EdgeController | None = None
        self.server: EdgeOpcUaServer | None = None

    @property
    def running(self) -> bool:
        return self.server is not None

    async def start(self) -> None:
        controller = EdgeController(self.site, self.cabinet_id, self.clock, self.state_dir)
        await controller.start()
        self.controller = controller
        try:
            server = EdgeOpcUaServer(
                self.site, self.cabinet_id, controller, self.clock, self.pki_dir, opcua_node_cache_dir()
            )
            await server.start()
        except BaseException:
            await self.stop()
            raise
        self.server = server

    async def stop(self) -> None:
        server, self.server = self.server, None
        controller, self.controller = self.controller, None
        if server is not None:
            await server.stop()
        if controller is not None:
            await controller.stop()

    def telemetry(self) -> EdgeTelemetry | None:
        return None if self.controller is None else self.controller.telemetry()

    def runs(self, schedule_id: str) -> bool:
        """True when the edge is in schedule mode on ``schedule_id``."""
        t = self.telemetry()
        return t is not None and t.schedule_id == schedule_id and t.mode is EdgeMode.SCHEDULE


class LocalSite:
    """``async with LocalSite(site, clock, directory) as local``: simulators and every edge running."""

    def __init__(
        self,
        site: SiteConfig,
        clock: Clock,
        directory: Path,
        *,
        profile: DayAhead | None = None,
        initial_soc_pct: Mapping[str, float] | None = None,
        pki_dir: Path | None = None,
    ) -> None:
        """Edge state under ``directory/edge``; keys and users in ``pki_dir`` (default: the site's)."""
        self.site = site
        self.clock = clock
        self.pki_dir = pki_dir
        self.simulator = SiteSimulator(site, clock, profile, initial_soc_pct)
        self.edges = {
            cabinet_id: LocalEdge(site, cabinet_id, clock, directory / "edge", self.pki_dir)
            for cabinet_id in site.cabinet_ids
        }

    async def __aenter__(self) -> LocalSite:
        await self.simulator.start()
        try:
            for edge in self.edges.values():
                await edge.start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop()

    async def _stop(self) -> None:
        for edge in self.edges.values():
            await edge.stop()
        await self.simulator.stop()

    def running(self, plan_id: str) -> dict[str, bool]:
        """Per cabinet: does the edge run its schedule of plan ``plan_id``?"""
        return {cab: edge.runs(f"{plan_id}/{cab}") for cab, edge in self.edges.items()}
