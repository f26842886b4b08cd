"""The pieces of the block interior point method: the block LP is the dispatch LP, the structured normal
equations solve like a dense solver, and the feasibility checker catches what it should."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.dispatch import highs_backend
from central.dispatch.blas_threads import blas_threads
from central.dispatch.block_ipm import InteriorPoint
from central.dispatch.block_kkt import BlockNormalSolver
from central.dispatch.block_lp import BlockLp, build_block_lp
from central.dispatch.bounds import lagrangian_bound
from central.dispatch.certified import CertifiedOptions, DispatchMethod, solve_certified
from central.dispatch.feasibility import check_result
from central.dispatch.inputs import DispatchInputs, FloatArray
from central.dispatch.options import DispatchOptions
from central.dispatch.result import DispatchResult
from tests.certified_cases import Features, features_strategy, random_case

EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def dense_matrix(lp: BlockLp) -> FloatArray:
    """A as a dense matrix, column by column through the structured ``apply``."""
    columns = []
    for j in range(lp.layout.size):
        unit = np.zeros(lp.layout.size)
        unit[j] = 1.0
        cabinet, site = lp.apply(unit)
        columns.append(np.concatenate([cabinet.ravel(), site]))
    return np.column_stack(columns)


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1), features=features_strategy, theta_seed=st.integers(0, 2**31 - 1))
def test_structured_normal_equations_solve_like_a_dense_solver(
    seed: int, features: Features, theta_seed: int
) -> None:
    x = random_case(seed, features)
    lp = build_block_lp(x)
    matrix = dense_matrix(lp)
    rng = np.random.default_rng(theta_seed)
    y_cabinet = rng.normal(size=lp.cabinet_rhs.shape)
    y_site = rng.normal(size=lp.site_rhs.shape)
    np.testing.assert_allclose(
        lp.apply_transpose(y_cabinet, y_site),
        matrix.T @ np.concatenate([y_cabinet.ravel(), y_site]),
        atol=1e-12,
    )
    theta = np.exp(rng.normal(0.0, 2.0, lp.layout.size))
    theta[lp.upper - lp.lower <= 0] = 0.0
    solver = BlockNormalSolver(lp)
    solver.factor(theta, 0.0)
    rhs = rng.normal(size=matrix.shape[0])
    cabinets = lp.cabinet_rhs.size
    dy_cabinet, dy_site = solver.solve(rhs[:cabinets].reshape(lp.cabinet_rhs.shape), rhs[cabinets:])
    normal = matrix @ np.diag(theta) @ matrix.T
    reference = np.linalg.solve(normal, rhs)
    got = np.concatenate([dy_cabinet.ravel(), dy_site])
    assert np.abs(got - reference).max() <= 1e-7 * np.abs(reference).max()


@EXAMPLES
@given(seed=st.integers(0, 2**31 - 1), features=features_strategy)
def test_block_lp_has_the_dispatch_lps_optimum(seed: int, features: Features) -> None:
    """The interior point method converges: a nearly feasible iterate whose cost is its dual bound, and both
    are the exact LP's optimum."""
    x = random_case(seed, features)
    optimum = highs_backend.solve(x, DispatchOptions()).objective_value
    scale = max(1.0, abs(optimum))
    lp = build_block_lp(x)
    ipm = InteriorPoint(lp)
    for _ in range(40):
        iterate = ipm.step()
        bound = lagrangian_bound(lp, iterate.cabinet_dual, iterate.site_dual)
        cost = float(lp.cost @ iterate.x)
        assert bound <= optimum + 1e-6 * scale
        if abs(cost - bound) <= 1e-7 * scale and iterate.primal_residual <= 1e-7:
            break
    else:
        raise AssertionError(
            f"no convergence: cost {cost}, bound {bound}, residual {iterate.primal_residual}"
        )
    assert bound == pytest.approx(optimum, rel=1e-6, abs=1e-6)
    assert cost == pytest.approx(optimum, rel=1e-6, abs=1e-6)


def solved(seed: int) -> tuple[DispatchInputs, DispatchResult]:
    everything = Features(*([True] * len(dataclasses.fields(Features))))
    x = random_case(seed, everything)
    result = solve_certified(x, CertifiedOptions(method=DispatchMethod.EXACT)).result
    assert check_result(x, result) == []
    return x, result


def test_checker_names_each_broken_constraint() -> None:
    x, good = solved(7)
    b = 0
    charge = good.charge_kw.copy()
    charge[b, 1] = float(x.charge_limit_kw[b]) + 5.0
    over_limit = dataclasses.replace(good, charge_kw=charge)
    assert any("charge above charge_limit_kw in interval 1" in p for p in check_result(x, over_limit))

    soc = good.soc_pct.copy()
    soc[b, 2] += 5.0
    wrong_soc = dataclasses.replace(good, soc_pct=soc)
    assert any("soc_pct differs" in p for p in check_result(x, wrong_soc))

    setpoint = good.setpoint_kw.copy()
    setpoint[b, 0] += 3.0
    wrong_setpoint = dataclasses.replace(good, setpoint_kw=setpoint)
    assert any("setpoint differs" in p for p in check_result(x, wrong_setpoint))

    grid = good.grid_kw.copy()
    grid[0] = x.grid_import_limit_kw + 10.0
    over_import = dataclasses.replace(good, grid_kw=grid)
    problems = check_result(x, over_import)
    assert any("grid import above grid_import_limit_kw in interval 0" in p for p in problems)
    assert any("negative unserved" in p for p in problems)

    cheap = dataclasses.replace(
        good, objective=good.objective.model_copy(update={"total": good.objective.total - 1})
    )
    assert any("objective.total" in p for p in check_result(x, cheap))


def test_checker_catches_energy_created_from_nothing() -> None:
    """A plan whose SoC column agrees with itself but not with the storage recursion from the initial SoC."""
    for seed in range(20):
        x, good = solved(seed)
        busiest = int(np.argmax((good.charge_kw + good.discharge_kw).sum(axis=1)))
        if (good.charge_kw + good.discharge_kw)[busiest].sum() > 1.0:
            break
    charge, discharge, setpoint = good.charge_kw.copy(), good.discharge_kw.copy(), good.setpoint_kw.copy()
    charge[busiest], discharge[busiest], setpoint[busiest] = 0.0, 0.0, 0.0
    idle_but_same_soc = dataclasses.replace(
        good, charge_kw=charge, discharge_kw=discharge, setpoint_kw=setpoint
    )
    problems = check_result(x, idle_but_same_soc)
    assert any(p.startswith(f"cab-{busiest + 1}: soc_pct differs") for p in problems), problems


def test_blas_threads_are_limited_and_restored() -> None:
    from central.dispatch.blas_threads import _library

    library = _library()
    if library is None:
        with blas_threads(1):
            pass
        return
    before = int(library.get_threads())
    with blas_threads(1):
        assert int(library.get_threads()) == 1
    assert int(library.get_threads()) == before
