"""The demo's own OPC UA sessions to every edge: live modes and telemetry, and the operator's methods.

The demo watches the edges directly, not through the central service, because one scenario kills the
central: the edges must be seen to carry on without it. It logs in as its own client application
(``demo-observer`` certificate, trusted by the edges like any other client) with its own operator user,
so the edges' logs tell its calls from the central's. The sessions are the central's own
:class:`central.edge_link.link.EdgeLink` (subscription-based, reconnecting), with a short backoff cap
because a demo's wall second is minutes of simulated time.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from central.edge_link.link import EdgeLink, EdgeUnreachableError
from central.edge_link.outcome import PushOutcome
from central.edge_link.session import ClientSecurity
from shared.clock import Clock
from shared.edge_api import Decision, EdgeTelemetry
from shared.opcua.pki import PkiLayout, create_identity, load_identity, write_identity
from shared.opcua.trust import TrustList
from shared.opcua.users import Role, UserEntry, hash_password, load_users, write_users
from shared.schedule import CabinetSchedule
from shared.site import SiteConfig

OBSERVER_NODE = "demo-observer"
OBSERVER_USER = "demo-operator"
RECONNECT_MIN_S = 0.1  # wall seconds
RECONNECT_MAX_S = 0.5
METHOD_TIMEOUT_S = 5.0


def observer_uri(site_name: str) -> str:
    return f"urn:hybrid-ems:{site_name}:demo-observer"


@dataclass(frozen=True)
class ObserverCredentials:
    username: str
    password: str


def add_observer_identity(
    site: SiteConfig, layout: PkiLayout, users_file: Path, password: str
) -> ObserverCredentials:
    """Create the demo's client certificate (trusted by the edges) and its operator user.

    Runs after ``ems certs`` made the site's PKI and users file; only adds to them.
    """
    now = datetime.now(UTC)
    key, certificate = create_identity(
        f"hybrid-ems demo observer {site.site.name}",
        observer_uri(site.site.name),
        ["localhost"],
        server=False,
        now=now,
    )
    write_identity(layout, OBSERVER_NODE, key, certificate)
    layout.trusted_clients_dir.mkdir(parents=True, exist_ok=True)
    (layout.trusted_clients_dir / f"{OBSERVER_NODE}.cert.der").write_bytes(
        layout.cert_path(OBSERVER_NODE).read_bytes()
    )
    users = load_users(users_file)
    write_users(users_file, users.with_user(UserEntry(OBSERVER_USER, Role.OPERATOR, hash_password(password))))
    return ObserverCredentials(OBSERVER_USER, password)


class EdgeObserver:
    """One self-healing session per edge. ``async with``; read :meth:`telemetry` any time."""

    def __init__(
        self, site: SiteConfig, clock: Clock, layout: PkiLayout, credentials: ObserverCredentials
    ) -> None:
        settings = site.opcua.model_copy(
            update={"reconnect_min_s": RECONNECT_MIN_S, "reconnect_max_s": RECONNECT_MAX_S}
        )
        if settings.insecure:
            security = ClientSecurity(
                credentials.username, credentials.password, observer_uri(site.site.name), insecure=True
            )
        else:
            identity = load_identity(layout, OBSERVER_NODE, observer_uri(site.site.name), datetime.now(UTC))
            security = ClientSecurity(
                credentials.username,
                credentials.password,
                observer_uri(site.site.name),
                insecure=False,
                policy_name=settings.security_policies[0],
                certificate_der=identity.certificate_der,
                private_key_pem=identity.private_key_pem,
                trust=TrustList(layout.trusted_servers_dir),
            )
        self._links = {c.id: EdgeLink(site.site.name, c, settings, security, clock) for c in site.cabinets}
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> EdgeObserver:
        self._tasks = [
            asyncio.create_task(link.run(), name=f"demo-observer-{cid}") for cid, link in self._links.items()
        ]
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def telemetry(self, cabinet_id: str) -> EdgeTelemetry | None:
        """The edge's latest telemetry; None while it is not connected (down, or not up yet)."""
        return self._links[cabinet_id].telemetry

    def all_connected(self) -> bool:
        return all(link.connected for link in self._links.values())

    async def ready(self) -> bool:
        """A probe for waiting loops: every edge has a session."""
        return self.all_connected()

    async def wait_connected(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(link.wait_connected() for link in self._links.values()))
        except TimeoutError:
            return False
        return True

    async def reset_interlock(self, cabinet_id: str) -> Decision:
        """The edge's answer; an edge that cannot be asked counts as a refusal (the demo retries)."""
        try:
            return await self._links[cabinet_id].reset_interlock(METHOD_TIMEOUT_S)
        except EdgeUnreachableError as exc:
            return Decision(False, str(exc))

    async def hold_until(self, start: datetime) -> dict[str, PushOutcome]:
        """Give every edge a 0 kW schedule from now until ``start``, so no cabinet moves before the day.

        Without it the edges would run their fallback mode between their start and the day's first
        interval and the batteries would no longer hold the day-ahead's initial SoC when the day begins.
        """
        step_s = 60
        now = self._clock.now()
        steps = max(1, int((start - now).total_seconds() // step_s) + 1)
        schedule_start = start - timedelta(seconds=steps * step_s)
        tag = now.strftime("%Y%m%dT%H%M%SZ")
        pushes = [
            link.push(
                CabinetSchedule(f"demo-hold-{tag}/{cabinet_id}", schedule_start, step_s, (0.0,) * steps),
                METHOD_TIMEOUT_S,
            )
            for cabinet_id, link in self._links.items()
        ]
        outcomes = await asyncio.gather(*pushes)
        return dict(zip(self._links, outcomes, strict=True))
