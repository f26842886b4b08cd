"""The HTTP API (FastAPI; OpenAPI document at ``/openapi.json``, interactive docs at ``/docs``).

Endpoints:
- ``POST /api/v1/day-ahead``: a JSON or CSV day-ahead upload (docs/interfaces.md: day-ahead upload); starts
  an optimization
  and by default waits for its plan and push outcomes.
- ``GET /api/v1/plan/latest``: the active plan, exactly the plan document of docs/interfaces.md: plan.
- ``GET /api/v1/cabinets``: per edge: connection, telemetry, mode, last push outcome.
- ``POST /api/v1/optimize``: re-optimize now.
- ``POST /api/v1/cabinets/{cabinet_id}/reset-interlock``: the edge's ``ResetInterlock``.
- ``GET /api/v1/status``: ``ok`` or ``degraded``, with every reason (:mod:`central.service.health`).
- ``GET /healthz``: liveness (always 200) and a status summary (jobs, edges, active upload and plan).
- ``GET /metrics``: Prometheus text.

No request ends in a bare 500: an exception no handler expected is answered with a one-line reason and
counted (:mod:`central.service.http_errors`); a body that stops arriving is answered 408.

Access (docs/security.md): uploads need an ``uploader`` token, optimize and reset-interlock an ``operator``
token, reads are open on a loopback address and need a ``viewer`` token elsewhere (unless ``[central]
public_reads``); every write is audited. The audit, token and stream-cookie endpoints are in
:mod:`central.service.api_access`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from central.edge_link.link import EdgeUnreachableError
from central.service.access import AuditMiddleware, audit_note, client_address
from central.service.api_access import access_router
from central.service.audit import AuditAction
from central.service.auth import Principal
from central.service.console_api import install_console
from central.service.health import findings
from central.service.http_errors import UnhandledErrors
from central.service.state import RunResult, RunTrigger, UploadOutcome
from central.service.tokens import ApiRole
from central.service.views import (
    CabinetOut,
    DayAheadJson,
    ErrorOut,
    HealthOut,
    ProblemOut,
    ResetOut,
    RunOut,
    StatusOut,
    UploadResultOut,
    finding_view,
    job_view,
    plan_view,
    push_view,
    run_view,
    telemetry_view,
    upload_result_view,
    upload_view,
)
from shared import __version__
from shared.errors import UploadError
from shared.plan import Plan
from shared.timeutil import format_utc

if TYPE_CHECKING:
    from central.service.app import CentralService

log = logging.getLogger(__name__)
T = TypeVar("T")

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")
# How long a write request waits for its optimization run beyond the solver and push limits [s].
WAIT_MARGIN_S = 10.0


# --------------------------------------------------------------------------------------------- app


def create_app(service: CentralService) -> FastAPI:
    """The API of one running service."""
    app = FastAPI(
        title="hybrid-ems central service",
        version=__version__,
        description="Day-ahead upload, plans, edge status and metrics of one battery storage site.",
        docs_url=None,  # served by the console's router with Swagger UI from the package (offline)
        redoc_url=None,
    )
    wait_s = service.site.central.solver_time_limit_s + service.site.central.push_timeout_s + WAIT_MARGIN_S
    body_timeout_s = service.site.central.http_body_timeout_s
    access = service.access
    # Outermost last: an unexpected exception becomes a 500 answer, which the audit trail then records.
    app.add_middleware(UnhandledErrors, count=service.metrics.http_error)
    app.add_middleware(AuditMiddleware, trail=access.trail)
    app.include_router(access_router(access, service.audit_log, service.config.tokens_file))
    install_console(app, service)
    read = [Depends(access.reader())]
    operator = Depends(access.require(ApiRole.OPERATOR, AuditAction.RESET_INTERLOCK))
    auth_errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorOut, "description": "Missing or invalid bearer token"},
        403: {"model": ErrorOut, "description": "The token lacks the role"},
        429: {"model": ErrorOut, "description": "Too many failed authentications from this address"},
    }

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            ProblemOut(location=".".join(str(p) for p in e["loc"]), message=e["msg"]).model_dump()
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "bad request", "problems": problems}, status_code=422)

    @app.post(
        "/api/v1/day-ahead",
        status_code=201,
        dependencies=[Depends(access.require(ApiRole.UPLOADER, AuditAction.UPLOAD))],
        response_model=UploadResultOut,
        summary="Upload day-ahead data (JSON or CSV)",
        responses={
            202: {"model": UploadResultOut, "description": "Stored; the optimization still runs"},
            408: {"model": ErrorOut, "description": "The body did not arrive within the time limit"},
            413: {"model": ErrorOut, "description": "Body too large"},
            415: {"model": ErrorOut, "description": "Content-Type is neither JSON nor CSV"},
            422: {"model": ErrorOut, "description": "Refused: the problems name the row or field"},
            **auth_errors,
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": DayAheadJson.model_json_schema()},
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": "start,import_price_per_kwh,load_kw\n2026-11-24T00:00:00Z,0.2,120\n"
                        "2026-11-24T00:15:00Z,0.21,118.5\n",
                    },
                },
            }
        },
    )
    async def upload_dayahead(
        request: Request,
        wait: Annotated[bool, Query(description="Wait for the plan and the push outcomes")] = True,
    ) -> Response:
        """Validate the whole upload, store it, make it the active one and optimize at once.

        A refused upload stores nothing and changes nothing."""
        fmt = _format_of(request.headers.get("content-type", ""))
        raw = await _read_body(request, service.max_upload_bytes, body_timeout_s)
        try:
            accepted = await service.accept_upload(raw, fmt)
        except UploadError as exc:
            audit_note(request, f"refused: {exc}")
            return _refused(exc)
        audit_note(request, f"upload {accepted.upload.upload_id} sha256 {accepted.upload.sha256[:16]}")
        outcome: UploadOutcome | None = None
        if wait:
            outcome = await _wait_for(accepted.outcome, wait_s)
        body = upload_result_view(accepted.upload, outcome, accepted.findings)
        return JSONResponse(body.model_dump(mode="json"), status_code=201 if outcome is not None else 202)

    @app.get(
        "/api/v1/plan/latest",
        dependencies=read,
        summary="The active plan (docs/interfaces.md: plan)",
        response_model=Plan,
        responses={404: {"model": ErrorOut, "description": "No plan yet"}},
    )
    async def latest_plan() -> Response:
        """The plan the edges should be running, as the plan document; ``X-Upload-Id`` and
        ``X-Plan-Trigger`` say where it came from."""
        stored = service.state.plan
        if stored is None:
            raise HTTPException(404, "no plan yet: upload a day-ahead first")
        return Response(
            stored.plan.to_json(),
            media_type="application/json",
            headers={"X-Upload-Id": stored.upload_id, "X-Plan-Trigger": stored.trigger},
        )

    @app.get("/api/v1/cabinets", dependencies=read, response_model=list[CabinetOut], summary="Edge status")
    async def cabinets() -> list[CabinetOut]:
        """Per cabinet: OPC UA connection, latest telemetry and mode, and the last push outcome."""
        telemetry = service.telemetry()
        connected = service.connected()
        pushes = service.state.push_outcomes()
        plan = service.state.plan
        views = []
        for cabinet_id in service.site.cabinet_ids:
            t = telemetry.get(cabinet_id)
            push = pushes.get(cabinet_id)
            expected = (
                plan.plan.schedule_for(cabinet_id).schedule_id
                if plan is not None and cabinet_id in plan.plan.cabinets
                else None
            )
            views.append(
                CabinetOut(
                    cabinet_id=cabinet_id,
                    connected=bool(connected.get(cabinet_id, False)),
                    mode=None if t is None else t.mode.value,
                    runs_active_plan=t is not None and expected is not None and t.schedule_id == expected,
                    telemetry=None if t is None else telemetry_view(t),
                    last_push=None if push is None else push_view(push),
                )
            )
        return views

    @app.post(
        "/api/v1/optimize",
        dependencies=[Depends(access.require(ApiRole.OPERATOR, AuditAction.OPTIMIZE))],
        response_model=RunOut,
        summary="Re-optimize now",
        responses={
            202: {"model": RunOut, "description": "Started; not finished within the wait"},
            409: {"model": RunOut, "description": "Nothing to optimize (no upload, or it is over)"},
            500: {"model": RunOut, "description": "The optimization failed (see message)"},
            **auth_errors,
        },
    )
    async def optimize(
        request: Request,
        wait: Annotated[bool, Query(description="Wait for the plan and the push outcomes")] = True,
    ) -> Response:
        """Optimize the rest of the active upload from the current interval with live SoC, and push."""
        future = service.request_optimization(RunTrigger.MANUAL)
        result: RunResult | None = None
        if wait:
            result = await _wait_for(future, wait_s)
        if result is None:
            audit_note(request, "started, not waited for")
            return JSONResponse({"detail": "optimization started"}, status_code=202)
        plan_id = "no plan" if result.plan is None else f"plan {result.plan.plan.plan_id}"
        audit_note(request, f"{plan_id}: {result.message}")
        status = 409 if result.skipped else (200 if result.ok else 500)
        return JSONResponse(run_view(result).model_dump(mode="json"), status_code=status)

    @app.post(
        "/api/v1/cabinets/{cabinet_id}/reset-interlock",
        response_model=ResetOut,
        summary="Reset a cabinet's latched interlock",
        responses={
            404: {"model": ErrorOut, "description": "No such cabinet in the site"},
            409: {"model": ResetOut, "description": "The edge refused the reset (its message says why)"},
            503: {"model": ErrorOut, "description": "The edge could not be asked (the reason says why)"},
            **auth_errors,
        },
    )
    async def reset_interlock(
        request: Request,
        cabinet_id: Annotated[str, Path(description="The cabinet's id in the site file")],
        principal: Principal = operator,
    ) -> Response:
        """Call the edge's ``ResetInterlock`` over OPC UA and return its ``Accepted`` and ``Message``.

        The edge clears a latched interlock only if its condition is gone; every call is logged and
        written to the audit trail with the token and the client that asked."""
        if cabinet_id not in service.site.cabinet_ids:
            audit_note(request, f"no cabinet {cabinet_id!r}")
            raise HTTPException(
                404, f"no cabinet {cabinet_id!r} in the site (it has {', '.join(service.site.cabinet_ids)})"
            )
        who = f"token {principal.name!r} from {client_address(request)}"
        try:
            decision = await service.reset_interlock(cabinet_id, who)
        except EdgeUnreachableError as exc:
            audit_note(request, f"{cabinet_id}: not sent: {exc}")
            raise HTTPException(503, f"reset-interlock of {cabinet_id} not sent: {exc}") from None
        verdict = "accepted" if decision.accepted else "refused"
        audit_note(request, f"{cabinet_id}: {verdict} by the edge: {decision.message}")
        body = ResetOut(cabinet_id=cabinet_id, accepted=decision.accepted, message=decision.message)
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if decision.accepted else 409)

    @app.get("/api/v1/status", dependencies=read, response_model=StatusOut, summary="Readiness and reasons")
    async def status() -> StatusOut:
        """``ok``, or ``degraded`` with every reason (cabinet tripped, edge unreachable, no valid plan,
        active upload without plan, plan with violations, solve failed, ...). Always 200."""
        return await status_view(service)

    @app.get("/healthz", response_model=HealthOut, summary="Liveness and status")
    async def healthz() -> HealthOut:
        """Always 200 while the service runs; ``status`` is ``degraded`` with the reasons in ``problems``."""
        return await health_view(service)

    @app.get(
        "/metrics",
        dependencies=read,
        response_class=PlainTextResponse,
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(service.metrics_text(), media_type=service.metrics_content_type)

    return app


async def _active_upload_view(service: CentralService) -> Any:
    upload = service.state.upload
    if upload is None:
        return None
    record = await asyncio.to_thread(service.store.upload_record, upload.upload_id)
    planning = "pending" if record is None else record.planning.value
    return upload_view(upload, planning, None if record is None else record.superseded_by)


async def status_view(service: CentralService) -> StatusOut:
    found = findings(service.health_snapshot())
    state = service.state
    return StatusOut(
        status="degraded" if found else "ok",
        reasons=[finding_view(f) for f in found],
        now=format_utc(service.clock.now()),
        upload=await _active_upload_view(service),
        plan=None if state.plan is None else plan_view(state.plan),
        recovery=service.recovery,
        edges_connected={cab: bool(service.connected().get(cab, False)) for cab in service.site.cabinet_ids},
    )


async def health_view(service: CentralService) -> HealthOut:
    state = service.state
    found = findings(service.health_snapshot())
    next_runs = service.next_run_times()
    jobs = {name: job_view(job, next_runs.get(name)) for name, job in state.jobs().items()}
    return HealthOut(
        status="degraded" if found else "ok",
        problems=[f.detail for f in found],
        reasons=[finding_view(f) for f in found],
        version=__version__,
        site=service.site.site.name,
        now=format_utc(service.clock.now()),
        upload=await _active_upload_view(service),
        plan=None if state.plan is None else plan_view(state.plan),
        edges_connected={cab: bool(service.connected().get(cab, False)) for cab in service.site.cabinet_ids},
        jobs=jobs,
    )


def _format_of(content_type: str) -> str:
    media = content_type.split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return "json"
    if media in CSV_TYPES:
        return "csv"
    raise HTTPException(
        415, f"Content-Type {media or '(none)'!r} is not accepted: send application/json or text/csv"
    )


async def _read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, at most ``max_bytes`` (413), within ``timeout_s`` (408: a client that sent less
    than its Content-Length must not hold the request open for ever)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"upload larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise HTTPException(413, f"upload larger than {max_bytes} bytes")
                chunks.append(chunk)
    except TimeoutError:
        log.warning(
            "upload from %s: body incomplete after %g s (%d of %s bytes); answered 408",
            client_address(request),
            timeout_s,
            size,
            declared or "?",
        )
        raise HTTPException(
            408,
            f"request body incomplete after {timeout_s:g} s ({size} of {declared or '?'} bytes received)",
            {"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _refused(exc: UploadError) -> JSONResponse:
    problems = [ProblemOut(location=p.location, message=p.message) for p in exc.problems]
    body = ErrorOut(detail=f"upload refused: {exc}", problems=problems)
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


async def _wait_for(future: asyncio.Future[T], timeout_s: float) -> T | None:
    """The future's result, or None when it is not done within ``timeout_s`` (the run goes on
    regardless) or was cancelled because the service is stopping."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout=timeout_s)
    except TimeoutError:
        return None
    except asyncio.CancelledError:
        if future.cancelled():  # the run was cancelled (service stopping), not this request
            return None
        raise
