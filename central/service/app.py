"""``CentralService``: store, state, edge fleet, scheduler jobs and the HTTP API in one asyncio process.

Start order: the HTTP socket is bound first (a busy port stops the start before anything else happens),
then the database (and restore of the latest upload, plan and push outcomes), edge fleet, planning queue
(which first recovers: optimizes the active upload if it has no plan, else resumes the stored plan),
scheduler, and the HTTP server on the bound socket; stop order is the reverse.
``async with CentralService(...) as service`` runs it; :meth:`CentralService.wait_stopped` blocks until
:meth:`CentralService.request_stop`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from central.service.health import HealthSnapshot, findings
from central.service.http_server import listen, serve_http
from central.service.intake import check_timing
from central.service.interfaces import Fleet, Optimizer, dispatch_optimizer
from central.service.jobs import CentralJobs
from central.service.metrics import CONTENT_TYPE, Metrics, Snapshot, render
from central.service.planner import Planner
from central.service.queue import PlanQueue
from central.service.state import RunResult, RunTrigger, ServiceState, UploadOutcome
from central.service.store import Store, StoredUpload
from shared.clock import Clock
from shared.dayahead import check_against_site, parse_dayahead
from shared.edge_api import Decision, EdgeTelemetry
from shared.errors import ConfigError, Problem, UploadError
from shared.site import SiteConfig, parse_host_port
from shared.timeutil import format_utc

log = logging.getLogger(__name__)

API_TOKEN_ENV = "EMS_API_TOKEN"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # two weeks of minute values fit in well under 2 MiB


@dataclass(frozen=True)
class ServiceConfig:
    """Process-level settings of the service, resolved from the site file and the environment."""

    database_path: Path
    http_host: str
    http_port: int  # 0: any free port (see CentralService.http_port)
    api_token: str | None  # None: every write endpoint is refused
    read_token_required: bool  # reads need the token too (non-loopback address without public_reads)
    opcua_username: str
    opcua_password: str

    @classmethod
    def from_site(cls, site: SiteConfig, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        """``EMS_API_TOKEN`` wins over ``[central] api_token``; the OPC UA password comes from the
        variable named by ``[opcua] central_password_env``. A relative database path is relative to the
        working directory."""
        env = os.environ if environ is None else environ
        host, port = parse_host_port(site.central.http_address)
        token = (env.get(API_TOKEN_ENV) or site.central.api_token or "").strip() or None
        return cls(
            database_path=Path(site.central.database_path),
            http_host=host,
            http_port=port,
            api_token=token,
            read_token_required=not is_loopback(host) and not site.central.public_reads,
            opcua_username=site.opcua.central_username,
            opcua_password=env.get(site.opcua.central_password_env, ""),
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AcceptedUpload:
    """An upload that was stored (and queued for planning), and what will become of it."""

    upload: StoredUpload
    outcome: asyncio.Future[UploadOutcome]


class CentralService:
    """The central service of one site."""

    def __init__(
        self,
        site: SiteConfig,
        clock: Clock,
        config: ServiceConfig,
        *,
        optimizer: Optimizer = dispatch_optimizer,
    ) -> None:
        self.site = site
        self.clock = clock
        self.config = config
        self.state = ServiceState()
        self.metrics = Metrics()
        self._optimizer = optimizer
        self._stack: AsyncExitStack | None = None
        self._store: Store | None = None
        self._fleet: Fleet | None = None
        self._jobs: CentralJobs | None = None
        self._queue: PlanQueue | None = None
        self._http_port = config.http_port
        self._stopped = asyncio.Event()
        self._upload_lock = asyncio.Lock()

    # ------------------------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> CentralService:
        stack = AsyncExitStack()
        try:
            await self._start(stack)
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        return self

    async def __aexit__(self, *_: object) -> None:
        self.request_stop()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        log.info("central service stopped")

    async def _start(self, stack: AsyncExitStack) -> None:
        from central.edge_link import EdgeFleet

        # First, so that a second service on the same port stops here, before it touches the database
        # or connects to any edge.
        sock = listen(self.config.http_host, self.config.http_port)
        stack.callback(sock.close)
        self._http_port = int(sock.getsockname()[1])

        store = await asyncio.to_thread(Store, self.config.database_path)
        stack.callback(store.close)
        self._store = store
        await asyncio.to_thread(self.state.restore, store)
        self._log_restored()

        if not self.config.opcua_password:
            variable = self.site.opcua.central_password_env
            problem = (
                f"environment variable {variable} (the central's OPC UA password, see `ems certs`) is not set"
            )
            raise ConfigError("environment", [Problem("opcua.central_password_env", problem)])
        fleet = EdgeFleet(self.site, self.clock, self.config.opcua_username, self.config.opcua_password)
        live_fleet: Fleet = await stack.enter_async_context(fleet)
        self._fleet = live_fleet

        planner = Planner(
            site=self.site,
            clock=self.clock,
            store=store,
            state=self.state,
            metrics=self.metrics,
            fleet=live_fleet,
            optimizer=self._optimizer,
        )
        queue = PlanQueue(
            planner=planner,
            store=store,
            state=self.state,
            metrics=self.metrics,
            fleet=live_fleet,
            clock=self.clock,
            first_contact_wait_s=self.site.opcua.request_timeout_s,
        )
        queue.start()
        stack.push_async_callback(queue.stop)
        self._queue = queue
        jobs = CentralJobs(
            site=self.site,
            clock=self.clock,
            planner=planner,
            queue=queue,
            store=store,
            state=self.state,
            fleet=live_fleet,
        )
        jobs.start()
        stack.push_async_callback(jobs.shutdown)
        self._jobs = jobs

        await self._start_http(stack, sock)
        if self.config.api_token is None:
            log.warning(
                "no API token ([central] api_token or $%s):"
                " every write endpoint (upload, optimize, reset-interlock) is refused",
                API_TOKEN_ENV,
            )
        log.info(
            "central service of site %r: %d edges, HTTP API on %s, database %s, clock %s",
            self.site.site.name,
            len(self.site.cabinets),
            self.url,
            self.config.database_path,
            _clock_name(self.clock),
        )

    async def _start_http(self, stack: AsyncExitStack, sock: socket.socket) -> None:
        from central.service.api import create_app

        await serve_http(create_app(self), sock, stack)

    def request_stop(self) -> None:
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ---------------------------------------------------------------------------------------- queries

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def url(self) -> str:
        host = self.config.http_host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self._http_port}"

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the service is not running")
        return self._store

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeError("the service is not running")
        return self._fleet

    @property
    def jobs(self) -> CentralJobs:
        if self._jobs is None:
            raise RuntimeError("the service is not running")
        return self._jobs

    @property
    def queue(self) -> PlanQueue:
        if self._queue is None:
            raise RuntimeError("the service is not running")
        return self._queue

    @property
    def recovery(self) -> str:
        """What the planning queue did at start about the stored upload and plan."""
        return self.queue.recovery

    def telemetry(self) -> Mapping[str, EdgeTelemetry | None]:
        return self.fleet.telemetry()

    def connected(self) -> Mapping[str, bool]:
        return self.fleet.connected()

    def health_snapshot(self) -> HealthSnapshot:
        return HealthSnapshot(
            now=self.clock.now(),
            upload=self.state.upload,
            plan=self.state.plan,
            last_run=self.state.last_run,
            push=self.state.push_outcomes(),
            connected=self.connected(),
            connection_errors=self.fleet.last_errors(),
            telemetry=self.telemetry(),
            jobs=self.state.jobs(),
            cabinet_ids=tuple(self.site.cabinet_ids),
        )

    def metrics_text(self) -> str:
        health = self.health_snapshot()
        snapshot = Snapshot(
            plan=health.plan,
            push=health.push,
            connected=health.connected,
            telemetry=health.telemetry,
            jobs=health.jobs,
            cabinet_ids=health.cabinet_ids,
            findings=tuple(findings(health)),
        )
        return render(self.metrics, snapshot)

    metrics_content_type = CONTENT_TYPE
    max_upload_bytes = MAX_UPLOAD_BYTES

    # ----------------------------------------------------------------------------------------- writes

    async def accept_upload(self, raw: bytes, fmt: str) -> AcceptedUpload:
        """Validate and store a day-ahead upload, make it the active one, and queue its optimization
        (the intent is stored with the upload: it survives a crash).

        Raises :class:`UploadError` (with the row or field) for a bad upload; nothing is stored then and
        the active upload and plan are unchanged.
        """
        async with self._upload_lock:
            now = self.clock.now()
            try:
                if len(raw) > MAX_UPLOAD_BYTES:
                    raise UploadError("upload", [Problem("", f"larger than {MAX_UPLOAD_BYTES} bytes")])
                dayahead = await asyncio.to_thread(parse_dayahead, raw, fmt, "upload")
                check_against_site(dayahead, self.site, "upload")
                check_timing(dayahead, now, self.site.central)
            except UploadError as exc:
                self.metrics.upload(False)
                log.warning("upload refused: %s", "; ".join(exc.lines()))
                raise
            upload_id = f"upload-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
            outcome = self.queue.expect_upload(upload_id)
            try:
                stored = await asyncio.to_thread(self.store.add_upload, upload_id, now, fmt, raw, dayahead)
            except BaseException:
                self.queue.forget_upload(upload_id)
                raise
            self.state.set_upload(stored)
            self.metrics.upload(True)
            self.queue.upload_stored()
            log.info(
                "upload %s accepted (%s): %d intervals of %d min from %s to %s",
                upload_id,
                fmt,
                dayahead.steps,
                dayahead.interval_minutes,
                format_utc(dayahead.start),
                format_utc(dayahead.end),
            )
            return AcceptedUpload(stored, outcome)

    def request_optimization(self, trigger: RunTrigger) -> asyncio.Future[RunResult]:
        return self.queue.request(trigger)

    async def reset_interlock(self, cabinet_id: str, requested_by: str) -> Decision:
        """The edge's answer to ``ResetInterlock``, logged with who asked; ``KeyError`` for an unknown
        cabinet, ``EdgeUnreachableError`` when the edge cannot be asked."""
        from central.edge_link import EdgeUnreachableError

        try:
            decision = await self.fleet.reset_interlock(cabinet_id)
        except EdgeUnreachableError as exc:
            self.metrics.reset(cabinet_id, "unreachable")
            log.warning("reset-interlock of %s asked by %s: not sent: %s", cabinet_id, requested_by, exc)
            raise
        result = "accepted" if decision.accepted else "refused"
        self.metrics.reset(cabinet_id, result)
        log.info(
            "reset-interlock of %s asked by %s: %s by the edge: %s",
            cabinet_id,
            requested_by,
            result,
            decision.message,
        )
        return decision

    def next_run_times(self) -> dict[str, datetime | None]:
        return self.jobs.next_run_times()

    def _log_restored(self) -> None:
        upload, plan = self.state.upload, self.state.plan
        if upload is None:
            log.info("no stored upload: waiting for a day-ahead upload")
            return
        log.info(
            "restored upload %s (%d intervals from %s to %s)",
            upload.upload_id,
            upload.dayahead.steps,
            format_utc(upload.dayahead.start),
            format_utc(upload.dayahead.end),
        )
        if plan is not None:
            log.info(
                "restored plan %s (%s, from %s)", plan.plan.plan_id, plan.plan.status.value, plan.trigger
            )


def _clock_name(clock: Clock) -> str:
    try:
        return clock.spec()
    except ValueError:
        return type(clock).__name__
