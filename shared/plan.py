"""The plan (docs/interfaces.md: plan): output of ``ems optimize`` and of the central service."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from shared.schedule import CabinetSchedule
from shared.timeutil import ensure_utc, format_utc

UtcDateTime = Annotated[datetime, PlainSerializer(format_utc, return_type=str, when_used="json")]


class DispatchMethod(StrEnum):
    """How the dispatch is solved (docs/dispatch.md: methods): ``exact`` (the single LP), ``block_ipm``
    (the certified block interior point for large sites) or ``auto`` (by size; a plan says which ran)."""

    AUTO = "auto"
    EXACT = "exact"
    BLOCK_IPM = "block_ipm"


class PlanStatus(StrEnum):
    OPTIMAL = "optimal"
    OPTIMAL_WITH_VIOLATIONS = "optimal_with_violations"
    FAILED = "failed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectiveBreakdown(_Model):
    """Cost components [currency]; ``total`` is the LP's optimal value.

    total = energy_cost - export_revenue + cycle_cost + demand_charge + imbalance_cost + penalties
    """

    total: float = 0.0
    energy_cost: float = 0.0
    export_revenue: float = 0.0
    cycle_cost: float = 0.0
    demand_charge: float = 0.0
    imbalance_cost: float = 0.0
    penalties: float = 0.0


class CabinetPlan(_Model):
    setpoint_kw: list[float]  # d - c per interval, + discharge
    soc_pct: list[float]  # at interval end


class SolverInfo(_Model):
    backend: str
    build_s: float = 0.0
    solve_s: float = 0.0  # every HiGHS run of the optimization, the second stage included
    stage2_s: float = 0.0  # the part of solve_s spent in the second stage (plan quality)
    message: str = ""
    # The method that ran (never auto), a valid lower bound on the LP's optimum and the plan's gap to it
    # [%, 100 (total - lower_bound) / max(|total|, 1)]; null in plans written before they existed, and the
    # bound and gap null when no finite bound is known (a failed plan).
    method: DispatchMethod | None = None
    lower_bound: float | None = None
    gap_pct: float | None = None


class PlanQuality(_Model):
    """How smooth and stable the plan is (docs/interfaces.md: plan quality).

    ``cost_optimum`` is the LP's optimal cost; the plan's ``objective.total`` is within ``cost_tolerance_rel``
    of it (0 when the second stage is off: the plan is then the LP's first optimal vertex).
    ``total_variation_kw``: ``sum_t |p[t] - p[t-1]|`` per cabinet, from the cabinet's setpoint at the time
    of planning when it was known. ``deviation_from_previous_kw``: ``sum_t |p[t] - previous[t]|`` per
    cabinet over the intervals the previous plan also covers; null when no previous plan was given.
    """

    cost_tolerance_rel: float
    cost_optimum: float
    total_variation_kw: dict[str, float]
    deviation_from_previous_kw: dict[str, float] | None = None


class Plan(_Model):
    plan_id: str
    created_at: UtcDateTime
    start: UtcDateTime
    interval_minutes: int = Field(ge=1, le=1440)
    status: PlanStatus
    objective: ObjectiveBreakdown
    grid_kw: list[float]  # + import
    pv_used_kw: list[float]
    cabinets: dict[str, CabinetPlan]
    violations: list[str] = Field(default_factory=list)
    solver: SolverInfo
    quality: PlanQuality | None = None  # null for a failed plan (and in plans written before it existed)

    @field_validator("created_at", "start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return ensure_utc(value)

    @property
    def steps(self) -> int:
        return len(self.grid_kw)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.interval_minutes * self.steps)

    def schedule_for(self, cabinet_id: str) -> CabinetSchedule:
        """The cabinet's setpoint schedule (what the central pushes to its edge)."""
        return CabinetSchedule(
            schedule_id=f"{self.plan_id}/{cabinet_id}",
            start=self.start,
            interval_s=self.interval_minutes * 60,
            setpoints_kw=tuple(self.cabinets[cabinet_id].setpoint_kw),
        )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        return cls.model_validate_json(text)
