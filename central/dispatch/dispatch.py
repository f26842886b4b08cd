"""The dispatch's one entry point below ``solve_dispatch``: which method runs, and its plan's certificate.

``solve_method(inputs, options, warm) -> DispatchResult`` (docs/dispatch.md: choosing the method):

- ``exact``: the single LP (:func:`central.dispatch.optimizer.solve_inputs`, both backends, the second stage
  of :mod:`central.dispatch.highs_quality`); the lower bound is the LP's optimum, the gap the second stage's
  cost tolerance at most. ``forbid_simultaneous`` (a MIP) always runs here, without a bound.
- ``block_ipm``: the certified block interior point (:mod:`central.dispatch.certified`), in a worker process
  when ``options.in_worker`` (:mod:`central.dispatch.worker`), then the second stage of
  :mod:`central.dispatch.ipm_quality`; the lower bound is the interior point's best Lagrangian bound.
- ``auto``: ``exact`` up to ``options.exact_max_cabinet_steps`` cabinets x intervals after merging per-unit
  identical cabinets, ``block_ipm`` above. When the exact LP gives no plan (its time limit), ``auto``
  returns every cabinet idle (always feasible) with the trivial bound rather than nothing; a forced
  ``exact`` returns a ``failed`` plan with the reason instead.

The plan's ``solver`` block names the method that ran, the lower bound and the gap.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from central.dispatch import aggregation, ipm_quality, quality, recovery
from central.dispatch.certified import (
    CertifiedOptions,
    CertifiedResult,
    gap_pct,
    idle_result,
    solve_certified,
)
from central.dispatch.inputs import DispatchInputs
from central.dispatch.options import DispatchOptions
from central.dispatch.result import DispatchResult, evaluate
from central.dispatch.solution import LpSolution, failed_solution
from central.dispatch.warm_start import WarmStart
from shared.plan import DispatchMethod, PlanStatus, SolverInfo

log = logging.getLogger(__name__)

SMOOTHING_SHARE = 0.1  # of the time limit kept for the block_ipm plan's second stage
BUDGET_ROUND_OFF = 1e-9  # relative: a smoothed plan above its budget by more is not kept
POLISH_TIME_FACTOR = 2.0  # the polish may take this many times the first stage's solve ...
POLISH_MIN_S = 0.5  # ... but at least this [s]
ExactSolve = Callable[[DispatchInputs, DispatchOptions, WarmStart | None], LpSolution]


def choose_method(inputs: DispatchInputs, options: DispatchOptions) -> DispatchMethod:
    """The method ``options.method`` means for ``inputs`` (never ``auto``)."""
    if options.forbid_simultaneous:
        return DispatchMethod.EXACT
    if options.method is not DispatchMethod.AUTO:
        return options.method
    cabinets = inputs.cabinets
    if options.aggregate_identical:
        cabinets = aggregation.group_identical(inputs).count
    size = cabinets * inputs.steps
    return DispatchMethod.EXACT if size <= options.exact_max_cabinet_steps else DispatchMethod.BLOCK_IPM


def solve_method(
    inputs: DispatchInputs,
    options: DispatchOptions,
    warm: WarmStart | None,
    exact: ExactSolve,
    inputs_s: float = 0.0,
) -> DispatchResult:
    """The plan of ``inputs`` by the method ``options`` choose (module docstring); ``exact`` solves the single
    LP (``solve_inputs``); ``inputs_s`` is the time spent building ``inputs`` (counted as build time)."""
    method = choose_method(inputs, options)
    if method is DispatchMethod.BLOCK_IPM:
        try:
            return _block_ipm(inputs, options, inputs_s)
        except Exception as exc:  # a bug must not take the central service down; it is logged in full
            log.exception("block_ipm dispatch failed")
            why = f"internal error: {type(exc).__name__}: {exc}"
            return _idle_fallback(inputs, why, inputs_s, 0.0, DispatchMethod.BLOCK_IPM)
    try:
        solution = _exact(inputs, options, warm, exact)
    except Exception as exc:  # a bug must not take the central service down; it is logged in full
        log.exception("dispatch optimization failed")
        solution = failed_solution(f"internal error: {type(exc).__name__}: {exc}")
    solver = SolverInfo(
        backend=options.backend,
        build_s=inputs_s + solution.build_s,
        solve_s=solution.solve_s,
        stage2_s=solution.stage2_s,
        message=solution.message,
        method=DispatchMethod.EXACT,
    )
    tolerance = options.cost_tolerance_rel if options.smoothing else 0.0
    result = evaluate(inputs, solution, solver, tolerance)
    if result.status is PlanStatus.FAILED:
        if options.method is DispatchMethod.AUTO and not options.forbid_simultaneous:
            build_s = inputs_s + solution.build_s
            return _idle_fallback(inputs, solution.message, build_s, solution.solve_s, DispatchMethod.EXACT)
        return result
    if options.forbid_simultaneous:  # a MIP within its gap: no LP bound
        return result
    lower = float(solution.cost_optimum) if math.isfinite(solution.cost_optimum) else result.objective.total
    update = {"lower_bound": lower, "gap_pct": gap_pct(result.objective.total, lower)}
    return replace(result, solver=solver.model_copy(update=update))


def polish_applies(inputs: DispatchInputs, options: DispatchOptions) -> bool:
    """Whether the exact path's second stage may be the interior point polish: smoothing on, an LP (not the
    MIP), and nothing to stay close to (no previous plan, no current setpoints: those criteria need the
    lexicographic second stage)."""
    return (
        options.smoothing
        and options.polish
        and options.backend == "highspy"
        and not options.forbid_simultaneous
        and not quality.covered(inputs).any()
        and not quality.current_known(inputs).any()
        and inputs.steps > 1
    )


def _exact(
    inputs: DispatchInputs, options: DispatchOptions, warm: WarmStart | None, exact: ExactSolve
) -> LpSolution:
    """The exact LP with its second stage: the interior point polish where it applies and succeeds, else
    the lexicographic re-solve (from the first stage's basis when the polish was tried)."""
    if not polish_applies(inputs, options):
        return exact(inputs, options, warm)
    start_s = time.perf_counter()
    first = exact(inputs, replace(options, smoothing=False), warm)
    if not first.ok:
        return first
    remaining_s = options.time_limit_s - (time.perf_counter() - start_s)
    polish_limit_s = min(remaining_s, max(POLISH_TIME_FACTOR * first.solve_s, POLISH_MIN_S))
    polished = ipm_quality.polish(inputs, first, options, polish_limit_s) if polish_limit_s > 0 else None
    if polished is not None:
        return polished
    log.info("interior point polish missed the cost tolerance; lexicographic second stage instead")
    tried_s = time.perf_counter() - start_s
    again = exact(
        inputs, replace(options, time_limit_s=max(options.time_limit_s - tried_s, 0.05)), first.warm_start
    )
    return replace(
        again,
        build_s=first.build_s + again.build_s,
        solve_s=tried_s - first.build_s + again.solve_s,
        stage2_s=tried_s - first.build_s - first.solve_s + again.stage2_s,
    )


def _idle_fallback(
    inputs: DispatchInputs, why: str, build_s: float, solve_s: float, method: DispatchMethod
) -> DispatchResult:
    """Every cabinet idle with the trivial bound, when ``method`` gave nothing."""
    log.warning("%s dispatch gave no plan (%s); planning every cabinet idle", method.value, why)
    fallback = idle_result(inputs)
    return _certified_result(
        inputs,
        fallback,
        f"{why}; every cabinet idle (always feasible) instead",
        build_s,
        solve_s,
        method,
    )


def _block_ipm(inputs: DispatchInputs, options: DispatchOptions, inputs_s: float) -> DispatchResult:
    start_s = time.perf_counter()
    share = SMOOTHING_SHARE if options.smoothing else 0.0
    certified_options = CertifiedOptions(
        method=DispatchMethod.BLOCK_IPM,
        time_limit_s=max(options.time_limit_s * (1.0 - share), 0.05),
        gap_target_pct=options.gap_target_pct,
        aggregate_identical=options.aggregate_identical,
    )
    if options.in_worker:
        from central.dispatch.worker import solve_in_worker

        certified = solve_in_worker(inputs, certified_options)
    else:
        certified = solve_certified(inputs, certified_options)
    solve_s = time.perf_counter() - start_s
    message = f"block interior point, {certified.iterations} iterations, stopped: {certified.stop.value}"
    if not options.smoothing:
        return _certified_result(inputs, certified, message, inputs_s, solve_s, DispatchMethod.BLOCK_IPM)
    stage_start_s = time.perf_counter()
    # the second stage has what the solve left of the time limit, at most SMOOTHING_SHARE of it
    deadline_s = min(start_s + options.time_limit_s, stage_start_s + SMOOTHING_SHARE * options.time_limit_s)
    base = _as_solution(inputs, certified.result)
    budget = ipm_quality.cost_budget(
        certified.upper_bound, certified.lower_bound, options.gap_target_pct, options.cost_tolerance_rel
    )
    smoothed = ipm_quality.smooth(inputs, base, budget, options, deadline_s)
    stage2_s = time.perf_counter() - stage_start_s
    applied = ", ".join(smoothed.applied) or "no move within the cost budget"
    message += f"; second stage: {applied} in {stage2_s:.3f} s"
    upper = certified.upper_bound
    solution = replace(smoothed.solution, objective_value=smoothed.cost, cost_optimum=upper)
    tolerance = max(budget - upper, 0.0) / max(abs(upper), 1.0)
    solver = SolverInfo(
        backend="block_ipm",
        build_s=inputs_s,
        solve_s=solve_s + stage2_s,
        stage2_s=stage2_s,
        message=message,
        method=DispatchMethod.BLOCK_IPM,
    )
    result = evaluate(inputs, solution, solver, tolerance)
    if result.objective.total > budget + BUDGET_ROUND_OFF * max(abs(budget), 1.0):
        # the plan as evaluated left the budget (round-off in a penalty): keep the certified plan
        log.warning("block_ipm second stage left its cost budget; keeping the certified plan")
        message += " (not kept: over the cost budget)"
        return _certified_result(inputs, certified, message, inputs_s, solve_s, DispatchMethod.BLOCK_IPM)
    return _with_bound(result, certified.lower_bound, message)


def _as_solution(inputs: DispatchInputs, result: DispatchResult) -> LpSolution:
    """The certified plan's series as a solution of the full LP (what the second stage starts from)."""
    grid = result.grid_kw
    unserved = inputs.load_kw - grid - result.pv_used_kw - result.setpoint_kw.sum(axis=0)
    return LpSolution(
        ok=True,
        message="",
        build_s=0.0,
        solve_s=0.0,
        charge_kw=result.charge_kw,
        discharge_kw=result.discharge_kw,
        energy_kwh=recovery.stored_energy(inputs, result.charge_kw, result.discharge_kw),
        grid_import_kw=np.maximum(grid, 0.0),
        grid_export_kw=np.maximum(-grid, 0.0),
        pv_used_kw=result.pv_used_kw,
        unserved_kw=np.maximum(unserved, 0.0),
    )


def _certified_result(
    inputs: DispatchInputs,
    certified: CertifiedResult,
    message: str,
    build_s: float,
    solve_s: float,
    method: DispatchMethod,
) -> DispatchResult:
    solver = SolverInfo(
        backend="highspy" if method is DispatchMethod.EXACT else "block_ipm",
        build_s=build_s,
        solve_s=solve_s,
        message=message,
        method=method,
    )
    result = replace(certified.result, solver=solver)
    return _with_bound(result, certified.lower_bound, message)


def _with_bound(result: DispatchResult, lower: float, message: str) -> DispatchResult:
    total = result.objective.total
    gap = gap_pct(total, lower)
    finite = math.isfinite(lower)
    text = f"{message}; cost {total:.6g}, lower bound {lower:.6g}, gap {gap:.3g} %"
    update = {
        "message": text,
        "lower_bound": min(lower, total) if finite else None,
        "gap_pct": gap if math.isfinite(gap) else None,
    }
    solver = result.solver.model_copy(update=update)
    return replace(result, solver=solver)
