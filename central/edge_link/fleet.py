"""All the central's edge links: push a plan to every edge at once, live telemetry, connection state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from central.edge_link.link import EdgeLink
from central.edge_link.outcome import PushOutcome
from central.edge_link.pacing import ConnectGate, LinkPacing
from central.edge_link.session import ClientSecurity
from shared.clock import Clock
from shared.edge_api import Decision, EdgeTelemetry
from shared.errors import ConfigError, Problem
from shared.opcua.common import central_application_uri
from shared.opcua.pki import CENTRAL_NODE, load_identity, pki_layout
from shared.opcua.trust import TrustList
from shared.plan import Plan, PlanStatus
from shared.site import SiteConfig

_log = logging.getLogger(__name__)


def central_credentials(site: SiteConfig) -> tuple[str, str]:
    """The central's OPC UA user: ``[opcua] central_username`` and the password from the environment
    variable named by ``[opcua] central_password_env``; :class:`ConfigError` when it is not set."""
    variable = site.opcua.central_password_env
    password = os.environ.get(variable, "")
    if not password:
        problem = (
            f"environment variable {variable} (the central's OPC UA password, see `ems certs`) is not set"
        )
        raise ConfigError("environment", [Problem("opcua.central_password_env", problem)])
    return site.opcua.central_username, password


class EdgeFleet:
    """One persistent, self-healing session per edge of the site.

    ``async with EdgeFleet(site, clock, username, password) as fleet`` starts connecting to every edge in
    the background and returns at once; edges that are down are retried with backoff. ``pki_dir``
    overrides ``[opcua] pki_dir``. ``on_telemetry(cabinet_id, telemetry)`` is called on every telemetry
    change and ``on_outcome(outcome)`` on every push outcome (also of automatic re-pushes); both run on the
    event loop and must be quick. Connection attempts, retries and liveness probes are paced for the
    fleet's size (:mod:`central.edge_link.pacing`); ``rng`` draws the backoff jitter (seed it in tests).
    """

    def __init__(
        self,
        site: SiteConfig,
        clock: Clock,
        username: str,
        password: str,
        pki_dir: Path | None = None,
        *,
        on_telemetry: Callable[[str, EdgeTelemetry], None] | None = None,
        on_outcome: Callable[[PushOutcome], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not username or not password:
            raise ConfigError(
                "opcua", [Problem("central_username", "the central needs a user name and password")]
            )
        self._site = site
        self._clock = clock
        self._security = _client_security(site, username, password, pki_dir)
        self.pacing = LinkPacing.for_fleet(site.opcua, len(site.cabinets))
        self.connect_gate = ConnectGate(self.pacing.connect_concurrency)
        rng = rng or random.Random()  # nosec B311  # backoff jitter, not security
        self._links = {
            cabinet.id: EdgeLink(
                site.site.name,
                cabinet,
                site.opcua,
                self._security,
                clock,
                on_telemetry=on_telemetry,
                on_outcome=on_outcome,
                pacing=self.pacing,
                gate=self.connect_gate,
                rng=random.Random(rng.random()),  # nosec B311  # one stream per link, reproducible
            )
            for cabinet in site.cabinets
        }
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> EdgeFleet:
        if self._site.opcua.insecure:
            _log.warning(
                "central: [opcua] insecure = true: talking to the edges WITHOUT signing or encryption and "
                "without checking their certificates; passwords travel in clear text"
            )
        self._tasks = [
            asyncio.create_task(link.run(), name=f"edge-link-{cabinet_id}")
            for cabinet_id, link in self._links.items()
        ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def push_plan(self, plan: Plan) -> dict[str, PushOutcome]:
        """Push every cabinet's schedule of ``plan`` to its edge, all at once, each with its own timeout
        (``[central] push_timeout_s``). Unreachable edges get the plan when they come back.

        ``ValueError`` (nothing pushed) for a failed plan or one naming cabinets the site does not have.
        """
        if plan.status == PlanStatus.FAILED:
            raise ValueError(f"plan {plan.plan_id} failed; there is nothing to push")
        unknown = sorted(set(plan.cabinets) - set(self._links))
        if unknown:
            raise ValueError(f"plan {plan.plan_id} names cabinets not in the site: {', '.join(unknown)}")
        missing = [cabinet_id for cabinet_id in self._links if cabinet_id not in plan.cabinets]
        if missing:
            _log.warning("plan %s has no schedule for %s; not pushed there", plan.plan_id, ", ".join(missing))
        timeout_s = self._site.central.push_timeout_s
        cabinet_ids = [cabinet_id for cabinet_id in self._links if cabinet_id in plan.cabinets]
        outcomes = await asyncio.gather(
            *(
                self._links[cabinet_id].push(plan.schedule_for(cabinet_id), timeout_s)
                for cabinet_id in cabinet_ids
            )
        )
        return dict(zip(cabinet_ids, outcomes, strict=True))

    async def reset_interlock(self, cabinet_id: str) -> Decision:
        """Call ``ResetInterlock`` on one edge and return its answer. ``KeyError`` for a cabinet the site
        does not have; :class:`EdgeUnreachableError` when the edge cannot be asked."""
        link = self._links.get(cabinet_id)
        if link is None:
            raise KeyError(f"no cabinet {cabinet_id!r} in the site")
        return await link.reset_interlock(self._site.central.push_timeout_s)

    def telemetry(self) -> dict[str, EdgeTelemetry | None]:
        """Live telemetry per cabinet; None while an edge is disconnected or its telemetry is not usable."""
        return {cabinet_id: link.telemetry for cabinet_id, link in self._links.items()}

    def connected(self) -> dict[str, bool]:
        return {cabinet_id: link.connected for cabinet_id, link in self._links.items()}

    def last_outcomes(self) -> dict[str, PushOutcome]:
        """The latest push outcome per cabinet (cabinets never pushed to are absent)."""
        return {
            cabinet_id: link.last_outcome
            for cabinet_id, link in self._links.items()
            if link.last_outcome is not None
        }

    def last_errors(self) -> dict[str, str]:
        """Why each edge is not connected ("" when it is)."""
        return {cabinet_id: link.last_error for cabinet_id, link in self._links.items()}

    async def wait_first_contact(self, timeout_s: float) -> bool:
        """Until every edge was tried once since the start (connected, or its first attempt failed);
        False when that takes longer than ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(link.wait_tried() for link in self._links.values()))
        except TimeoutError:
            return False
        return True

    async def wait_connected(self, timeout_s: float, cabinet_ids: list[str] | None = None) -> bool:
        """Wait until the given edges (default: all) are connected; False on timeout."""
        links = [self._links[c] for c in (cabinet_ids if cabinet_ids is not None else list(self._links))]
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(link.wait_connected() for link in links))
        except TimeoutError:
            return False
        return True


def _client_security(site: SiteConfig, username: str, password: str, pki_dir: Path | None) -> ClientSecurity:
    settings = site.opcua
    application_uri = central_application_uri(site.site.name)
    if settings.insecure:
        return ClientSecurity(username, password, application_uri, insecure=True)
    layout = pki_layout(site, pki_dir)
    identity = load_identity(layout, CENTRAL_NODE, application_uri, datetime.now(UTC))
    return ClientSecurity(
        username,
        password,
        application_uri,
        insecure=False,
        policy_name=settings.security_policies[0],
        certificate_der=identity.certificate_der,
        private_key_pem=identity.private_key_pem,
        trust=TrustList(layout.trusted_servers_dir),
    )
