"""The dispatch's second stage (docs/dispatch.md: plan quality): smoothest, most stable cost-optimal plans.

The total variation is checked against an independent two-stage model (tests/quality_reference.py), the
backends against each other, and every criterion on a case where it decides the plan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from central.dispatch import DispatchOptions, DispatchResult, optimize, quality, solve_dispatch
from central.dispatch.inputs import build_inputs
from shared.dayahead import DayAhead, load_dayahead
from shared.site import SiteConfig, load_site
from tests.quality_reference import smoothest_cost_optimal
from tests.test_dispatch_equivalence import check_feasible, random_case, relative_gap
from tests.test_dispatch_hand import make_day, make_site

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
VARIATION_RATIO_MAX = 1.15  # the target: within 1.15x of the smoothest cost-optimal plan
COST_TOLERANCE_REL = 1e-6


def example() -> tuple[SiteConfig, DayAhead]:
    return load_site(EXAMPLES / "site.toml"), load_dayahead(EXAMPLES / "day-ahead.json")


def variation_kw(result: DispatchResult) -> float:
    return float(np.abs(np.diff(result.setpoint_kw, axis=1)).sum())


def check_against_reference(site: SiteConfig, day: DayAhead, result: DispatchResult) -> None:
    reference = smoothest_cost_optimal(build_inputs(site, day))
    assert result.status.value != "failed", result.solver.message
    check_feasible(site, day, result)
    bound = reference.cost_optimum + COST_TOLERANCE_REL * max(1.0, abs(reference.cost_optimum))
    assert result.objective.total <= bound + 1e-7 * max(1.0, abs(bound))
    assert relative_gap(result.quality.cost_optimum, reference.cost_optimum) < 1e-6  # type: ignore[union-attr]
    assert variation_kw(result) <= VARIATION_RATIO_MAX * reference.total_variation_kw + 1e-6


@pytest.mark.parametrize("backend", ["highspy", "pyomo"])
def test_example_site_is_smooth_at_the_optimal_cost(backend: str) -> None:
    site, day = example()
    rough = solve_dispatch(site, day, options=DispatchOptions(backend=backend, smoothing=False))
    smooth = solve_dispatch(site, day, options=DispatchOptions(backend=backend))
    check_against_reference(site, day, smooth)
    assert smooth.objective.total == pytest.approx(rough.objective.total, rel=1e-6)
    # the numbers: cab-1 jumps 45 times (1465 kW) in the first optimal vertex
    assert variation_kw(smooth) < variation_kw(rough) / 4
    assert smooth.quality is not None and rough.quality is not None
    assert rough.quality.cost_tolerance_rel == 0.0 and smooth.quality.cost_tolerance_rel == 1e-6
    assert sum(smooth.quality.total_variation_kw.values()) == pytest.approx(variation_kw(smooth))
    assert "second stage minimised variation" in smooth.solver.message
    assert smooth.solver.stage2_s > 0 and rough.solver.stage2_s == 0


@pytest.mark.parametrize("seed", range(12))
def test_random_sites_are_within_the_target_of_the_reference(seed: int) -> None:
    site, day = random_case(seed)
    check_against_reference(site, day, solve_dispatch(site, day))


@pytest.mark.parametrize("seed", range(12))
def test_interior_point_polish_is_within_the_target_of_the_reference(seed: int) -> None:
    # The opt-in faster second stage: cost within the tolerance, variation within the target.
    site, day = random_case(seed)
    result = solve_dispatch(site, day, options=DispatchOptions(polish=True))
    check_against_reference(site, day, result)
    assert "interior point polish" in result.solver.message or "minimised variation" in result.solver.message


@pytest.mark.parametrize("seed", range(0, 30, 3))
def test_backends_agree_on_the_second_stage(seed: int) -> None:
    # The lexicographic optimum is unique in value: same cost, same summed total variation.
    site, day = random_case(seed)
    results = [
        solve_dispatch(site, day, options=DispatchOptions(backend=backend, aggregate_identical=aggregate))
        for backend, aggregate in (("highspy", True), ("highspy", False), ("pyomo", False))
    ]
    for result in results:
        assert result.status.value != "failed", result.solver.message
        check_feasible(site, day, result)
        assert relative_gap(result.objective.total, result.solver_objective) < 1e-6
    first = results[0]
    for other in results[1:]:
        assert relative_gap(other.objective.total, first.objective.total) < 1e-6
        assert relative_gap(variation_kw(other), variation_kw(first)) < 1e-6, (
            variation_kw(other),
            variation_kw(first),
        )


def test_identical_cabinets_get_equal_smooth_plans() -> None:
    # Four cabinets of one model (two sizes) at one SoC are solved as one; the split is smooth and balanced.
    site, day = example()
    cab = {
        k: v
        for k, v in site.cabinets[0].model_dump().items()
        if k not in ("id", "opcua_endpoint", "modbus_address")
    }
    cabinets = [
        cab,
        {**cab},
        {**cab, "capacity_kwh": 400.0, "charge_limit_kw": 200.0, "discharge_limit_kw": 200.0},
        {**cab},
    ]
    fleet = make_site(cabinets, **site.site.model_dump(exclude={"name"}))
    fleet_day = make_day(
        day.load_kw,
        day.import_price_per_kwh,
        export_price_per_kwh=day.export_price_per_kwh,
        pv_kw=day.pv_kw,
        interval_minutes=day.interval_minutes,
        initial_soc_pct={f"cab-{i + 1}": 50.0 for i in range(4)},
    )
    merged = solve_dispatch(fleet, fleet_day)
    separate = solve_dispatch(fleet, fleet_day, options=DispatchOptions(aggregate_identical=False))
    assert "solved as 1 per-unit identical groups" in merged.solver.message
    for b in range(1, 4):
        np.testing.assert_allclose(merged.soc_pct[b], merged.soc_pct[0], atol=1e-9)
    assert relative_gap(variation_kw(merged), variation_kw(separate)) < 1e-6
    assert relative_gap(merged.objective.total, separate.objective.total) < 1e-6
    # unaggregated, the spread criterion balances them too
    np.testing.assert_allclose(
        separate.soc_pct, np.broadcast_to(separate.soc_pct[0], separate.soc_pct.shape), atol=1e-5
    )


def test_spread_criterion_balances_cabinets_of_one_model() -> None:
    # Two cabinets of one model at 80 % and 40 %; free import, but the site must take 40 kWh from them in
    # hour 1 (import limit). Any split costs the same cycle cost and varies the same; the balanced one
    # takes it all from the fuller cabinet.
    cabinet = {"cycle_cost_per_kwh": 0.01, "soc_final_min_pct": 0.0}
    site = make_site([cabinet, cabinet], grid_import_limit_kw=60.0)
    day = make_day([50.0, 100.0, 50.0], [0.0, 0.0, 0.0], initial_soc_pct={"cab-1": 80.0, "cab-2": 40.0})
    for backend in ("highspy", "pyomo"):
        result = solve_dispatch(site, day, options=DispatchOptions(backend=backend))
        np.testing.assert_allclose(result.setpoint_kw[:, 1], [40.0, 0.0], atol=1e-6)
        np.testing.assert_allclose(result.soc_pct[:, 1], [40.0, 40.0], atol=1e-6)
        assert "spread" in result.solver.message


def test_a_replan_keeps_the_previous_plan_when_nothing_changed() -> None:
    # The first optimal vertex is a cost-optimal plan: given as the previous plan, it is kept exactly,
    # although a smoother plan of the same cost exists (deviation comes before variation).
    site, day = example()
    rough = optimize(site, day, options=DispatchOptions(smoothing=False))
    for backend in ("highspy", "pyomo"):
        replan = solve_dispatch(site, day, options=DispatchOptions(backend=backend), previous_plan=rough)
        assert replan.quality is not None and replan.quality.deviation_from_previous_kw is not None
        assert max(replan.quality.deviation_from_previous_kw.values()) < 1e-5
        for b, cabinet_id in enumerate(replan.cabinet_ids):
            np.testing.assert_allclose(
                replan.setpoint_kw[b], rough.cabinets[cabinet_id].setpoint_kw, atol=1e-5
            )


def test_a_replan_later_in_the_day_follows_the_previous_plan_on_the_common_intervals() -> None:
    site, day = example()
    first = optimize(site, day)
    soc = {cabinet_id: first.cabinets[cabinet_id].soc_pct[7] for cabinet_id in first.cabinets}
    final = {cabinet_id: first.cabinets[cabinet_id].soc_pct[-1] for cabinet_id in first.cabinets}
    later = day.tail(8, soc)
    replan = solve_dispatch(site, later, previous_plan=first, initial_soc_pct=soc, final_soc_min_pct=final)
    assert replan.quality is not None and replan.quality.deviation_from_previous_kw is not None
    assert max(replan.quality.deviation_from_previous_kw.values()) < 1e-4
    for b, cabinet_id in enumerate(replan.cabinet_ids):
        np.testing.assert_allclose(
            replan.setpoint_kw[b], first.cabinets[cabinet_id].setpoint_kw[8:], atol=1e-4
        )


def test_the_current_setpoint_starts_the_variation() -> None:
    # A negative price fills the 20 kW import limit for 3 hours: the two cabinets take 20 kW between them, in
    # any split at the same cost. From current setpoints of -20 and 0 kW, the plan keeps them.
    site = make_site([{"capacity_kwh": 200.0}, {}], grid_import_limit_kw=20.0)
    day = make_day([0.0, 0.0, 0.0], [-0.1, -0.1, -0.1], initial_soc_pct={"cab-1": 10.0, "cab-2": 10.0})
    for backend in ("highspy", "pyomo"):
        options = DispatchOptions(backend=backend)
        result = solve_dispatch(
            site, day, options=options, current_setpoint_kw={"cab-1": -20.0, "cab-2": 0.0}
        )
        np.testing.assert_allclose(result.setpoint_kw, [[-20.0] * 3, [0.0] * 3], atol=1e-6)
        assert result.quality is not None
        assert result.quality.total_variation_kw == pytest.approx({"cab-1": 0.0, "cab-2": 0.0}, abs=1e-6)
        # from the other way round, the other split
        result = solve_dispatch(
            site, day, options=options, current_setpoint_kw={"cab-1": 0.0, "cab-2": -20.0}
        )
        np.testing.assert_allclose(result.setpoint_kw, [[0.0] * 3, [-20.0] * 3], atol=1e-6)


def test_current_setpoints_are_checked() -> None:
    site = make_site([{}])
    day = make_day([0.0], [0.1])
    for bad, message in (
        ({"cab-9": 1.0}, "current_setpoint_kw: unknown cabinet 'cab-9'"),
        ({"cab-1": float("nan")}, "current_setpoint_kw.cab-1: must be a finite number of kW"),
    ):
        result = solve_dispatch(site, day, current_setpoint_kw=bad)
        assert result.status.value == "failed" and message in result.solver.message


def test_no_simultaneous_charge_and_discharge_where_it_would_cost_nothing() -> None:
    # Efficiency 1 and no cycle cost: charging and discharging at once changes nothing, and must not appear.
    site = make_site([{}, {}], grid_import_limit_kw=80.0)
    day = make_day(
        [50.0, 100.0, 100.0, 50.0], [0.1, 0.1, 0.1, 0.1], initial_soc_pct={"cab-1": 60.0, "cab-2": 20.0}
    )
    for backend in ("highspy", "pyomo"):
        result = solve_dispatch(site, day, options=DispatchOptions(backend=backend))
        assert result.status.value == "optimal", result.violations
        assert not np.any(np.minimum(result.charge_kw, result.discharge_kw) > 1e-6)


def test_smoothing_with_forbidden_simultaneous_operation() -> None:
    site, day = random_case(4)
    options = DispatchOptions(forbid_simultaneous=True, mip_gap=0.0)
    rough = solve_dispatch(
        site, day, options=DispatchOptions(forbid_simultaneous=True, mip_gap=0.0, smoothing=False)
    )
    for backend in ("highspy", "pyomo"):
        smooth = solve_dispatch(
            site, day, options=DispatchOptions(**{**options.__dict__, "backend": backend})
        )
        check_feasible(site, day, smooth)
        assert not np.any(np.minimum(smooth.charge_kw, smooth.discharge_kw) > 1e-6)
        assert smooth.objective.total <= rough.objective.total + 1e-6 * max(1.0, abs(rough.objective.total))
        assert variation_kw(smooth) <= variation_kw(rough) + 1e-6


def _first_stage_on(site: SiteConfig, day: DayAhead) -> tuple[Any, Any, Any, Any]:
    from central.dispatch import highs_backend, highs_runtime

    x = build_inputs(site, day)
    lp, integer_cols, cols = highs_backend.build_lp(x, forbid_simultaneous=False)
    highs = highs_runtime.new_highs(lp, integer_cols, DispatchOptions().highs_options())
    highs.run()
    return x, lp, cols, highs


def test_second_stage_runs_from_any_feasible_plan_with_a_cost_bound() -> None:
    # Without duals (e.g. a plan from a decomposition) only the cost-bound row restricts the second stage:
    # a superset of the optimal face, so at least as smooth, and still within the cost bound.
    from central.dispatch import highs_quality

    site, day = example()
    x, lp, cols, highs = _first_stage_on(site, day)
    optimum = highs.getInfo().objective_function_value
    values = np.asarray(highs.getSolution().col_value)
    cabinet_cols = highs_quality.CabinetColumns(cols.charge, cols.discharge, cols.energy)
    first = highs_quality.FirstStage(values, optimum)
    second = highs_quality.smooth(highs, lp, x, cabinet_cols, first, DispatchOptions())
    assert second.completed[0] is quality.Criterion.VARIATION and not second.stopped
    setpoint = second.col_value[cols.discharge] - second.col_value[cols.charge]
    cost = float(np.dot(lp.col_cost_, second.col_value))
    assert cost <= optimum + 1e-6 * abs(optimum) + 1e-7
    with_face = solve_dispatch(site, day, options=DispatchOptions(aggregate_identical=False))
    assert float(np.abs(np.diff(setpoint, axis=1)).sum()) <= variation_kw(with_face) + 1e-6
    reference = smoothest_cost_optimal(x)
    assert float(np.abs(np.diff(setpoint, axis=1)).sum()) == pytest.approx(
        reference.total_variation_kw, rel=1e-4
    )


def test_a_second_stage_out_of_time_keeps_the_first_stage_plan() -> None:
    from central.dispatch import highs_quality

    site, day = example()
    x, lp, cols, highs = _first_stage_on(site, day)
    solution = highs.getSolution()
    values = np.asarray(solution.col_value)
    first = highs_quality.FirstStage(
        values,
        highs.getInfo().objective_function_value,
        np.asarray(solution.col_dual),
        np.asarray(solution.row_value),
        np.asarray(solution.row_dual),
    )
    highs.setOptionValue("time_limit", highs.getRunTime())  # the whole time limit is spent
    cabinet_cols = highs_quality.CabinetColumns(cols.charge, cols.discharge, cols.energy)
    second = highs_quality.smooth(highs, lp, x, cabinet_cols, first, DispatchOptions())
    assert second.completed == () and "time limit" in second.stopped
    np.testing.assert_array_equal(second.col_value, values)
    assert "second stage stopped at variation" in quality.describe_second_stage((), second.stopped, 0.1)


@settings(max_examples=60, deadline=None)
@given(
    previous_steps=st.integers(1, 12),
    previous_minutes=st.sampled_from([5, 15, 30, 60]),
    offset_minutes=st.integers(-120, 240),
    minutes=st.sampled_from([5, 10, 15, 30, 60]),
    steps=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_previous_plan_is_resampled_by_energy(
    previous_steps: int, previous_minutes: int, offset_minutes: int, minutes: int, steps: int, seed: int
) -> None:
    # Each new interval fully inside the previous horizon gets the previous plan's mean power over it (checked
    # minute by minute); the others get NaN.
    from datetime import timedelta

    from central.dispatch.previous import previous_setpoints_kw
    from shared.plan import CabinetPlan, ObjectiveBreakdown, Plan, PlanStatus, SolverInfo
    from tests.test_dispatch_hand import START

    rng = np.random.default_rng(seed)
    setpoints = rng.uniform(-100.0, 100.0, previous_steps).round(3)
    previous = Plan(
        plan_id="p",
        created_at=START,
        start=START,
        interval_minutes=previous_minutes,
        status=PlanStatus.OPTIMAL,
        objective=ObjectiveBreakdown(),
        grid_kw=[0.0] * previous_steps,
        pv_used_kw=[0.0] * previous_steps,
        cabinets={"cab-1": CabinetPlan(setpoint_kw=setpoints.tolist(), soc_pct=[50.0] * previous_steps)},
        solver=SolverInfo(backend="highspy"),
    )
    start = START + timedelta(minutes=offset_minutes)
    reference = previous_setpoints_kw(previous, ["cab-1", "cab-2"], start, minutes, steps)
    assert reference.shape == (2, steps) and np.all(np.isnan(reference[1]))
    per_minute = np.repeat(setpoints, previous_minutes)
    for t in range(steps):
        first = offset_minutes + t * minutes
        if first >= 0 and first + minutes <= per_minute.size:
            assert reference[0, t] == pytest.approx(per_minute[first : first + minutes].mean(), abs=1e-9)
        else:
            assert np.isnan(reference[0, t])


def _iterations(message: str) -> int:
    import re

    found = re.search(r"simplex, (\d+) iterations", message)
    assert found, message
    return int(found.group(1))


def test_a_warm_started_replan_reaches_the_same_optimum_in_fewer_iterations() -> None:
    from lab.bench.dispatch import bench_site

    site, day = bench_site(10, 96)
    first = solve_dispatch(site, day)
    soc = {cabinet_id: float(first.soc_pct[b, 3]) for b, cabinet_id in enumerate(first.cabinet_ids)}
    later = day.tail(4, soc)
    cold = solve_dispatch(site, later, initial_soc_pct=soc)
    warm = solve_dispatch(site, later, initial_soc_pct=soc, warm_start=first.warm_start)
    assert "warm start" in warm.solver.message and "warm start" not in cold.solver.message
    assert relative_gap(warm.objective.total, cold.objective.total) < 1e-6
    assert relative_gap(variation_kw(warm), variation_kw(cold)) < 1e-6
    assert _iterations(warm.solver.message) < _iterations(cold.solver.message) / 2
    # a basis of another site (other cabinets, other horizon) is harmless
    other_site, other_day = bench_site(3, 48, seed=5)
    other = solve_dispatch(other_site, other_day)
    mixed = solve_dispatch(site, later, initial_soc_pct=soc, warm_start=other.warm_start)
    assert relative_gap(mixed.objective.total, cold.objective.total) < 1e-6


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["cab-1", "cab-2", "cab-x", ""]),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.integers(-500, 500)),
        max_size=3,
    )
)
def test_current_setpoints_are_used_or_refused_by_name(setpoints: dict[str, Any]) -> None:
    from central.dispatch.inputs import DispatchInputError

    site = make_site([{}, {}])
    day = make_day([10.0, 20.0], [0.1, 0.2])
    bad = {
        key
        for key, value in setpoints.items()
        if key not in ("cab-1", "cab-2") or isinstance(value, bool) or not np.isfinite(float(value))
    }
    try:
        x = build_inputs(site, day, current_setpoint_kw=setpoints)
    except DispatchInputError as exc:
        assert bad and all(any(f"{key!r}" in p or f".{key}:" in p for p in exc.problems) for key in bad)
        return
    assert not bad
    if setpoints:
        assert x.current_setpoint_kw is not None
        for b, cabinet_id in enumerate(x.cabinet_ids):
            expected = float(setpoints.get(cabinet_id, np.nan))
            assert (np.isnan(expected) and np.isnan(x.current_setpoint_kw[b])) or x.current_setpoint_kw[
                b
            ] == expected
