"""What the service needs from the optimizer and from the edge fleet.

The production implementations are :data:`dispatch_optimizer` (``central.dispatch``) and
``central.edge_link.EdgeFleet``; they are imported lazily so the service modules load without the solver.
Tests pass their own optimizer to see failures.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from central.edge_link.outcome import PushStatus
from shared.dayahead import DayAhead
from shared.edge_api import Decision, EdgeTelemetry
from shared.plan import Plan
from shared.site import SiteConfig

if TYPE_CHECKING:
    from central.dispatch import WarmStart


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
        previous_plan: Plan | None = None,
        current_setpoint_kw: Mapping[str, float] | None = None,
    ) -> Plan: ...


class DispatchOptimizer:
    """The economic dispatch LP of docs/interfaces.md: economic dispatch (``central.dispatch``), with the
    second stage when ``[central] plan_smoothing``: among the cost-optimal plans, the one closest to
    ``previous_plan`` (the plan the edges run), then the smoothest from ``current_setpoint_kw``. The method
    is ``[central] dispatch_method``; ``block_ipm`` (a large site) runs in a worker process, the exact LP in
    the calling thread (HiGHS releases the GIL).

    It keeps the first-stage basis of the last few plans it made, and a re-plan of one of them starts HiGHS
    from that basis shifted onto the new horizon (measured with ``ems bench replan``: the first stage needs
    a fraction of the iterations). Thread-safe; plans are told apart by their id.
    """

    KEEP = 8  # bases kept (one per service in the process is enough; a few more cost little)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bases: OrderedDict[str, WarmStart] = OrderedDict()

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
    ) -> Plan:
        from central.dispatch import DispatchOptions, solve_dispatch

        with self._lock:
            warm = self._bases.get(previous_plan.plan_id) if previous_plan is not None else None
        result = solve_dispatch(
            site,
            dayahead,
            options=DispatchOptions(
                time_limit_s=time_limit_s,
                smoothing=site.central.plan_smoothing,
                method=site.central.dispatch_method,
                in_worker=True,  # block_ipm in a process: the service's event loop keeps the GIL
            ),
            initial_soc_pct=initial_soc_pct,
            final_soc_min_pct=final_soc_min_pct,
            previous_plan=previous_plan,
            current_setpoint_kw=current_setpoint_kw,
            warm_start=warm,
        )
        if result.warm_start is not None:
            with self._lock:
                self._bases[plan_id] = result.warm_start
                while len(self._bases) > self.KEEP:
                    self._bases.popitem(last=False)
        return result.to_plan(plan_id, created_at)


dispatch_optimizer = DispatchOptimizer()


def live_setpoints_kw(
    telemetry: Mapping[str, EdgeTelemetry | None], connected: Mapping[str, bool]
) -> dict[str, float]:
    """The setpoint [kW] each connected edge runs now (what a re-plan starts from); others are unknown."""
    return {
        cabinet_id: snapshot.setpoint_kw
        for cabinet_id, snapshot in telemetry.items()
        if snapshot is not None and connected.get(cabinet_id, False) and math.isfinite(snapshot.setpoint_kw)
    }
