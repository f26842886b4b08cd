"""The second stage (plan quality) on the direct HiGHS backend: build -> solve -> extract, per criterion.

It runs on the HiGHS instance that holds the dispatch LP and needs only a feasible first-stage solution with
its cost: the cost-bound row ``cost . x <= optimum + tol * max(|optimum|, 1)`` keeps every later solution
within the tolerance. When the first stage's reduced costs and duals are known (an optimal basis), the
variables and inequality rows they hold at a bound are held there too: every optimal solution does so
(complementary slackness), so this restricts nothing that costs nothing, and presolve then removes most of
the LP. Each criterion of :mod:`central.dispatch.quality` is then one block (auxiliary columns and rows,
one small function each), one objective and one cold, presolved HiGHS run; its optimal face and a
chain-bound row carry it into the next criterion. HiGHS's time limit counts all runs of the instance, so
``time_limit_s`` bounds both stages together; a criterion that does not finish leaves the plan of the last
one that did (every one of them is within the cost bound).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import highspy
import numpy as np
from numpy.typing import NDArray

from central.dispatch.highs_runtime import describe_failure, run_highs
from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.options import DispatchOptions
from central.dispatch.quality import (
    FACE_TOLERANCE,
    Criterion,
    IndexArray,
    chain_bound,
    cost_bound,
    covered,
    criteria,
    current_known,
    needs_throughput,
    spread_groups,
)

INF = highspy.kHighsInf


@dataclass(frozen=True)
class CabinetColumns:
    """LP column indices of charge, discharge and stored energy, each (B, T)."""

    charge: IndexArray
    discharge: IndexArray
    energy: IndexArray


@dataclass(frozen=True)
class FirstStage:
    """A feasible first-stage solution and its cost; duals when it is an optimal basis (else None)."""

    col_value: FloatArray
    cost: float
    col_dual: FloatArray | None = None
    row_value: FloatArray | None = None
    row_dual: FloatArray | None = None


@dataclass(frozen=True)
class SecondStage:
    """The values of the LP's columns after the second stage, what it completed and why it stopped."""

    col_value: FloatArray
    completed: tuple[Criterion, ...]
    solve_s: float
    stopped: str = ""  # empty when every criterion was minimised


class _StageLp:
    """The HiGHS instance plus the bounds it holds (to hold a face without copying the LP back)."""

    def __init__(self, highs: highspy.Highs, lp: highspy.HighsLp) -> None:
        self.highs = highs
        self.col_lower = np.array(lp.col_lower_, dtype=np.float64)
        self.col_upper = np.array(lp.col_upper_, dtype=np.float64)
        self.row_lower = np.array(lp.row_lower_, dtype=np.float64)
        self.row_upper = np.array(lp.row_upper_, dtype=np.float64)

    def columns(self, count: int, lower: float, upper: float) -> IndexArray:
        """Add ``count`` columns without entries (their rows come next); return their indices."""
        first = self.col_lower.size
        lows, ups = np.full(count, lower), np.full(count, upper)
        empty_i, empty_f = np.zeros(0, dtype=np.int32), np.zeros(0)
        self.highs.addCols(count, np.zeros(count), lows, ups, 0, empty_i, empty_i, empty_f)
        self.col_lower = np.concatenate((self.col_lower, lows))
        self.col_upper = np.concatenate((self.col_upper, ups))
        return np.arange(first, first + count, dtype=np.intp)

    def rows(self, lower: FloatArray, upper: FloatArray, index: IndexArray, value: FloatArray) -> None:
        """Add rows ``lower <= sum_k value[r,k] x[index[r,k]] <= upper``; ``index`` is (R, K)."""
        count, per_row = index.shape
        starts = np.arange(count, dtype=np.int32) * per_row
        values = np.broadcast_to(value, index.shape).astype(np.float64).ravel()
        self.highs.addRows(count, lower, upper, index.size, starts, index.ravel().astype(np.int32), values)
        self.row_lower = np.concatenate((self.row_lower, lower))
        self.row_upper = np.concatenate((self.row_upper, upper))

    def bound_row(self, index: IndexArray, weight: FloatArray, upper: float) -> None:
        """``weight . x[index] <= upper`` (the cost bound, or a criterion already minimised)."""
        nonzero = weight != 0.0
        index, weight = index[nonzero], weight[nonzero]
        starts = np.zeros(1, dtype=np.int32)
        self.highs.addRows(
            1, np.array([-INF]), np.array([upper]), index.size, starts, index.astype(np.int32), weight
        )
        self.row_lower = np.append(self.row_lower, -INF)
        self.row_upper = np.append(self.row_upper, upper)

    def hold_face(
        self, col_value: FloatArray, col_dual: FloatArray, row_value: FloatArray, row_dual: FloatArray
    ) -> None:
        """Hold every column and inequality row with a nonzero reduced cost or dual where it is."""
        cols = np.flatnonzero((np.abs(col_dual) > FACE_TOLERANCE) & (self.col_lower < self.col_upper))
        held = np.clip(col_value[cols], self.col_lower[cols], self.col_upper[cols])
        self.highs.changeColsBounds(cols.size, cols.astype(np.int32), held, held)
        self.col_lower[cols] = held
        self.col_upper[cols] = held
        rows = np.flatnonzero((np.abs(row_dual) > FACE_TOLERANCE) & (self.row_lower < self.row_upper))
        active = np.clip(row_value[rows], self.row_lower[rows], self.row_upper[rows])
        # changeRowsBounds exists in highspy 1.16 but is missing from its type stubs
        self.highs.changeRowsBounds(rows.size, rows.astype(np.int32), active, active)  # type: ignore[attr-defined]
        self.row_lower[rows] = active
        self.row_upper[rows] = active

    def minimise(self, index: IndexArray, weight: FloatArray, interruptible: bool) -> bool:
        """Minimise ``weight . x[index]`` from scratch (presolved); True when optimal."""
        cost = np.zeros(self.col_lower.size)
        cost[index] = weight
        self.highs.changeColsCost(cost.size, np.arange(cost.size, dtype=np.int32), cost)
        self.highs.clearSolver()  # a cold, presolved run beats a warm start from the cost optimum
        status = run_highs(self.highs, interruptible=interruptible)
        return (
            status != highspy.HighsStatus.kError
            and self.highs.getModelStatus() == highspy.HighsModelStatus.kOptimal
        )


