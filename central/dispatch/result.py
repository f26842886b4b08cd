"""The typed dispatch result: cost breakdown, violations, setpoints; serialises to a :class:`Plan`.

Computed the same way for both backends from the LP's primal values, so the breakdown and the violations do
not depend on the backend. ``objective.total`` is the contract's objective evaluated at the optimal solution
(the LP's optimal value; the tests check it against the solver's own value) and is by construction the sum
of its components.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from central.dispatch import quality
from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.solution import LpSolution
from central.dispatch.warm_start import WarmStart
from shared.plan import CabinetPlan, ObjectiveBreakdown, Plan, PlanQuality, PlanStatus, SolverInfo
from shared.timeutil import format_utc

POWER_TOLERANCE_KW = 1e-6  # below this a charge, discharge or unserved power counts as zero
ENERGY_TOLERANCE_KWH = 1e-6


@dataclass(frozen=True)
class DispatchResult:
    """One optimization's outcome. Arrays are (B, T) per cabinet and (T,) for the site; empty if failed."""

    status: PlanStatus
    cabinet_ids: tuple[str, ...]
    start: datetime
    interval_minutes: int
    objective: ObjectiveBreakdown
    grid_kw: FloatArray  # + import
    pv_used_kw: FloatArray
    setpoint_kw: FloatArray  # d - c, + discharge
    soc_pct: FloatArray  # at interval end
    charge_kw: FloatArray
    discharge_kw: FloatArray
    violations: tuple[str, ...]
    solver: SolverInfo
    solver_objective: float  # the solver's own value of the plan's cost (nan if failed)
    quality: PlanQuality | None = None  # None if failed
    warm_start: WarmStart | None = (
        None  # for the re-plan that replaces this one (solve_dispatch(warm_start=))
    )

    @property
    def steps(self) -> int:
        return int(self.grid_kw.shape[0])

    def energy_kwh(self, interval_h: float) -> tuple[FloatArray, FloatArray]:
        """AC energy charged and discharged per cabinet over the horizon [kWh], shapes (B,)."""
        if self.charge_kw.size == 0:
            empty = np.zeros(len(self.cabinet_ids))
            return empty, empty.copy()
        return self.charge_kw.sum(axis=1) * interval_h, self.discharge_kw.sum(axis=1) * interval_h

    def to_plan(self, plan_id: str, created_at: datetime) -> Plan:
        """The plan (docs/interfaces.md: plan). A failed plan has empty series."""
        setpoints = self.setpoint_kw.tolist()
        socs = self.soc_pct.tolist()
        cabinets = {
            cabinet_id: CabinetPlan(
                setpoint_kw=setpoints[b] if setpoints else [],
                soc_pct=socs[b] if socs else [],
            )
            for b, cabinet_id in enumerate(self.cabinet_ids)
        }
        return Plan(
            plan_id=plan_id,
            created_at=created_at,
            start=self.start,
            interval_minutes=self.interval_minutes,
            status=self.status,
            objective=self.objective,
            grid_kw=self.grid_kw.tolist(),
            pv_used_kw=self.pv_used_kw.tolist(),
            cabinets=cabinets,
            violations=list(self.violations),
            solver=self.solver,
            quality=self.quality,
        )


def failed_result(
    cabinet_ids: tuple[str, ...], start: datetime, interval_minutes: int, solver: SolverInfo
) -> DispatchResult:
    """A result without a solution; the reason is in ``solver.message`` and ``violations``."""
    empty = np.zeros(0, dtype=np.float64)
    empty_cabinets = np.zeros((0, 0), dtype=np.float64)
    return DispatchResult(
        status=PlanStatus.FAILED,
        cabinet_ids=cabinet_ids,
        start=start,
        interval_minutes=interval_minutes,
        objective=ObjectiveBreakdown(),
        grid_kw=empty,
        pv_used_kw=empty,
        setpoint_kw=empty_cabinets,
        soc_pct=empty_cabinets,
        charge_kw=empty_cabinets,
        discharge_kw=empty_cabinets,
        violations=(f"no plan: {solver.message}",),
        solver=solver,
        solver_objective=float("nan"),
    )


