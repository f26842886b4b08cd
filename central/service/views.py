"""The JSON documents of the HTTP API (pydantic models, so they appear in the OpenAPI document) and the
functions that build them from the service's state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from central.service.health import Finding
from central.service.state import JobStatus, RunResult, UploadOutcome
from central.service.store import PushRecord, StoredPlan, StoredUpload
from shared import plausibility
from shared.edge_api import EdgeTelemetry
from shared.timeutil import format_utc

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
    planning: str = Field(description="pending | planned | failed | superseded | expired")
    superseded_by: str | None = Field(description="The newer upload that replaced it before its run")
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
    upload_id: str | None = Field(description="The upload this run optimized")
    ok: bool
    skipped: bool
    message: str
    started_at: str
    finished_at: str
    optimize_wall_s: float
    initial_soc: dict[str, SocOut]
    plan: PlanSummaryOut | None
    push: dict[str, PushOut]


class WarningOut(_Out):
    location: str = Field(description="Field, series index or key the finding is about")
    message: str = Field(description="What is implausible, and the unit probably meant")
    severity: str = Field(description="warning | note (an error refuses the upload)")
    kind: str = Field(description="wrong_unit | load_beyond_supply | edge_hard_limit | no_initial_soc")


class UploadResultOut(_Out):
    upload: UploadOut
    planning: str = Field(
        description="What became of this upload: planned | failed | expired | superseded, or pending while"
        " its run is still going on"
    )
    superseded_by: str | None = Field(description="The newer upload that was optimized instead")
    run: RunOut | None = Field(
        description="This upload's own optimization run; null while it still runs or when superseded"
    )
    message: str
    warnings: list[WarningOut] = Field(
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


class FindingOut(_Out):
    reason: str = Field(
        description="cabinet_tripped | cabinet_holding | edge_unreachable | no_valid_plan |"
        " active_upload_without_plan |"
        " plan_with_violations | solve_failed | plan_not_accepted | job_failed"
    )
    cabinet_id: str | None
    detail: str


class HealthOut(_Out):
    status: Literal["ok", "degraded"]
    problems: list[str]
    reasons: list[FindingOut]
    version: str
    site: str
    now: str
    upload: UploadOut | None
    plan: PlanSummaryOut | None
    edges_connected: dict[str, bool]
    jobs: dict[str, JobOut]


class StatusOut(_Out):
    status: Literal["ok", "degraded"]
    reasons: list[FindingOut]
    now: str
    upload: UploadOut | None = Field(description="The active upload (the newest accepted)")
    plan: PlanSummaryOut | None = Field(description="The plan served to the edges (the newest usable)")
    recovery: str = Field(description="What the service did at start about the stored upload and plan")
    edges_connected: dict[str, bool]


class ResetOut(_Out):
    cabinet_id: str
    accepted: bool = Field(description="The edge's Accepted")
    message: str = Field(description="The edge's Message (or why the edge could not be asked)")


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


def upload_view(upload: StoredUpload, planning: str, superseded_by: str | None = None) -> UploadOut:
    d = upload.dayahead
    return UploadOut(
        upload_id=upload.upload_id,
        received_at=format_utc(upload.received_at),
        planning=planning,
        superseded_by=superseded_by,
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
        status=record.status.value,
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
        trigger=result.trigger.value,
        upload_id=result.upload_id,
        ok=result.ok,
        skipped=result.skipped,
        message=result.message,
        started_at=format_utc(result.started_at),
        finished_at=format_utc(result.finished_at),
        optimize_wall_s=result.optimize_wall_s,
        initial_soc={
            cab: SocOut(soc_pct=c.soc_pct, source=c.source.value) for cab, c in result.initial_soc.items()
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


def finding_view(finding: Finding) -> FindingOut:
    return FindingOut(reason=finding.reason.value, cabinet_id=finding.cabinet_id, detail=finding.detail)


def warning_view(finding: plausibility.Finding) -> WarningOut:
    return WarningOut(
        location=finding.location,
        message=finding.text,
        severity=finding.severity.value,
        kind=finding.kind.value,
    )


def upload_result_view(
    upload: StoredUpload,
    outcome: UploadOutcome | None,
    findings: Sequence[plausibility.Finding] = (),
) -> UploadResultOut:
    """The answer to an upload: its own run, or why it has none (superseded, still running), and the
    upload's plausibility warnings and notes."""
    if outcome is None:
        planning, superseded_by, run = "pending", None, None
        message = f"upload {upload.upload_id} accepted; optimizing"
    else:
        planning, superseded_by, run = outcome.planning.value, outcome.superseded_by, outcome.run
        message = f"upload {upload.upload_id} accepted; " + (
            f"superseded by {superseded_by} before its optimization started (that upload is planned instead)"
            if run is None
            else run.message
        )
    return UploadResultOut(
        upload=upload_view(upload, planning, superseded_by),
        planning=planning,
        superseded_by=superseded_by,
        run=None if run is None else run_view(run),
        message=message,
        warnings=[warning_view(f) for f in findings],
    )
