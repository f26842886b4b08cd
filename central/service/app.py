"""``CentralService``: store, state, edge fleet, scheduler jobs and the HTTP API in one asyncio process.

Start order: database (and restore of the latest upload, plan and push outcomes), edge fleet, scheduler,
HTTP server; stop order is the reverse. ``async with CentralService(...) as service`` runs it;
:meth:`CentralService.wait_stopped` blocks until :meth:`CentralService.request_stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import uuid
from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import uvicorn

from central.service.access import ApiAccess
from central.service.audit import AuditLog, AuditTrail
from central.service.auth import LEGACY_ENV_NAME, LEGACY_SITE_NAME, LegacyToken, TokenVerifier
from central.service.interfaces import Fleet, Optimizer, dispatch_optimizer
from central.service.jobs import TRIGGER_UPLOAD, CentralJobs, Planner
from central.service.listener import listener_context
from central.service.metrics import CONTENT_TYPE, Metrics, Snapshot, render
from central.service.ratelimit import FailureLimiter
from central.service.state import RunResult, ServiceState
from central.service.store import Store, StoredUpload
from central.service.tokens import tokens_path
from shared.clock import Clock
from shared.dayahead import MAX_UPLOAD_BYTES, UploadFormat, check_against_site, parse_dayahead
from shared.edge_api import EdgeTelemetry
from shared.errors import ConfigError, Problem, UploadError
from shared.plausibility import Finding, Severity, accept_dayahead, accept_site
from shared.site import SiteConfig, parse_host_port
from shared.timeutil import format_utc
from shared.tls import is_loopback

log = logging.getLogger(__name__)

API_TOKEN_ENV = "EMS_API_TOKEN"  # nosec B105  # the name of a variable, not a secret
STRICT = "[central] strict_plausibility"
HTTP_SHUTDOWN_TIMEOUT_S = 2


@dataclass(frozen=True)
class ServiceConfig:
    """Process-level settings of the service, resolved from the site file and the environment."""

    database_path: Path
    http_host: str
    http_port: int  # 0: any free port (see CentralService.http_port)
    api_token: str | None  # the single operator token (EMS_API_TOKEN or [central] api_token), if any
    read_token_required: bool  # reads need the token too (non-loopback address without public_reads)
    opcua_username: str
    opcua_password: str
    # Access to the HTTP API (docs/security.md).
    api_token_name: str = LEGACY_ENV_NAME  # the single operator token's name in the audit trail
    tokens_file: Path = Path("var/api-tokens.toml")
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    insecure_http: bool = False  # plain HTTP on a non-loopback address allowed
    audit_retention_days: float = 365.0

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @classmethod
    def from_site(cls, site: SiteConfig, environ: Mapping[str, str] | None = None) -> ServiceConfig:
        """``EMS_API_TOKEN`` wins over ``[central] api_token``; the OPC UA password comes from the
        variable named by ``[opcua] central_password_env``. A relative database path is relative to the
        working directory."""
        env = os.environ if environ is None else environ
        central = site.central
        host, port = parse_host_port(central.http_address)
        from_env = (env.get(API_TOKEN_ENV) or "").strip() or None
        token = from_env or (central.api_token or "").strip() or None
        return cls(
            database_path=Path(central.database_path),
            http_host=host,
            http_port=port,
            api_token=token,
            read_token_required=not is_loopback(host) and not central.public_reads,
            opcua_username=site.opcua.central_username,
            opcua_password=env.get(site.opcua.central_password_env, ""),
            api_token_name=LEGACY_ENV_NAME if from_env else LEGACY_SITE_NAME,
            tokens_file=tokens_path(site),
            tls_cert_file=None if central.tls_cert_file is None else Path(central.tls_cert_file),
            tls_key_file=None if central.tls_key_file is None else Path(central.tls_key_file),
            insecure_http=central.insecure_http,
            audit_retention_days=central.audit_retention_days,
        )


@dataclass(frozen=True)
class AcceptedUpload:
    """An upload that was stored, and the optimization run it started."""

    upload: StoredUpload
    run: asyncio.Future[RunResult]
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
        jobs = CentralJobs(
            site=self.site,
            clock=self.clock,
            planner=planner,
            store=store,
            state=self.state,
            fleet=live_fleet,
        )
        jobs.start()
        stack.push_async_callback(jobs.shutdown)
        self._jobs = jobs

        await self._start_http(stack, tls)
        if self.config.api_token is None and verifier.count() == 0:
            log.warning(
                "no API token (`ems token add`, [central] api_token or $%s): every write endpoint"
                " (upload, optimize) is refused",
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

    async def _start_http(self, stack: AsyncExitStack, tls: ssl.SSLContext | None) -> None:
        from central.service.api import create_app

        sock = _listen(self.config.http_host, self.config.http_port)
        self._http_port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            create_app(self),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=HTTP_SHUTDOWN_TIMEOUT_S,
            proxy_headers=False,  # the limiter and the audit trail key on the TCP peer, never a header
            server_header=False,
        )
        config.load()
        config.ssl = tls  # TLS 1.2+ context of shared.tls (uvicorn's own cannot set a minimum version)
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name="central-http")

        async def stop() -> None:
            server.should_exit = True
            try:
                await asyncio.wait_for(task, timeout=HTTP_SHUTDOWN_TIMEOUT_S + 3.0)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
            finally:
                sock.close()

        stack.push_async_callback(stop)
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped during start")
            await asyncio.sleep(0.01)

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
    def fleet(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeError("the service is not running")
        return self._fleet

    @property
    def jobs(self) -> CentralJobs:
        if self._jobs is None:
            raise RuntimeError("the service is not running")
        return self._jobs

    def telemetry(self) -> Mapping[str, EdgeTelemetry | None]:
        return self.fleet.telemetry()

    def connected(self) -> Mapping[str, bool]:
        return self.fleet.connected()

    def metrics_text(self) -> str:
        snapshot = Snapshot(
            plan=self.state.plan,
            push=self.state.push_outcomes(),
            connected=self.connected(),
            telemetry=self.telemetry(),
            jobs=self.state.jobs(),
            cabinet_ids=tuple(self.site.cabinet_ids),
            access=self.access.stats(),
        )
        return render(self.metrics, snapshot)

    metrics_content_type = CONTENT_TYPE
    max_upload_bytes = MAX_UPLOAD_BYTES

    # ----------------------------------------------------------------------------------------- writes

    async def accept_upload(self, raw: bytes, fmt: str) -> AcceptedUpload:
        """Validate and store a day-ahead upload, make it the active one, and start an optimization.

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
                if dayahead.end <= now:
                    covers = f"{format_utc(dayahead.start)} to {format_utc(dayahead.end)}"
                    over = (
                        f"the upload covers {covers}, which is over (now {format_utc(now)}); "
                        "`ems upload FILE --start today` re-dates a file"
                    )
                    raise UploadError("upload", [Problem("start", over)])
                findings = accept_dayahead(
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
            stored = await asyncio.to_thread(self.store.add_upload, upload_id, now, fmt, raw, dayahead)
            self.state.set_upload(stored)
            self.metrics.upload(True)
            log.info(
                "upload %s accepted (%s): %d intervals of %d min from %s to %s",
                upload_id,
                fmt,
                dayahead.steps,
                dayahead.interval_minutes,
                format_utc(dayahead.start),
                format_utc(dayahead.end),
            )
            _log_findings(f"upload {upload_id}", findings)
            return AcceptedUpload(stored, self.jobs.request_run(TRIGGER_UPLOAD), tuple(findings))

    def request_optimization(self, trigger: str) -> asyncio.Future[RunResult]:
        return self.jobs.request_run(trigger)

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


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handling: the ``ems central`` process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(host: str, port: int) -> socket.socket:
    """Bind the HTTP socket here, so a busy port is a clear error rather than uvicorn's sys.exit."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"HTTP address {host}:{port}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _log_findings(subject: str, findings: list[Finding]) -> None:
    for finding in findings:
        level = logging.INFO if finding.severity is Severity.NOTE else logging.WARNING
        log.log(level, "%s: %s: %s", subject, finding.severity.value, finding)


def _clock_name(clock: Clock) -> str:
    try:
        return clock.spec()
    except ValueError:
        return type(clock).__name__
