"""The dispatch LP in block-angular form: one block per cabinet, coupled only by the site's rows.

The same LP as :mod:`central.dispatch.highs_backend` (docs/dispatch.md: the LP), written so that a solver can
exploit its structure: every variable has finite bounds, every row is an equality, and the matrix is applied
by structured array code instead of a sparse matrix.

Cabinet b (arrays (B, T) unless noted), with stored energy ``E = e + above - below``:

- ``charge``, ``discharge`` [kW] in their limits; ``energy`` ``e`` [kWh] in the SoC window;
- ``above`` in ``[0, initial excess]``, ``below`` in ``[0, initial deficit]`` [kWh]: the penalised part of
  ``E`` outside the window (non-zero bounds only for a cabinet that starts outside it);
- ``shortfall`` (B,) in ``[0, final energy]`` and ``terminal_slack`` (B,) [kWh];
- rows: storage ``E[t] - E[t-1] - dt eta_c c[t] + dt / eta_d d[t] = (initial energy if t = 0 else 0)``
  and terminal ``E[T-1] + shortfall - terminal_slack = final energy``.

Site (arrays (T,)): ``grid_import``, ``grid_export``, ``pv_used``, ``unserved`` [kW]; with a demand charge
``peak`` (scalar) and ``peak_slack``; with a grid commitment ``over`` and ``under``. Rows: balance
``gi - ge + u + s + sum_b (d - c) = load``; peak ``gi - peak + peak_slack = 0``; imbalance
``gi - ge - over + under = commitment``.

This is the LP of docs/dispatch.md: the window slack there (``E - above <= soc_max`` with ``E`` in the
physical range) allows exactly the same stored energies at the same penalty, and the upper bounds given here
to variables that are unbounded there (unserved load, shortfall, the imbalance split, the slacks) hold at
every optimal solution, so both LPs have the same optimal value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from central.dispatch.inputs import DispatchInputs, FloatArray

CABINET_SERIES = ("charge", "discharge", "energy", "above", "below")
CABINET_SCALARS = ("shortfall", "terminal_slack")


@dataclass(frozen=True)
class Layout:
    """Where each variable block sits in the flat variable vector, and the row counts.

    ``above`` and ``below`` exist only for the cabinets that start above (below) their SoC window, listed in
    ``above_cabinets`` (``below_cabinets``); they are (len(list), T) blocks.
    """

    cabinets: int
    steps: int
    has_peak: bool
    has_commitment: bool
    above_cabinets: NDArray[np.intp]
    below_cabinets: NDArray[np.intp]

    def _series_sizes(self) -> tuple[int, ...]:
        full = self.cabinets * self.steps
        return (
            full,
            full,
            full,
            self.above_cabinets.size * self.steps,
            self.below_cabinets.size * self.steps,
        )

    def series(self, name: str) -> slice:
        """Slice of a cabinet series block (reshape to (rows, T))."""
        sizes = self._series_sizes()
        index = CABINET_SERIES.index(name)
        start = sum(sizes[:index])
        return slice(start, start + sizes[index])

    def scalar(self, name: str) -> slice:
        """Slice of a per-cabinet scalar block (B,)."""
        start = sum(self._series_sizes()) + CABINET_SCALARS.index(name) * self.cabinets
        return slice(start, start + self.cabinets)

    @property
    def site_start(self) -> int:
        return sum(self._series_sizes()) + len(CABINET_SCALARS) * self.cabinets

    def site_names(self) -> tuple[str, ...]:
        names = ["grid_import", "grid_export", "pv_used", "unserved"]
        if self.has_peak:
            names += ["peak_slack", "peak"]
        if self.has_commitment:
            names += ["over", "under"]
        return tuple(names)

    def site(self, name: str) -> slice:
        """Slice of a site block ((T,), or (1,) for ``peak``)."""
        start = self.site_start
        for candidate in self.site_names():
            size = 1 if candidate == "peak" else self.steps
            if candidate == name:
                return slice(start, start + size)
            start += size
        raise KeyError(name)

    @property
    def size(self) -> int:
        """Number of variables."""
        return int(self.site(self.site_names()[-1]).stop)

    @property
    def site_rows(self) -> int:
        """Number of site rows: balance, then peak and imbalance when present."""
        return self.steps * (1 + int(self.has_peak) + int(self.has_commitment))

    @property
    def peak_rows(self) -> slice:
        return slice(self.steps, 2 * self.steps)

    @property
    def imbalance_rows(self) -> slice:
        start = self.steps * (1 + int(self.has_peak))
        return slice(start, start + self.steps)


@dataclass(frozen=True)
class BlockLp:
    """Cost, bounds and right-hand sides of the block LP, and the data its matrix is made of."""

    inputs: DispatchInputs
    layout: Layout
    cost: FloatArray
    lower: FloatArray
    upper: FloatArray
    cabinet_rhs: FloatArray  # (B, T + 1): storage rows, then the terminal row
    site_rhs: FloatArray  # (site_rows,)
    charge_coef: FloatArray  # (B,): dt * charge efficiency (energy stored per kW charged)
    discharge_coef: FloatArray  # (B,): dt / discharge efficiency (energy taken per kW discharged)

    def cabinet_series(self, x: FloatArray, name: str) -> FloatArray:
        """A (rows, T) view of a cabinet series block of ``x`` (rows: B, or the listed cabinets)."""
        return x[self.layout.series(name)].reshape(-1, self.layout.steps)

    def stored(self, x: FloatArray) -> FloatArray:
        """Stored energy ``E = e + above - below`` (B, T) [kWh]."""
        lay = self.layout
        stored = self.cabinet_series(x, "energy").copy()
        stored[lay.above_cabinets] += self.cabinet_series(x, "above")
        stored[lay.below_cabinets] -= self.cabinet_series(x, "below")
        return stored

    def apply(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``A x``: cabinet rows (B, T + 1) and site rows."""
        lay = self.layout
        charge = self.cabinet_series(x, "charge")
        discharge = self.cabinet_series(x, "discharge")
        stored = self.stored(x)
        cabinet = np.empty((lay.cabinets, lay.steps + 1))
        cabinet[:, : lay.steps] = stored
        cabinet[:, 1 : lay.steps] -= stored[:, :-1]
        cabinet[:, : lay.steps] += (
            discharge * self.discharge_coef[:, np.newaxis] - charge * self.charge_coef[:, np.newaxis]
        )
        cabinet[:, lay.steps] = stored[:, -1] + x[lay.scalar("shortfall")] - x[lay.scalar("terminal_slack")]
        site = np.empty(lay.site_rows)
        grid_import, grid_export = x[lay.site("grid_import")], x[lay.site("grid_export")]
        site[: lay.steps] = (
            grid_import
            - grid_export
            + x[lay.site("pv_used")]
            + x[lay.site("unserved")]
            + (discharge - charge).sum(axis=0)
        )
        if lay.has_peak:
            site[lay.peak_rows] = grid_import - x[lay.site("peak")] + x[lay.site("peak_slack")]
        if lay.has_commitment:
            site[lay.imbalance_rows] = grid_import - grid_export - x[lay.site("over")] + x[lay.site("under")]
        return cabinet, site

    def apply_transpose(self, cabinet_dual: FloatArray, site_dual: FloatArray) -> FloatArray:
        """``A^T y`` for row duals ``y`` = (cabinet rows (B, T + 1), site rows)."""
        lay = self.layout
        storage = cabinet_dual[:, : lay.steps]
        terminal = cabinet_dual[:, lay.steps]
        balance = site_dual[: lay.steps]
        out = np.empty(lay.size)
        out[lay.series("charge")] = (-self.charge_coef[:, np.newaxis] * storage - balance).ravel()
        out[lay.series("discharge")] = (self.discharge_coef[:, np.newaxis] * storage + balance).ravel()
        stored = storage.copy()
        stored[:, :-1] -= storage[:, 1:]
        stored[:, -1] += terminal
        out[lay.series("energy")] = stored.ravel()
        out[lay.series("above")] = stored[lay.above_cabinets].ravel()
        out[lay.series("below")] = -stored[lay.below_cabinets].ravel()
        out[lay.scalar("shortfall")] = terminal
        out[lay.scalar("terminal_slack")] = -terminal
        grid_import = balance.copy()
        grid_export = -balance
        if lay.has_peak:
            peak_dual = site_dual[lay.peak_rows]
            grid_import = grid_import + peak_dual
            out[lay.site("peak_slack")] = peak_dual
            out[lay.site("peak")] = -peak_dual.sum()
        if lay.has_commitment:
            imbalance_dual = site_dual[lay.imbalance_rows]
            grid_import = grid_import + imbalance_dual
            grid_export = grid_export - imbalance_dual
            out[lay.site("over")] = -imbalance_dual
            out[lay.site("under")] = imbalance_dual
        out[lay.site("grid_import")] = grid_import
        out[lay.site("grid_export")] = grid_export
        out[lay.site("pv_used")] = balance
        out[lay.site("unserved")] = balance
        return out


