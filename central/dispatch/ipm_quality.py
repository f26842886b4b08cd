"""The second stage for ``block_ipm`` plans: closer to the previous plan and smoother, within the certificate.

The exact path's second stage (:mod:`central.dispatch.highs_quality`) re-solves the LP over its optimal
face; for a large site that LP is as large as the dispatch itself, which is why ``block_ipm`` runs. Its
plans are interior-point plans: ties (flat prices, similar cabinets) are shared rather than given to one
cabinet, so they are already close to the smoothest cost-optimal plan (docs/dispatch.md: measured). This
stage improves them further by cheap, safe moves:

1. towards the previous plan (where it covers the horizon): the net setpoint ``p + a (previous - p)``;
2. towards a smoother plan: ``p + a (moving_average(p) - p)`` (centred windows of 3, 5 and 9 intervals,
   each from the plan the previous one left; the first window with no accepted move ends the stage);

with ``a`` from 1 down to 1/8, the first that is accepted winning (at most 4 candidates per target).
Every candidate goes through :func:`central.dispatch.recovery.recover` (every cabinet within its limits
and SoC range, the site rows completed optimally by the site LP), so it is feasible by construction; it is
accepted only if its cost stays within ``budget`` and the criterion it aims at improves. The guarantee is
therefore the plan's feasibility and ``cost <= budget`` (:func:`cost_budget`: the unsmoothed plan's cost
plus ``cost_tolerance_rel``, or up to the gap target above the certified lower bound, whichever is
higher), not the lexicographic optimum of the exact path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from central.dispatch import quality, recovery
from central.dispatch.feasibility import schedule_cost
from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.options import DispatchOptions
from central.dispatch.solution import LpSolution

BLENDS = (1.0, 0.5, 0.25, 0.125)  # how far towards a target, strongest first
WINDOWS = (3, 5, 9)  # centred moving-average windows [intervals], gentlest first
MIN_GAIN_REL = 1e-3  # a candidate must improve its criterion by at least this share
POLISH_GAP_SHARE = 0.5  # the polish's gap target, as a share of cost_tolerance_rel


@dataclass(frozen=True)
class Smoothed:
    """The best plan found (the input's when no move was accepted), its cost and what was applied."""

    solution: LpSolution
    cost: float
    applied: tuple[str, ...]
    elapsed_s: float


def cost_budget(upper: float, lower: float, gap_target_pct: float, cost_tolerance_rel: float) -> float:
    """The highest cost a smoothed plan may have: ``max(upper + tol * s, lower + gap_target * s)``,
    ``s = max(|upper|, 1)``; the certified gap of the result thus stays within the larger of the gap target
    and the unsmoothed plan's gap (plus the tolerance)."""
    scale = max(abs(upper), 1.0)
    return max(upper + cost_tolerance_rel * scale, lower + gap_target_pct / 100.0 * scale)


def smooth(
    x: DispatchInputs,
    plan: LpSolution,
    budget: float,
    options: DispatchOptions,
    deadline_s: float,
) -> Smoothed:
    """Move ``plan`` (a feasible solution of ``x``) towards the previous plan, then towards a smoother plan,
    keeping its cost <= ``budget`` (module docstring); stop trying at ``deadline_s`` (``perf_counter``)."""
    start_s = time.perf_counter()
    state = _State(x, plan, _cost(x, plan), options, deadline_s)
    covered = quality.covered(x)
    reference = x.previous_setpoint_kw
    if covered.any() and reference is not None:
        previous = np.where(covered, reference, 0.0)

        def to_previous(p: FloatArray) -> FloatArray:
            return np.where(covered, previous, p)

        def deviation(p: FloatArray) -> float:
            return float(quality.deviation_kw(p, reference).sum())

        state.improve("deviation", [to_previous], deviation, budget)
    targets = [_moving_average_target(window) for window in WINDOWS if window < x.steps]

    def variation(p: FloatArray) -> float:
        return float(quality.total_variation_kw(p, x.current_setpoint_kw).sum())

    state.improve("variation", targets, variation, budget)
    return Smoothed(state.best, state.best_cost, tuple(state.applied), time.perf_counter() - start_s)


Target = Callable[[FloatArray], FloatArray]


class _State:
    def __init__(
        self, x: DispatchInputs, plan: LpSolution, cost: float, options: DispatchOptions, deadline_s: float
    ) -> None:
        self.x = x
        self.best = plan
        self.best_cost = cost
        self.options = options
        self.deadline_s = deadline_s
        self.applied: list[str] = []

    def improve(
        self, name: str, targets: list[Target], measure: Callable[[FloatArray], float], budget: float
    ) -> None:
        """Try every target at every blend (strongest first); keep the first candidate that improves
        ``measure`` within ``budget``, per target."""
        for target in targets:
            current = self.best.discharge_kw - self.best.charge_kw
            before = measure(current)
            goal = target(current)
            accepted = False
            for blend in BLENDS:
                if time.perf_counter() >= self.deadline_s:
                    return
                proposal = current + blend * (goal - current)
                lp_options = DispatchOptions(
                    time_limit_s=max(self.deadline_s - time.perf_counter(), 0.05), aggregate_identical=False
                )
                candidate = recovery.recover(
                    self.x, np.maximum(-proposal, 0.0), np.maximum(proposal, 0.0), lp_options
                )
                if candidate is None:
                    continue
                cost = _cost(self.x, candidate)
                after = measure(candidate.discharge_kw - candidate.charge_kw)
                if cost <= budget and after < before - MIN_GAIN_REL * max(before, 1.0):
                    self.best, self.best_cost = candidate, cost
                    self.applied.append(f"{name} ({blend:g})")
                    accepted = True
                    break
            if not accepted:  # the next (stronger) target would cost more still
                return


def _moving_average_target(window: int) -> Target:
    def target(p: FloatArray) -> FloatArray:
        half = window // 2
        padded = np.pad(p, ((0, 0), (half, half)), mode="edge")
        kernel = np.ones(window) / window
        sums = np.cumsum(np.pad(padded, ((0, 0), (1, 0))), axis=1)
        smoothed = (sums[:, window:] - sums[:, :-window]) * kernel[0]
        return np.asarray(smoothed, dtype=np.float64)

    return target


def _cost(x: DispatchInputs, solution: LpSolution) -> float:
    grid_kw = solution.grid_import_kw - solution.grid_export_kw
    return schedule_cost(x, solution.charge_kw, solution.discharge_kw, grid_kw, solution.pv_used_kw)


def polish(
    x: DispatchInputs, first: LpSolution, options: DispatchOptions, time_limit_s: float
) -> LpSolution | None:
    """The exact path's second stage by the interior point (docs/dispatch.md: plan quality, interior point
    polish): ``block_ipm`` run to a gap far below ``cost_tolerance_rel``; its plan is taken when its cost is
    within the tolerance of ``first``'s optimum (known exactly), else None (the caller then runs the
    lexicographic second stage). Interior point iterates converge to the centre of the optimal face, where
    ties are shared out evenly instead of jumping between vertices: measured within a few per cent of the
    smoothest cost-optimal plan's total variation."""
    from central.dispatch.certified import CertifiedOptions, solve_certified
    from shared.plan import DispatchMethod

    start_s = time.perf_counter()
    optimum = first.cost_optimum if np.isfinite(first.cost_optimum) else first.objective_value
    bound = quality.cost_bound(optimum, options.cost_tolerance_rel)
    certified = solve_certified(
        x,
        CertifiedOptions(
            method=DispatchMethod.BLOCK_IPM,
            time_limit_s=max(time_limit_s, 0.05),
            gap_target_pct=POLISH_GAP_SHARE * 100.0 * options.cost_tolerance_rel,
            aggregate_identical=options.aggregate_identical,
        ),
    )
    result = certified.result
    if result.objective.total > bound:
        return None
    grid = result.grid_kw
    unserved = np.maximum(x.load_kw - grid - result.pv_used_kw - result.setpoint_kw.sum(axis=0), 0.0)
    elapsed_s = time.perf_counter() - start_s
    return LpSolution(
        ok=True,
        message=first.message
        + f"; second stage: interior point polish, {certified.iterations} iterations in {elapsed_s:.3f} s",
        build_s=first.build_s,
        solve_s=first.solve_s + elapsed_s,
        objective_value=result.objective.total,
        cost_optimum=optimum,
        stage2_s=elapsed_s,
        charge_kw=result.charge_kw,
        discharge_kw=result.discharge_kw,
        energy_kwh=recovery.stored_energy(x, result.charge_kw, result.discharge_kw),
        grid_import_kw=np.maximum(grid, 0.0),
        grid_export_kw=np.maximum(-grid, 0.0),
        pv_used_kw=result.pv_used_kw,
        unserved_kw=unserved,
        warm_start=first.warm_start,
    )
