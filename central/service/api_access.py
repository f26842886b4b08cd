"""HTTP endpoints of access control: the audit trail, token management and the event-stream cookie.

- ``GET /api/v1/audit`` (operator): the newest audit records.
- ``GET /api/v1/tokens`` (operator): the named tokens (never their secrets or hashes).
- ``POST /api/v1/tokens`` (operator, audited): add a token; the answer holds the token, the only time.
- ``DELETE /api/v1/tokens/{name}`` (operator, audited): revoke a token; effective at once.
- ``POST /api/v1/stream-cookie`` (viewer): a short-lived cookie for ``GET /api/v1/stream``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from central.service.access import ApiAccess, audit_note
from central.service.audit import AuditAction, AuditLog, AuditRecord
from central.service.auth import Principal
from central.service.tokens import ApiRole, TokenEntry, add_token, revoke_token
from shared.errors import InputError
from shared.opcua.users import NAME_PATTERN
from shared.timeutil import format_utc, parse_utc

if TYPE_CHECKING:
    from pathlib import Path

MAX_AUDIT_RECORDS = 1000


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class AuditRecordOut(_Out):
    seq: int
    at: str = Field(description="Wall-clock time, UTC")
    token_name: str = Field(description="'' when the request carried no valid token")
    role: str
    client_address: str
    action: AuditAction
    outcome: str = Field(description="success | refused | denied | failed")
    status_code: int
    detail: str


class TokenOut(_Out):
    name: str
    role: ApiRole
    key_id: str = Field(description="Public part of the token (emsk_<key_id>_...)")
    created_at: str


class NewTokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    role: ApiRole


class NewTokenOut(TokenOut):
    token: str = Field(description="The bearer token; shown only in this answer")


def access_router(access: ApiAccess, audit_log: AuditLog, tokens_file: Path) -> APIRouter:
    """The access-control endpoints of one running service."""
    router = APIRouter(tags=["access"])
    errors: dict[int | str, dict[str, Any]] = {
        401: {"description": "Missing or invalid bearer token"},
        403: {"description": "The token lacks the operator role"},
        429: {"description": "Too many failed authentications from this address"},
    }
    operator = Depends(access.require(ApiRole.OPERATOR))
    viewer = Depends(access.require(ApiRole.VIEWER))

    @router.get(
        "/api/v1/audit", response_model=list[AuditRecordOut], dependencies=[operator], responses=errors
    )
    async def audit(
        limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_RECORDS)] = 100,
        since: Annotated[str | None, Query(description="UTC, ISO 8601 with Z")] = None,
        action: AuditAction | None = None,
    ) -> list[AuditRecordOut]:
        """The newest audit records, newest first: every write (upload, optimize, reset-interlock, token
        changes) with time, token name, client address, action and outcome."""
        try:
            start = None if since is None else parse_utc(since)
        except ValueError as exc:
            raise HTTPException(422, f"since: {exc}") from None
        records = await asyncio.to_thread(audit_log.records, limit=limit, since=start, action=action)
        return [_record_view(r) for r in records]

    @router.get("/api/v1/tokens", response_model=list[TokenOut], dependencies=[operator], responses=errors)
    async def tokens() -> list[TokenOut]:
        """The named API tokens (name, role, key id, creation time)."""
        current = access.verifier.tokens()
        if current is None:
            raise HTTPException(500, f"the tokens file {tokens_file} is unusable (see the service log)")
        return [_token_view(e) for e in current.entries]

    @router.post(
        "/api/v1/tokens",
        status_code=201,
        response_model=NewTokenOut,
        dependencies=[Depends(access.require(ApiRole.OPERATOR, AuditAction.TOKEN_ADD))],
        responses={409: {"description": "A token of that name exists"}, **errors},
    )
    async def add(request: Request, response: Response, body: NewTokenIn) -> NewTokenOut:
        """Add a named token; the answer holds the token, which is stored only as a salted hash."""
        audit_note(request, f"token {body.name!r} ({body.role.value})")
        try:
            entry, token = await asyncio.to_thread(add_token, tokens_file, body.name, body.role)
        except InputError as exc:
            raise HTTPException(409, str(exc.problems[0].message)) from None
        response.headers["Cache-Control"] = "no-store"
        return NewTokenOut(**_token_view(entry).model_dump(), token=token)

    @router.delete(
        "/api/v1/tokens/{name}",
        response_model=TokenOut,
        dependencies=[Depends(access.require(ApiRole.OPERATOR, AuditAction.TOKEN_REVOKE))],
        responses={404: {"description": "No token of that name"}, **errors},
    )
    async def revoke(request: Request, name: str) -> TokenOut:
        """Revoke a named token: refused from the next request on."""
        audit_note(request, f"token {name!r}")
        try:
            entry = await asyncio.to_thread(revoke_token, tokens_file, name)
        except InputError as exc:
            raise HTTPException(404, str(exc.problems[0].message)) from None
        return _token_view(entry)

    @router.post("/api/v1/stream-cookie", status_code=204, responses=errors)
    async def stream_cookie(response: Response, principal: Principal = viewer) -> None:
        """Set a short-lived, HttpOnly, SameSite=Strict cookie that authenticates ``GET /api/v1/stream``
        for the token of this request (for a browser's EventSource, which cannot send headers)."""
        access.set_stream_cookie(response, principal)

    return router


def _record_view(record: AuditRecord) -> AuditRecordOut:
    return AuditRecordOut(
        seq=record.seq,
        at=format_utc(record.at),
        token_name=record.token_name,
        role=record.role,
        client_address=record.client_address,
        action=record.action,
        outcome=record.outcome.value,
        status_code=record.status_code,
        detail=record.detail,
    )


def _token_view(entry: TokenEntry) -> TokenOut:
    return TokenOut(
        name=entry.name, role=entry.role, key_id=entry.key_id, created_at=format_utc(entry.created_at)
    )
