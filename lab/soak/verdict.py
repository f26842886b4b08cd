"""What every invariant returns and the bounds they apply (the checkers are in :mod:`lab.soak.invariants`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class InvariantName(StrEnum):
    """The invariants, as keyed in ``summary.json`` and the ``--json`` line."""

    POC_LIMITS = "poc_limits"
    DEVICE_FAULT_SAFE_STATE = "device_fault_safe_state"
    NO_STALE_SCHEDULE = "no_stale_schedule"
    LATEST_PLAN_AFTER_HEAL = "latest_plan_after_heal"
    UPLOADS_PLANNED = "uploads_planned"
    DATABASE_INTEGRITY = "database_integrity"
    RESOURCE_GROWTH = "resource_growth"
    COST_VS_PLAN = "cost_vs_plan"


POC_LIMITS = InvariantName.POC_LIMITS
DEVICE_FAULT_SAFE_STATE = InvariantName.DEVICE_FAULT_SAFE_STATE
NO_STALE_SCHEDULE = InvariantName.NO_STALE_SCHEDULE
LATEST_PLAN_AFTER_HEAL = InvariantName.LATEST_PLAN_AFTER_HEAL
UPLOADS_PLANNED = InvariantName.UPLOADS_PLANNED
DATABASE_INTEGRITY = InvariantName.DATABASE_INTEGRITY
RESOURCE_GROWTH = InvariantName.RESOURCE_GROWTH
COST_VS_PLAN = InvariantName.COST_VS_PLAN
NAMES = tuple(InvariantName)
MAX_LISTED = 3  # violations named in a detail line


@dataclass(frozen=True)
class Bounds:
    """Every bound the invariants apply (simulated seconds unless the name says wall or ms)."""

    import_limit_kw: float
    export_limit_kw: float
    limit_tolerance_kw: float  # meter resolution: within this of a limit is "at" it
    poc_reaction_s: float  # longest time over a PoC limit
    reaction_ms: float  # device fault -> safe state at the device [wall ms] (2 control cycles)
    probe_poll_ms: float  # added when the reaction was timed by polling instead of at the device
    observation_grace_s: float  # an edge's change shows in the samples within this
    heal_bound_s: float  # partition healed -> the edge runs the latest plan
    fault_settle_s: float  # after a fault, this long still counts as its window (cost)
    cost_rel: float  # realised within this share of the planned cost's magnitude ...
    cost_abs_per_interval: float  # ... plus this much per clean interval [currency]
    rss_growth_mb: float  # per process incarnation, after the warm-up ...
    rss_growth_rel: float  # ... or this share of its RSS after the warm-up, whichever is larger
    threads_growth: int
    fds_growth: int
    warmup_wall_s: float  # resources are compared from this long after a process started
    min_span_wall_s: float  # incarnations shorter than this (after the warm-up) are not judged


@dataclass(frozen=True)
class InvariantResult:
    name: InvariantName
    passed: bool
    detail: str
    first_violation_s: float | None = None  # simulated time of the first violation (for the replay)

    def as_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "detail": self.detail}


def listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:MAX_LISTED])
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return shown + more


def plan_id_of(schedule_id: str) -> str:
    """The plan a pushed schedule belongs to (schedule ids are ``PLAN_ID/CABINET_ID``)."""
    return schedule_id.rsplit("/", 1)[0]
