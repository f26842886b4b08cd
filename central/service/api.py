"""The HTTP API (FastAPI; OpenAPI document at ``/openapi.json``, interactive docs at ``/docs``).

Endpoints:
- ``POST /api/v1/day-ahead``: a JSON or CSV day-ahead upload (docs/interfaces.md: day-ahead upload); starts
  an optimization
  and by default waits for its plan and push outcomes.
- ``GET /api/v1/plan/latest``: the active plan, exactly the plan document of docs/interfaces.md: plan.
- ``GET /api/v1/cabinets``: per edge: connection, telemetry, mode, last push outcome.
- ``POST /api/v1/optimize``: re-optimize now.
- ``GET /healthz``: liveness and a status summary (jobs, edges, active upload and plan).
- ``GET /metrics``: Prometheus text.

Access (docs/security.md): uploads need an ``uploader`` token, optimize an ``operator`` token, reads are
open on a loopback address and need a ``viewer`` token elsewhere (unless ``[central] public_reads``); every
write is audited. The audit, token and stream-cookie endpoints are in :mod:`central.service.api_access`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from central.service.access import AuditMiddleware, audit_note
from central.service.api_access import access_router
from central.service.audit import AuditAction
from central.service.jobs import TRIGGER_MANUAL
from central.service.state import JobStatus, RunResult
from central.service.store import PushRecord, StoredPlan, StoredUpload
from central.service.tokens import ApiRole
from shared import __version__
from shared.edge_api import EdgeTelemetry
from shared.errors import UploadError
from shared.plan import Plan
from shared.timeutil import format_utc

if TYPE_CHECKING:
    from central.service.app import CentralService

JSON_TYPES = ("application/json",)
CSV_TYPES = ("text/csv", "application/csv")
# How long a write request waits for its optimization run beyond the solver and push limits [s].
WAIT_MARGIN_S = 10.0


# ------------------------------------------------------------------------------------------ models


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ProblemOut(_Out):
    location: str = Field(description="Field, row or key that is wrong ('' for the whole upload)")
    message: str


class ErrorOut(_Out):
    detail: str
    problems: list[ProblemOut] = Field(default_factory=list)


class UploadOut(_Out):
    upload_id: str
    received_at: str
    format: str
    sha256: str
    start: str
    end: str
    interval_minutes: int
    steps: int
    initial_soc_pct: dict[str, float]


class PushOut(_Out):
    plan_id: str
    cabinet_id: str
    status: str = Field(description="accepted | refused | unreachable")
    message: str
    at: str
    duration_ms: float


class CabinetPlanOut(_Out):
    first_setpoint_kw: float = Field(description="Setpoint of the plan's first interval [kW], + discharge")
    max_discharge_kw: float
    max_charge_kw: float
    final_soc_pct: float


class PlanSummaryOut(_Out):
    plan_id: str
    upload_id: str
    trigger: str
    created_at: str
    status: str
    start: str
    end: str
    interval_minutes: int
    steps: int
    objective_total: float
    violations: list[str]
    solver_backend: str
    solve_s: float
    cabinets: dict[str, CabinetPlanOut]


class SocOut(_Out):
    soc_pct: float
    source: str = Field(description="upload | telemetry | default")


class RunOut(_Out):
    trigger: str
    ok: bool
    skipped: bool
    message: str
    started_at: str
    finished_at: str
    optimize_wall_s: float
    initial_soc: dict[str, SocOut]
    plan: PlanSummaryOut | None
    push: dict[str, PushOut]


class FindingOut(_Out):
    location: str = Field(description="Field, series index or key the finding is about")
    message: str = Field(description="What is implausible, and the unit probably meant")
    severity: str = Field(description="warning | note (an error refuses the upload)")
    kind: str = Field(description="wrong_unit | load_beyond_supply | edge_hard_limit | no_initial_soc")


class UploadResultOut(_Out):
    upload: UploadOut
    run: RunOut | None = Field(description="The optimization the upload started; null while it still runs")
    message: str
    warnings: list[FindingOut] = Field(
        default_factory=list, description="Plausibility warnings and notes of the accepted upload"
    )


class TelemetryOut(_Out):
    soc_pct: float
    active_power_kw: float
    setpoint_kw: float
    charge_limit_kw: float
    discharge_limit_kw: float
    mode: str
    schedule_id: str
    schedule_valid_until: str | None
    interlock_active: bool
    interlock_reason: str
    cycle_time_p99_ms: float


class CabinetOut(_Out):
    cabinet_id: str
    connected: bool
    mode: str | None
    runs_active_plan: bool = Field(description="The edge reports the active plan's schedule")
    telemetry: TelemetryOut | None
    last_push: PushOut | None


class JobOut(_Out):
    name: str
    runs: int
    failures: int
    running: bool
    last_started_at: str | None
    last_finished_at: str | None
    last_ok: bool | None
    last_message: str
    next_run_wall_time: str | None


class HealthOut(_Out):
    status: Literal["ok", "degraded"]
    problems: list[str]
    version: str
    site: str
    now: str
    upload: UploadOut | None
    plan: PlanSummaryOut | None
    edges_connected: dict[str, bool]
    jobs: dict[str, JobOut]


class DayAheadJson(BaseModel):
    """The JSON form of a day-ahead upload (docs/interfaces.md); for the OpenAPI document."""

    start: str = Field(examples=["2026-11-24T00:00:00Z"], description="UTC, ISO 8601 with Z")
    interval_minutes: int = Field(ge=1, le=1440)
    import_price_per_kwh: list[float]
    export_price_per_kwh: list[float] | None = None
    load_kw: list[float]
    pv_kw: list[float] | None = None
    grid_commitment_kw: list[float] | None = None
    initial_soc_pct: dict[str, float] | None = None


# ------------------------------------------------------------------------------------------- views


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_utc(value)


def upload_view(upload: StoredUpload) -> UploadOut:
    d = upload.dayahead
    return UploadOut(
        upload_id=upload.upload_id,
        received_at=format_utc(upload.received_at),
        format=upload.source_format,
        sha256=upload.sha256,
        start=format_utc(d.start),
        end=format_utc(d.end),
        interval_minutes=d.interval_minutes,
        steps=d.steps,
        initial_soc_pct=dict(d.initial_soc_pct),
    )


def push_view(record: PushRecord) -> PushOut:
    return PushOut(
        plan_id=record.plan_id,
        cabinet_id=record.cabinet_id,
        status=record.status,
        message=record.message,
        at=format_utc(record.at),
        duration_ms=record.duration_ms,
    )


def plan_view(stored: StoredPlan) -> PlanSummaryOut:
    plan = stored.plan
    cabinets = {
        cabinet_id: CabinetPlanOut(
            first_setpoint_kw=cab.setpoint_kw[0] if cab.setpoint_kw else 0.0,
            max_discharge_kw=max([0.0, *cab.setpoint_kw]),
            max_charge_kw=max([0.0, *(-v for v in cab.setpoint_kw)]),
            final_soc_pct=cab.soc_pct[-1] if cab.soc_pct else float("nan"),
        )
        for cabinet_id, cab in plan.cabinets.items()
    }
    return PlanSummaryOut(
        plan_id=plan.plan_id,
        upload_id=stored.upload_id,
        trigger=stored.trigger,
        created_at=format_utc(plan.created_at),
        status=plan.status.value,
        start=format_utc(plan.start),
        end=format_utc(plan.end),
        interval_minutes=plan.interval_minutes,
        steps=plan.steps,
        objective_total=plan.objective.total,
        violations=list(plan.violations),
        solver_backend=plan.solver.backend,
        solve_s=plan.solver.solve_s,
        cabinets=cabinets,
    )


def run_view(result: RunResult) -> RunOut:
    return RunOut(
        trigger=result.trigger,
        ok=result.ok,
        skipped=result.skipped,
        message=result.message,
        started_at=format_utc(result.started_at),
        finished_at=format_utc(result.finished_at),
        optimize_wall_s=result.optimize_wall_s,
        initial_soc={
            cab: SocOut(soc_pct=c.soc_pct, source=c.source) for cab, c in result.initial_soc.items()
        },
        plan=None if result.plan is None else plan_view(result.plan),
        push={cab: push_view(r) for cab, r in sorted(result.outcomes.items())},
    )


def telemetry_view(t: EdgeTelemetry) -> TelemetryOut:
    return TelemetryOut(
        soc_pct=t.soc_pct,
        active_power_kw=t.active_power_kw,
        setpoint_kw=t.setpoint_kw,
        charge_limit_kw=t.charge_limit_kw,
        discharge_limit_kw=t.discharge_limit_kw,
        mode=t.mode.value,
        schedule_id=t.schedule_id,
        schedule_valid_until=_time(t.schedule_valid_until),
        interlock_active=t.interlock_active,
        interlock_reason=t.interlock_reason,
        cycle_time_p99_ms=t.cycle_time_p99_ms,
    )


def job_view(job: JobStatus, next_run: datetime | None) -> JobOut:
    return JobOut(
        name=job.name,
        runs=job.runs,
        failures=job.failures,
        running=job.running,
        last_started_at=_time(job.last_started_at),
        last_finished_at=_time(job.last_finished_at),
        last_ok=job.last_ok,
        last_message=job.last_message,
        next_run_wall_time=_time(next_run),
    )


# --------------------------------------------------------------------------------------------- app


def create_app(service: CentralService) -> FastAPI:
    """The API of one running service."""
    app = FastAPI(
        title="hybrid-ems central service",
        version=__version__,
        description="Day-ahead upload, plans, edge status and metrics of one battery storage site.",
    )
    wait_s = service.site.central.solver_time_limit_s + service.site.central.push_timeout_s + WAIT_MARGIN_S
    access = service.access
    app.add_middleware(AuditMiddleware, trail=access.trail)
    app.include_router(access_router(access, service.audit_log, service.config.tokens_file))
    read = [Depends(access.reader())]
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
        raw = await _read_body(request, service.max_upload_bytes)
        try:
            accepted = await service.accept_upload(raw, fmt)
        except UploadError as exc:
            audit_note(request, f"refused: {exc}")
            return _refused(exc)
        audit_note(request, f"upload {accepted.upload.upload_id} sha256 {accepted.upload.sha256[:16]}")
        run = await _wait_for(accepted.run, wait_s) if wait else None
        message = f"upload {accepted.upload.upload_id} accepted" + (
            f"; {run.message}" if run is not None else "; optimizing"
        )
        body = UploadResultOut(
            upload=upload_view(accepted.upload),
            run=None if run is None else run_view(run),
            message=message,
            warnings=[
                FindingOut(location=f.location, message=f.text, severity=f.severity, kind=f.kind)
                for f in accepted.findings
            ],
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=201 if run is not None else 202)

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
        future = service.request_optimization(TRIGGER_MANUAL)
        result = await _wait_for(future, wait_s) if wait else None
        if result is None:
            audit_note(request, "started, not waited for")
            return JSONResponse({"detail": "optimization started"}, status_code=202)
        plan_id = "no plan" if result.plan is None else f"plan {result.plan.plan.plan_id}"
        audit_note(request, f"{plan_id}: {result.message}")
        status = 409 if result.skipped else (200 if result.ok else 500)
        return JSONResponse(run_view(result).model_dump(mode="json"), status_code=status)

    @app.get("/healthz", response_model=HealthOut, summary="Liveness and status")
    async def healthz() -> HealthOut:
        """Always 200 while the service runs; ``status`` is ``degraded`` with the reasons in ``problems``."""
        return health_view(service)

    @app.get(
        "/metrics",
        dependencies=read,
        response_class=PlainTextResponse,
        summary="Prometheus metrics",
    )
    async def metrics() -> Response:
        return Response(service.metrics_text(), media_type=service.metrics_content_type)

    return app


def health_view(service: CentralService) -> HealthOut:
    state = service.state
    connected = {cab: bool(service.connected().get(cab, False)) for cab in service.site.cabinet_ids}
    next_runs = service.next_run_times()
    jobs = {name: job_view(job, next_runs.get(name)) for name, job in state.jobs().items()}
    problems = [f"job {job.name}: {job.last_message}" for job in jobs.values() if job.last_ok is False]
    problems += [f"edge {cab} not connected" for cab, up in connected.items() if not up]
    if state.plan is not None and state.plan.plan.end > service.clock.now():
        pushes = state.push_outcomes()
        plan_id = state.plan.plan.plan_id
        for cab in service.site.cabinet_ids:
            push = pushes.get(cab)
            if push is None or push.plan_id != plan_id or push.status != "accepted":
                shown = (
                    "not pushed"
                    if push is None or push.plan_id != plan_id
                    else f"{push.status}: {push.message}"
                )
                problems.append(f"edge {cab} has not accepted the active plan ({shown})")
    now = service.clock.now()
    if state.upload is not None and state.upload.dayahead.end <= now:
        problems.append(f"the active upload ended at {format_utc(state.upload.dayahead.end)}")
    return HealthOut(
        status="degraded" if problems else "ok",
        problems=problems,
        version=__version__,
        site=service.site.site.name,
        now=format_utc(now),
        upload=None if state.upload is None else upload_view(state.upload),
        plan=None if state.plan is None else plan_view(state.plan),
        edges_connected=connected,
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


async def _read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"upload larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, f"upload larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _refused(exc: UploadError) -> JSONResponse:
    problems = [ProblemOut(location=p.location, message=p.message) for p in exc.problems]
    body = ErrorOut(detail=f"upload refused: {exc}", problems=problems)
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


async def _wait_for(future: asyncio.Future[RunResult], timeout_s: float) -> RunResult | None:
    """The run's result, or None when it is not done within ``timeout_s`` (it goes on regardless)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout=timeout_s)
    except TimeoutError:
        return None
    except asyncio.CancelledError:
        if future.cancelled():  # the run was cancelled (service stopping), not this request
            return None
        raise
