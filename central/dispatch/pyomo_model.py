"""The reference formulation: the dispatch LP of docs/interfaces.md: economic dispatch as a readable Pyomo
model.

Build, solve and extract are separate steps; every constraint family is one small function. Stored energy
is a recursion over intervals (never running sums). The direct backend
(:mod:`central.dispatch.highs_backend`) builds exactly this LP, variable for variable; the equivalence tests
hold the two together.

Variables (power [kW], energy [kWh]):

- ``c[b,t]``, ``d[b,t]`` charge and discharge of cabinet b in interval t; ``e[b,t]`` stored energy at the
  end of t;
- ``gi[t]``, ``ge[t]`` grid import and export; ``u[t]`` PV used (PV may be curtailed);
- ``unserved[t]`` load that cannot be served (penalised);
- ``shortfall[b]`` stored energy missing to the terminal target (penalised);
- ``above[b,t]``, ``below[b,t]`` stored energy outside the SoC window, only for cabinets that start outside
  it (penalised per hour);
- ``peak`` the highest import (with a demand charge); ``over[t]``, ``under[t]`` the deviation from the grid
  commitment (when one is given); ``charging[b,t]`` binary (only when simultaneous charge and discharge is
  forbidden).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from central.dispatch import pyomo_quality, quality
from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.options import DispatchOptions
from central.dispatch.solution import LpSolution, failed_solution


def build_model(x: DispatchInputs, *, forbid_simultaneous: bool = False) -> Any:
    """The dispatch model for inputs ``x`` (a Pyomo ``ConcreteModel``)."""
    import pyomo.environ as pyo

    m = pyo.ConcreteModel(name="economic_dispatch")
    m.B = pyo.Set(initialize=range(x.cabinets), ordered=True)
    m.T = pyo.Set(initialize=range(x.steps), ordered=True)
    m.B_above = pyo.Set(initialize=[b for b in m.B if x.excess_above_window_kwh[b] > 0], ordered=True)
    m.B_below = pyo.Set(initialize=[b for b in m.B if x.deficit_below_window_kwh[b] > 0], ordered=True)
    _add_variables(m, x)
    _add_balance(m, x)
    _add_storage(m, x)
    _add_terminal(m, x)
    _add_soc_window(m, x)
    _add_peak(m, x)
    _add_imbalance(m, x)
    if forbid_simultaneous:
        _add_no_simultaneous(m, x)
    _add_objective(m, x)
    return m


def _add_variables(m: Any, x: DispatchInputs) -> None:
    import pyomo.environ as pyo

    nonneg = pyo.NonNegativeReals
    m.c = pyo.Var(m.B, m.T, domain=nonneg, bounds=lambda _, b, t: (0.0, float(x.charge_limit_kw[b])))
    m.d = pyo.Var(m.B, m.T, domain=nonneg, bounds=lambda _, b, t: (0.0, float(x.discharge_limit_kw[b])))
    m.e = pyo.Var(m.B, m.T, bounds=lambda _, b, t: _energy_bounds(x, b))
    m.gi = pyo.Var(m.T, domain=nonneg, bounds=(0.0, x.grid_import_limit_kw))
    m.ge = pyo.Var(m.T, domain=nonneg, bounds=(0.0, x.grid_export_limit_kw))
    m.u = pyo.Var(m.T, domain=nonneg, bounds=lambda _, t: (0.0, float(x.pv_kw[t])))
    m.unserved = pyo.Var(m.T, domain=nonneg)
    m.shortfall = pyo.Var(m.B, domain=nonneg)


def _energy_bounds(x: DispatchInputs, b: int) -> tuple[float, float]:
    """[e_min, e_max]; widened to [0, capacity] on the side where the cabinet starts outside."""
    lower = 0.0 if x.deficit_below_window_kwh[b] > 0 else float(x.energy_min_kwh[b])
    upper = float(x.capacity_kwh[b]) if x.excess_above_window_kwh[b] > 0 else float(x.energy_max_kwh[b])
    return lower, upper


def _add_balance(m: Any, x: DispatchInputs) -> None:
    """gi - ge + u + unserved + sum_b (d - c) = load."""
    import pyomo.environ as pyo

    def balance(m: Any, t: int) -> Any:
        batteries = sum(m.d[b, t] - m.c[b, t] for b in m.B)
        return m.gi[t] - m.ge[t] + m.u[t] + m.unserved[t] + batteries == float(x.load_kw[t])

    m.balance = pyo.Constraint(m.T, rule=balance)


def _add_storage(m: Any, x: DispatchInputs) -> None:
    """e[b,t] = e[b,t-1] + dt (eta_c c - d / eta_d), e[b,-1] = initial energy."""
    import pyomo.environ as pyo

    dt = x.interval_h

    def storage(m: Any, b: int, t: int) -> Any:
        before = float(x.energy_initial_kwh[b]) if t == 0 else m.e[b, t - 1]
        flow = float(x.charge_efficiency[b]) * m.c[b, t] - m.d[b, t] / float(x.discharge_efficiency[b])
        return m.e[b, t] == before + dt * flow

    m.storage = pyo.Constraint(m.B, m.T, rule=storage)


def _add_terminal(m: Any, x: DispatchInputs) -> None:
    """e[b,T-1] + shortfall[b] >= final energy."""
    import pyomo.environ as pyo

    last = x.steps - 1

    def terminal(m: Any, b: int) -> Any:
        return m.e[b, last] + m.shortfall[b] >= float(x.energy_final_min_kwh[b])

    m.terminal = pyo.Constraint(m.B, rule=terminal)


def _add_soc_window(m: Any, x: DispatchInputs) -> None:
    """Cabinets that start outside the window: e - above <= e_max, e + below >= e_min (slack <= start)."""
    import pyomo.environ as pyo

    m.above = pyo.Var(m.B_above, m.T, bounds=lambda _, b, t: (0.0, float(x.excess_above_window_kwh[b])))
    m.below = pyo.Var(m.B_below, m.T, bounds=lambda _, b, t: (0.0, float(x.deficit_below_window_kwh[b])))
    m.window_max = pyo.Constraint(
        m.B_above, m.T, rule=lambda m, b, t: m.e[b, t] - m.above[b, t] <= float(x.energy_max_kwh[b])
    )
    m.window_min = pyo.Constraint(
        m.B_below, m.T, rule=lambda m, b, t: m.e[b, t] + m.below[b, t] >= float(x.energy_min_kwh[b])
    )


def _add_peak(m: Any, x: DispatchInputs) -> None:
    """gi[t] <= peak (only with a demand charge)."""
    import pyomo.environ as pyo

    if x.demand_charge_per_kw <= 0:
        return
    m.peak = pyo.Var(bounds=(0.0, x.grid_import_limit_kw))
    m.peak_import = pyo.Constraint(m.T, rule=lambda m, t: m.gi[t] <= m.peak)


def _add_imbalance(m: Any, x: DispatchInputs) -> None:
    """gi - ge - commitment = over - under (only when a commitment is given)."""
    import pyomo.environ as pyo

    commitment = x.grid_commitment_kw
    if commitment is None:
        return
    m.over = pyo.Var(m.T, domain=pyo.NonNegativeReals)
    m.under = pyo.Var(m.T, domain=pyo.NonNegativeReals)
    m.imbalance = pyo.Constraint(
        m.T, rule=lambda m, t: m.gi[t] - m.ge[t] - float(commitment[t]) == m.over[t] - m.under[t]
    )


def _add_no_simultaneous(m: Any, x: DispatchInputs) -> None:
    """c <= c_max * charging, d <= d_max * (1 - charging), charging binary."""
    import pyomo.environ as pyo

    m.charging = pyo.Var(m.B, m.T, domain=pyo.Binary)
    m.charge_only_when_charging = pyo.Constraint(
        m.B, m.T, rule=lambda m, b, t: m.c[b, t] <= float(x.charge_limit_kw[b]) * m.charging[b, t]
    )
    m.discharge_only_when_not = pyo.Constraint(
        m.B, m.T, rule=lambda m, b, t: m.d[b, t] <= float(x.discharge_limit_kw[b]) * (1 - m.charging[b, t])
    )


def _add_objective(m: Any, x: DispatchInputs) -> None:
    """Energy cost - export revenue + cycle cost + demand charge + imbalance cost + penalties."""
    import pyomo.environ as pyo

    dt = x.interval_h
    energy = sum(dt * float(x.import_price_per_kwh[t]) * m.gi[t] for t in m.T)
    export = sum(dt * float(x.export_price_per_kwh[t]) * m.ge[t] for t in m.T)
    cycle = sum(dt * float(x.cycle_cost_per_kwh[b]) * (m.c[b, t] + m.d[b, t]) for b in m.B for t in m.T)
    demand = x.demand_charge_per_kw * m.peak if x.demand_charge_per_kw > 0 else 0.0
    imbalance = (
        sum(dt * x.imbalance_price_per_kwh * (m.over[t] + m.under[t]) for t in m.T)
        if x.grid_commitment_kw is not None
        else 0.0
    )
    window = sum(dt * x.window_penalty_per_kwh_h * m.above[b, t] for b in m.B_above for t in m.T) + sum(
        dt * x.window_penalty_per_kwh_h * m.below[b, t] for b in m.B_below for t in m.T
    )
    penalties = (
        sum(dt * x.unserved_energy_price_per_kwh * m.unserved[t] for t in m.T)
        + sum(x.terminal_penalty_per_kwh * m.shortfall[b] for b in m.B)
        + window
    )
    m.total = pyo.Objective(expr=energy - export + cycle + demand + imbalance + penalties, sense=pyo.minimize)


def solve_model(m: Any, options: DispatchOptions, time_limit_s: float | None = None) -> tuple[bool, str, Any]:
    """Solve the active objective with HiGHS through Pyomo and load the solution: (usable, message, results).

    ``time_limit_s`` defaults to the options' limit.
    """
    from pyomo.contrib.solver.common.results import TerminationCondition
    from pyomo.contrib.solver.solvers.highs import Highs

    from central.dispatch.highs_runtime import suppress_banner

    suppress_banner()
    solver_options = options.highs_options()
    solver_options.pop("output_flag")
    configured_s = float(solver_options.pop("time_limit"))
    limit_s = configured_s if time_limit_s is None else time_limit_s
    if limit_s <= 0:
        return False, f"HiGHS stopped at the time limit of {configured_s:g} s without a proven optimum", None
    results = Highs().solve(
        m,
        time_limit=limit_s,
        solver_options=solver_options,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
    )
    condition = results.termination_condition
    if condition != TerminationCondition.convergenceCriteriaSatisfied:
        if condition == TerminationCondition.maxTimeLimit:
            message = f"HiGHS stopped at the time limit of {configured_s:g} s without a proven optimum"
            return False, message, results
        return False, f"HiGHS (through Pyomo): {condition.name}", results
    results.solution_loader.load_vars()
    return True, "HiGHS through Pyomo: optimal", results


def extract(m: Any, x: DispatchInputs) -> dict[str, FloatArray]:
    """The primal values as arrays: cabinet variables (B, T), site variables (T,)."""

    def cabinet(var: Any) -> FloatArray:
        return np.array([[var[b, t].value or 0.0 for t in m.T] for b in m.B], dtype=np.float64).reshape(
            x.cabinets, x.steps
        )

    def site(var: Any) -> FloatArray:
        return np.array([var[t].value or 0.0 for t in m.T], dtype=np.float64)

    return {
        "charge_kw": cabinet(m.c),
        "discharge_kw": cabinet(m.d),
        "energy_kwh": cabinet(m.e),
        "grid_import_kw": site(m.gi),
        "grid_export_kw": site(m.ge),
        "pv_used_kw": site(m.u),
        "unserved_kw": site(m.unserved),
    }


def solve(x: DispatchInputs, options: DispatchOptions) -> LpSolution:
    """Build, solve, run the second stage when ``options.smoothing``, extract; never raises for solver
    trouble (``ok`` False, with the reason)."""
    import pyomo.environ as pyo

    build_start_s = time.perf_counter()
    m = build_model(x, forbid_simultaneous=options.forbid_simultaneous)
    build_s = time.perf_counter() - build_start_s
    solve_start_s = time.perf_counter()
    ok, message, results = solve_model(m, options)
    solve_s = time.perf_counter() - solve_start_s
    if not ok:
        return failed_solution(message, build_s, solve_s)
    optimum = float(results.incumbent_objective)
    stage2_s = 0.0
    if options.smoothing and quality.criteria(x):
        first = _first_stage(m, options, results)
        if first is not None:
            optimum = float(pyo.value(m.total))
        second = pyomo_quality.smooth(m, x, options, first, optimum, solve_model, solve_s)
        stage2_s = second.solve_s
        message += quality.describe_second_stage(second.completed, second.stopped, second.solve_s)
    return LpSolution(
        ok=True,
        message=message,
        build_s=build_s,
        solve_s=solve_s + stage2_s,
        objective_value=float(pyo.value(m.total.expr)),
        cost_optimum=optimum,
        stage2_s=stage2_s,
        **extract(m, x),
        warm_start=None,  # the reference model always starts from scratch
    )


def _first_stage(m: Any, options: DispatchOptions, results: Any) -> Any:
    """Results with duals: the LP's own; a MIP's binaries are held and the remaining LP solved again (None
    when that fails: the second stage then only bounds the cost)."""
    import pyomo.environ as pyo

    if not hasattr(m, "charging"):
        return results
    for var in m.charging.values():
        var.fix(round(var.value or 0.0))
        var.domain = pyo.Reals
    ok, _, lp_results = solve_model(m, options)
    return lp_results if ok else None
