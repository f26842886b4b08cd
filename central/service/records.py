"""What the service stores and reads back: uploads with their planning state, plans, push outcomes,
telemetry samples (frozen records; :mod:`central.service.store` writes and reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from central.edge_link.outcome import PushStatus
from shared.dayahead import DayAhead
from shared.plan import Plan


class UploadPlanning(StrEnum):
    """Where an accepted upload is in the planning queue (stored as its value)."""

    PENDING = "pending"  # stored; its optimization is still to run (also across a restart)
    PLANNED = "planned"  # a usable plan of it was stored
    FAILED = "failed"  # its optimization made no usable plan (the edges kept the plan they had)
    SUPERSEDED = "superseded"  # a newer upload arrived before its optimization started
    EXPIRED = "expired"  # it was over when its turn came


@dataclass(frozen=True)
class UploadRecord:
    """An upload's planning state, as stored."""

    upload_id: str
    received_at: datetime
    planning: UploadPlanning
    superseded_by: str | None


@dataclass(frozen=True)
class Claim:
    """What :meth:`Store.claim_newest_pending` took: the upload to optimize and those it superseded."""

    upload_id: str | None
    superseded: tuple[str, ...]


@dataclass(frozen=True)
class StoredUpload:
    """An accepted day-ahead upload."""

    upload_id: str
    received_at: datetime
    source_format: str  # "json" | "csv"
    sha256: str  # of the raw body as received
    dayahead: DayAhead


@dataclass(frozen=True)
class StoredPlan:
    """A plan with where it came from."""

    plan: Plan
    upload_id: str
    trigger: str  # a RunTrigger value: "upload" | "schedule" | "manual"
    stored_at: datetime


@dataclass(frozen=True)
class PushRecord:
    """The outcome of pushing one plan to one edge."""

    plan_id: str
    cabinet_id: str
    status: PushStatus
    message: str
    at: datetime
    duration_ms: float


@dataclass(frozen=True)
class TelemetrySample:
    """One cabinet's telemetry at ``at`` (simulated time)."""

    at: datetime
    cabinet_id: str
    soc_pct: float
    active_power_kw: float  # + discharge
    setpoint_kw: float  # + discharge
    mode: str
    schedule_id: str
    interlock_active: bool
    interlock_reason: str