def build_block_lp(x: DispatchInputs) -> BlockLp:
    """The block LP of ``x`` (module docstring)."""
    commitment = x.grid_commitment_kw
    layout = Layout(
        x.cabinets,
        x.steps,
        x.demand_charge_per_kw > 0 and x.grid_import_limit_kw > 0,  # no import: no peak to price
        commitment is not None,
        np.flatnonzero(x.excess_above_window_kwh > 0),
        np.flatnonzero(x.deficit_below_window_kwh > 0),
    )
    cost = np.zeros(layout.size)
    lower = np.zeros(layout.size)
    upper = np.zeros(layout.size)
    _cabinet_bounds(x, layout, cost, lower, upper)
    _site_bounds(x, layout, cost, lower, upper)
    cabinet_rhs = np.zeros((x.cabinets, x.steps + 1))
    cabinet_rhs[:, 0] = x.energy_initial_kwh
    cabinet_rhs[:, x.steps] = x.energy_final_min_kwh
    site_rhs = np.zeros(layout.site_rows)
    site_rhs[: x.steps] = x.load_kw
    if commitment is not None:
        site_rhs[layout.imbalance_rows] = commitment
    return BlockLp(
        inputs=x,
        layout=layout,
        cost=cost,
        lower=lower,
        upper=upper,
        cabinet_rhs=cabinet_rhs,
        site_rhs=site_rhs,
        charge_coef=x.interval_h * x.charge_efficiency,
        discharge_coef=x.interval_h / x.discharge_efficiency,
    )


