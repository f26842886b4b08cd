"""The second stage (plan quality) on the Pyomo reference model: the same criteria as the direct backend.

Starting from the solved dispatch model: hold every variable and inequality constraint that the optimum's
reduced costs and duals hold at a bound (the LP's optimal face), bound the cost at ``optimum + tol *
max(|optimum|, 1)``, then per criterion of :mod:`central.dispatch.quality` add its variables and
constraints (one small function each), minimise it, hold its optimal face and bound it for the criteria
that follow. Readable rather than fast: each solve builds the HiGHS model anew.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from central.dispatch.inputs import DispatchInputs
from central.dispatch.options import DispatchOptions
from central.dispatch.quality import (
    FACE_TOLERANCE,
    Criterion,
    chain_bound,
    cost_bound,
    covered,
    criteria,
    current_known,
    needs_throughput,
    spread_groups,
)

Solve = Callable[[Any, DispatchOptions, float], tuple[bool, str, Any]]


@dataclass(frozen=True)
class PyomoSecondStage:
    completed: tuple[Criterion, ...]
    solve_s: float
    stopped: str = ""


def hold_optimal_face(m: Any, results: Any) -> None:
    """Fix the variables with a nonzero reduced cost and make the inequalities with a nonzero dual equalities,
    where the solution has them (every optimal solution does the same)."""
    import pyomo.environ as pyo

    reduced = results.solution_loader.get_reduced_costs()
    duals = results.solution_loader.get_duals()
    for var in m.component_data_objects(pyo.Var, active=True):
        if not var.fixed and abs(reduced.get(var, 0.0)) > FACE_TOLERANCE:
            value = float(var.value or 0.0)
            lower = var.lb if var.lb is not None else value
            upper = var.ub if var.ub is not None else value
            var.fix(min(max(value, lower), upper))
    if not hasattr(m, "face"):
        m.face = pyo.ConstraintList()
    for con in list(m.component_data_objects(pyo.Constraint, active=True)):
        if not con.equality and abs(duals.get(con, 0.0)) > FACE_TOLERANCE:
            activity = float(pyo.value(con.body))
            con.deactivate()
            m.face.add(con.body == activity)


def _add_deviation(m: Any, x: DispatchInputs) -> Any:
    """|d - c - previous| = above + below on every covered (b, t)."""
    import pyomo.environ as pyo

    if x.previous_setpoint_kw is None:  # narrowed for the type checker; callers guarantee it
        raise ValueError("previous_setpoint_kw is required here")
    reference = x.previous_setpoint_kw
    m.K_dev = pyo.Set(initialize=list(zip(*(a.tolist() for a in np.nonzero(covered(x))), strict=True)))
    m.dev_above = pyo.Var(m.K_dev, domain=pyo.NonNegativeReals)
    m.dev_below = pyo.Var(m.K_dev, domain=pyo.NonNegativeReals)
    m.deviation = pyo.Constraint(
        m.K_dev,
        rule=lambda m, b, t: (
            m.d[b, t] - m.c[b, t] - float(reference[b, t]) == m.dev_above[b, t] - m.dev_below[b, t]
        ),
    )
    return sum(m.dev_above[k] + m.dev_below[k] for k in m.K_dev)


def _add_variation(m: Any, x: DispatchInputs) -> Any:
    """|p[b,t] - p[b,t-1]| = up + down (p = d - c), from the current setpoint where it is known."""
    import pyomo.environ as pyo

    current = x.current_setpoint_kw
    known = current_known(x)
    m.K_var = pyo.Set(
        initialize=[(b, t) for b in range(x.cabinets) for t in range(x.steps) if t > 0 or known[b]]
    )
    m.var_up = pyo.Var(m.K_var, domain=pyo.NonNegativeReals)
    m.var_down = pyo.Var(m.K_var, domain=pyo.NonNegativeReals)

    def step(m: Any, b: int, t: int) -> Any:
        before = float(current[b]) if t == 0 and current is not None else m.d[b, t - 1] - m.c[b, t - 1]
        return m.d[b, t] - m.c[b, t] - before == m.var_up[b, t] - m.var_down[b, t]

    m.variation = pyo.Constraint(m.K_var, rule=step)
    return sum(m.var_up[k] + m.var_down[k] for k in m.K_var)


def _add_spread(m: Any, x: DispatchInputs) -> Any:
    """low[g,t] <= SoC[b,t] [%] <= high[g,t] for every cabinet b of per-unit model g."""
    import pyomo.environ as pyo

    groups = spread_groups(x)
    m.G = pyo.Set(initialize=range(len(groups)))
    m.spread_high = pyo.Var(m.G, m.T, bounds=(0.0, 100.0))
    m.spread_low = pyo.Var(m.G, m.T, bounds=(0.0, 100.0))
    members = [(g, int(b), t) for g, group in enumerate(groups) for b in group for t in range(x.steps)]
    m.K_spread = pyo.Set(initialize=members, dimen=3)

    def soc(m: Any, b: int, t: int) -> Any:
        return 100.0 / float(x.capacity_kwh[b]) * m.e[b, t]

    m.spread_below_high = pyo.Constraint(
        m.K_spread, rule=lambda m, g, b, t: soc(m, b, t) <= m.spread_high[g, t]
    )
    m.spread_above_low = pyo.Constraint(
        m.K_spread, rule=lambda m, g, b, t: soc(m, b, t) >= m.spread_low[g, t]
    )
    return sum(m.spread_high[g, t] - m.spread_low[g, t] for g in m.G for t in m.T)


def _add_throughput(m: Any, x: DispatchInputs) -> Any:
    return sum(m.c[b, t] + m.d[b, t] for b in m.B for t in m.T)


BLOCKS: dict[Criterion, Callable[[Any, DispatchInputs], Any]] = {
    Criterion.DEVIATION: _add_deviation,
    Criterion.VARIATION: _add_variation,
    Criterion.SPREAD: _add_spread,
    Criterion.THROUGHPUT: _add_throughput,
}


def smooth(
    m: Any,
    x: DispatchInputs,
    options: DispatchOptions,
    first: Any,
    optimum: float,
    solve: Solve,
    spent_s: float,
) -> PyomoSecondStage:
    """The second stage on the solved model ``m`` (``first``: its results; ``spent_s``: time so far)."""
    import pyomo.environ as pyo

    start_s = time.perf_counter()
    if first is not None:
        hold_optimal_face(m, first)
    m.total.deactivate()
    m.cost_bound = pyo.Constraint(expr=m.total.expr <= cost_bound(optimum, options.cost_tolerance_rel))
    completed: list[Criterion] = []
    pending = list(criteria(x))
    stopped = ""
    while pending:
        criterion = pending.pop(0)
        expression = BLOCKS[criterion](m, x)
        objective = pyo.Objective(expr=expression, sense=pyo.minimize)
        m.add_component(f"minimise_{criterion.value}", objective)
        remaining_s = options.time_limit_s - spent_s - (time.perf_counter() - start_s)
        ok, message, results = solve(m, options, remaining_s)
        if not ok:
            stopped = f"{criterion.value}: {message}"
            break
        completed.append(criterion)
        objective.deactivate()
        last = not pending and criterion is not Criterion.THROUGHPUT
        if last and needs_throughput(_values(m, m.c), _values(m, m.d)):
            pending.append(Criterion.THROUGHPUT)
        if pending:
            hold_optimal_face(m, results)
            m.add_component(
                f"bound_{criterion.value}",
                pyo.Constraint(expr=expression <= chain_bound(pyo.value(expression))),
            )
    return PyomoSecondStage(tuple(completed), time.perf_counter() - start_s, stopped)


def _values(m: Any, var: Any) -> Any:
    return np.array([[var[b, t].value or 0.0 for t in m.T] for b in m.B], dtype=np.float64)