def first_stage(
    highs: highspy.Highs,
    integer_cols: NDArray[np.int64],
    values: FloatArray,
    optimum: float,
    options: DispatchOptions,
) -> FirstStage:
    """The first stage's solution with the duals the second stage needs.

    An LP's optimal basis has them. A MIP has none: its binaries are held where they are and the LP that
    remains is solved again for them (without duals the second stage still holds the cost bound).
    """
    if integer_cols.size:
        count = integer_cols.size
        index = integer_cols.astype(np.int32)
        held = np.round(values[integer_cols])
        highs.changeColsIntegrality(
            count, index, np.full(count, int(highspy.HighsVarType.kContinuous), np.uint8)
        )
        highs.changeColsBounds(count, index, held, held)
        highs.clearSolver()
        run_highs(highs, interruptible=options.interruptible)
        if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return FirstStage(values, optimum)
        optimum = float(highs.getInfo().objective_function_value)
    solution = highs.getSolution()
    return FirstStage(
        col_value=np.asarray(solution.col_value, dtype=np.float64),
        cost=optimum,
        col_dual=np.asarray(solution.col_dual, dtype=np.float64),
        row_value=np.asarray(solution.row_value, dtype=np.float64),
        row_dual=np.asarray(solution.row_dual, dtype=np.float64),
    )


Block = Callable[[_StageLp, DispatchInputs, CabinetColumns], tuple[IndexArray, FloatArray]]


def _deviation_block(lp: _StageLp, x: DispatchInputs, cols: CabinetColumns) -> tuple[IndexArray, FloatArray]:
    """d - c - above + below = previous on every covered (b, t); minimise above + below."""
    if x.previous_setpoint_kw is None:  # narrowed for the type checker; callers guarantee it
        raise ValueError("previous_setpoint_kw is required here")
    b, t = np.nonzero(covered(x))
    above, below = lp.columns(b.size, 0.0, INF), lp.columns(b.size, 0.0, INF)
    reference = x.previous_setpoint_kw[b, t]
    index = np.column_stack((cols.discharge[b, t], cols.charge[b, t], above, below))
    lp.rows(reference, reference, index, np.array([1.0, -1.0, -1.0, 1.0]))
    return np.concatenate((above, below)), np.ones(2 * b.size)


def _variation_block(lp: _StageLp, x: DispatchInputs, cols: CabinetColumns) -> tuple[IndexArray, FloatArray]:
    """p[b,t] - p[b,t-1] - up + down = 0 (p = d - c), and p[b,0] - up + down = current where it is known;
    minimise up + down."""
    steps = x.steps
    b = np.repeat(np.arange(x.cabinets), steps - 1)
    t = np.tile(np.arange(1, steps), x.cabinets)
    up, down = lp.columns(b.size, 0.0, INF), lp.columns(b.size, 0.0, INF)
    index = np.column_stack(
        (cols.discharge[b, t], cols.charge[b, t], cols.discharge[b, t - 1], cols.charge[b, t - 1], up, down)
    )
    zero = np.zeros(b.size)
    lp.rows(zero, zero, index, np.array([1.0, -1.0, -1.0, 1.0, -1.0, 1.0]))
    parts = [up, down]
    known = np.flatnonzero(current_known(x))
    if known.size:
        if x.current_setpoint_kw is None:  # narrowed for the type checker; callers guarantee it
            raise ValueError("current_setpoint_kw is required here")
        first_up, first_down = lp.columns(known.size, 0.0, INF), lp.columns(known.size, 0.0, INF)
        current = x.current_setpoint_kw[known]
        index = np.column_stack((cols.discharge[known, 0], cols.charge[known, 0], first_up, first_down))
        lp.rows(current, current, index, np.array([1.0, -1.0, -1.0, 1.0]))
        parts += [first_up, first_down]
    objective = np.concatenate(parts)
    return objective, np.ones(objective.size)


