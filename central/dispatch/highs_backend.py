"""The fast backend: the dispatch LP built column-wise from numpy arrays and solved in ``highspy``.

The same LP as :mod:`central.dispatch.pyomo_model` (docs/interfaces.md: economic dispatch), variable for
variable, built
without a Python loop per nonzero: every constraint family adds its coefficients as whole arrays
(coordinate triplets), and one stable sort by column turns them into the compressed column form HiGHS takes.

Column blocks (cabinet-major: index ``b * T + t``): charge ``c``, discharge ``d``, stored energy ``e``;
grid import ``gi``, export ``ge``, PV used ``u``, unserved load ``s``; then, only when needed, the peak
import, the imbalance split, the terminal shortfall, the SoC-window slacks of cabinets that start outside
their window, and the binaries that forbid simultaneous charge and discharge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import highspy
import numpy as np
from numpy.typing import NDArray

from central.dispatch import highs_quality, quality, warm_start
from central.dispatch.highs_runtime import describe_failure, new_highs, run_highs
from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.options import DispatchOptions
from central.dispatch.solution import LpSolution, failed_solution

IndexArray = NDArray[np.int64]
INF = highspy.kHighsInf
# Column and row families, for the labels that map a basis onto a later LP (central.dispatch.warm_start).
FAMILIES = (
    "charge", "discharge", "energy", "grid_import", "grid_export", "pv_used", "unserved", "shortfall",
    "above", "below", "peak", "over", "under", "charging",
    "balance", "storage", "terminal", "window_max", "window_min", "peak_import", "imbalance",
    "charge_only", "discharge_only",
)  # fmt: skip
Label = tuple[str, tuple[IndexArray, IndexArray]]


@dataclass
class _Assembler:
    """Collects column blocks, row blocks and coefficient triplets; emits a column-wise HighsLp."""

    cost: list[FloatArray] = field(default_factory=list)
    col_lower: list[FloatArray] = field(default_factory=list)
    col_upper: list[FloatArray] = field(default_factory=list)
    row_lower: list[FloatArray] = field(default_factory=list)
    row_upper: list[FloatArray] = field(default_factory=list)
    entry_row: list[IndexArray] = field(default_factory=list)
    entry_col: list[IndexArray] = field(default_factory=list)
    entry_value: list[FloatArray] = field(default_factory=list)
    integer_cols: list[IndexArray] = field(default_factory=list)
    col_labels: warm_start.Labels = field(default_factory=warm_start.Labels)
    row_labels: warm_start.Labels = field(default_factory=warm_start.Labels)
    num_col: int = 0
    num_row: int = 0

    def columns(
        self, cost: FloatArray, lower: FloatArray, upper: FloatArray, label: Label, *, integer: bool = False
    ) -> IndexArray:
        """Add ``len(cost)`` columns labelled ``label`` (for warm starts); return their indices."""
        count = int(cost.shape[0])
        self.col_labels.add(FAMILIES.index(label[0]), *label[1])
        index = np.arange(self.num_col, self.num_col + count, dtype=np.int64)
        self.cost.append(cost)
        self.col_lower.append(np.broadcast_to(lower, (count,)))
        self.col_upper.append(np.broadcast_to(upper, (count,)))
        if integer:
            self.integer_cols.append(index)
        self.num_col += count
        return index

    def rows(self, lower: FloatArray, upper: FloatArray, label: Label) -> IndexArray:
        """Add rows ``lower <= a x <= upper`` labelled ``label``; return their indices."""
        count = int(np.broadcast_shapes(lower.shape, upper.shape)[0])
        self.row_labels.add(FAMILIES.index(label[0]), *label[1])
        self.row_lower.append(np.broadcast_to(lower, (count,)))
        self.row_upper.append(np.broadcast_to(upper, (count,)))
        index = np.arange(self.num_row, self.num_row + count, dtype=np.int64)
        self.num_row += count
        return index

    def coefficients(self, rows: IndexArray, cols: IndexArray, values: FloatArray | float) -> None:
        self.entry_row.append(rows)
        self.entry_col.append(cols)
        self.entry_value.append(np.broadcast_to(np.asarray(values, dtype=np.float64), rows.shape))

    def to_highs(self) -> highspy.HighsLp:
        rows = np.concatenate(self.entry_row)
        cols = np.concatenate(self.entry_col)
        values = np.concatenate(self.entry_value)
        order = np.argsort(cols, kind="stable")
        start = np.zeros(self.num_col + 1, dtype=np.int32)
        np.cumsum(np.bincount(cols, minlength=self.num_col), out=start[1:])
        lp = highspy.HighsLp()
        lp.num_col_ = self.num_col
        lp.num_row_ = self.num_row
        lp.col_cost_ = np.concatenate(self.cost)
        lp.col_lower_ = np.concatenate(self.col_lower)
        lp.col_upper_ = np.concatenate(self.col_upper)
        lp.row_lower_ = np.concatenate(self.row_lower)
        lp.row_upper_ = np.concatenate(self.row_upper)
        matrix = lp.a_matrix_
        matrix.format_ = highspy.MatrixFormat.kColwise
        matrix.num_col_ = self.num_col
        matrix.num_row_ = self.num_row
        matrix.start_ = start
        matrix.index_ = rows[order].astype(np.int32)
        matrix.value_ = values[order]
        return lp

    def layout(self, x: DispatchInputs) -> warm_start.LpLayout:
        """What every column and row means (for a warm start of a later LP)."""
        return warm_start.LpLayout(
            x.cabinet_ids, x.start, x.interval_minutes, self.col_labels.arrays(), self.row_labels.arrays()
        )

    def integer_columns(self) -> IndexArray:
        if not self.integer_cols:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate(self.integer_cols)


@dataclass(frozen=True)
class _Columns:
    """Indices of the columns the result is read from: cabinet blocks (B, T), site blocks (T,)."""

    charge: IndexArray
    discharge: IndexArray
    energy: IndexArray
    grid_import: IndexArray
    grid_export: IndexArray
    pv_used: IndexArray
    unserved: IndexArray
    layout: warm_start.LpLayout | None = None


def _zeros(count: int) -> FloatArray:
    return np.zeros(count, dtype=np.float64)


def _per_step(values: FloatArray, steps: int) -> FloatArray:
    """Repeat a per-cabinet value (B,) for every interval, cabinet-major (B*T,)."""
    return np.repeat(values, steps)


def _cabinet_columns(lp: _Assembler, x: DispatchInputs) -> tuple[IndexArray, IndexArray, IndexArray]:
    steps, dt = x.steps, x.interval_h
    cycle = _per_step(dt * x.cycle_cost_per_kwh, steps)
    every = warm_start.cabinet_steps(np.arange(x.cabinets, dtype=np.int64), steps)
    charge = lp.columns(cycle, _zeros(1), _per_step(x.charge_limit_kw, steps), ("charge", every))
    discharge = lp.columns(
        cycle.copy(), _zeros(1), _per_step(x.discharge_limit_kw, steps), ("discharge", every)
    )
    # A cabinet that starts outside its window may stay outside (penalised) until it is back.
    lower = np.where(x.deficit_below_window_kwh > 0, 0.0, x.energy_min_kwh)
    upper = np.where(x.excess_above_window_kwh > 0, x.capacity_kwh, x.energy_max_kwh)
    energy = lp.columns(
        _zeros(x.cabinets * steps), _per_step(lower, steps), _per_step(upper, steps), ("energy", every)
    )
    shape = (x.cabinets, steps)
    return charge.reshape(shape), discharge.reshape(shape), energy.reshape(shape)


def _site_columns(lp: _Assembler, x: DispatchInputs) -> tuple[IndexArray, IndexArray, IndexArray, IndexArray]:
    dt, steps = x.interval_h, x.steps
    each = warm_start.steps_only(steps)
    grid_import = lp.columns(
        dt * x.import_price_per_kwh, _zeros(1), np.full(1, x.grid_import_limit_kw), ("grid_import", each)
    )
    grid_export = lp.columns(
        -dt * x.export_price_per_kwh, _zeros(1), np.full(1, x.grid_export_limit_kw), ("grid_export", each)
    )
    pv_used = lp.columns(_zeros(steps), _zeros(1), x.pv_kw, ("pv_used", each))
    unserved = lp.columns(
        np.full(steps, dt * x.unserved_energy_price_per_kwh), _zeros(1), np.full(1, INF), ("unserved", each)
    )
    return grid_import, grid_export, pv_used, unserved


def _balance_rows(lp: _Assembler, x: DispatchInputs, cols: _Columns) -> None:
    """gi - ge + u + s + sum_b (d - c) = load [kW]."""
    rows = lp.rows(x.load_kw, x.load_kw, ("balance", warm_start.steps_only(x.steps)))
    for site_cols, sign in (
        (cols.grid_import, 1.0),
        (cols.grid_export, -1.0),
        (cols.pv_used, 1.0),
        (cols.unserved, 1.0),
    ):
        lp.coefficients(rows, site_cols, sign)
    per_cabinet_rows = np.broadcast_to(rows, cols.discharge.shape).ravel()
    lp.coefficients(per_cabinet_rows, cols.discharge.ravel(), 1.0)
    lp.coefficients(per_cabinet_rows, cols.charge.ravel(), -1.0)


def _storage_rows(lp: _Assembler, x: DispatchInputs, cols: _Columns) -> None:
    """e[b,t] - e[b,t-1] - dt * (eta_c c - d / eta_d) = 0, with e[b,-1] the initial energy [kWh]."""
    steps, dt = x.steps, x.interval_h
    right = np.zeros((x.cabinets, steps))
    right[:, 0] = x.energy_initial_kwh
    every = warm_start.cabinet_steps(np.arange(x.cabinets, dtype=np.int64), steps)
    rows = lp.rows(right.ravel(), right.ravel(), ("storage", every)).reshape(x.cabinets, steps)
    lp.coefficients(rows.ravel(), cols.energy.ravel(), 1.0)
    lp.coefficients(rows[:, 1:].ravel(), cols.energy[:, :-1].ravel(), -1.0)
    lp.coefficients(rows.ravel(), cols.charge.ravel(), _per_step(-dt * x.charge_efficiency, steps))
    lp.coefficients(rows.ravel(), cols.discharge.ravel(), _per_step(dt / x.discharge_efficiency, steps))


def _terminal_rows(lp: _Assembler, x: DispatchInputs, cols: _Columns) -> None:
    """e[b,T-1] + shortfall[b] >= final energy [kWh]; the shortfall is penalised per kWh."""
    each = warm_start.cabinets_only(np.arange(x.cabinets, dtype=np.int64))
    shortfall = lp.columns(
        np.full(x.cabinets, x.terminal_penalty_per_kwh), _zeros(1), np.full(1, INF), ("shortfall", each)
    )
    rows = lp.rows(x.energy_final_min_kwh, np.full(1, INF), ("terminal", each))
    lp.coefficients(rows, cols.energy[:, -1], 1.0)
    lp.coefficients(rows, shortfall, 1.0)


def _window_rows(lp: _Assembler, x: DispatchInputs, cols: _Columns) -> None:
    """Only for cabinets that start outside their SoC window: e - above <= e_max, e + below >= e_min.

    The slack is bounded by the initial excess (deficit), so a cabinet never goes further outside than it
    started; every kWh outside costs the window penalty per hour.
    """
    steps, dt = x.steps, x.interval_h
    penalty = dt * x.window_penalty_per_kwh_h
    for amount, bound, sign, names in (
        (x.excess_above_window_kwh, x.energy_max_kwh, -1.0, ("above", "window_max")),
        (x.deficit_below_window_kwh, x.energy_min_kwh, 1.0, ("below", "window_min")),
    ):
        outside = np.flatnonzero(amount > 0)
        if outside.size == 0:
            continue
        each = warm_start.cabinet_steps(outside.astype(np.int64), steps)
        slack = lp.columns(
            np.full(outside.size * steps, penalty),
            _zeros(1),
            _per_step(amount[outside], steps),
            (names[0], each),
        )
        limit = _per_step(bound[outside], steps)
        row_label = (names[1], each)
        rows = (
            lp.rows(np.full(1, -INF), limit, row_label)
            if sign < 0
            else lp.rows(limit, np.full(1, INF), row_label)
        )
        lp.coefficients(rows, cols.energy[outside].ravel(), 1.0)
        lp.coefficients(rows, slack, sign)


def _peak_rows(lp: _Assembler, x: DispatchInputs, cols: _Columns) -> None:
    """gi[t] - peak <= 0; the peak costs demand_charge_per_kw (only with a demand charge)."""
    if x.demand_charge_per_kw <= 0:
        return
    peak = lp.columns(
        np.full(1, x.demand_charge_per_kw),
        _zeros(1),
        np.full(1, x.grid_import_limit_kw),
        ("peak", warm_start.scalar()),
    )
    rows = lp.rows(np.full(1, -INF), _zeros(x.steps), ("peak_import", warm_start.steps_only(x.steps)))
    lp.coefficients(rows, cols.grid_import, 1.0)
    lp.coefficients(rows, np.broadcast_to(peak, rows.shape), -1.0)


def _imbalance_rows(lp: _Assembler, x: DispatchInputs, cols: _Columns) -> None:
    """gi - ge - over + under = commitment; |deviation| = over + under costs the imbalance price."""
    commitment = x.grid_commitment_kw
    if commitment is None:
        return
    cost = np.full(x.steps, x.interval_h * x.imbalance_price_per_kwh)
    each = warm_start.steps_only(x.steps)
    over = lp.columns(cost, _zeros(1), np.full(1, INF), ("over", each))
    under = lp.columns(cost.copy(), _zeros(1), np.full(1, INF), ("under", each))
    rows = lp.rows(commitment, commitment, ("imbalance", each))
    lp.coefficients(rows, cols.grid_import, 1.0)
    lp.coefficients(rows, cols.grid_export, -1.0)
    lp.coefficients(rows, over, -1.0)
    lp.coefficients(rows, under, 1.0)


def _no_simultaneous_rows(lp: _Assembler, x: DispatchInputs, cols: _Columns) -> None:
    """c <= c_max * z and d <= d_max * (1 - z) with z binary (z = 1: charging)."""
    steps = x.steps
    count = x.cabinets * steps
    every = warm_start.cabinet_steps(np.arange(x.cabinets, dtype=np.int64), steps)
    charging = lp.columns(_zeros(count), _zeros(1), np.ones(1), ("charging", every), integer=True)
    charge_limit = _per_step(x.charge_limit_kw, steps)
    discharge_limit = _per_step(x.discharge_limit_kw, steps)
    rows = lp.rows(np.full(1, -INF), _zeros(count), ("charge_only", every))
    lp.coefficients(rows, cols.charge.ravel(), 1.0)
    lp.coefficients(rows, charging, -charge_limit)
    rows = lp.rows(np.full(1, -INF), discharge_limit, ("discharge_only", every))
    lp.coefficients(rows, cols.discharge.ravel(), 1.0)
    lp.coefficients(rows, charging, discharge_limit)


def build_lp(x: DispatchInputs, forbid_simultaneous: bool) -> tuple[highspy.HighsLp, IndexArray, _Columns]:
    """The dispatch LP (a MIP with ``forbid_simultaneous``): HighsLp, integer columns, result columns."""
    lp = _Assembler()
    charge, discharge, energy = _cabinet_columns(lp, x)
    grid_import, grid_export, pv_used, unserved = _site_columns(lp, x)
    cols = _Columns(charge, discharge, energy, grid_import, grid_export, pv_used, unserved)
    _storage_rows(lp, x, cols)
    _balance_rows(lp, x, cols)
    _terminal_rows(lp, x, cols)
    _window_rows(lp, x, cols)
    _peak_rows(lp, x, cols)
    _imbalance_rows(lp, x, cols)
    if forbid_simultaneous:
        _no_simultaneous_rows(lp, x, cols)
    return lp.to_highs(), lp.integer_columns(), replace(cols, layout=lp.layout(x))


def solve(
    x: DispatchInputs, options: DispatchOptions, warm: warm_start.WarmStart | None = None
) -> LpSolution:
    """Build and solve the LP of ``x`` (from ``warm``'s basis shifted onto it, when given), then the second
    stage when ``options.smoothing``; never raises for solver trouble (``ok`` False, with the reason)."""
    build_start_s = time.perf_counter()
    lp, integer_cols, cols = build_lp(x, options.forbid_simultaneous)
    if cols.layout is None:  # narrowed for the type checker; callers guarantee it
        raise ValueError("layout is required here")
    try:
        highs = new_highs(lp, integer_cols, options.highs_options())
    except RuntimeError as exc:
        return failed_solution(str(exc), time.perf_counter() - build_start_s)
    warmed = False
    if warm is not None and not integer_cols.size:
        basis = warm_start.shifted_basis(warm, cols.layout)
        # refused (kError): HiGHS starts from scratch
        warmed = basis is not None and highs.setBasis(basis) != highspy.HighsStatus.kError
    build_s = time.perf_counter() - build_start_s
    solve_start_s = time.perf_counter()
    run_status = run_highs(highs, interruptible=options.interruptible)
    solve_s = time.perf_counter() - solve_start_s
    status = highs.getModelStatus()
    if run_status == highspy.HighsStatus.kError or status != highspy.HighsModelStatus.kOptimal:
        return failed_solution(describe_failure(highs, status, options.time_limit_s), build_s, solve_s)
    values = np.asarray(highs.getSolution().col_value, dtype=np.float64)
    optimum = float(highs.getInfo().objective_function_value)
    next_warm = warm_start.capture(highs, cols.layout) if not integer_cols.size else None
    message = _describe_success(highs.getInfo(), options) + (
        "; warm start from the previous basis" if warmed else ""
    )
    stage2_s = 0.0
    if options.smoothing and quality.criteria(x):
        first = highs_quality.first_stage(highs, integer_cols, values, optimum, options)
        cabinet_cols = highs_quality.CabinetColumns(cols.charge, cols.discharge, cols.energy)
        second = highs_quality.smooth(highs, lp, x, cabinet_cols, first, options)
        values, stage2_s = second.col_value, second.solve_s
        message += quality.describe_second_stage(second.completed, second.stopped, second.solve_s)
    return LpSolution(
        ok=True,
        message=message,
        build_s=build_s,
        solve_s=solve_s + stage2_s,
        objective_value=float(np.dot(np.asarray(lp.col_cost_), values)),
        cost_optimum=optimum,
        stage2_s=stage2_s,
        charge_kw=values[cols.charge],
        discharge_kw=values[cols.discharge],
        energy_kwh=values[cols.energy],
        grid_import_kw=values[cols.grid_import],
        grid_export_kw=values[cols.grid_export],
        pv_used_kw=values[cols.pv_used],
        unserved_kw=values[cols.unserved],
        warm_start=next_warm,
    )


def _describe_success(info: Any, options: DispatchOptions) -> str:
    if options.forbid_simultaneous:
        return f"HiGHS MIP optimal within gap {options.mip_gap:g} ({info.mip_node_count} nodes)"
    if info.ipm_iteration_count > 0:
        return f"HiGHS LP optimal (IPM, {info.ipm_iteration_count} iterations)"
    return f"HiGHS LP optimal (simplex, {info.simplex_iteration_count} iterations)"