def evaluate(
    x: DispatchInputs, solution: LpSolution, solver: SolverInfo, cost_tolerance_rel: float
) -> DispatchResult:
    """The result of a solved LP: breakdown, violations, status and quality from the primal values.

    ``cost_tolerance_rel`` is the second stage's (0 when it was off).
    """
    if not solution.ok:
        return failed_result(x.cabinet_ids, x.start, x.interval_minutes, solver)
    # Round-off may put a value a hair outside its bounds; setpoints go to edges that check limits.
    charge = np.clip(solution.charge_kw, 0.0, x.charge_limit_kw[:, np.newaxis])
    discharge = np.clip(solution.discharge_kw, 0.0, x.discharge_limit_kw[:, np.newaxis])
    grid_import = np.clip(solution.grid_import_kw, 0.0, x.grid_import_limit_kw)
    grid_export = np.clip(solution.grid_export_kw, 0.0, x.grid_export_limit_kw)
    unserved = np.maximum(solution.unserved_kw, 0.0)
    energy = solution.energy_kwh
    objective = _breakdown(x, charge, discharge, energy, grid_import, grid_export, unserved)
    violations = (
        _unserved_violations(x, unserved)
        + _window_violations(x, energy)
        + _terminal_violations(x, energy)
        + _simultaneous_violations(x, charge, discharge)
    )
    return DispatchResult(
        status=PlanStatus.OPTIMAL_WITH_VIOLATIONS if violations else PlanStatus.OPTIMAL,
        cabinet_ids=x.cabinet_ids,
        start=x.start,
        interval_minutes=x.interval_minutes,
        objective=objective,
        grid_kw=grid_import - grid_export,
        pv_used_kw=np.clip(solution.pv_used_kw, 0.0, x.pv_kw),
        setpoint_kw=discharge - charge,
        soc_pct=energy / x.capacity_kwh[:, np.newaxis] * 100.0,
        charge_kw=charge,
        discharge_kw=discharge,
        violations=tuple(violations),
        solver=solver,
        solver_objective=solution.objective_value,
        quality=_quality(x, discharge - charge, solution, cost_tolerance_rel),
        warm_start=solution.warm_start,
    )


def _quality(
    x: DispatchInputs, setpoint_kw: FloatArray, solution: LpSolution, cost_tolerance_rel: float
) -> PlanQuality:
    variation = quality.total_variation_kw(setpoint_kw, x.current_setpoint_kw)
    deviation = None
    if quality.covered(x).any():
        if x.previous_setpoint_kw is None:  # narrowed for the type checker; callers guarantee it
            raise ValueError("previous_setpoint_kw is required here")
        per_cabinet = quality.deviation_kw(setpoint_kw, x.previous_setpoint_kw)
        deviation = {cabinet_id: float(per_cabinet[b]) for b, cabinet_id in enumerate(x.cabinet_ids)}
    optimum = solution.cost_optimum if np.isfinite(solution.cost_optimum) else solution.objective_value
    return PlanQuality(
        cost_tolerance_rel=cost_tolerance_rel,
        cost_optimum=float(optimum),
        total_variation_kw={cabinet_id: float(variation[b]) for b, cabinet_id in enumerate(x.cabinet_ids)},
        deviation_from_previous_kw=deviation,
    )


def _breakdown(
    x: DispatchInputs,
    charge: FloatArray,
    discharge: FloatArray,
    energy: FloatArray,
    grid_import: FloatArray,
    grid_export: FloatArray,
    unserved: FloatArray,
) -> ObjectiveBreakdown:
    dt = x.interval_h
    energy_cost = float(dt * np.dot(x.import_price_per_kwh, grid_import))
    export_revenue = float(dt * np.dot(x.export_price_per_kwh, grid_export))
    cycle_cost = float(dt * np.dot(x.cycle_cost_per_kwh, (charge + discharge).sum(axis=1)))
    demand_charge = x.demand_charge_per_kw * float(grid_import.max(initial=0.0))
    imbalance_cost = 0.0
    if x.grid_commitment_kw is not None:
        deviation = np.abs(grid_import - grid_export - x.grid_commitment_kw)
        imbalance_cost = float(dt * x.imbalance_price_per_kwh * deviation.sum())
    penalties = float(dt * x.unserved_energy_price_per_kwh * unserved.sum())
    penalties += x.terminal_penalty_per_kwh * float(_terminal_shortfall_kwh(x, energy).sum())
    above, below = _outside_window_kwh(x, energy)
    penalties += dt * x.window_penalty_per_kwh_h * float(above.sum() + below.sum())
    total = energy_cost - export_revenue + cycle_cost + demand_charge + imbalance_cost + penalties
    return ObjectiveBreakdown(
        total=total,
        energy_cost=energy_cost,
        export_revenue=export_revenue,
        cycle_cost=cycle_cost,
        demand_charge=demand_charge,
        imbalance_cost=imbalance_cost,
        penalties=penalties,
    )


