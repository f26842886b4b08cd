"""Feasible plans from approximate schedules: every cabinet within its own limits and SoC bounds, the site
rows completed optimally.

An approximate method (an interior point iterate, a plan from elsewhere) proposes charge and discharge
[kW] per cabinet and interval. :func:`recover` turns that into a plan that is feasible for the LP of
docs/dispatch.md:

1. power is clipped into each cabinet's limits, and values below ``SNAP_KW`` (an iterate's round-off near a
   bound) are set to 0;
2. stored energy is followed interval by interval from the initial SoC; where it would leave the SoC range
   (the window, or the penalised range of a cabinet that starts outside it) the charge (discharge) of that
   interval is reduced until it does not. Reducing one of them is always enough, and it never touches other
   intervals;
3. simultaneous charge and discharge (which burns energy in the losses) is netted out as far as the
   extra stored energy stays inside the window (it never costs more: less throughput, more energy at the
   end). What is left is netted out too, and step 2 then cuts the charge that no longer fits, except in the
   intervals listed in ``keep_simultaneous``: an iterate's simultaneous charge and discharge is usually
   round-off, but where consuming is paid, burning energy in the losses can be the optimum (the driver
   tries both);
4. a cabinet that ends a little below its terminal SoC (less than ``ROUND_OFF_KWH_PER_KWH`` of its
   capacity: an iterate's round-off, not a target the day cannot meet) discharges less (or charges more)
   in its last intervals where there is room;
5. where the cabinets would deliver more than load plus export limit (no site variable can take it), their
   discharge in that interval is reduced, and where they would charge while load goes unserved, the charge
   of the cabinets inside their window (for them never worth it: the unserved and the terminal penalties
   are equal; a cabinet below its window may rightly charge to get back in); steps 2-4 then run again;
6. the site's variables (grid import and export, PV used, unserved load, peak, imbalance) are chosen
   optimally for the cabinets' net power by a small LP, the same site rows as the full LP. Where it leaves
   load unserved, cabinets that have energy to spare (above their SoC range for the rest of the horizon and
   above their terminal SoC) charge less or discharge more, and the site LP runs again.

It gives up (None) only if the site LP fails or discharge cannot be brought under the export limit in
``REPAIR_ROUNDS`` rounds; every cabinet idle (:func:`idle_solution`) is always feasible.
The result's cost is an upper bound on the LP's optimum.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import NDArray

from central.dispatch import highs_backend
from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.options import DispatchOptions
from central.dispatch.solution import LpSolution

BoolArray = NDArray[np.bool_]
REPAIR_ROUNDS = 5  # rounds of (cut power the site cannot take, redo the SoC pass)
POWER_SLACK_KW = 1e-9  # an overflow below this counts as none
SNAP_KW = 1e-5  # charge or discharge below this is set to 0
ROUND_OFF_KWH_PER_KWH = 1e-4  # a terminal shortfall below this share of capacity is round-off


def energy_range_kwh(x: DispatchInputs) -> tuple[FloatArray, FloatArray]:
    """The range stored energy may take (B,): the window, widened to the initial energy for a cabinet that
    starts outside it (penalised there)."""
    return x.energy_min_kwh - x.deficit_below_window_kwh, x.energy_max_kwh + x.excess_above_window_kwh


def stored_energy(x: DispatchInputs, charge: FloatArray, discharge: FloatArray) -> FloatArray:
    """Stored energy at the end of every interval (B, T) [kWh] by the storage recursion."""
    flow = x.interval_h * (
        x.charge_efficiency[:, np.newaxis] * charge - discharge / x.discharge_efficiency[:, np.newaxis]
    )
    return x.energy_initial_kwh[:, np.newaxis] + np.cumsum(flow, axis=1)


def feasible_schedules(
    x: DispatchInputs, charge: FloatArray, discharge: FloatArray, keep_simultaneous: BoolArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Charge and discharge (B, T) [kW] near the proposal that keep every cabinet in its limits and SoC range
    (steps 1-4 of the module docstring)."""
    charge = np.clip(charge, 0.0, x.charge_limit_kw[:, np.newaxis])
    discharge = np.clip(discharge, 0.0, x.discharge_limit_kw[:, np.newaxis])
    charge[charge < SNAP_KW] = 0.0
    discharge[discharge < SNAP_KW] = 0.0
    charge, discharge = _keep_in_range(x, charge, discharge)
    charge, discharge = _net_out(x, charge, discharge)
    both = np.minimum(charge, discharge)
    if keep_simultaneous is not None:
        both[:, keep_simultaneous] = 0.0
    if both.any():
        charge, discharge = _keep_in_range(x, charge - both, discharge - both)
    return _meet_terminal(x, charge, discharge)


