"""Hand-computed dispatch cases with exact expected values, solved by both backends.

Every case is small enough to solve on paper; the comment above each states the reasoning. Intervals are one
hour unless said otherwise, so kW and kWh per interval coincide.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from central.dispatch import DispatchOptions, optimize
from shared.dayahead import DayAhead
from shared.plan import Plan, PlanStatus
from shared.site import SiteConfig

START = datetime(2026, 11, 24, tzinfo=UTC)
BACKENDS = ("highspy", "pyomo")
CABINET_DEFAULTS: dict[str, Any] = {
    "capacity_kwh": 100.0,
    "charge_limit_kw": 50.0,
    "discharge_limit_kw": 50.0,
    "charge_efficiency": 1.0,
    "discharge_efficiency": 1.0,
    "soc_min_pct": 0.0,
    "soc_max_pct": 100.0,
    "cycle_cost_per_kwh": 0.0,
}


def make_site(cabinets: Sequence[dict[str, Any]], **site: Any) -> SiteConfig:
    """A site from cabinet overrides of CABINET_DEFAULTS and [site] overrides (endpoints are never opened)."""
    info: dict[str, Any] = {
        "name": "hand",
        "grid_import_limit_kw": 1000.0,
        "grid_export_limit_kw": 1000.0,
        "demand_charge_per_kw": 0.0,
        "meter_modbus_address": "127.0.0.1:1",
        **site,
    }
    tables = [
        {
            "id": f"cab-{i + 1}",
            **CABINET_DEFAULTS,
            "opcua_endpoint": f"opc.tcp://127.0.0.1:{10000 + i}/ems/edge",
            "modbus_address": f"127.0.0.1:{20000 + i}",
            **cabinet,
        }
        for i, cabinet in enumerate(cabinets)
    ]
    return SiteConfig.model_validate({"site": info, "cabinets": tables})


def make_day(
    load_kw: Sequence[float],
    import_price_per_kwh: Sequence[float],
    *,
    export_price_per_kwh: Sequence[float] | None = None,
    pv_kw: Sequence[float] | None = None,
    grid_commitment_kw: Sequence[float] | None = None,
    initial_soc_pct: dict[str, float] | None = None,
    interval_minutes: int = 60,
) -> DayAhead:
    zeros = tuple(0.0 for _ in load_kw)
    return DayAhead(
        start=START,
        interval_minutes=interval_minutes,
        import_price_per_kwh=tuple(import_price_per_kwh),
        export_price_per_kwh=tuple(export_price_per_kwh) if export_price_per_kwh is not None else zeros,
        load_kw=tuple(load_kw),
        pv_kw=tuple(pv_kw) if pv_kw is not None else zeros,
        grid_commitment_kw=tuple(grid_commitment_kw) if grid_commitment_kw is not None else None,
        initial_soc_pct=initial_soc_pct or {},
    )


def solve(site: SiteConfig, day: DayAhead, backend: str, **options: Any) -> Plan:
    return optimize(
        site,
        day,
        options=DispatchOptions(backend=backend, **options),  # type: ignore[arg-type]
        plan_id="test",
        created_at=START,
    )


def approx(values: Sequence[float]) -> Any:
    return pytest.approx(list(values), abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_arbitrage_over_two_intervals_with_losses(backend: str) -> None:
    # Charge 50 kW (limit) at 0.10, store 45 kWh (eta_c 0.9), give back 45 * 0.9 = 40.5 kW at 0.50; the SoC
    # must return to 50 %. Gain per kW charged: 0.81 * 0.5 - 0.1 > 0, so charge at the limit.
    site = make_site([{"charge_efficiency": 0.9, "discharge_efficiency": 0.9, "soc_final_min_pct": 50.0}])
    plan = solve(site, make_day([100.0, 100.0], [0.10, 0.50]), backend)
    assert plan.status is PlanStatus.OPTIMAL
    assert plan.cabinets["cab-1"].setpoint_kw == approx([-50.0, 40.5])
    assert plan.cabinets["cab-1"].soc_pct == approx([95.0, 50.0])
    assert plan.grid_kw == approx([150.0, 59.5])
    assert plan.objective.energy_cost == pytest.approx(150 * 0.1 + 59.5 * 0.5)
    assert plan.objective.total == pytest.approx(44.75)
    assert plan.violations == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_binding_discharge_limit(backend: str) -> None:
    # 70 kWh are available above soc_min, but the inverter gives only 30 kW: import 70 at 1.0.
    site = make_site([{"discharge_limit_kw": 30.0, "soc_min_pct": 10.0, "soc_final_min_pct": 10.0}])
    plan = solve(site, make_day([100.0], [1.0], initial_soc_pct={"cab-1": 80.0}), backend)
    assert plan.cabinets["cab-1"].setpoint_kw == approx([30.0])
    assert plan.cabinets["cab-1"].soc_pct == approx([50.0])
    assert plan.objective.total == pytest.approx(70.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binding_soc_limit(backend: str) -> None:
    # 30 kWh above soc_min 20 % leave the store; with eta_d 0.8 that is 24 kW AC, so import 76 at 1.0.
    site = make_site(
        [
            {
                "discharge_limit_kw": 100.0,
                "discharge_efficiency": 0.8,
                "soc_min_pct": 20.0,
                "soc_final_min_pct": 20.0,
            }
        ]
    )
    plan = solve(site, make_day([100.0], [1.0]), backend)
    assert plan.cabinets["cab-1"].setpoint_kw == approx([24.0])
    assert plan.cabinets["cab-1"].soc_pct == approx([20.0])
    assert plan.objective.total == pytest.approx(76.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_terminal_soc(backend: str) -> None:
    # From 20 % to 60 % = 40 kWh stored = 50 kWh AC at eta_c 0.8: 30 kW (limit) in the cheap hour stores 24,
    # the remaining 16 kWh need 20 kW in the dear hour. Cost 0.1 * (10 + 30) + 0.3 * (10 + 20) = 13.
    site = make_site([{"charge_limit_kw": 30.0, "charge_efficiency": 0.8, "soc_final_min_pct": 60.0}])
    plan = solve(site, make_day([10.0, 10.0], [0.1, 0.3], initial_soc_pct={"cab-1": 20.0}), backend)
    assert plan.cabinets["cab-1"].setpoint_kw == approx([-30.0, -20.0])
    assert plan.cabinets["cab-1"].soc_pct == approx([44.0, 60.0])
    assert plan.objective.total == pytest.approx(13.0)
    assert plan.status is PlanStatus.OPTIMAL


@pytest.mark.parametrize("backend", BACKENDS)
def test_demand_charge_peak_shaving(backend: str) -> None:
    # Load 100 then 200 at a flat price; shifting x kW gives a peak of max(100 + x, 200 - x), least at x = 50.
    # Energy 0.1 * 300 = 30, demand 1.0 * 150, cycle 0.01 * (50 + 50) = 1: total 181.
    site = make_site(
        [
            {
                "capacity_kwh": 200.0,
                "charge_limit_kw": 100.0,
                "discharge_limit_kw": 100.0,
                "cycle_cost_per_kwh": 0.01,
            }
        ],
        demand_charge_per_kw=1.0,
    )
    plan = solve(site, make_day([100.0, 200.0], [0.1, 0.1]), backend)
    assert plan.cabinets["cab-1"].setpoint_kw == approx([-50.0, 50.0])
    assert plan.grid_kw == approx([150.0, 150.0])
    assert plan.objective.demand_charge == pytest.approx(150.0)
    assert plan.objective.cycle_cost == pytest.approx(1.0)
    assert plan.objective.total == pytest.approx(181.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_limit_curtails_pv(backend: str) -> None:
    # 90 kW surplus PV, 50 kW may be exported; storing costs cycle cost and earns nothing, so 40 kW are
    # curtailed: PV used 60, export 50 at 0.1.
    site = make_site([{"charge_limit_kw": 20.0, "cycle_cost_per_kwh": 0.01}], grid_export_limit_kw=50.0)
    day = make_day([10.0], [0.2], export_price_per_kwh=[0.1], pv_kw=[100.0])
    plan = solve(site, day, backend)
    assert plan.pv_used_kw == approx([60.0])
    assert plan.grid_kw == approx([-50.0])
    assert plan.cabinets["cab-1"].setpoint_kw == approx([0.0])
    assert plan.objective.export_revenue == pytest.approx(5.0)
    assert plan.objective.total == pytest.approx(-5.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_commitment_tracking(backend: str) -> None:
    # Committed 50 then 150 kW against a load of 100: discharge 50, then charge 50 back; no imbalance left.
    # Energy 0.1 * 200 = 20, cycle 0.01 * 100 = 1.
    site = make_site(
        [
            {
                "capacity_kwh": 200.0,
                "charge_limit_kw": 100.0,
                "discharge_limit_kw": 100.0,
                "cycle_cost_per_kwh": 0.01,
            }
        ],
        imbalance_price_per_kwh=1.0,
    )
    day = make_day([100.0, 100.0], [0.1, 0.1], grid_commitment_kw=[50.0, 150.0])
    plan = solve(site, day, backend)
    assert plan.cabinets["cab-1"].setpoint_kw == approx([50.0, -50.0])
    assert plan.grid_kw == approx([50.0, 150.0])
    assert plan.objective.imbalance_cost == pytest.approx(0.0, abs=1e-9)
    assert plan.objective.total == pytest.approx(21.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_commitment_deviation_is_priced(backend: str) -> None:
    # No cabinet power to track with (limits 0): |100 - 50| + |100 - 150| = 100 kWh of imbalance at 1.0.
    site = make_site([{"charge_limit_kw": 0.0, "discharge_limit_kw": 0.0}], imbalance_price_per_kwh=1.0)
    day = make_day([100.0, 100.0], [0.1, 0.1], grid_commitment_kw=[50.0, 150.0])
    plan = solve(site, day, backend)
    assert plan.objective.imbalance_cost == pytest.approx(100.0)
    assert plan.objective.total == pytest.approx(120.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_infeasible_day_unserved_energy(backend: str) -> None:
    # 150 kW load, 100 kW import limit, 20 kW discharge: 30 kWh unserved at 10.0 = 300; energy 0.2 * 150 = 30.
    site = make_site(
        [{"discharge_limit_kw": 20.0, "soc_final_min_pct": 30.0}],
        grid_import_limit_kw=100.0,
        unserved_energy_price_per_kwh=10.0,
    )
    plan = solve(site, make_day([150.0, 50.0], [0.2, 0.2]), backend)
    assert plan.status is PlanStatus.OPTIMAL_WITH_VIOLATIONS
    assert plan.objective.penalties == pytest.approx(300.0)
    assert plan.objective.total == pytest.approx(330.0)
    assert plan.cabinets["cab-1"].setpoint_kw[0] == pytest.approx(20.0)
    assert len(plan.violations) == 1
    assert plan.violations[0].startswith("unserved energy 30.0 kWh in interval 0 (from 2026-11-24T00:00:00Z)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_soc_above_window_stays_solvable(backend: str) -> None:
    # Starts at 95 % with soc_max 90 % and only 2 kW to discharge: 3 then 1 kWh above the window, at
    # 10.0 per kWh and hour = 40; energy 0.1 * (8 + 8) = 1.6. Default terminal: min(95, 90) = 90 % reached.
    site = make_site([{"discharge_limit_kw": 2.0, "soc_max_pct": 90.0}], unserved_energy_price_per_kwh=10.0)
    plan = solve(site, make_day([10.0, 10.0], [0.1, 0.1], initial_soc_pct={"cab-1": 95.0}), backend)
    assert plan.status is PlanStatus.OPTIMAL_WITH_VIOLATIONS
    assert plan.cabinets["cab-1"].soc_pct == approx([93.0, 91.0])
    assert plan.objective.penalties == pytest.approx(40.0)
    assert plan.objective.total == pytest.approx(41.6)
    assert plan.violations == [
        "cab-1: initial SoC 95 % above soc_max_pct 90 % (still outside at the end of the horizon)"
    ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_initial_soc_below_window_recovers(backend: str) -> None:
    # Starts at 5 % with soc_min 10 %: charging 5 kW in the first hour brings it back at once, cheaper than
    # 5 kWh below the window for an hour (10 * 5 = 50). Energy 0.1 * (15 + 10) = 2.5, cycle 0.01 * 5.
    site = make_site([{"soc_min_pct": 10.0, "cycle_cost_per_kwh": 0.01}], unserved_energy_price_per_kwh=10.0)
    plan = solve(site, make_day([10.0, 10.0], [0.1, 0.1], initial_soc_pct={"cab-1": 5.0}), backend)
    assert plan.status is PlanStatus.OPTIMAL_WITH_VIOLATIONS
    assert plan.cabinets["cab-1"].soc_pct == approx([10.0, 10.0])
    assert plan.objective.penalties == pytest.approx(0.0, abs=1e-9)
    assert plan.cabinets["cab-1"].setpoint_kw == approx([-5.0, 0.0])
    assert plan.objective.total == pytest.approx(2.55)
    assert plan.violations == ["cab-1: initial SoC 5 % below soc_min_pct 10 % (back inside from interval 0)"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreachable_terminal_soc_is_named(backend: str) -> None:
    # 20 % -> 90 % needs 70 kWh; 10 kW for 2 hours stores 20: final 40 %, 50 kWh short at 10.0 = 500.
    site = make_site(
        [{"charge_limit_kw": 10.0, "soc_final_min_pct": 90.0}], unserved_energy_price_per_kwh=10.0
    )
    plan = solve(site, make_day([0.0, 0.0], [0.1, 0.1], initial_soc_pct={"cab-1": 20.0}), backend)
    assert plan.status is PlanStatus.OPTIMAL_WITH_VIOLATIONS
    assert plan.cabinets["cab-1"].soc_pct == approx([30.0, 40.0])
    assert plan.objective.total == pytest.approx(0.1 * 20 + 500.0)
    assert plan.violations == ["cab-1: final SoC 40.0 % below soc_final_min_pct 90 % (short 50.0 kWh)"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_simultaneous_charge_and_discharge_detected_and_forbidden(backend: str) -> None:
    # Import is paid (-1.0 per kWh), nothing else can absorb it. Charging 100 and discharging 24 at once
    # burns energy in the losses: 0.8 * 100 - 24 / 0.8 = 50 kWh fill the cabinet from 50 % to 100 %;
    # import 76.
    # Forbidden, charging alone may only fill it: 62.5 kW.
    site = make_site(
        [
            {
                "charge_limit_kw": 100.0,
                "discharge_limit_kw": 100.0,
                "charge_efficiency": 0.8,
                "discharge_efficiency": 0.8,
            }
        ],
        grid_import_limit_kw=100.0,
        grid_export_limit_kw=0.0,
    )
    day = make_day([0.0], [-1.0])
    plan = solve(site, day, backend)
    assert plan.objective.total == pytest.approx(-76.0)
    assert plan.status is PlanStatus.OPTIMAL_WITH_VIOLATIONS
    assert plan.cabinets["cab-1"].setpoint_kw == approx([-76.0])
    assert plan.violations[0].startswith(
        "cab-1: simultaneous charge and discharge in interval 0 (up to 24.0 kW"
    )
    forbidden = solve(site, day, backend, forbid_simultaneous=True)
    assert forbidden.status is PlanStatus.OPTIMAL
    assert forbidden.objective.total == pytest.approx(-62.5)
    assert forbidden.cabinets["cab-1"].setpoint_kw == approx([-62.5])
    assert forbidden.cabinets["cab-1"].soc_pct == approx([100.0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_fifteen_minute_intervals_scale_energy(backend: str) -> None:
    # dt = 0.25 h: charging 40 kW for one interval stores 10 kWh (10 % of 100 kWh).
    site = make_site([{"charge_limit_kw": 40.0, "soc_final_min_pct": 60.0}])
    plan = solve(site, make_day([0.0, 0.0], [0.1, 0.2], interval_minutes=15), backend)
    assert plan.cabinets["cab-1"].setpoint_kw == approx([-40.0, 0.0])
    assert plan.cabinets["cab-1"].soc_pct == approx([60.0, 60.0])
    assert plan.objective.total == pytest.approx(0.25 * 40 * 0.1)
