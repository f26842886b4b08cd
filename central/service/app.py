"""``CentralService``: store, state, edge fleet, scheduler jobs and the HTTP API in one asyncio process.

Start order: the site's plausibility and the listener rule (TLS, or plain HTTP on loopback only) are
checked, then the HTTP socket is bound (a busy port stops the start before anything else happens), then
the token verifier, the database (and restore of the latest upload, plan and push outcomes) and the audit
log, the edge fleet, the planning queue (which first recovers: optimizes the active upload if it has no
plan, else resumes the stored plan), the scheduler, and the HTTP server (with TLS when configured) on the
bound socket; stop order is the reverse.
``async with CentralService(...) as service`` runs it; :meth:`CentralService.wait_stopped` blocks until
:meth:`CentralService.request_stop`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import uuid
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime

from central.service.access import ApiAccess
from central.service.audit import AuditLog, AuditTrail
from central.service.auth import LegacyToken, TokenVerifier
from central.service.config import API_TOKEN_ENV as API_TOKEN_ENV  # re-exported: the Python API
from central.service.config import ServiceConfig as ServiceConfig
from central.service.console_feed import ConsoleFeed
from central.service.event_log import EventLog, EventRecorder
from central.service.events import EventHub
from central.service.health import HealthSnapshot, findings
from central.service.http_server import listen, serve_http
from central.service.intake import check_timing
from central.service.interfaces import Fleet, Optimizer, dispatch_optimizer
from central.service.jobs import CentralJobs
from central.service.listener import listener_context
from central.service.metrics import CONTENT_TYPE, Metrics, Snapshot, render
from central.service.planner import Planner
from central.service.queue import PlanQueue
from central.service.ratelimit import FailureLimiter
from central.service.state import RunResult, RunTrigger, ServiceState, UploadOutcome
from central.service.store import Store, StoredUpload
from shared.clock import Clock
from shared.dayahead import MAX_UPLOAD_BYTES, UploadFormat, check_against_site, parse_dayahead
from shared.edge_api import Decision, EdgeTelemetry
from shared.errors import ConfigError, Problem, UploadError
from shared.plausibility import Finding, Severity, accept_dayahead, accept_site
from shared.site import SiteConfig
from shared.timeutil import format_utc

log = logging.getLogger(__name__)

STRICT = "[central] strict_plausibility"


@dataclass(frozen=True)
class AcceptedUpload:
    """An upload that was stored (and queued for planning), and what will become of it."""

    upload: StoredUpload
    outcome: asyncio.Future[UploadOutcome]
    findings: tuple[Finding, ...] = ()  # plausibility warnings and notes (docs/configuration.md)


class CentralService:
    """The central service of one site."""

    def __init__(
        self,
        site: SiteConfig,
        clock: Clock,
        config: ServiceConfig,
        *,
        optimizer: Optimizer = dispatch_optimizer,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.site = site
        self.clock = clock
        self.config = config
        self._limiter = limiter or FailureLimiter()
        self._access: ApiAccess | None = None
        self._audit_log: AuditLog | None = None
        self.state = ServiceState()
        self.metrics = Metrics()
        self._optimizer = optimizer
        self._stack: AsyncExitStack | None = None
        self._store: Store | None = None
        self._fleet: Fleet | None = None
        self._jobs: CentralJobs | None = None
        self._queue: PlanQueue | None = None
        self._event_log: EventLog | None = None
        self._events: EventHub | None = None
        self._feed: ConsoleFeed | None = None
        self._http_port = config.http_port
        self._stopped = asyncio.Event()
        self._upload_lock = asyncio.Lock()
        self._strict = site.central.strict_plausibility

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

        # A site whose plan would aim where the edges trip (when strict: any warning) starts nothing.
        site_findings = accept_site(self.site, strict=self._strict, strict_by=STRICT, source="site file")
        _log_findings("site file", site_findings)
        config = self.config
        tls = listener_context(
            config.http_host, config.tls_cert_file, config.tls_key_file, config.insecure_http
        )
        # Bound before anything else starts, so that a second service on the same port stops here, before
        # it touches the database or connects to any edge (TLS is set up on this socket when it serves).
        sock = listen(config.http_host, config.http_port)
        stack.callback(sock.close)
        self._http_port = int(sock.getsockname()[1])
        verifier = TokenVerifier(self.config.tokens_file, self._legacy_token())
        store = await asyncio.to_thread(Store, self.config.database_path)
        stack.callback(store.close)
        self._store = store
        audit_log = await asyncio.to_thread(
            AuditLog, self.config.database_path, self.config.audit_retention_days
        )
        stack.callback(audit_log.close)
        self._audit_log = audit_log
        self._access = ApiAccess(
            verifier,
            self._limiter,
            AuditTrail(audit_log),
            read_token_required=self.config.read_token_required,
            secure_cookies=tls is not None,
        )
        await asyncio.to_thread(self.state.restore, store)
        self._log_restored()
        # The console's live events and their history (persisted by a writer task, off the event loop).
        event_log = await asyncio.to_thread(
            EventLog, self.config.database_path, self.site.central.telemetry_retention_days
        )
        stack.callback(event_log.close)
        self._event_log = event_log
        recorder = EventRecorder(event_log)
        recorder.start()
        stack.push_async_callback(recorder.stop)
        hub = EventHub(self.clock, record=recorder.record)
        self._events = hub
        self._feed = ConsoleFeed(hub)
        self.state.observer = self._feed

        if not self.config.opcua_password:
            variable = self.site.opcua.central_password_env
            problem = (
                f"environment variable {variable} (the central's OPC UA password, see `ems certs`) is not set"
            )
            raise ConfigError("environment", [Problem("opcua.central_password_env", problem)])
        fleet = EdgeFleet(
            self.site,
            self.clock,
            self.config.opcua_username,
            self.config.opcua_password,
            on_telemetry=hub.on_telemetry,
        )
        live_fleet: Fleet = await stack.enter_async_context(fleet)
        self._fleet = live_fleet
        hub.start(live_fleet.connected)
        stack.push_async_callback(hub.stop)

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

        await self._start_http(stack, sock, tls)
        if self.config.api_token is None and verifier.count() == 0:
            log.warning(
                "no API token (`ems token add`, [central] api_token or $%s): every write endpoint"
                " (upload, optimize, reset-interlock) is refused",
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

    def _legacy_token(self) -> LegacyToken | None:
        token = self.config.api_token
        return None if token is None else LegacyToken(self.config.api_token_name, token)

    async def _start_http(
        self, stack: AsyncExitStack, sock: socket.socket, tls: ssl.SSLContext | None
    ) -> None:
        from central.service.api import create_app

        await serve_http(create_app(self), sock, stack, tls)

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
        scheme = "https" if self.config.tls else "http"
        return f"{scheme}://{shown}:{self._http_port}"

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the service is not running")
        return self._store

    @property
    def access(self) -> ApiAccess:
        if self._access is None:
            raise RuntimeError("the service is not running")
        return self._access

    @property
    def audit_log(self) -> AuditLog:
        if self._audit_log is None:
            raise RuntimeError("the service is not running")
        return self._audit_log

    @property
    def events(self) -> EventHub:
        if self._events is None:
            raise RuntimeError("the service is not running")
        return self._events

    @property
    def event_log(self) -> EventLog:
        if self._event_log is None:
            raise RuntimeError("the service is not running")
        return self._event_log

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
            access=self.access.stats(),
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
                warnings = accept_dayahead(
                    dayahead,
                    self.site,
                    UploadFormat(fmt),
                    strict=self._strict,
                    strict_by=STRICT,
                    source="upload",
                )
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
            _log_findings(f"upload {upload_id}", warnings)
            return AcceptedUpload(stored, outcome, tuple(warnings))

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
            if self._feed is not None:
                self._feed.reset(cabinet_id, requested_by, None, f"not sent: {exc}")
            raise
        if self._feed is not None:
            self._feed.reset(cabinet_id, requested_by, decision, "")
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


def _log_findings(subject: str, findings: list[Finding]) -> None:
    for finding in findings:
        level = logging.INFO if finding.severity is Severity.NOTE else logging.WARNING
        log.log(level, "%s: %s: %s", subject, finding.severity.value, finding)


def _clock_name(clock: Clock) -> str:
    try:
        return clock.spec()
    except ValueError:
        return type(clock).__name__