def _spread_block(lp: _StageLp, x: DispatchInputs, cols: CabinetColumns) -> tuple[IndexArray, FloatArray]:
    """lo[g,t] <= SoC[b,t] <= hi[g,t] for every cabinet b of model g; minimise sum (hi - lo) [%]."""
    groups = spread_groups(x)
    steps = x.steps
    members = np.concatenate(groups)
    group_of = np.repeat(np.arange(len(groups)), [g.size for g in groups])
    high = lp.columns(len(groups) * steps, 0.0, 100.0).reshape(len(groups), steps)
    low = lp.columns(len(groups) * steps, 0.0, 100.0).reshape(len(groups), steps)
    b = np.repeat(members, steps)
    g = np.repeat(group_of, steps)
    t = np.tile(np.arange(steps), members.size)
    per_pct = np.column_stack((100.0 / x.capacity_kwh[b], np.full(b.size, -1.0)))
    zero, inf = np.zeros(b.size), np.full(b.size, INF)
    lp.rows(-inf, zero, np.column_stack((cols.energy[b, t], high[g, t])), per_pct)
    lp.rows(zero, inf, np.column_stack((cols.energy[b, t], low[g, t])), per_pct)
    return np.concatenate((high.ravel(), low.ravel())), np.concatenate(
        (np.ones(high.size), -np.ones(low.size))
    )


def _throughput_block(lp: _StageLp, x: DispatchInputs, cols: CabinetColumns) -> tuple[IndexArray, FloatArray]:
    """No new rows: minimise sum (c + d)."""
    index = np.concatenate((cols.charge.ravel(), cols.discharge.ravel()))
    return index.astype(np.intp), np.ones(index.size)


BLOCKS: dict[Criterion, Block] = {
    Criterion.DEVIATION: _deviation_block,
    Criterion.VARIATION: _variation_block,
    Criterion.SPREAD: _spread_block,
    Criterion.THROUGHPUT: _throughput_block,
}


def smooth(
    highs: highspy.Highs,
    lp: highspy.HighsLp,
    x: DispatchInputs,
    cols: CabinetColumns,
    first: FirstStage,
    options: DispatchOptions,
) -> SecondStage:
    """Run the second stage on ``highs`` (which holds ``lp``, the dispatch LP, and nothing else yet)."""
    start_s = time.perf_counter()
    stage = _StageLp(highs, lp)
    cost = np.asarray(lp.col_cost_, dtype=np.float64)
    if first.col_dual is not None and first.row_value is not None and first.row_dual is not None:
        stage.hold_face(first.col_value, first.col_dual, first.row_value, first.row_dual)
    stage.bound_row(
        np.arange(cost.size, dtype=np.intp), cost, cost_bound(first.cost, options.cost_tolerance_rel)
    )
    values = first.col_value
    completed: list[Criterion] = []
    pending = list(criteria(x))
    stopped = ""
    while pending:
        criterion = pending.pop(0)
        index, weight = BLOCKS[criterion](stage, x, cols)
        if not stage.minimise(index, weight, options.interruptible):
            status = highs.getModelStatus()
            stopped = f"{criterion.value}: {describe_failure(highs, status, options.time_limit_s)}"
            break
        solution = highs.getSolution()
        col_value = np.asarray(solution.col_value, dtype=np.float64)
        values = col_value[: cost.size]
        completed.append(criterion)
        last = not pending and criterion is not Criterion.THROUGHPUT
        if last and needs_throughput(values[cols.charge], values[cols.discharge]):
            pending.append(Criterion.THROUGHPUT)
        if pending:
            stage.hold_face(
                col_value,
                np.asarray(solution.col_dual, dtype=np.float64),
                np.asarray(solution.row_value, dtype=np.float64),
                np.asarray(solution.row_dual, dtype=np.float64),
            )
            stage.bound_row(index, weight, chain_bound(float(np.dot(weight, col_value[index]))))
    return SecondStage(values, tuple(completed), time.perf_counter() - start_s, stopped)