def _meet_terminal(
    x: DispatchInputs, charge: FloatArray, discharge: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Cabinets ending a little below their terminal SoC: from the last interval backwards, discharge less,
    then charge more, as far as the window's top allows in every later interval."""
    energy = stored_energy(x, charge, discharge)
    missing = x.energy_final_min_kwh - energy[:, -1]
    short = np.flatnonzero((missing > 0) & (missing < ROUND_OFF_KWH_PER_KWH * x.capacity_kwh))
    if short.size == 0:
        return charge, discharge
    charge, discharge = charge.copy(), discharge.copy()
    need = x.energy_final_min_kwh[short] - energy[short, -1]
    room = np.minimum.accumulate((x.energy_max_kwh[short, np.newaxis] - energy[short])[:, ::-1], axis=1)[
        :, ::-1
    ]
    stored_per_kw = x.interval_h * x.charge_efficiency[short]
    taken_per_kw = x.interval_h / x.discharge_efficiency[short]
    added = np.zeros(short.size)
    for t in range(x.steps - 1, -1, -1):
        budget = np.clip(np.minimum(need - added, room[:, t] - added), 0.0, None)
        less = np.minimum(discharge[short, t], budget / taken_per_kw)
        discharge[short, t] -= less
        added += less * taken_per_kw
        budget = np.clip(np.minimum(need - added, room[:, t] - added), 0.0, None)
        more = np.minimum(x.charge_limit_kw[short] - charge[short, t], budget / stored_per_kw)
        charge[short, t] += more
        added += more * stored_per_kw
    return charge, discharge


def has_simultaneous(charge: FloatArray, discharge: FloatArray) -> bool:
    """True when some cabinet charges and discharges in the same interval."""
    return bool((np.minimum(charge, discharge) > 0).any())


def _keep_in_range(
    x: DispatchInputs, charge: FloatArray, discharge: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Step 2: follow the stored energy forward; cut charge (discharge) where it would leave the range.

    Only the cabinets whose energy leaves the range somewhere are walked through (vectorised across them).
    """
    lowest, highest = energy_range_kwh(x)
    energy = stored_energy(x, charge, discharge)
    leaves = np.flatnonzero(
        ((energy < lowest[:, np.newaxis]) | (energy > highest[:, np.newaxis])).any(axis=1)
    )
    if leaves.size == 0:
        return charge, discharge
    lowest, highest = lowest[leaves], highest[leaves]
    stored_per_kw = x.interval_h * x.charge_efficiency[leaves]
    taken_per_kw = x.interval_h / x.discharge_efficiency[leaves]
    charge_t, discharge_t = np.ascontiguousarray(charge[leaves].T), np.ascontiguousarray(discharge[leaves].T)
    level = x.energy_initial_kwh[leaves]
    for t in range(charge_t.shape[0]):
        after = level + stored_per_kw * charge_t[t] - taken_per_kw * discharge_t[t]
        charge_t[t] = np.maximum(charge_t[t] - np.maximum(after - highest, 0.0) / stored_per_kw, 0.0)
        discharge_t[t] = np.maximum(discharge_t[t] - np.maximum(lowest - after, 0.0) / taken_per_kw, 0.0)
        level = np.clip(level + stored_per_kw * charge_t[t] - taken_per_kw * discharge_t[t], lowest, highest)
    charge, discharge = charge.copy(), discharge.copy()
    charge[leaves], discharge[leaves] = charge_t.T, discharge_t.T
    return charge, discharge


def _net_out(x: DispatchInputs, charge: FloatArray, discharge: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Step 3: remove ``m[t] <= min(c, d)`` from both, as much as the window's top allows.

    Netting ``m`` raises the stored energy from then on by ``k m`` (``k = dt (1 / eta_d - eta_c) >= 0``), so
    the cumulative netting ``M[t]`` must stay below ``headroom / k`` at every later interval: greedily,
    ``M[t] = min(M[t-1] + min(c, d)[t], min_{s >= t} headroom[s] / k)``.
    """
    both = np.minimum(charge, discharge)
    if not (both > 0).any():
        return charge, discharge
    loss_per_kw = x.interval_h * (1.0 / x.discharge_efficiency - x.charge_efficiency)
    headroom = x.energy_max_kwh[:, np.newaxis] - stored_energy(x, charge, discharge)
    later_headroom = np.minimum.accumulate(headroom[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        allowed = np.where(
            loss_per_kw[:, np.newaxis] > 0,
            np.maximum(later_headroom, 0.0) / loss_per_kw[:, np.newaxis],
            np.inf,
        )
    netted = np.empty_like(both)
    total = np.zeros(both.shape[0])
    for t in range(both.shape[1]):
        new_total = np.minimum(total + both[:, t], np.maximum(allowed[:, t], total))
        netted[:, t] = new_total - total
        total = new_total
    return charge - netted, discharge - netted


def _cap_export(x: DispatchInputs, charge: FloatArray, discharge: FloatArray) -> tuple[FloatArray, bool]:
    """Reduce discharge where the cabinets deliver more than load plus export limit; True if none did."""
    overflow = (discharge - charge).sum(axis=0) - x.load_kw - x.grid_export_limit_kw
    return _scale_down(discharge, overflow)


def _cap_charging_while_short(
    x: DispatchInputs, charge: FloatArray, discharge: FloatArray
) -> tuple[FloatArray, bool]:
    """Reduce the charge of cabinets inside their window where load would go unserved (net load above
    import limit plus PV); True if there was none to reduce."""
    short = x.load_kw - (discharge - charge).sum(axis=0) - x.grid_import_limit_kw - x.pv_kw
    inside = (x.deficit_below_window_kwh == 0)[:, np.newaxis]
    capped, fits = _scale_down(
        np.where(inside, charge, 0.0), np.minimum(short, (inside * charge).sum(axis=0))
    )
    return np.where(inside, capped, charge), fits


def _scale_down(power: FloatArray, excess: FloatArray) -> tuple[FloatArray, bool]:
    """Scale every cabinet's ``power`` down in the intervals where ``excess`` > 0, by ``excess`` in total."""
    if not (excess > POWER_SLACK_KW).any():
        return power, True
    total = power.sum(axis=0)
    keep = np.where(excess > POWER_SLACK_KW, 1.0 - excess / np.maximum(total, 1e-300), 1.0)
    return power * np.clip(keep, 0.0, 1.0), False


def _serve_from_spare_energy(
    x: DispatchInputs, charge: FloatArray, discharge: FloatArray, unserved: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Where load goes unserved, cabinets with energy to spare charge less (those charging) or discharge more
    (the others: never both at once); returns charge and discharge."""
    lowest, _ = energy_range_kwh(x)
    stored_per_kw = x.interval_h * x.charge_efficiency
    taken_per_kw = x.interval_h / x.discharge_efficiency
    charge, discharge = charge.copy(), discharge.copy()
    for t in np.flatnonzero(unserved > POWER_SLACK_KW):
        energy = stored_energy(x, charge, discharge)
        spare = np.clip(
            np.minimum(
                (energy[:, t:] - lowest[:, np.newaxis]).min(axis=1), energy[:, -1] - x.energy_final_min_kwh
            ),
            0.0,
            None,
        )
        charging = charge[:, t] > 0
        room_kw = np.where(
            charging,
            np.minimum(charge[:, t], spare / stored_per_kw),
            np.minimum(x.discharge_limit_kw - discharge[:, t], spare / taken_per_kw),
        )
        total = float(room_kw.sum())
        if total <= 0:
            continue
        used_kw = room_kw * min(1.0, float(unserved[t]) / total)
        charge[:, t] -= np.where(charging, used_kw, 0.0)
        discharge[:, t] += np.where(charging, 0.0, used_kw)
    return charge, discharge


def site_inputs(x: DispatchInputs, net_cabinet_kw: FloatArray) -> DispatchInputs:
    """The site alone: no cabinets, the load reduced by the cabinets' net power (+ discharge)."""
    empty = np.zeros(0)
    return dataclasses.replace(
        x,
        cabinet_ids=(),
        capacity_kwh=empty,
        charge_limit_kw=empty,
        discharge_limit_kw=empty,
        charge_efficiency=empty,
        discharge_efficiency=empty,
        soc_min_pct=empty,
        soc_max_pct=empty,
        soc_final_min_pct=empty,
        initial_soc_pct=empty,
        cycle_cost_per_kwh=empty,
        load_kw=x.load_kw - net_cabinet_kw,
        previous_setpoint_kw=None,
        current_setpoint_kw=None,
    )


def recover(
    x: DispatchInputs,
    charge: FloatArray,
    discharge: FloatArray,
    options: DispatchOptions,
    keep_simultaneous: BoolArray | None = None,
) -> LpSolution | None:
    """A feasible solution of the LP near the proposed schedules; None if none was found (the site LP failed,
    or discharge could not be brought under the export limit)."""
    options = dataclasses.replace(options, smoothing=False)  # the site LP has no cabinet to smooth
    charge, discharge = feasible_schedules(x, charge, discharge, keep_simultaneous)
    for _ in range(REPAIR_ROUNDS):
        discharge, fits_export = _cap_export(x, charge, discharge)
        charge, fits_import = _cap_charging_while_short(x, charge, discharge)
        if fits_export and fits_import:
            break
        charge, discharge = feasible_schedules(x, charge, discharge, keep_simultaneous)
    if not _cap_export(x, charge, discharge)[1]:
        return None
    site = highs_backend.solve(site_inputs(x, (discharge - charge).sum(axis=0)), options)
    if site.ok and (site.unserved_kw > POWER_SLACK_KW).any():
        charge, discharge = _serve_from_spare_energy(x, charge, discharge, site.unserved_kw)
        site = highs_backend.solve(site_inputs(x, (discharge - charge).sum(axis=0)), options)
    if not site.ok:
        return None
    return LpSolution(
        ok=True,
        message="",
        build_s=site.build_s,
        solve_s=site.solve_s,
        charge_kw=charge,
        discharge_kw=discharge,
        energy_kwh=stored_energy(x, charge, discharge),
        grid_import_kw=site.grid_import_kw,
        grid_export_kw=site.grid_export_kw,
        pv_used_kw=site.pv_used_kw,
        unserved_kw=site.unserved_kw,
    )


def idle_solution(x: DispatchInputs, options: DispatchOptions) -> LpSolution:
    """Every cabinet idle, the site completed optimally: always feasible (the load is never negative). Should
    even the site LP fail, the site uses PV first, then the grid up to its limit, and sheds the rest."""
    zeros = np.zeros((x.cabinets, x.steps))
    solution = recover(x, zeros, zeros.copy(), options)
    if solution is not None:
        return solution
    pv_used = np.minimum(x.pv_kw, x.load_kw)
    grid_import = np.minimum(x.load_kw - pv_used, x.grid_import_limit_kw)
    return LpSolution(
        ok=True,
        message="",
        build_s=0.0,
        solve_s=0.0,
        charge_kw=zeros,
        discharge_kw=zeros.copy(),
        energy_kwh=stored_energy(x, zeros, zeros),
        grid_import_kw=grid_import,
        grid_export_kw=np.zeros(x.steps),
        pv_used_kw=pv_used,
        unserved_kw=x.load_kw - pv_used - grid_import,
    )
