"""Exact aggregation of cabinets that are the same per unit of capacity.

Two cabinets are *per-unit identical* when they have the same charge and discharge C-rate (limit [kW] /
capacity [kWh]), the same efficiencies, SoC window, terminal SoC, initial SoC and cycle cost; their sizes may
differ. For such a group the LP of docs/interfaces.md: economic dispatch is exactly the LP with one cabinet
of the group's
summed capacity and limits:

- any solution of the individual cabinets sums to a feasible solution of the group cabinet with the same
  objective (every constraint is linear with the same coefficients, the site only sees ``sum_b (d - c)``,
  and the cycle cost is the same per kWh);
- any solution of the group cabinet, split in proportion to capacity, is feasible for every member (all
  member data is the group's data times the member's capacity share) with the same objective.

So both LPs have the same optimal value, and the split solution is optimal for the original LP. The second
stage (docs/dispatch.md: plan quality) stays exact when the members' previous-plan setpoints and current
setpoints are also the same per unit (part of the key, rounded to 1e-9 kW/kWh): the total variation and the
deviation of a sum are at most the sums of the members' (triangle inequality), with equality for the
proportional split, and members of a group have equal SoC, so they add no spread. Not used with
``forbid_simultaneous``: there a group's binary would also forbid one member charging while another
discharges, which the original MIP allows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.solution import LpSolution


@dataclass(frozen=True)
class CabinetGroups:
    """``group_of[b]``: the group of cabinet b; ``share[b]``: its capacity over the group's [-]."""

    group_of: NDArray[np.intp]
    share: FloatArray
    count: int

    @property
    def reduces(self) -> bool:
        """True when at least two cabinets share a group."""
        return self.count < int(self.group_of.shape[0])


def group_identical(x: DispatchInputs) -> CabinetGroups:
    """Group per-unit identical cabinets.

    IEEE division is correctly rounded, so mathematically equal C-rates compare equal as floats.
    """
    keys = np.column_stack(
        [
            *_per_unit_targets(x),
            x.charge_limit_kw / x.capacity_kwh,
            x.discharge_limit_kw / x.capacity_kwh,
            x.charge_efficiency,
            x.discharge_efficiency,
            x.soc_min_pct,
            x.soc_max_pct,
            x.soc_final_min_pct,
            x.initial_soc_pct,
            x.cycle_cost_per_kwh,
        ]
    )
    _, first, group_of = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    # Number groups in order of their first cabinet, so a site without duplicates keeps its order.
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    group_of = rank[group_of.ravel()].astype(np.intp)
    group_capacity = np.bincount(group_of, weights=x.capacity_kwh, minlength=order.size)
    return CabinetGroups(group_of=group_of, share=x.capacity_kwh / group_capacity[group_of], count=order.size)


def _per_unit_targets(x: DispatchInputs) -> list[FloatArray]:
    """Key columns of the second stage's targets per kWh of capacity (unknown: +inf), rounded so that a
    proportional split of an earlier plan groups again."""
    columns: list[FloatArray] = []
    for target in (x.previous_setpoint_kw, x.current_setpoint_kw):
        if target is None:
            continue
        values = target.reshape(x.cabinets, -1) / x.capacity_kwh[:, np.newaxis]
        columns.extend(np.where(np.isfinite(values), np.round(values, 9), np.inf).T)
    return columns


def _summed_target(target: FloatArray | None, groups: CabinetGroups) -> FloatArray | None:
    """A second-stage target of each group: its members' sum (NaN stays NaN: members share coverage)."""
    if target is None:
        return None
    shape = (groups.count, *target.shape[1:])
    summed = np.zeros(shape)
    np.add.at(summed, groups.group_of, target)
    return summed


def aggregate(x: DispatchInputs, groups: CabinetGroups) -> DispatchInputs:
    """The inputs with one cabinet per group (summed capacity and limits, the group's per-unit data)."""
    first = np.zeros(groups.count, dtype=np.intp)
    first[groups.group_of[::-1]] = np.arange(groups.group_of.size - 1, -1, -1)

    def summed(values: FloatArray) -> FloatArray:
        return np.bincount(groups.group_of, weights=values, minlength=groups.count).astype(np.float64)

    return replace(
        x,
        cabinet_ids=tuple(x.cabinet_ids[b] for b in first),
        capacity_kwh=summed(x.capacity_kwh),
        charge_limit_kw=summed(x.charge_limit_kw),
        discharge_limit_kw=summed(x.discharge_limit_kw),
        charge_efficiency=x.charge_efficiency[first],
        discharge_efficiency=x.discharge_efficiency[first],
        soc_min_pct=x.soc_min_pct[first],
        soc_max_pct=x.soc_max_pct[first],
        soc_final_min_pct=x.soc_final_min_pct[first],
        initial_soc_pct=x.initial_soc_pct[first],
        cycle_cost_per_kwh=x.cycle_cost_per_kwh[first],
        previous_setpoint_kw=_summed_target(x.previous_setpoint_kw, groups),
        current_setpoint_kw=_summed_target(x.current_setpoint_kw, groups),
    )


def disaggregate(solution: LpSolution, groups: CabinetGroups) -> LpSolution:
    """Split each group's charge, discharge and energy in proportion to its members' capacity."""
    if not solution.ok:
        return solution
    share = groups.share[:, np.newaxis]
    return replace(
        solution,
        charge_kw=solution.charge_kw[groups.group_of] * share,
        discharge_kw=solution.discharge_kw[groups.group_of] * share,
        energy_kwh=solution.energy_kwh[groups.group_of] * share,
    )
