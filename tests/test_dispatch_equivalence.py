"""Both backends, with and without aggregation, on many seeded random small sites and days.

They must agree on the status and the objective (relative 1e-6), and every plan must be feasible: within
the limits, the SoC following the storage recursion, and the balance holding with non-negative unserved load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from central.dispatch import DispatchOptions, DispatchResult, solve_dispatch
from central.dispatch.inputs import build_inputs
from shared.dayahead import DayAhead
from shared.site import SiteConfig
from tests.test_dispatch_hand import make_day, make_site

SEEDS = range(30)
TOLERANCE = 1e-6


def random_case(seed: int) -> tuple[SiteConfig, DayAhead]:
    """A small random site and day: losses, cycle costs, negative prices, sometimes a demand charge, a
    commitment, a too-small import limit, a cabinet starting outside its window, and per-unit identical
    cabinets (so the aggregation is exercised)."""
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(3, 17))
    cabinets: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(1, 4))):
        capacity = float(rng.uniform(20.0, 300.0))
        cabinet = {
            "capacity_kwh": capacity,
            "charge_limit_kw": capacity * float(rng.uniform(0.2, 1.2)),
            "discharge_limit_kw": capacity * float(rng.uniform(0.2, 1.2)),
            "charge_efficiency": float(rng.uniform(0.85, 0.99)),
            "discharge_efficiency": float(rng.uniform(0.85, 0.99)),
            "soc_min_pct": float(rng.uniform(0.0, 20.0)),
            "soc_max_pct": float(rng.uniform(80.0, 100.0)),
            "cycle_cost_per_kwh": float(rng.uniform(0.001, 0.03)),
        }
        if rng.random() < 0.3:
            cabinet["soc_final_min_pct"] = float(rng.uniform(cabinet["soc_min_pct"], cabinet["soc_max_pct"]))
        cabinets.append(cabinet)
        if rng.random() < 0.4:  # a per-unit identical copy, half or twice the size
            scale = float(rng.choice([0.5, 2.0]))
            cabinets.append(
                {
                    **cabinet,
                    "capacity_kwh": capacity * scale,
                    "charge_limit_kw": cabinet["charge_limit_kw"] * scale,
                    "discharge_limit_kw": cabinet["discharge_limit_kw"] * scale,
                }
            )
    power_kw = sum(c["discharge_limit_kw"] for c in cabinets)
    load = rng.uniform(0.0, 1.5, steps) * power_kw
    site = make_site(
        cabinets,
        grid_import_limit_kw=float(load.max() * rng.uniform(0.6, 1.5)),
        grid_export_limit_kw=float(power_kw * rng.uniform(0.0, 1.0)),
        demand_charge_per_kw=float(rng.choice([0.0, rng.uniform(0.1, 2.0)])),
        imbalance_price_per_kwh=float(rng.uniform(0.1, 1.0)),
    )
    price = rng.uniform(-0.05, 0.4, steps)
    initial = {
        f"cab-{i + 1}": float(rng.uniform(0.0, 100.0)) for i in range(len(cabinets)) if rng.random() < 0.7
    }
    for cabinet_id in initial:  # copies keep the original's SoC most of the time, so they aggregate
        index = int(cabinet_id.split("-")[1]) - 1
        if index > 0 and rng.random() < 0.7:
            initial[cabinet_id] = initial.get(f"cab-{index}", initial[cabinet_id])
    day = make_day(
        load.tolist(),
        price.tolist(),
        export_price_per_kwh=(price - rng.uniform(0.0, 0.1, steps)).tolist(),
        pv_kw=(rng.uniform(0.0, 1.0, steps) * power_kw * rng.random()).tolist(),
        grid_commitment_kw=(load * rng.uniform(0.5, 1.2, steps)).tolist() if rng.random() < 0.4 else None,
        initial_soc_pct=initial,
        interval_minutes=int(rng.choice([5, 15, 30, 60])),
    )
    return site, day


def check_feasible(site: SiteConfig, day: DayAhead, result: DispatchResult) -> None:
    x = build_inputs(site, day)
    charge, discharge = result.charge_kw, result.discharge_kw
    tol = TOLERANCE * max(1.0, float(x.load_kw.max()), float(x.capacity_kwh.max()))
    assert np.all(charge >= 0) and np.all(charge <= x.charge_limit_kw[:, None] + tol)
    assert np.all(discharge >= 0) and np.all(discharge <= x.discharge_limit_kw[:, None] + tol)
    np.testing.assert_allclose(result.setpoint_kw, discharge - charge, atol=tol)
    # the storage recursion, from the initial SoC, reproduces the planned SoC
    flow = x.interval_h * (
        x.charge_efficiency[:, None] * charge - discharge / x.discharge_efficiency[:, None]
    )
    energy = x.energy_initial_kwh[:, None] + np.cumsum(flow, axis=1)
    np.testing.assert_allclose(result.soc_pct, energy / x.capacity_kwh[:, None] * 100.0, atol=1e-5)
    inside = (x.excess_above_window_kwh == 0) & (x.deficit_below_window_kwh == 0)
    assert np.all(result.soc_pct[inside] >= x.soc_min_pct[inside, None] - 1e-5)
    assert np.all(result.soc_pct[inside] <= x.soc_max_pct[inside, None] + 1e-5)
    assert np.all(result.grid_kw <= x.grid_import_limit_kw + tol)
    assert np.all(result.grid_kw >= -x.grid_export_limit_kw - tol)
    assert np.all(result.pv_used_kw <= x.pv_kw + tol) and np.all(result.pv_used_kw >= 0)
    unserved = x.load_kw - result.grid_kw - result.pv_used_kw - result.setpoint_kw.sum(axis=0)
    assert np.all(unserved >= -tol)


def relative_gap(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(a), abs(b))


@pytest.mark.parametrize("seed", SEEDS)
def test_backends_agree_on_random_sites(seed: int) -> None:
    site, day = random_case(seed)
    reference = solve_dispatch(site, day, options=DispatchOptions(backend="pyomo", aggregate_identical=False))
    fast = solve_dispatch(site, day, options=DispatchOptions(backend="highspy"))
    plain = solve_dispatch(site, day, options=DispatchOptions(backend="highspy", aggregate_identical=False))
    for result in (reference, fast, plain):
        assert result.status.value != "failed", result.solver.message
        # the breakdown (evaluated at the solution) is the solver's optimal value
        assert relative_gap(result.objective.total, result.solver_objective) < TOLERANCE
        check_feasible(site, day, result)
    assert fast.status == reference.status == plain.status, (fast.violations, reference.violations)
    assert relative_gap(fast.objective.total, reference.objective.total) < TOLERANCE
    assert relative_gap(plain.objective.total, reference.objective.total) < TOLERANCE


def test_random_cases_cover_the_features() -> None:
    # The generator must really produce what the equivalence test claims to cover.
    cases = [random_case(seed) for seed in SEEDS]
    inputs = [build_inputs(site, day) for site, day in cases]
    assert sum(x.demand_charge_per_kw > 0 for x in inputs) >= 5
    assert sum(x.grid_commitment_kw is not None for x in inputs) >= 5
    assert sum(bool(np.any(x.import_price_per_kwh < 0)) for x in inputs) >= 5
    assert sum(bool(np.any(x.excess_above_window_kwh + x.deficit_below_window_kwh > 0)) for x in inputs) >= 3
    from central.dispatch.aggregation import group_identical

    assert sum(group_identical(x).reduces for x in inputs) >= 3
