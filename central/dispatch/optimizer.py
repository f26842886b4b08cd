"""``optimize``: one economic dispatch of a site over a day-ahead horizon, as a plan.

Never raises for bad data, infeasible inputs or solver trouble: an impossible day is solved with penalised
slacks (status ``optimal_with_violations``, the slacks named in ``violations``); unusable inputs, a
time-out or a solver failure give status ``failed`` with the reason in ``solver.message`` and
``violations``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from central.dispatch import aggregation, highs_backend
from central.dispatch.dispatch import solve_method
from central.dispatch.inputs import DispatchInputError, DispatchInputs, build_inputs
from central.dispatch.options import DispatchOptions
from central.dispatch.result import DispatchResult, failed_result
from central.dispatch.solution import LpSolution
from central.dispatch.warm_start import WarmStart
from shared.dayahead import DayAhead
from shared.plan import Plan, SolverInfo
from shared.site import SiteConfig

log = logging.getLogger(__name__)


def optimize(
    site: SiteConfig,
    dayahead: DayAhead,
    *,
    options: DispatchOptions | None = None,
    initial_soc_pct: Mapping[str, float] | None = None,
    plan_id: str | None = None,
    created_at: datetime | None = None,
    final_soc_min_pct: Mapping[str, float] | None = None,
    previous_plan: Plan | None = None,
    current_setpoint_kw: Mapping[str, float] | None = None,
) -> Plan:
    """The optimal plan for ``site`` over ``dayahead`` (docs/interfaces.md: economic dispatch, plan).

    ``initial_soc_pct`` [%] per cabinet (live telemetry) overrides the upload's; cabinets in neither start at
    50 %. ``final_soc_min_pct`` [%] per cabinet replaces the default terminal SoC (the initial SoC) of
    cabinets without ``soc_final_min_pct`` in the site file. ``created_at`` defaults to the wall clock (the
    central service passes its clock's time); ``plan_id`` to a fresh unique id. ``previous_plan`` (the plan
    the edges run) and ``current_setpoint_kw`` [kW, + discharge] per cabinet are what the second stage keeps
    the plan close to (docs/dispatch.md: plan quality).
    """
    result = solve_dispatch(
        site,
        dayahead,
        options=options,
        initial_soc_pct=initial_soc_pct,
        final_soc_min_pct=final_soc_min_pct,
        previous_plan=previous_plan,
        current_setpoint_kw=current_setpoint_kw,
    )
    created = created_at if created_at is not None else datetime.now(UTC)
    return result.to_plan(plan_id or new_plan_id(dayahead.start), created)


def new_plan_id(start: datetime) -> str:
    """``plan-YYYYMMDDTHHMMZ-xxxxxxxx``: the horizon start and a random suffix."""
    return f"plan-{start.astimezone(UTC):%Y%m%dT%H%MZ}-{uuid.uuid4().hex[:8]}"


def solve_dispatch(
    site: SiteConfig,
    dayahead: DayAhead,
    *,
    options: DispatchOptions | None = None,
    initial_soc_pct: Mapping[str, float] | None = None,
    final_soc_min_pct: Mapping[str, float] | None = None,
    previous_plan: Plan | None = None,
    current_setpoint_kw: Mapping[str, float] | None = None,
    warm_start: WarmStart | None = None,
) -> DispatchResult:
    """Like :func:`optimize` but returns the typed result (arrays, energy per cabinet, solver objective).

    ``warm_start`` (the ``warm_start`` of the result this re-plan replaces) starts HiGHS from that solve's
    basis, shifted onto the new horizon (direct backend).
    """
    opts = options if options is not None else DispatchOptions()
    start_s = time.perf_counter()
    try:
        inputs = build_inputs(
            site,
            dayahead,
            initial_soc_pct,
            final_soc_min_pct,
            previous_plan=previous_plan,
            current_setpoint_kw=current_setpoint_kw,
        )
    except DispatchInputError as exc:
        solver = SolverInfo(backend=opts.backend, message=f"bad input: {exc}")
        return failed_result(tuple(site.cabinet_ids), dayahead.start, dayahead.interval_minutes, solver)
    inputs_s = time.perf_counter() - start_s
    return solve_method(inputs, opts, warm_start, solve_inputs, inputs_s)


def solve_inputs(
    inputs: DispatchInputs, options: DispatchOptions, warm: WarmStart | None = None
) -> LpSolution:
    """Solve the LP of ``inputs`` with the chosen backend, aggregating identical cabinets when allowed.

    The time spent grouping and merging cabinets counts as build time.
    """
    if not options.aggregate_identical or options.forbid_simultaneous:
        return _backend_solve(inputs, options, warm)
    start_s = time.perf_counter()
    groups = aggregation.group_identical(inputs)
    if not groups.reduces:
        return _backend_solve(inputs, options, warm)
    merged = aggregation.aggregate(inputs, groups)
    merge_s = time.perf_counter() - start_s
    solution = aggregation.disaggregate(_backend_solve(merged, options, warm), groups)
    note = f"; {inputs.cabinets} cabinets solved as {groups.count} per-unit identical groups"
    return replace(
        solution,
        build_s=solution.build_s + merge_s,
        message=solution.message + (note if solution.ok else ""),
    )


def _backend_solve(inputs: DispatchInputs, options: DispatchOptions, warm: WarmStart | None) -> LpSolution:
    if options.backend == "pyomo":
        from central.dispatch import pyomo_model

        return pyomo_model.solve(inputs, options)
    return highs_backend.solve(inputs, options, warm)
