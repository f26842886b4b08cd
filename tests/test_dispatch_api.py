"""optimize(): the plan it returns (docs/interfaces.md: plan), initial SoC precedence, failures without
exceptions, the exact aggregation, and the options."""

from __future__ import annotations

import json

import numpy as np
import pytest

from central.dispatch import DispatchOptions, optimize, solve_dispatch
from central.dispatch.aggregation import aggregate, group_identical
from central.dispatch.feasibility import check_result
from central.dispatch.inputs import build_inputs
from lab.bench.dispatch import bench_site
from shared.plan import DispatchMethod, Plan, PlanStatus
from tests.test_dispatch_hand import START, make_day, make_site

BREAKDOWN = ("energy_cost", "export_revenue", "cycle_cost", "demand_charge", "imbalance_cost", "penalties")


def test_plan_fields_follow_the_contract() -> None:
    site, day = bench_site(3, 12, seed=4)
    plan = optimize(site, day, plan_id="p-1", created_at=START)
    data = json.loads(plan.to_json())
    assert set(data) == {
        "plan_id",
        "created_at",
        "start",
        "interval_minutes",
        "status",
        "objective",
        "grid_kw",
        "pv_used_kw",
        "cabinets",
        "violations",
        "solver",
        "quality",
    }
    assert set(data["objective"]) == {"total", *BREAKDOWN}
    assert set(data["quality"]) == {
        "cost_tolerance_rel",
        "cost_optimum",
        "total_variation_kw",
        "deviation_from_previous_kw",
    }
    assert (
        data["quality"]["cost_tolerance_rel"] == 1e-6
        and data["quality"]["deviation_from_previous_kw"] is None
    )
    assert set(data["quality"]["total_variation_kw"]) == set(data["cabinets"])
    assert data["plan_id"] == "p-1"
    assert data["created_at"] == "2026-11-24T00:00:00Z" and data["start"] == "2026-11-24T00:00:00Z"
    assert data["interval_minutes"] == day.interval_minutes
    assert data["status"] == "optimal"
    assert data["solver"]["backend"] == "highspy" and data["solver"]["solve_s"] > 0
    assert len(data["grid_kw"]) == len(data["pv_used_kw"]) == 12
    assert set(data["cabinets"]) == {"cab-0001", "cab-0002", "cab-0003"}
    for cabinet in data["cabinets"].values():
        assert len(cabinet["setpoint_kw"]) == len(cabinet["soc_pct"]) == 12
    objective = plan.objective
    parts = (
        objective.energy_cost
        - objective.export_revenue
        + objective.cycle_cost
        + objective.demand_charge
        + objective.imbalance_cost
        + objective.penalties
    )
    assert objective.total == pytest.approx(parts, rel=1e-12)
    assert Plan.from_json(plan.to_json()) == plan


def test_grid_is_import_minus_export_and_balance_holds() -> None:
    site, day = bench_site(4, 24, seed=2)
    plan = optimize(site, day)
    batteries = np.sum([c.setpoint_kw for c in plan.cabinets.values()], axis=0)
    served = np.asarray(plan.grid_kw) + np.asarray(plan.pv_used_kw) + batteries
    np.testing.assert_allclose(served, day.load_kw, atol=1e-6)  # no unserved load on this site


def test_default_plan_id_and_created_at() -> None:
    site, day = bench_site(1, 4)
    first, second = optimize(site, day), optimize(site, day)
    assert first.plan_id.startswith("plan-20261124T0000Z-") and first.plan_id != second.plan_id
    assert first.created_at.utcoffset() is not None


def test_initial_soc_precedence() -> None:
    # telemetry (argument) over the upload's value over 50 %; soc_pct of an idle cabinet stays where it began
    site = make_site([{"charge_limit_kw": 0.0, "discharge_limit_kw": 0.0}] * 3)
    day = make_day([1.0], [0.1], initial_soc_pct={"cab-1": 30.0, "cab-2": 40.0})
    plan = optimize(site, day, initial_soc_pct={"cab-1": 70.0})
    assert [plan.cabinets[c].soc_pct[0] for c in ("cab-1", "cab-2", "cab-3")] == pytest.approx([70, 40, 50])


