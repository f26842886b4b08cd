"""Certified dispatch for sites of any size: a feasible plan, a valid lower bound on the optimum, the gap.

``solve_certified(inputs, options) -> CertifiedResult`` runs one of two methods (docs/dispatch.md: large
sites):

- ``exact``: the single LP in HiGHS (:mod:`central.dispatch.highs_backend`); lower bound = optimum, gap 0;
- ``block_ipm``: the block-angular interior point method (:mod:`central.dispatch.block_ipm`). Every
  iteration gives a valid lower bound from its row duals (:mod:`central.dispatch.bounds`) and a feasible
  plan from its primal values (:mod:`central.dispatch.recovery`); it stops when the gap between the best
  of each reaches ``gap_target_pct``, or at the time limit with the best plan so far.

``auto`` picks ``exact`` up to ``exact_max_cabinet_steps`` cabinet-intervals (after merging per-unit
identical cabinets, :mod:`central.dispatch.aggregation`, which both methods use) and ``block_ipm`` above.
The first plan is every cabinet idle (always feasible), so a result always has a plan, whatever happens.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from central.dispatch import aggregation, highs_backend, recovery
from central.dispatch.blas_threads import blas_threads
from central.dispatch.block_ipm import InteriorPoint, Iterate
from central.dispatch.block_lp import BlockLp, build_block_lp
from central.dispatch.bounds import lagrangian_bound, trivial_bound
from central.dispatch.feasibility import schedule_cost
from central.dispatch.inputs import DispatchInputs
from central.dispatch.options import DispatchOptions
from central.dispatch.result import DispatchResult, evaluate
from central.dispatch.solution import LpSolution
from shared.plan import DispatchMethod, SolverInfo

log = logging.getLogger(__name__)

STALL_ITERATIONS = 8  # iterations without a better bound or plan (once plans are recovered) that end it
RECOVERY_RESIDUAL = 1e-2  # recover plans from iterates whose relative row residual is below this
MU_FLOOR = 1e-14  # complementarity below this share of the first iterate's: numerically at the end
RECOVER_EVERY = 3  # recover a plan from every third iterate ...
RECOVER_CLOSE = 20.0  # ... and from all once the iterate's cost is within this many gap targets of the bound


class StopReason(StrEnum):
    """Why a certified solve ended."""

    OPTIMAL = "optimal"  # the exact LP was solved
    GAP_REACHED = "gap_reached"  # the gap is at or below the target
    TIME_LIMIT = "time_limit"
    ITERATION_LIMIT = "iteration_limit"
    STALLED = "stalled"  # no better bound or plan for STALL_ITERATIONS iterations (numerical limit)
    INTERRUPTED = "interrupted"  # asked to stop
    SOLVER_FAILED = "solver_failed"  # the exact LP gave no solution (time limit, error); the idle plan
    WORKER_FAILED = "worker_failed"  # the worker process gave no result (central.dispatch.worker); idle plan


@dataclass(frozen=True)
class CertifiedOptions:
    """How to solve.

    - ``method``: ``auto``, ``exact`` or ``block_ipm`` (module docstring).
    - ``time_limit_s``: wall time for the whole solve [s]; the best plan found by then is returned.
    - ``gap_target_pct``: ``block_ipm`` stops when the gap is at or below this [%].
    - ``max_iterations``: ``block_ipm`` iteration limit.
    - ``exact_max_cabinet_steps``: ``auto`` uses ``exact`` up to this many cabinets x intervals.
    - ``aggregate_identical``: merge per-unit identical cabinets first (exact, both methods).
    - ``blas_threads``: OpenBLAS threads during a ``block_ipm`` solve.
    """

    method: DispatchMethod = DispatchMethod.AUTO
    time_limit_s: float = 30.0
    gap_target_pct: float = 0.01
    max_iterations: int = 200
    exact_max_cabinet_steps: int = 12_000
    aggregate_identical: bool = True
    blas_threads: int = 1

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_limit_s) and self.time_limit_s > 0):
            raise ValueError(f"time_limit_s must be a positive number of seconds, got {self.time_limit_s!r}")
        if not (math.isfinite(self.gap_target_pct) and self.gap_target_pct >= 0):
            raise ValueError(f"gap_target_pct must be >= 0, got {self.gap_target_pct!r}")
        if not 1 <= self.max_iterations <= 10_000:
            raise ValueError(f"max_iterations must be 1-10000, got {self.max_iterations!r}")
        if self.exact_max_cabinet_steps < 0:
            raise ValueError(f"exact_max_cabinet_steps must be >= 0, got {self.exact_max_cabinet_steps!r}")
        if not 1 <= self.blas_threads <= 64:
            raise ValueError(f"blas_threads must be 1-64, got {self.blas_threads!r}")


@dataclass(frozen=True)
class CertifiedResult:
    """A feasible plan with a certificate: ``lower_bound <= LP optimum <= upper_bound``.

    ``upper_bound`` is the plan's cost (``result.objective.total``); ``gap_pct = 100 (upper - lower) /
    max(|upper|, 1)``.
    """

    result: DispatchResult
    method: DispatchMethod  # the method that ran (never AUTO)
    lower_bound: float
    iterations: int
    stop: StopReason
    elapsed_s: float

    @property
    def upper_bound(self) -> float:
        return self.result.objective.total

    @property
    def gap_pct(self) -> float:
        return gap_pct(self.upper_bound, self.lower_bound)


def gap_pct(upper: float, lower: float) -> float:
    """Relative gap [%] between a plan's cost and a lower bound; inf without a finite bound."""
    if not math.isfinite(lower):
        return math.inf
    return 100.0 * max(upper - lower, 0.0) / max(abs(upper), 1.0)


