"""Access control of the HTTP API: role dependencies, the brute-force limiter, the audit of writes.

Endpoints declare what they need with one dependency::

    dependencies=[Depends(access.require(ApiRole.UPLOADER, AuditAction.UPLOAD))]

No or an unknown token: 401 (``WWW-Authenticate: Bearer``); a valid token without the role: 403; more than
20 failed authentications from one client address within 60 s: 429 (``Retry-After``) for the next 60 s.
A request without any token is not a failed authentication (nothing was guessed). With an ``audit``
action the request is written to the audit trail whatever its outcome, with the token's name, by
:class:`AuditMiddleware` once the response is sent; ``audit_note`` adds a detail. Reads use
:meth:`ApiAccess.reader`: open on a loopback address (or with ``[central] public_reads``), else viewer.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

from fastapi import HTTPException, Request, Response

from central.service.audit import AuditAction, AuditEntry, AuditOutcome, AuditTrail
from central.service.auth import (
    STREAM_COOKIE,
    STREAM_COOKIE_PATH,
    Principal,
    StreamCookies,
    TokenVerifier,
)
from central.service.ratelimit import FailureLimiter, LimiterStats
from central.service.tokens import ApiRole

log = logging.getLogger(__name__)

AUDIT_STATE_KEY = "ems_audit"


class Denial(StrEnum):
    """Why a request was refused access (metric label)."""

    MISSING_TOKEN = "missing_token"  # nosec B105  # a metric label, not a secret
    INVALID_TOKEN = "invalid_token"  # nosec B105  # a metric label, not a secret
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"


@dataclass
class AuditContext:
    """What the audit record of one request will say; filled while the request is handled."""

    action: AuditAction
    client_address: str
    principal: Principal | None = None
    notes: list[str] = field(default_factory=list)
    suppressed: bool = False  # repeated 429s of a blocked client are not written one by one

    def entry(self, status_code: int) -> AuditEntry:
        principal = self.principal
        return AuditEntry(
            token_name="" if principal is None else principal.name,
            role="" if principal is None else principal.role.value,
            client_address=self.client_address,
            action=self.action,
            outcome=AuditOutcome.of_status(status_code),
            status_code=status_code,
            detail="; ".join(self.notes),
        )


@dataclass(frozen=True)
class AccessStats:
    """Counters and gauges for ``/metrics``."""

    limiter: LimiterStats
    denied: dict[Denial, int]
    tokens: int
    hash_verifications_total: int
    audit_written_total: int
    audit_failures_total: int


class ApiAccess:
    """Authentication, authorization and audit hooks of one running API."""

    def __init__(
        self,
        verifier: TokenVerifier,
        limiter: FailureLimiter,
        trail: AuditTrail,
        *,
        read_token_required: bool,
        secure_cookies: bool,
        cookies: StreamCookies | None = None,
    ) -> None:
        self.verifier = verifier
        self.limiter = limiter
        self.trail = trail
        self.read_token_required = read_token_required
        self.secure_cookies = secure_cookies
        self.cookies = cookies or StreamCookies()
        self._denied = dict.fromkeys(Denial, 0)

    # ----------------------------------------------------------------------------------- dependencies

    def require(
        self, role: ApiRole, audit: AuditAction | None = None
    ) -> Callable[[Request], Awaitable[Principal]]:
        """A FastAPI dependency: the caller's bearer token must have ``role``; audited as ``audit``."""

        async def dependency(request: Request) -> Principal:
            context = _start_audit(request, audit)
            principal = await self._authenticate(request, context, self._bearer(request))
            return self._authorize(principal, role, context)

        return dependency

    def reader(self) -> Callable[[Request], Awaitable[Principal | None]]:
        """A FastAPI dependency for reads: open, or viewer when reads need a token."""
        viewer = self.require(ApiRole.VIEWER)

        async def dependency(request: Request) -> Principal | None:
            return await viewer(request) if self.read_token_required else None

        return dependency

    def identify(self) -> Callable[[Request], Awaitable[Principal | None]]:
        """A FastAPI dependency: the principal of the bearer token sent (401 for a wrong one); without a
        token None where reads are open, else 401."""
        viewer = self.require(ApiRole.VIEWER)

        async def dependency(request: Request) -> Principal | None:
            if self._bearer(request) is None and not self.read_token_required:
                return None
            return await viewer(request)

        return dependency

    def stream_reader(self) -> Callable[[Request], Awaitable[Principal | None]]:
        """A FastAPI dependency for the event stream, a read: open when reads are, else a viewer's bearer
        token or the cookie of ``POST /api/v1/stream-cookie`` (``EventSource`` cannot send headers)."""

        async def dependency(request: Request) -> Principal | None:
            if not self.read_token_required:
                return None
            bearer, cookie = self._bearer(request), request.cookies.get(STREAM_COOKIE)
            if bearer is None and cookie is not None:
                principal = await self._from_cookie(request, None, cookie)
            else:
                principal = await self._authenticate(request, None, bearer)
            return self._authorize(principal, ApiRole.VIEWER, None)

        return dependency

    def set_stream_cookie(self, response: Response, principal: Principal) -> None:
        response.set_cookie(
            STREAM_COOKIE,
            self.cookies.issue(principal),
            max_age=self.cookies.max_age_s,
            path=STREAM_COOKIE_PATH,
            secure=self.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    # ---------------------------------------------------------------------------------------- checks

    async def _authenticate(
        self, request: Request, context: AuditContext | None, presented: str | None
    ) -> Principal:
        client = limiter_key(client_address(request))
        self._refuse_if_blocked(client, context)
        if presented is None:
            self._denied[Denial.MISSING_TOKEN] += 1
            if context is not None:
                context.notes.append("no bearer token")
            raise HTTPException(
                401, "missing bearer token (Authorization: Bearer <token>)", {"WWW-Authenticate": "Bearer"}
            )
        principal = await self.verifier.authenticate(presented)
        if principal is None:
            self._failed(client, context, "invalid bearer token")
        if context is not None:
            context.principal = principal
        return principal

    async def _from_cookie(self, request: Request, context: AuditContext | None, cookie: str) -> Principal:
        client = limiter_key(client_address(request))
        self._refuse_if_blocked(client, context)
        principal = self.cookies.principal(cookie)
        if principal is None or not self.verifier.is_current(principal):
            self._failed(client, context, "invalid or expired stream cookie")
        return principal

    def _authorize(self, principal: Principal, role: ApiRole, context: AuditContext | None) -> Principal:
        if not principal.role.allows(role):
            self._denied[Denial.FORBIDDEN] += 1
            if context is not None:
                context.notes.append(f"needs role {role.value}")
            raise HTTPException(
                403, f"token {principal.name!r} has role {principal.role.value}; this needs {role.value}"
            )
        return principal

    def _refuse_if_blocked(self, client: str, context: AuditContext | None) -> None:
        blocked_s = self.limiter.blocked_for_s(client)
        if blocked_s > 0:
            self._denied[Denial.RATE_LIMITED] += 1
            if context is not None:
                context.suppressed = True
            raise _too_many(blocked_s)

    def _failed(self, client: str, context: AuditContext | None, reason: str) -> NoReturn:
        """Count a failed authentication of ``client`` and raise 401, or 429 when it is now blocked."""
        if self.limiter.record_failure(client):
            self._denied[Denial.RATE_LIMITED] += 1
            log.warning(
                "client %s blocked for %.0f s after more than %d failed authentications within %.0f s",
                client,
                self.limiter.block_s,
                self.limiter.max_failures,
                self.limiter.window_s,
            )
            if context is not None:
                context.notes.append(f"{reason}; client blocked for {self.limiter.block_s:.0f} s")
            raise _too_many(self.limiter.block_s)
        self._denied[Denial.INVALID_TOKEN] += 1
        if context is not None:
            context.notes.append(reason)
        raise HTTPException(401, reason, {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    @staticmethod
    def _bearer(request: Request) -> str | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        token = given.strip()
        return token if scheme.lower() == "bearer" and token else None

    def stats(self) -> AccessStats:
        return AccessStats(
            limiter=self.limiter.stats(),
            denied=dict(self._denied),
            tokens=self.verifier.count(),
            hash_verifications_total=self.verifier.hash_verifications_total,
            audit_written_total=self.trail.written_total,
            audit_failures_total=self.trail.failures_total,
        )


def client_address(request: Request) -> str:
    """The TCP peer address (proxy headers are not trusted)."""
    return request.client.host if request.client is not None else "unknown"


def limiter_key(address: str) -> str:
    """What the failure limiter counts per: the IPv4 address, or the /64 network of an IPv6 address (one
    host usually holds a whole /64, so single IPv6 addresses would be free to change)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


def audit_note(request: Request, note: str) -> None:
    """Add ``note`` to the audit record of this request (no effect on requests that are not audited)."""
    context = request.scope.get("state", {}).get(AUDIT_STATE_KEY)
    if isinstance(context, AuditContext):
        context.notes.append(note)


def _start_audit(request: Request, action: AuditAction | None) -> AuditContext | None:
    if action is None:
        return None
    context = AuditContext(action, client_address(request))
    request.scope.setdefault("state", {})[AUDIT_STATE_KEY] = context
    return context


def _too_many(retry_after_s: float) -> HTTPException:
    return HTTPException(
        429,
        "too many failed authentications from this address; try again later",
        {"Retry-After": str(max(1, math.ceil(retry_after_s)))},
    )


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AuditMiddleware:
    """ASGI middleware: after an audited request (see :meth:`ApiAccess.require`), write its record with the
    final status code, also when the endpoint failed."""

    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            context = state.get(AUDIT_STATE_KEY)
            if isinstance(context, AuditContext) and not context.suppressed:
                await self.trail.record(context.entry(status))
