"""What the service needs from the optimizer and from the edge fleet.

The production implementations are :func:`dispatch_optimizer` (``central.dispatch``) and
``central.edge_link.EdgeFleet``; tests pass their own optimizer to see failures.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from central.edge_link.outcome import PushStatus
from shared.dayahead import DayAhead
from shared.edge_api import Decision, EdgeTelemetry
from shared.plan import Plan
from shared.site import SiteConfig


class PushOutcomeLike(Protocol):
    """One edge's answer to a plan push (``central.edge_link.PushOutcome``)."""

    @property
    def cabinet_id(self) -> str: ...

    @property
    def status(self) -> PushStatus: ...

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

    def last_errors(self) -> Mapping[str, str]:
        """Why each edge is not connected ("" when it is)."""
        ...

    async def wait_first_contact(self, timeout_s: float) -> bool:
        """Until every edge was tried once since the start (connected or refused); False on timeout."""
        ...

    def last_outcomes(self) -> Mapping[str, PushOutcomeLike]: ...

    async def reset_interlock(self, cabinet_id: str) -> Decision:
        """The edge's answer to ``ResetInterlock``; ``EdgeUnreachableError`` when it cannot be asked."""
        ...


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
) -> Plan:
    """The economic dispatch LP of docs/interfaces.md: economic dispatch (``central.dispatch``)."""
    from central.dispatch import DispatchOptions, optimize

    return optimize(
        site,
        dayahead,
        options=DispatchOptions(time_limit_s=time_limit_s),
        initial_soc_pct=initial_soc_pct,
        plan_id=plan_id,
        created_at=created_at,
        final_soc_min_pct=final_soc_min_pct,
    )
