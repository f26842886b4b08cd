"""Check a dispatch result against the LP of docs/dispatch.md, cabinet by cabinet and row by row.

:func:`check_result` lists every violated constraint (one line each, naming the cabinet or the interval), so
an approximate method's plan can be verified independently of how it was made:

- per cabinet: charge and discharge within their limits and non-negative, ``setpoint = discharge -
  charge``, the SoC following the storage recursion from the initial SoC, and staying within the window (a
  cabinet that starts outside it within the range between its start and the window);
- per interval: grid power within the point of connection's limits, PV used within ``[0, pv]``, and the
  balance holding with non-negative unserved load;
- the reported cost: ``objective.total`` equals the objective of docs/dispatch.md evaluated on the plan's
  own series (the unserved load from the balance, the terminal and window slacks from the SoC).

Penalised slacks (unserved load, terminal shortfall, SoC outside the window for a cabinet that starts there)
are part of the LP and are not violations; their cost must be in the objective, which the last check
verifies.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.recovery import energy_range_kwh, stored_energy
from central.dispatch.result import DispatchResult

BoolArray = NDArray[np.bool_]
POWER_TOLERANCE_KW = 1e-6
ENERGY_TOLERANCE_KWH = 1e-6
COST_TOLERANCE_REL = 1e-7


def check_result(x: DispatchInputs, result: DispatchResult, scale_tolerance: float = 1.0) -> list[str]:
    """Every violated constraint of ``result`` for inputs ``x`` (empty when feasible).

    ``scale_tolerance`` multiplies the absolute tolerances (power 1e-6 kW, energy 1e-6 kWh, relative to the
    site's largest power or energy when that is above 1).
    """
    if result.charge_kw.shape != (x.cabinets, x.steps):
        return [
            f"plan has cabinet series of shape {result.charge_kw.shape}, expected {(x.cabinets, x.steps)}"
        ]
    power_scale = max(1.0, float(x.load_kw.max(initial=0.0)), float(x.charge_limit_kw.max(initial=0.0)))
    energy_scale = max(1.0, float(x.capacity_kwh.max(initial=0.0)))
    power_tol = POWER_TOLERANCE_KW * power_scale * scale_tolerance
    energy_tol = ENERGY_TOLERANCE_KWH * energy_scale * scale_tolerance
    return (
        _cabinet_problems(x, result, power_tol, energy_tol)
        + _site_problems(x, result, power_tol)
        + _cost_problems(x, result)
    )


def _first(mask: BoolArray) -> int:
    return int(np.flatnonzero(mask)[0])


def _cabinet_problems(x: DispatchInputs, r: DispatchResult, power_tol: float, energy_tol: float) -> list[str]:
    problems: list[str] = []
    charge, discharge = r.charge_kw, r.discharge_kw
    energy = stored_energy(x, charge, discharge)
    lowest, highest = energy_range_kwh(x)
    planned = r.soc_pct / 100.0 * x.capacity_kwh[:, np.newaxis]
    checks: list[tuple[str, BoolArray]] = [
        ("charge below 0", -charge > power_tol),
        ("charge above charge_limit_kw", charge - x.charge_limit_kw[:, np.newaxis] > power_tol),
        ("discharge below 0", -discharge > power_tol),
        ("discharge above discharge_limit_kw", discharge - x.discharge_limit_kw[:, np.newaxis] > power_tol),
        (
            "setpoint differs from discharge - charge",
            np.abs(r.setpoint_kw - (discharge - charge)) > power_tol,
        ),
        ("soc_pct differs from the storage recursion", np.abs(planned - energy) > energy_tol),
        ("SoC below its range", lowest[:, np.newaxis] - energy > energy_tol),
        ("SoC above its range", energy - highest[:, np.newaxis] > energy_tol),
    ]
    for what, bad in checks:
        for b in np.flatnonzero(bad.any(axis=1)):
            problems.append(f"{x.cabinet_ids[b]}: {what} in interval {_first(bad[b])}")
    return problems


def _site_problems(x: DispatchInputs, r: DispatchResult, power_tol: float) -> list[str]:
    grid, pv_used = r.grid_kw, r.pv_used_kw
    unserved = x.load_kw - grid - pv_used - r.setpoint_kw.sum(axis=0)
    checks: list[tuple[str, BoolArray]] = [
        ("grid import above grid_import_limit_kw", grid - x.grid_import_limit_kw > power_tol),
        ("grid export above grid_export_limit_kw", -grid - x.grid_export_limit_kw > power_tol),
        ("PV used below 0", -pv_used > power_tol),
        ("PV used above pv_kw", pv_used - x.pv_kw > power_tol),
        ("balance: supply exceeds load (negative unserved load)", -unserved > power_tol),
    ]
    return [f"site: {what} in interval {_first(bad)}" for what, bad in checks if bad.any()]


def plan_cost(x: DispatchInputs, r: DispatchResult) -> float:
    """The objective of docs/dispatch.md evaluated on the plan's own series (its breakdown's ``total``)."""
    return schedule_cost(x, r.charge_kw, r.discharge_kw, r.grid_kw, r.pv_used_kw)


def schedule_cost(
    x: DispatchInputs, charge: FloatArray, discharge: FloatArray, grid_kw: FloatArray, pv_used_kw: FloatArray
) -> float:
    """The objective for cabinet schedules and the site's net grid power and PV used; the unserved load
    follows from the balance, the terminal and window slacks from the stored energy."""
    dt = x.interval_h
    unserved = np.maximum(x.load_kw - grid_kw - pv_used_kw - (discharge - charge).sum(axis=0), 0.0)
    grid_import, grid_export = np.maximum(grid_kw, 0.0), np.maximum(-grid_kw, 0.0)
    energy = stored_energy(x, charge, discharge)
    started_above = (x.excess_above_window_kwh > 0)[:, np.newaxis]
    started_below = (x.deficit_below_window_kwh > 0)[:, np.newaxis]
    outside = np.where(started_above, np.maximum(energy - x.energy_max_kwh[:, np.newaxis], 0.0), 0.0)
    outside += np.where(started_below, np.maximum(x.energy_min_kwh[:, np.newaxis] - energy, 0.0), 0.0)
    cost = dt * float(x.import_price_per_kwh @ grid_import - x.export_price_per_kwh @ grid_export)
    cost += dt * float(x.cycle_cost_per_kwh @ (charge + discharge).sum(axis=1))
    cost += x.demand_charge_per_kw * float(grid_import.max(initial=0.0))
    if x.grid_commitment_kw is not None:
        cost += dt * x.imbalance_price_per_kwh * float(np.abs(grid_kw - x.grid_commitment_kw).sum())
    cost += dt * x.unserved_energy_price_per_kwh * float(unserved.sum())
    cost += x.terminal_penalty_per_kwh * float(np.maximum(x.energy_final_min_kwh - energy[:, -1], 0.0).sum())
    cost += dt * x.window_penalty_per_kwh_h * float(outside.sum())
    return cost


def _cost_problems(x: DispatchInputs, r: DispatchResult) -> list[str]:
    cost = plan_cost(x, r)
    reported = r.objective.total
    scale = max(1.0, abs(cost), abs(reported))
    # the breakdown ignores terminal and window slacks below 1e-6 kWh (result.ENERGY_TOLERANCE_KWH)
    ignored = (
        x.unserved_energy_price_per_kwh * ENERGY_TOLERANCE_KWH * x.cabinets * (1.0 + x.steps * x.interval_h)
    )
    if abs(cost - reported) > COST_TOLERANCE_REL * scale + ignored + 1e-6:
        return [f"objective.total {reported:.6f} differs from the plan's evaluated cost {cost:.6f}"]
    return []