def _per_step(values: FloatArray, steps: int) -> FloatArray:
    return np.repeat(values, steps)


def _cabinet_bounds(
    x: DispatchInputs, lay: Layout, cost: FloatArray, lower: FloatArray, upper: FloatArray
) -> None:
    steps, dt = x.steps, x.interval_h
    cycle = _per_step(dt * x.cycle_cost_per_kwh, steps)
    window = dt * x.window_penalty_per_kwh_h
    for name, limit, unit_cost in (
        ("charge", x.charge_limit_kw, cycle),
        ("discharge", x.discharge_limit_kw, cycle),
        ("above", x.excess_above_window_kwh[lay.above_cabinets], window),
        ("below", x.deficit_below_window_kwh[lay.below_cabinets], window),
    ):
        cost[lay.series(name)] = unit_cost
        upper[lay.series(name)] = _per_step(limit, steps)
    lower[lay.series("energy")] = _per_step(x.energy_min_kwh, steps)
    upper[lay.series("energy")] = _per_step(x.energy_max_kwh, steps)
    final = x.energy_final_min_kwh
    cost[lay.scalar("shortfall")] = x.terminal_penalty_per_kwh
    upper[lay.scalar("shortfall")] = np.maximum(final, 0.0)
    # terminal_slack = E[T-1] + shortfall - final <= max stored energy at an optimum (shortfall > 0 only if
    # E[T-1] < final)
    upper[lay.scalar("terminal_slack")] = x.energy_max_kwh + x.excess_above_window_kwh


def _site_bounds(
    x: DispatchInputs, lay: Layout, cost: FloatArray, lower: FloatArray, upper: FloatArray
) -> None:
    dt = x.interval_h
    cost[lay.site("grid_import")] = dt * x.import_price_per_kwh
    upper[lay.site("grid_import")] = x.grid_import_limit_kw
    cost[lay.site("grid_export")] = -dt * x.export_price_per_kwh
    upper[lay.site("grid_export")] = x.grid_export_limit_kw
    upper[lay.site("pv_used")] = x.pv_kw
    cost[lay.site("unserved")] = dt * x.unserved_energy_price_per_kwh
    # unserved = load - gi + ge - u - sum (d - c) <= load + export limit + all charge limits (+ 1 kW, so the
    # variable is never fixed and every balance row keeps a free variable)
    upper[lay.site("unserved")] = x.load_kw + x.grid_export_limit_kw + float(x.charge_limit_kw.sum()) + 1.0
    if lay.has_peak:
        cost[lay.site("peak")] = x.demand_charge_per_kw
        upper[lay.site("peak")] = x.grid_import_limit_kw
        upper[lay.site("peak_slack")] = x.grid_import_limit_kw
    commitment = x.grid_commitment_kw
    if commitment is not None:
        imbalance = dt * x.imbalance_price_per_kwh
        cost[lay.site("over")] = imbalance
        cost[lay.site("under")] = imbalance
        # at an optimum over = max(0, gi - ge - commitment) and under = max(0, commitment - gi + ge) (+ 1 kW:
        # never fixed)
        upper[lay.site("over")] = np.maximum(x.grid_import_limit_kw - commitment, 0.0) + 1.0
        upper[lay.site("under")] = np.maximum(commitment + x.grid_export_limit_kw, 0.0) + 1.0