@pytest.mark.parametrize(
    ("live", "needle"),
    [
        ({"cab-9": 50.0}, "initial_soc_pct: unknown cabinet 'cab-9'"),
        ({"cab-1": 120.0}, "initial_soc_pct.cab-1: SoC must be 0-100 %, got 120.0"),
        ({"cab-1": float("nan")}, "initial_soc_pct.cab-1: SoC must be 0-100 %"),
    ],
)
def test_bad_initial_soc_gives_a_failed_plan_not_an_exception(live: dict[str, float], needle: str) -> None:
    site = make_site([{}])
    plan = optimize(site, make_day([1.0, 2.0], [0.1, 0.2]), initial_soc_pct=live)
    assert plan.status is PlanStatus.FAILED
    assert needle in plan.solver.message
    assert plan.violations and needle in plan.violations[0]
    assert plan.grid_kw == [] and plan.cabinets["cab-1"].setpoint_kw == []


@pytest.mark.parametrize("backend", ["highspy", "pyomo"])
@pytest.mark.parametrize("forbid", [False, True])
def test_time_limit_of_the_forced_exact_method_gives_a_failed_plan_with_the_reason(
    backend: str, forbid: bool
) -> None:
    site, day = bench_site(30, 96)
    options = DispatchOptions(
        backend=backend,  # type: ignore[arg-type]
        time_limit_s=1e-3,
        forbid_simultaneous=forbid,
        method=DispatchMethod.EXACT,
    )
    plan = optimize(site, day, options=options)
    assert plan.status is PlanStatus.FAILED
    assert "time limit of 0.001 s" in plan.solver.message
    assert plan.solver.backend == backend
    assert plan.solver.method is DispatchMethod.EXACT and plan.solver.lower_bound is None


def test_time_limit_of_auto_gives_the_idle_plan_with_its_bound_not_nothing() -> None:
    site, day = bench_site(30, 96)
    options = DispatchOptions(time_limit_s=1e-3)  # auto: exact at this size, which cannot finish
    result = solve_dispatch(site, day, options=options)
    assert result.status is not PlanStatus.FAILED
    assert "every cabinet idle" in result.solver.message and "time limit" in result.solver.message
    np.testing.assert_array_equal(result.setpoint_kw, 0.0)
    assert result.solver.method is DispatchMethod.EXACT
    assert result.solver.lower_bound is not None and result.solver.gap_pct is not None
    assert result.solver.lower_bound <= result.objective.total
    assert check_result(build_inputs(site, day), result) == []


def test_aggregation_of_per_unit_identical_cabinets_is_exact() -> None:
    # cab-1 and cab-3 are the same per unit (cab-3 twice the size), cab-2 differs (another efficiency).
    base = {
        "capacity_kwh": 100.0,
        "charge_limit_kw": 40.0,
        "discharge_limit_kw": 60.0,
        "charge_efficiency": 0.9,
        "discharge_efficiency": 0.92,
        "soc_min_pct": 10.0,
        "soc_max_pct": 90.0,
        "cycle_cost_per_kwh": 0.01,
    }
    double = {**base, "capacity_kwh": 200.0, "charge_limit_kw": 80.0, "discharge_limit_kw": 120.0}
    site = make_site([base, {**base, "charge_efficiency": 0.95}, double], demand_charge_per_kw=0.5)
    rng = np.random.default_rng(7)
    day = make_day(
        rng.uniform(50, 250, 24).tolist(), rng.uniform(-0.02, 0.3, 24).tolist(), interval_minutes=15
    )
    x = build_inputs(site, day)
    groups = group_identical(x)
    assert groups.count == 2 and groups.group_of.tolist() == [0, 1, 0]
    assert groups.share.tolist() == pytest.approx([1 / 3, 1.0, 2 / 3])
    merged = aggregate(x, groups)
    assert merged.capacity_kwh.tolist() == [300.0, 100.0] and merged.discharge_limit_kw.tolist() == [
        180.0,
        60.0,
    ]
    fast = solve_dispatch(site, day)
    plain = solve_dispatch(site, day, options=DispatchOptions(aggregate_identical=False))
    assert "3 cabinets solved as 2 per-unit identical groups" in fast.solver.message
    assert fast.objective.total == pytest.approx(plain.objective.total, rel=1e-9)
    np.testing.assert_allclose(fast.setpoint_kw[2], 2 * fast.setpoint_kw[0], atol=1e-9)
    np.testing.assert_allclose(fast.soc_pct[2], fast.soc_pct[0], atol=1e-9)