def _terminal_shortfall_kwh(x: DispatchInputs, energy: FloatArray) -> FloatArray:
    shortfall = np.maximum(0.0, x.energy_final_min_kwh - energy[:, -1])
    return np.where(shortfall > ENERGY_TOLERANCE_KWH, shortfall, 0.0)


def _outside_window_kwh(x: DispatchInputs, energy: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Energy above / below the window (B, T) [kWh]; only cabinets that started outside can be there."""
    started_above = (x.excess_above_window_kwh > 0)[:, np.newaxis]
    started_below = (x.deficit_below_window_kwh > 0)[:, np.newaxis]
    above = np.where(started_above, np.maximum(0.0, energy - x.energy_max_kwh[:, np.newaxis]), 0.0)
    below = np.where(started_below, np.maximum(0.0, x.energy_min_kwh[:, np.newaxis] - energy), 0.0)
    return np.where(above > ENERGY_TOLERANCE_KWH, above, 0.0), np.where(
        below > ENERGY_TOLERANCE_KWH, below, 0.0
    )


def _runs(mask: NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Runs of consecutive True as (first, last) index pairs."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _intervals(first: int, last: int) -> str:
    return f"interval {first}" if first == last else f"intervals {first}-{last}"


def _unserved_violations(x: DispatchInputs, unserved: FloatArray) -> list[str]:
    messages = []
    for first, last in _runs(unserved > POWER_TOLERANCE_KW):
        energy = float(unserved[first : last + 1].sum()) * x.interval_h
        since = format_utc(x.start + timedelta(minutes=x.interval_minutes * first))
        messages.append(
            f"unserved energy {energy:.1f} kWh in {_intervals(first, last)} (from {since}): load above "
            "import limit plus PV and discharge"
        )
    return messages


def _window_violations(x: DispatchInputs, energy: FloatArray) -> list[str]:
    messages = []
    above, below = _outside_window_kwh(x, energy)
    for b, cabinet_id in enumerate(x.cabinet_ids):
        if x.excess_above_window_kwh[b] > 0:
            side, limit_name, limit, outside = "above", "soc_max_pct", x.soc_max_pct[b], above[b]
        elif x.deficit_below_window_kwh[b] > 0:
            side, limit_name, limit, outside = "below", "soc_min_pct", x.soc_min_pct[b], below[b]
        else:
            continue
        inside = np.flatnonzero(outside == 0.0)
        back = (
            f"back inside from interval {int(inside[0])}"
            if inside.size
            else "still outside at the end of the horizon"
        )
        messages.append(
            f"{cabinet_id}: initial SoC {x.initial_soc_pct[b]:g} % {side} {limit_name} {limit:g} % ({back})"
        )
    return messages


def _terminal_violations(x: DispatchInputs, energy: FloatArray) -> list[str]:
    shortfall = _terminal_shortfall_kwh(x, energy)
    return [
        f"{cabinet_id}: final SoC {energy[b, -1] / x.capacity_kwh[b] * 100.0:.1f} % below soc_final_min_pct "
        f"{x.soc_final_min_pct[b]:g} % (short {shortfall[b]:.1f} kWh)"
        for b, cabinet_id in enumerate(x.cabinet_ids)
        if shortfall[b] > 0
    ]


def _simultaneous_violations(x: DispatchInputs, charge: FloatArray, discharge: FloatArray) -> list[str]:
    both = np.minimum(charge, discharge)
    messages = []
    for b in np.flatnonzero((both > POWER_TOLERANCE_KW).any(axis=1)):
        runs = _runs(both[b] > POWER_TOLERANCE_KW)
        where = ", ".join(_intervals(first, last) for first, last in runs[:5])
        more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
        messages.append(
            f"{x.cabinet_ids[b]}: simultaneous charge and discharge in {where}{more} (up to "
            f"{float(both[b].max()):.1f} kW both ways; the setpoint is the net d - c, so the SoC will differ "
            "from the plan; forbid_simultaneous excludes it)"
        )
    return messages
