"""The certified large-site dispatch against the exact LP, on random sites small enough to solve exactly.

Every returned plan must pass the feasibility check cabinet by cabinet and row by row, its cost must be within
the reported gap of the exact LP's optimum, and the lower bound must never exceed that optimum.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.dispatch import highs_backend
from central.dispatch.block_lp import build_block_lp
from central.dispatch.bounds import lagrangian_bound, trivial_bound
from central.dispatch.certified import (
    CertifiedOptions,
    CertifiedResult,
    StopReason,
    choose_method,
    solve_certified,
)
from central.dispatch.feasibility import check_result
from central.dispatch.inputs import DispatchInputs, build_inputs
from central.dispatch.options import DispatchOptions
from central.dispatch.recovery import recover
from central.dispatch.result import evaluate
from lab.bench.dispatch import bench_site
from shared.plan import DispatchMethod, SolverInfo
from tests.certified_cases import Features, features_strategy, random_case

GAP_TARGET_PCT = 1e-3
EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def exact_optimum(x: DispatchInputs) -> float:
    solution = highs_backend.solve(x, DispatchOptions(time_limit_s=60.0, aggregate_identical=False))
    assert solution.ok, solution.message
    return solution.objective_value


def tolerance(value: float) -> float:
    return 1e-6 * max(1.0, abs(value))


def assert_certified(x: DispatchInputs, result: CertifiedResult, optimum: float) -> None:
    """The properties every certified result must have against the exact optimum."""
    assert check_result(x, result.result) == []
    assert result.lower_bound <= optimum + tolerance(optimum)
    assert result.upper_bound >= optimum - tolerance(optimum)
    # the cost is within the reported gap of the optimum
    assert result.upper_bound - optimum <= result.upper_bound - result.lower_bound + tolerance(optimum)
    assert result.result.objective.total == pytest.approx(result.upper_bound)


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1), features=features_strategy)
def test_block_ipm_is_within_its_gap_of_the_exact_lp(seed: int, features: Features) -> None:
    x = random_case(seed, features)
    optimum = exact_optimum(x)
    options = CertifiedOptions(method=DispatchMethod.BLOCK_IPM, gap_target_pct=GAP_TARGET_PCT)
    result = solve_certified(x, options)
    assert_certified(x, result, optimum)
    assert result.stop == StopReason.GAP_REACHED, (result.stop, result.result.solver.message)
    assert result.gap_pct <= GAP_TARGET_PCT
    assert result.method == DispatchMethod.BLOCK_IPM


def test_random_cases_cover_every_feature() -> None:
    everything = Features(*([True] * len(dataclasses.fields(Features))))
    hits = {"demand": 0, "commitment": 0, "unserved": 0, "curtailed": 0, "outside": 0, "efficiencies": 0}
    for seed in range(12):
        x = random_case(seed, everything)
        solution = highs_backend.solve(x, DispatchOptions())
        hits["demand"] += x.demand_charge_per_kw > 0
        hits["commitment"] += x.grid_commitment_kw is not None
        hits["unserved"] += bool((solution.unserved_kw > 1e-6).any())
        hits["curtailed"] += bool((solution.pv_used_kw < x.pv_kw - 1e-6).any())
        hits["outside"] += bool((x.excess_above_window_kwh + x.deficit_below_window_kwh > 0).any())
        hits["efficiencies"] += len(set(x.charge_efficiency.tolist())) > 1
        binding_import = np.isclose(solution.grid_import_kw, x.grid_import_limit_kw).any()
        hits.setdefault("binding_import", 0)
        hits["binding_import"] += bool(binding_import)
    assert all(count >= 2 for count in hits.values()), hits


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1), features=features_strategy)
def test_exact_method_certifies_a_zero_gap(seed: int, features: Features) -> None:
    x = random_case(seed, features)
    optimum = exact_optimum(x)
    result = solve_certified(x, CertifiedOptions(method=DispatchMethod.EXACT))
    assert result.stop == StopReason.OPTIMAL
    assert_certified(x, result, optimum)
    assert result.gap_pct <= 1e-6


@EXAMPLES
@given(
    seed=st.integers(0, 2**31 - 1),
    features=features_strategy,
    scale=st.floats(1e-3, 10.0),
    dual_seed=st.integers(0, 2**31 - 1),
)
def test_lower_bound_from_any_duals_never_exceeds_the_optimum(
    seed: int, features: Features, scale: float, dual_seed: int
) -> None:
    x = random_case(seed, features)
    lp = build_block_lp(x)
    rng = np.random.default_rng(dual_seed)
    cabinet_dual = rng.normal(0.0, scale, lp.cabinet_rhs.shape)
    site_dual = rng.normal(0.0, scale, lp.site_rhs.shape)
    optimum = exact_optimum(x)
    assert lagrangian_bound(lp, cabinet_dual, site_dual) <= optimum + tolerance(optimum)
    assert trivial_bound(lp) <= optimum + tolerance(optimum)


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1), features=features_strategy, keep=st.booleans())
def test_recovery_makes_any_proposal_feasible(seed: int, features: Features, keep: bool) -> None:
    x = random_case(seed, features)
    rng = np.random.default_rng(seed)
    shape = (x.cabinets, x.steps)
    # garbage proposals: outside the limits, negative, simultaneous charge and discharge
    charge = rng.uniform(-0.5, 1.5, shape) * x.charge_limit_kw[:, np.newaxis]
    discharge = rng.uniform(-0.5, 1.5, shape) * x.discharge_limit_kw[:, np.newaxis]
    # keep: where it cannot be netted without overfilling, simultaneous charge and discharge may stay in
    # every other interval
    keep_simultaneous = np.arange(x.steps) % 2 == 0 if keep else None
    solution = recover(x, charge, discharge, DispatchOptions(), keep_simultaneous)
    assert solution is not None
    result = evaluate(x, solution, SolverInfo(backend="test"), 0.0)
    assert check_result(x, result) == []
    both = np.minimum(result.charge_kw, result.discharge_kw)
    if keep_simultaneous is None:
        assert not both.any()
    else:
        assert not both[:, ~keep_simultaneous].any()
    optimum = exact_optimum(x)
    assert result.objective.total >= optimum - tolerance(optimum)


def test_block_ipm_on_a_bench_site_matches_the_exact_lp() -> None:
    x = build_inputs(*bench_site(30, 96, seed=3))
    optimum = exact_optimum(x)
    result = solve_certified(x, CertifiedOptions(method=DispatchMethod.BLOCK_IPM, gap_target_pct=0.01))
    assert_certified(x, result, optimum)
    assert result.gap_pct <= 0.01
    assert result.result.status.value == "optimal", result.result.violations


def test_identical_cabinets_are_merged_and_split_feasibly() -> None:
    x = build_inputs(*bench_site(40, 48, seed=2, models=3, soc_levels=2))
    optimum = exact_optimum(x)
    result = solve_certified(x, CertifiedOptions(method=DispatchMethod.BLOCK_IPM))
    assert "per-unit identical groups" in result.result.solver.message
    assert result.result.setpoint_kw.shape == (40, 48)
    assert_certified(x, result, optimum)


def test_a_time_limit_still_returns_a_feasible_plan_with_a_bound() -> None:
    x = build_inputs(*bench_site(60, 96, seed=4))
    result = solve_certified(x, CertifiedOptions(method=DispatchMethod.BLOCK_IPM, time_limit_s=1e-3))
    assert result.stop == StopReason.TIME_LIMIT
    assert check_result(x, result.result) == []
    assert np.isfinite(result.lower_bound) and result.lower_bound <= result.upper_bound
    assert result.result.setpoint_kw.shape == (60, 96)


def test_a_stop_request_ends_the_solve_with_the_best_plan() -> None:
    x = build_inputs(*bench_site(20, 48, seed=5))
    stop = threading.Event()
    reports: list[CertifiedResult] = []

    def on_progress(result: CertifiedResult) -> None:
        reports.append(result)
        if result.iterations >= 3:
            stop.set()

    result = solve_certified(
        x, CertifiedOptions(method=DispatchMethod.BLOCK_IPM), on_progress=on_progress, stop=stop
    )
    assert result.stop == StopReason.INTERRUPTED
    assert 3 <= result.iterations <= 4
    assert check_result(x, result.result) == []
    uppers = [r.upper_bound for r in reports]
    lowers = [r.lower_bound for r in reports]
    assert uppers == sorted(uppers, reverse=True) and lowers == sorted(lowers)
    assert result.upper_bound <= uppers[-1] and result.lower_bound >= lowers[-1]


def test_auto_picks_the_exact_lp_for_small_sites_and_the_block_ipm_for_large_ones() -> None:
    options = CertifiedOptions()
    small = build_inputs(*bench_site(100, 96))
    large = build_inputs(*bench_site(200, 96))
    assert choose_method(small, options) == DispatchMethod.EXACT
    assert choose_method(large, options) == DispatchMethod.BLOCK_IPM
    forced = CertifiedOptions(method=DispatchMethod.BLOCK_IPM)
    assert choose_method(small, forced) == DispatchMethod.BLOCK_IPM


@pytest.mark.parametrize(
    ("field", "value"),
    [("time_limit_s", 0.0), ("time_limit_s", float("nan")), ("gap_target_pct", -1.0), ("max_iterations", 0)],
)
def test_bad_options_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        CertifiedOptions(**{field: value})  # type: ignore[arg-type]
