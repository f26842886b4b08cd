"""What the service needs from the optimizer and from the edge fleet.

The production implementations are :func:`dispatch_optimizer` (``central.dispatch``) and
``central.edge_link.EdgeFleet``; they are imported lazily so the service modules load without the solver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from shared.dayahead import DayAhead
from shared.edge_api import EdgeTelemetry
from shared.plan import Plan
from shared.site import SiteConfig


class PushOutcomeLike(Protocol):
    """One edge's answer to a plan push (``central.edge_link.PushOutcome``)."""

    @property
    def cabinet_id(self) -> str: ...

    @property
    def status(self) -> str: ...  # "accepted" | "refused" | "unreachable"

    @property
    def message(self) -> str: ...

    @property
    def at(self) -> datetime: ...

    @property
    def duration_ms(self) -> float: ...

    @property
    def schedule_id(self) -> str: ...


class Fleet(Protocol):
    """The OPC UA client side of every edge (``central.edge_link.EdgeFleet``)."""

    async def push_plan(self, plan: Plan) -> Mapping[str, PushOutcomeLike]: ...

    def telemetry(self) -> Mapping[str, EdgeTelemetry | None]: ...

    def connected(self) -> Mapping[str, bool]: ...

    def last_outcomes(self) -> Mapping[str, PushOutcomeLike]: ...


class Optimizer(Protocol):
    """Builds a plan for a horizon; synchronous and CPU-bound (the service runs it in a worker thread)."""

    def __call__(
        self,
        site: SiteConfig,
        dayahead: DayAhead,
        *,
        time_limit_s: float,
        initial_soc_pct: Mapping[str, float],
        plan_id: str,
        created_at: datetime,
        final_soc_min_pct: Mapping[str, float] | None = None,
        previous_plan: Plan | None = None,
        current_setpoint_kw: Mapping[str, float] | None = None,
    ) -> Plan: ...


def dispatch_optimizer(
    site: SiteConfig,
    dayahead: DayAhead,
    *,
    time_limit_s: float,
    initial_soc_pct: Mapping[str, float],
    plan_id: str,
    created_at: datetime,
    final_soc_min_pct: Mapping[str, float] | None = None,
    previous_plan: Plan | None = None,
    current_setpoint_kw: Mapping[str, float] | None = None,
) -> Plan:
    """The economic dispatch LP of docs/interfaces.md: economic dispatch (``central.dispatch``), with the
    second stage when ``[central] plan_smoothing``: among the cost-optimal plans, the one closest to
    ``previous_plan`` (the plan the edges run), then the smoothest from ``current_setpoint_kw``."""
    from central.dispatch import DispatchOptions, optimize

    return optimize(
        site,
        dayahead,
        options=DispatchOptions(time_limit_s=time_limit_s, smoothing=site.central.plan_smoothing),
        initial_soc_pct=initial_soc_pct,
        plan_id=plan_id,
        created_at=created_at,
        final_soc_min_pct=final_soc_min_pct,
        previous_plan=previous_plan,
        current_setpoint_kw=current_setpoint_kw,
    )


def live_setpoints_kw(
    telemetry: Mapping[str, EdgeTelemetry | None], connected: Mapping[str, bool]
) -> dict[str, float]:
    """The setpoint [kW] each connected edge runs now (what a re-plan starts from); others are unknown."""
    return {
        cabinet_id: snapshot.setpoint_kw
        for cabinet_id, snapshot in telemetry.items()
        if snapshot is not None and connected.get(cabinet_id, False) and math.isfinite(snapshot.setpoint_kw)
    }