Progress = Callable[[CertifiedResult], None]


def choose_method(inputs: DispatchInputs, options: CertifiedOptions) -> DispatchMethod:
    """The method ``auto`` runs for ``inputs`` (after aggregation)."""
    if options.method != DispatchMethod.AUTO:
        return options.method
    size = inputs.cabinets * inputs.steps
    return DispatchMethod.EXACT if size <= options.exact_max_cabinet_steps else DispatchMethod.BLOCK_IPM


def solve_certified(
    inputs: DispatchInputs,
    options: CertifiedOptions | None = None,
    *,
    on_progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> CertifiedResult:
    """The best plan found within the time limit with its lower bound (module docstring).

    ``on_progress`` is called with every better result (plan or bound) while the solve runs; ``stop``, when
    set, ends the solve after the current iteration with the best result so far.
    """
    opts = options if options is not None else CertifiedOptions()
    run = _Run(inputs, opts, time.perf_counter(), on_progress, stop or threading.Event())
    with blas_threads(opts.blas_threads):
        return run.solve()


class _Recoveries:
    """Which iterates to recover plans from, and how (module :mod:`central.dispatch.recovery`).

    Every ``RECOVER_EVERY``-th iterate, and every iterate once the interior point's own cost is within
    ``RECOVER_CLOSE`` times the gap target of the bound (near the end a better plan may end the solve). The
    plan nets out all simultaneous charge and discharge; where consuming pays in some interval (a negative
    balance dual) the plan that keeps what cannot be netted without overfilling is tried too, every
    ``RECOVER_EVERY``-th time unless it was the better one last time.
    """

    def __init__(self, run: _Run, lp: BlockLp) -> None:
        self.run = run
        self.lp = lp
        self.keep_won = False
        self.last_iteration = -1
        self.last_duration_s = 0.0  # of the last recovery

    def after(self, iterate: Iterate) -> bool:
        cost = float(self.lp.cost @ iterate.x)
        close = gap_pct(cost, self.run.best_bound) <= RECOVER_CLOSE * self.run.options.gap_target_pct
        if not close and iterate.iteration % RECOVER_EVERY:
            return False
        return self.final(iterate)

    def final(self, iterate: Iterate) -> bool:
        """Recover from ``iterate`` unless that was done already."""
        if iterate.iteration == self.last_iteration:
            return False
        began = time.perf_counter()
        self.last_iteration = iterate.iteration
        charge = self.lp.cabinet_series(iterate.x, "charge")
        discharge = self.lp.cabinet_series(iterate.x, "discharge")
        paid_to_consume = iterate.site_dual[: self.lp.layout.steps] < 0
        try_keep = bool(paid_to_consume.any()) and (self.keep_won or iterate.iteration % RECOVER_EVERY == 0)
        improved = False
        for keep in (None, paid_to_consume) if try_keep else (None,):
            candidate = recovery.recover(self.run.reduced, charge, discharge, self.run.lp_options(), keep)
            if candidate is not None and self.run.offer_plan(candidate):
                improved = True
                self.keep_won = keep is not None
        self.last_duration_s = time.perf_counter() - began
        return improved


def idle_result(inputs: DispatchInputs) -> CertifiedResult:
    """The plan of last resort: every cabinet idle, the site completed optimally, the trivial lower bound."""
    options = CertifiedOptions(aggregate_identical=False)
    run = _Run(inputs, options, time.perf_counter(), None, threading.Event())
    run.offer_plan(recovery.idle_solution(inputs, run.lp_options()))
    run.best_bound = trivial_bound(build_block_lp(inputs))
    return run.result(StopReason.INTERRUPTED, "every cabinet idle")


class _Run:
    """One solve: the (possibly merged) inputs, the clock, the best plan and bound so far."""

    def __init__(
        self,
        inputs: DispatchInputs,
        options: CertifiedOptions,
        start_s: float,
        on_progress: Progress | None,
        stop: threading.Event,
    ) -> None:
        self.inputs = inputs
        self.options = options
        self.start_s = start_s
        self.deadline_s = start_s + options.time_limit_s
        self.on_progress = on_progress
        self.stop = stop
        self.groups = aggregation.group_identical(inputs) if options.aggregate_identical else None
        merged = self.groups is not None and self.groups.reduces
        self.reduced = aggregation.aggregate(inputs, self.groups) if merged and self.groups else inputs
        self.method = choose_method(self.reduced, options)
        self.best_plan: LpSolution | None = None
        self.best_cost = math.inf
        self.best_bound = -math.inf
        self.iterations = 0

    def remaining_s(self) -> float:
        return self.deadline_s - time.perf_counter()

    def lp_options(self) -> DispatchOptions:
        return DispatchOptions(time_limit_s=max(self.remaining_s(), 0.05), aggregate_identical=False)

    def solve(self) -> CertifiedResult:
        self.offer_plan(recovery.idle_solution(self.reduced, self.lp_options()))
        if self.method == DispatchMethod.EXACT:
            return self.solve_exact()
        return self.solve_block_ipm()

    def solve_exact(self) -> CertifiedResult:
        solution = highs_backend.solve(self.reduced, self.lp_options())
        if not solution.ok:
            log.warning("exact dispatch gave no solution (%s); returning the idle plan", solution.message)
            return self.result(StopReason.SOLVER_FAILED, solution.message)
        self.offer_plan(solution)
        self.best_bound = max(self.best_bound, solution.objective_value)
        return self.result(StopReason.OPTIMAL, solution.message)

    def solve_block_ipm(self) -> CertifiedResult:
        lp = build_block_lp(self.reduced)
        self.best_bound = trivial_bound(lp)
        ipm = InteriorPoint(lp)
        recoveries = _Recoveries(self, lp)
        last_iteration_s = 0.0
        quiet = 0
        first_mu = math.inf
        iterate: Iterate | None = None
        while True:
            # time for one more iteration, and for the recovery from it when the time limit then stops us
            reason = self.stop_reason(last_iteration_s + recoveries.last_duration_s, quiet)
            if reason is not None:
                if iterate is not None and reason != StopReason.GAP_REACHED:
                    recoveries.final(iterate)
                return self.result(reason, self.ipm_message())
            began = time.perf_counter()
            iterate = ipm.step()
            self.iterations = iterate.iteration
            if not math.isfinite(iterate.mu):
                return self.result(StopReason.STALLED, self.ipm_message() + " (numerical breakdown)")
            first_mu = min(first_mu, iterate.mu) if iterate.iteration == 1 else first_mu
            improved = self.offer_bound(lagrangian_bound(lp, iterate.cabinet_dual, iterate.site_dual))
            if iterate.primal_residual < RECOVERY_RESIDUAL:
                improved |= recoveries.after(iterate)
                quiet = 0 if improved else quiet + 1
            if iterate.mu <= MU_FLOOR * first_mu and gap_pct(self.best_cost, self.best_bound) > 0:
                quiet = STALL_ITERATIONS  # nothing left to gain; stop (after the gap check)
            last_iteration_s = time.perf_counter() - began

    def stop_reason(self, next_step_s: float, quiet: int) -> StopReason | None:
        if gap_pct(self.best_cost, self.best_bound) <= self.options.gap_target_pct:
            return StopReason.GAP_REACHED
        if self.stop.is_set():
            return StopReason.INTERRUPTED
        if self.remaining_s() < 1.2 * next_step_s:
            return StopReason.TIME_LIMIT
        if self.iterations >= self.options.max_iterations:
            return StopReason.ITERATION_LIMIT
        if quiet >= STALL_ITERATIONS:
            return StopReason.STALLED
        return None

    def offer_plan(self, solution: LpSolution) -> bool:
        """Keep ``solution`` if it is cheaper than the best plan so far."""
        grid_kw = solution.grid_import_kw - solution.grid_export_kw
        cost = schedule_cost(
            self.reduced, solution.charge_kw, solution.discharge_kw, grid_kw, solution.pv_used_kw
        )
        if cost >= self.best_cost:
            return False
        self.best_plan, self.best_cost = solution, cost
        self.report()
        return True

    def offer_bound(self, bound: float) -> bool:
        if not bound > self.best_bound:
            return False
        self.best_bound = bound
        self.report()
        return True

    def report(self) -> None:
        if self.on_progress is not None and self.best_plan is not None:
            self.on_progress(self.result(None, self.ipm_message()))

    def ipm_message(self) -> str:
        return f"block interior point, {self.iterations} iterations"

    def result(self, stop: StopReason | None, message: str) -> CertifiedResult:
        """The best plan so far as a certified result (``stop`` None: an intermediate report)."""
        plan = self.best_plan
        if plan is None:  # pragma: no cover - solve() offers the idle plan first
            raise RuntimeError("no plan offered yet")
        if self.groups is not None and self.groups.reduces:
            plan = aggregation.disaggregate(plan, self.groups)
            note = (
                f"; {self.inputs.cabinets} cabinets solved as {self.groups.count} per-unit identical groups"
            )
            message += note
        elapsed_s = time.perf_counter() - self.start_s
        gap = gap_pct(self.best_cost, self.best_bound)
        certificate = f"cost {self.best_cost:.6g}, lower bound {self.best_bound:.6g}, gap {gap:.3g} %"
        solver = SolverInfo(
            backend="highspy" if self.method == DispatchMethod.EXACT else "block_ipm",
            build_s=0.0,
            solve_s=elapsed_s,
            message=f"{message}; {certificate}",
        )
        result = evaluate(self.inputs, replace(plan, objective_value=self.best_cost), solver, 0.0)
        return CertifiedResult(
            result=result,
            method=self.method,
            lower_bound=min(self.best_bound, result.objective.total),
            iterations=self.iterations,
            stop=stop if stop is not None else StopReason.TIME_LIMIT,
            elapsed_s=elapsed_s,
        )
