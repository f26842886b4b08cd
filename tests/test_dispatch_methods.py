"""The dispatch's one entry point with every method, second stage included, against the exact LP.

On random sites small enough to solve exactly (tests/certified_cases.py): the plan each method returns
passes the feasibility check cabinet by cabinet, its cost is within its reported gap of the exact optimum,
its lower bound never exceeds that optimum, and ``block_ipm``'s second stage keeps the cost within its
budget while never making the plan rougher or further from the previous plan.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.dispatch import ipm_quality, quality
from central.dispatch.dispatch import choose_method, solve_method
from central.dispatch.feasibility import check_result
from central.dispatch.inputs import DispatchInputs
from central.dispatch.optimizer import solve_inputs
from central.dispatch.options import DispatchOptions
from central.dispatch.result import DispatchResult
from lab.bench.dispatch import bench_site
from shared.plan import DispatchMethod, PlanStatus
from tests.certified_cases import Features, features_strategy, random_case
from tests.test_dispatch_certified import exact_optimum, tolerance

EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
METHODS = st.sampled_from(list(DispatchMethod))


def solve(x: DispatchInputs, method: DispatchMethod, **options: object) -> DispatchResult:
    return solve_method(x, DispatchOptions(method=method, **options), None, solve_inputs)  # type: ignore[arg-type]


def assert_certified(x: DispatchInputs, result: DispatchResult, optimum: float) -> None:
    assert result.status is not PlanStatus.FAILED, result.solver.message
    assert check_result(x, result) == []
    lower, gap = result.solver.lower_bound, result.solver.gap_pct
    assert lower is not None and gap is not None
    total = result.objective.total
    assert lower <= optimum + tolerance(optimum)
    assert total >= optimum - tolerance(optimum)
    assert total - optimum <= gap / 100.0 * max(abs(total), 1.0) + tolerance(optimum)


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1), features=features_strategy, method=METHODS, smoothing=st.booleans())
def test_every_method_is_feasible_and_within_its_gap_of_the_exact_lp(
    seed: int, features: Features, method: DispatchMethod, smoothing: bool
) -> None:
    x = random_case(seed, features)
    optimum = exact_optimum(x)
    result = solve(x, method, smoothing=smoothing, gap_target_pct=1e-3)
    assert_certified(x, result, optimum)
    assert result.solver.method is choose_method(x, DispatchOptions(method=method))
    if result.solver.method is DispatchMethod.EXACT:
        assert result.solver.backend == "highspy"
        assert result.solver.gap_pct is not None and result.solver.gap_pct <= 1e-4  # the 1e-6 tolerance
    else:
        assert result.solver.backend == "block_ipm"


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1), features=features_strategy, previous_seed=st.integers(0, 2**31 - 1))
def test_block_ipm_second_stage_keeps_its_budget_and_never_worsens_the_plan(
    seed: int, features: Features, previous_seed: int
) -> None:
    x = random_case(seed, features)
    rng = np.random.default_rng(previous_seed)
    limit = np.maximum(x.charge_limit_kw, x.discharge_limit_kw)[:, np.newaxis]
    previous = rng.uniform(-1.0, 1.0, (x.cabinets, x.steps)) * limit
    previous[:, : int(rng.integers(0, x.steps))] = np.nan  # the previous plan covers the tail only
    x = dataclasses.replace(x, previous_setpoint_kw=previous)
    rough = solve(x, DispatchMethod.BLOCK_IPM, smoothing=False)
    smooth = solve(x, DispatchMethod.BLOCK_IPM, smoothing=True)
    assert check_result(x, smooth) == []
    assert smooth.quality is not None and smooth.solver.lower_bound is not None
    upper = smooth.quality.cost_optimum  # the certified plan's cost before the second stage
    budget = upper + smooth.quality.cost_tolerance_rel * max(abs(upper), 1.0)
    assert smooth.objective.total <= budget + tolerance(budget)
    # Moves are only taken when they improve their criterion: deviation first, then variation.
    deviation = quality.deviation_kw(smooth.setpoint_kw, previous).sum()
    assert deviation <= quality.deviation_kw(rough.setpoint_kw, previous).sum() + 1e-6


def test_cost_budget_is_the_larger_of_the_tolerance_and_the_gap_target() -> None:
    assert ipm_quality.cost_budget(1000.0, 990.0, 0.1, 1e-6) == pytest.approx(1000.0 + 1e-3)
    assert ipm_quality.cost_budget(1000.0, 999.9, 0.1, 1e-6) == pytest.approx(999.9 + 1.0)
    assert ipm_quality.cost_budget(0.5, 0.4, 0.0, 1e-6) == pytest.approx(0.5 + 1e-6)


def test_auto_is_exact_for_small_sites_and_block_ipm_by_size() -> None:
    small_site, small_day = bench_site(100, 96)
    large_site, large_day = bench_site(200, 96)
    from central.dispatch.inputs import build_inputs

    small, large = build_inputs(small_site, small_day), build_inputs(large_site, large_day)
    auto = DispatchOptions()
    assert choose_method(small, auto) is DispatchMethod.EXACT
    assert choose_method(large, auto) is DispatchMethod.BLOCK_IPM
    assert choose_method(large, DispatchOptions(method=DispatchMethod.EXACT)) is DispatchMethod.EXACT
    assert choose_method(small, DispatchOptions(method=DispatchMethod.BLOCK_IPM)) is DispatchMethod.BLOCK_IPM
    # a MIP is only solved exactly
    assert choose_method(large, DispatchOptions(forbid_simultaneous=True)) is DispatchMethod.EXACT
    # the size counts after merging per-unit identical cabinets
    fleet_site, fleet_day = bench_site(1000, 96, models=4, soc_levels=3)
    assert choose_method(build_inputs(fleet_site, fleet_day), auto) is DispatchMethod.EXACT


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gap_target_pct", -1.0, "gap_target_pct must be a number >= 0"),
        ("gap_target_pct", float("nan"), "gap_target_pct must be a number >= 0"),
        ("exact_max_cabinet_steps", -1, "exact_max_cabinet_steps must be >= 0"),
        ("method", "fast", "method must be one of auto, exact, block_ipm"),
    ],
)
def test_bad_method_options_are_refused_naming_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DispatchOptions(**{field: value})  # type: ignore[arg-type]
