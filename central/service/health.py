"""Is the site served as planned? The reasons the service is ``degraded``, from one snapshot of its state.

The same findings feed ``/healthz`` (liveness, always 200), ``GET /api/v1/status`` and ``/metrics``
(``ems_central_degraded``, ``ems_central_degraded_reason{reason=...}``), so the three never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from central.edge_link.outcome import PushStatus
from central.service.state import JobStatus, RunResult
from central.service.store import PushRecord, StoredPlan, StoredUpload
from shared.edge_api import EdgeMode, EdgeTelemetry
from shared.timeutil import format_utc


class DegradedReason(StrEnum):
    """Why the service is ``degraded`` (the ``reason`` label of ``ems_central_degraded_reason``)."""

    CABINET_TRIPPED = "cabinet_tripped"  # an edge reports a latched interlock (mode tripped): needs a reset
    CABINET_HOLDING = "cabinet_holding"  # an edge holds without a setpoint (lost its devices); ends by itself
    EDGE_UNREACHABLE = "edge_unreachable"  # no OPC UA session to an edge
    NO_VALID_PLAN = "no_valid_plan"  # no plan, or the newest one is over: the edges run their fallback
    ACTIVE_UPLOAD_WITHOUT_PLAN = "active_upload_without_plan"  # the edges run an older upload's plan
    PLAN_WITH_VIOLATIONS = "plan_with_violations"  # the active plan names violations (e.g. unserved load)
    SOLVE_FAILED = "solve_failed"  # the latest optimization run made no plan
    PLAN_NOT_ACCEPTED = "plan_not_accepted"  # a connected edge has not accepted the active plan
    JOB_FAILED = "job_failed"  # a scheduled job (telemetry sampling, pruning, push-sync) failed


# Jobs whose failure is a run's outcome, reported as solve_failed or no_valid_plan instead.
RUN_JOBS = frozenset({"planning", "reoptimize"})


@dataclass(frozen=True)
class Finding:
    """One reason, where (a cabinet, or None for the site) and what exactly."""

    reason: DegradedReason
    detail: str
    cabinet_id: str | None = None

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class HealthSnapshot:
    """What the findings are computed from, taken at one moment."""

    now: datetime
    upload: StoredUpload | None
    plan: StoredPlan | None
    last_run: RunResult | None
    push: Mapping[str, PushRecord]
    connected: Mapping[str, bool]
    connection_errors: Mapping[str, str]
    telemetry: Mapping[str, EdgeTelemetry | None]
    jobs: Mapping[str, JobStatus]
    cabinet_ids: tuple[str, ...]


def findings(snapshot: HealthSnapshot) -> list[Finding]:
    """Every reason the service is degraded now; empty when it is ``ok``."""
    return [
        *_plan_findings(snapshot),
        *_run_findings(snapshot),
        *_edge_findings(snapshot),
    ]


def _plan_findings(s: HealthSnapshot) -> list[Finding]:
    out: list[Finding] = []
    plan = s.plan
    if plan is None:
        out.append(Finding(DegradedReason.NO_VALID_PLAN, "no plan yet: the edges run their fallback"))
    elif plan.plan.end <= s.now:
        ended = f"the newest plan {plan.plan.plan_id} ended at {format_utc(plan.plan.end)}"
        out.append(Finding(DegradedReason.NO_VALID_PLAN, f"{ended}: the edges run their fallback"))
    elif plan.plan.violations:
        shown = "; ".join(plan.plan.violations)
        out.append(Finding(DegradedReason.PLAN_WITH_VIOLATIONS, f"plan {plan.plan.plan_id}: {shown}"))
    upload = s.upload
    unplanned = upload is not None and (plan is None or plan.upload_id != upload.upload_id)
    if upload is not None and unplanned and upload.dayahead.end > s.now:
        served = (
            "there is no plan to run"
            if plan is None
            else f"the edges get plan {plan.plan.plan_id} of upload {plan.upload_id}"
        )
        detail = f"the active upload {upload.upload_id} has no plan yet; {served}"
        out.append(Finding(DegradedReason.ACTIVE_UPLOAD_WITHOUT_PLAN, detail))
    if upload is not None and upload.dayahead.end <= s.now:
        detail = f"the active upload {upload.upload_id} ended at {format_utc(upload.dayahead.end)}"
        out.append(Finding(DegradedReason.NO_VALID_PLAN, f"{detail}: upload a new day-ahead"))
    return out


def _run_findings(s: HealthSnapshot) -> list[Finding]:
    out: list[Finding] = []
    run = s.last_run
    if run is not None and not run.ok and not run.skipped:
        out.append(Finding(DegradedReason.SOLVE_FAILED, run.message))
    for name, job in sorted(s.jobs.items()):
        if job.last_ok is False and name not in RUN_JOBS:
            out.append(Finding(DegradedReason.JOB_FAILED, f"job {name}: {job.last_message}"))
    return out


def _edge_findings(s: HealthSnapshot) -> list[Finding]:
    out: list[Finding] = []
    plan = s.plan
    active = plan is not None and plan.plan.end > s.now
    for cab in s.cabinet_ids:
        if not s.connected.get(cab, False):
            error = s.connection_errors.get(cab) or "not connected"
            out.append(Finding(DegradedReason.EDGE_UNREACHABLE, f"edge {cab} unreachable: {error}", cab))
            continue
        t = s.telemetry.get(cab)
        if t is not None and t.mode is EdgeMode.TRIPPED:
            why = t.interlock_reason or "interlock latched"
            detail = f"cabinet {cab} is tripped: {why} (`ems reset-interlock {cab}` once it is fixed)"
            out.append(Finding(DegradedReason.CABINET_TRIPPED, detail, cab))
        elif t is not None and t.interlock_active:
            why = t.interlock_reason or "communication with its devices lost"
            detail = f"cabinet {cab} holds without a setpoint: {why} (it resumes by itself)"
            out.append(Finding(DegradedReason.CABINET_HOLDING, detail, cab))
        if active and plan is not None and cab in plan.plan.cabinets:
            push = s.push.get(cab)
            if push is None or push.plan_id != plan.plan.plan_id:
                shown = "not pushed yet"
            elif push.status is not PushStatus.ACCEPTED:
                shown = f"{push.status.value}: {push.message}"
            else:
                continue
            detail = f"edge {cab} has not accepted plan {plan.plan.plan_id} ({shown})"
            out.append(Finding(DegradedReason.PLAN_NOT_ACCEPTED, detail, cab))
    return out
