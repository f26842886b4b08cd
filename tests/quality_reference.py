"""An independent two-stage reference: the smoothest plan within 1e-6 of the optimal cost.

Written separately from both backends, with highspy's modelling layer, straight from docs/dispatch.md: stage
one minimises the cost; stage two bounds the cost at ``optimum + 1e-6 * max(|optimum|, 1)`` and minimises the
summed total variation of the setpoints. It does not use the optimal face, so its feasible set contains the
optimizer's: its total variation is a lower bound for the optimizer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highspy
import numpy as np

from central.dispatch.inputs import DispatchInputs

COST_TOLERANCE_REL = 1e-6


@dataclass(frozen=True)
class Reference:
    cost_optimum: float
    cost: float
    total_variation_kw: float


def smoothest_cost_optimal(x: DispatchInputs) -> Reference:
    highs = highspy.Highs()  # type: ignore[no-untyped-call]
    highs.silent()
    # One HiGHS thread scheduler per process: it must match the optimizer's thread count.
    highs.setOptionValue("threads", 1)
    cabinets, steps, dt = x.cabinets, x.steps, x.interval_h
    inf = highspy.kHighsInf
    c = [[highs.addVariable(0.0, float(x.charge_limit_kw[b])) for _ in range(steps)] for b in range(cabinets)]
    d = [
        [highs.addVariable(0.0, float(x.discharge_limit_kw[b])) for _ in range(steps)]
        for b in range(cabinets)
    ]
    cost: Any = 0.0
    for b in range(cabinets):
        initial = float(x.energy_initial_kwh[b])
        low, high = float(x.energy_min_kwh[b]), float(x.energy_max_kwh[b])
        above_max = max(0.0, initial - high)  # a cabinet starting outside may stay there, penalised per hour
        below_min = max(0.0, low - initial)
        energy: Any = initial
        for t in range(steps):
            energy = energy + dt * (
                float(x.charge_efficiency[b]) * c[b][t] - d[b][t] / float(x.discharge_efficiency[b])
            )
            above = highs.addVariable(0.0, above_max)
            below = highs.addVariable(0.0, below_min)
            highs.addConstr(energy - above <= high)
            highs.addConstr(energy + below >= low)
            highs.addConstr(energy >= 0.0)
            highs.addConstr(energy <= float(x.capacity_kwh[b]))
            cost = cost + dt * x.window_penalty_per_kwh_h * (above + below)
            cost = cost + dt * float(x.cycle_cost_per_kwh[b]) * (c[b][t] + d[b][t])
        short = highs.addVariable(0.0, inf)
        highs.addConstr(energy + short >= float(x.energy_final_min_kwh[b]))
        cost = cost + x.terminal_penalty_per_kwh * short
    peak = highs.addVariable(0.0, inf)
    for t in range(steps):
        grid_in = highs.addVariable(0.0, x.grid_import_limit_kw)
        grid_out = highs.addVariable(0.0, x.grid_export_limit_kw)
        pv = highs.addVariable(0.0, float(x.pv_kw[t]))
        shed = highs.addVariable(0.0, inf)
        batteries = sum(d[b][t] - c[b][t] for b in range(cabinets))
        highs.addConstr(grid_in - grid_out + pv + shed + batteries == float(x.load_kw[t]))
        highs.addConstr(grid_in <= peak)
        cost = cost + dt * (
            float(x.import_price_per_kwh[t]) * grid_in - float(x.export_price_per_kwh[t]) * grid_out
        )
        cost = cost + dt * x.unserved_energy_price_per_kwh * shed
        if x.grid_commitment_kw is not None:
            off = highs.addVariable(0.0, inf)
            highs.addConstr(grid_in - grid_out - float(x.grid_commitment_kw[t]) <= off)
            highs.addConstr(float(x.grid_commitment_kw[t]) - grid_in + grid_out <= off)
            cost = cost + dt * x.imbalance_price_per_kwh * off
    cost = cost + x.demand_charge_per_kw * peak
    highs.minimize(cost)
    optimum = highs.getInfo().objective_function_value
    highs.addConstr(cost <= optimum + COST_TOLERANCE_REL * max(abs(optimum), 1.0))
    variation: Any = 0.0
    for b in range(cabinets):
        for t in range(1, steps):
            step = highs.addVariable(0.0, inf)
            change = d[b][t] - c[b][t] - d[b][t - 1] + c[b][t - 1]
            highs.addConstr(change <= step)
            highs.addConstr(-change <= step)
            variation = variation + step
    highs.minimize(variation)
    assert highs.getModelStatus() == highspy.HighsModelStatus.kOptimal
    charge = np.array([[highs.val(v) for v in row] for row in c])
    discharge = np.array([[highs.val(v) for v in row] for row in d])
    setpoint = discharge - charge
    return Reference(
        cost_optimum=float(optimum),
        cost=float(highs.val(cost)),
        total_variation_kw=float(np.abs(np.diff(setpoint, axis=1)).sum()),
    )