def test_different_initial_soc_is_not_aggregated() -> None:
    site = make_site([{}, {}])
    x = build_inputs(site, make_day([1.0], [0.1]), {"cab-1": 40.0, "cab-2": 41.0})
    assert not group_identical(x).reduces


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"backend": "gurobi"}, "backend must be one of highspy, pyomo"),
        ({"time_limit_s": 0.0}, "time_limit_s must be a positive"),
        ({"time_limit_s": float("inf")}, "time_limit_s must be a positive"),
        ({"mip_gap": 1.0}, "mip_gap must be in [0, 1)"),
        ({"lp_algorithm": "barrier"}, "lp_algorithm must be one of"),
        ({"threads": 0}, "threads must be 1-64"),
        ({"cost_tolerance_rel": -1e-9}, "cost_tolerance_rel must be in [0, 1)"),
        ({"cost_tolerance_rel": float("nan")}, "cost_tolerance_rel must be in [0, 1)"),
    ],
)
def test_options_refuse_bad_values(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        DispatchOptions(**kwargs)  # type: ignore[arg-type]


def test_options_are_frozen_and_map_to_highs() -> None:
    options = DispatchOptions(time_limit_s=5.0)
    with pytest.raises(AttributeError):
        options.time_limit_s = 1.0  # type: ignore[misc]
    assert options.highs_options() == {
        "time_limit": 5.0,
        "solver": "simplex",
        "presolve": "on",
        "threads": 1,
        "output_flag": False,
    }
    mip = DispatchOptions(forbid_simultaneous=True, mip_gap=0.01).highs_options()
    assert mip["mip_rel_gap"] == 0.01 and "solver" not in mip


@pytest.mark.parametrize("algorithm", ["ipm", "choose"])
def test_other_lp_algorithms_reach_the_same_optimum(algorithm: str) -> None:
    site, day = bench_site(5, 24, seed=3)
    simplex = optimize(site, day)
    other = optimize(site, day, options=DispatchOptions(lp_algorithm=algorithm))  # type: ignore[arg-type]
    assert other.status is PlanStatus.OPTIMAL
    assert other.objective.total == pytest.approx(simplex.objective.total, rel=1e-6)


@pytest.mark.parametrize("backend", ["highspy", "pyomo"])
def test_final_soc_override_raises_the_default_terminal_target(backend: str) -> None:
    # Expensive first hour, cheap later: left alone the cabinet sells down and refills only to its
    # initial 50 %; told to end at 70 % it buys the extra 20 % of 100 kWh in the cheap hours.
    site = make_site([{"soc_final_min_pct": None}])
    day = make_day([50.0, 50.0, 50.0], [0.5, 0.1, 0.1], initial_soc_pct={"cab-1": 50.0})
    options = DispatchOptions(backend=backend)  # type: ignore[arg-type]
    default = optimize(site, day, options=options)
    raised = optimize(site, day, options=options, final_soc_min_pct={"cab-1": 70.0})
    assert default.cabinets["cab-1"].soc_pct[-1] == pytest.approx(50.0, abs=1e-6)
    assert raised.cabinets["cab-1"].soc_pct[-1] == pytest.approx(70.0, abs=1e-6)
    assert raised.objective.total > default.objective.total


def test_final_soc_override_leaves_a_configured_target_alone_and_refuses_nonsense() -> None:
    site = make_site([{"soc_final_min_pct": 40.0}])
    day = make_day([50.0, 50.0], [0.5, 0.1], initial_soc_pct={"cab-1": 50.0})
    plan = optimize(site, day, final_soc_min_pct={"cab-1": 80.0})
    assert plan.cabinets["cab-1"].soc_pct[-1] == pytest.approx(40.0, abs=1e-6)
    bad = optimize(site, day, final_soc_min_pct={"cab-1": 180.0})
    assert bad.status is PlanStatus.FAILED
    assert "final_soc_min_pct.cab-1" in bad.solver.message
