"""Battery/PCS physics of the simulator, without Modbus: energy balance, response, derating, heat, cells."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.physics import OCV_CURVE, BatteryParams, BatteryPhysics, ocv_cell_v


def params(**overrides: float) -> BatteryParams:
    values: dict[str, float] = {
        "capacity_kwh": 200.0,
        "charge_limit_kw": 100.0,
        "discharge_limit_kw": 100.0,
        "charge_efficiency": 0.95,
        "discharge_efficiency": 0.90,
    }
    values.update(overrides)
    return BatteryParams(**values)  # type: ignore[arg-type]


def run(physics: BatteryPhysics, target_kw: float, duration_s: float, step_s: float = 1.0) -> None:
    elapsed = 0.0
    while elapsed < duration_s - 1e-9:
        dt = min(step_s, duration_s - elapsed)
        physics.step(dt, target_kw)
        elapsed += dt


def test_charge_discharge_cycle_balances_energy_with_losses() -> None:
    physics = BatteryPhysics(params(), soc_pct=50.0)
    start_kwh = physics.energy_kwh
    run(physics, -80.0, 1800.0)  # charge 30 min
    run(physics, 0.0, 60.0)
    run(physics, 60.0, 1800.0)  # discharge 30 min
    run(physics, 0.0, 60.0)
    charged, discharged = physics.charged_ac_kwh, physics.discharged_ac_kwh
    # stored += 0.95 * AC in; AC out = 0.90 * taken from the store (docs/interfaces.md: economic dispatch)
    expected_kwh = start_kwh + 0.95 * charged - discharged / 0.90
    assert physics.energy_kwh == pytest.approx(expected_kwh, abs=1e-9)
    # Roughly 40 kWh in and 30 kWh out (less the response ramps): the cycle lost energy.
    assert charged == pytest.approx(40.0, abs=0.2)
    assert discharged == pytest.approx(30.0, abs=0.2)
    assert physics.energy_kwh < start_kwh + charged - discharged
    round_trip_loss_kwh = charged * 0.95 - discharged / 0.90 - (physics.energy_kwh - start_kwh)
    assert round_trip_loss_kwh == pytest.approx(0.0, abs=1e-9)


def test_power_follows_setpoint_with_first_order_response() -> None:
    physics = BatteryPhysics(params(response_time_constant_s=2.0), soc_pct=50.0)
    physics.step(2.0, 50.0)  # one time constant: 63 %
    assert physics.power_kw == pytest.approx(50.0 * (1.0 - math.exp(-1.0)), rel=1e-9)
    physics.step(20.0, 50.0)
    assert physics.power_kw == pytest.approx(50.0, abs=1e-3)


def test_one_long_step_equals_many_short_steps() -> None:
    one = BatteryPhysics(params(), soc_pct=50.0)
    many = BatteryPhysics(params(), soc_pct=50.0)
    one.step(600.0, -70.0)
    run(many, -70.0, 600.0, step_s=0.01)
    assert one.energy_kwh == pytest.approx(many.energy_kwh, rel=1e-6)
    assert one.power_kw == pytest.approx(many.power_kw, rel=1e-6)
    assert one.temperature_degc == pytest.approx(many.temperature_degc, rel=1e-3)


def test_setpoint_is_clamped_to_rated_limits() -> None:
    physics = BatteryPhysics(params(discharge_limit_kw=80.0), soc_pct=50.0)
    run(physics, 500.0, 30.0)
    assert physics.power_kw == pytest.approx(80.0, abs=1e-3)
    run(physics, -500.0, 30.0)
    assert physics.power_kw == pytest.approx(-100.0, abs=1e-3)


def test_limits_derate_near_full_and_empty() -> None:
    full = BatteryPhysics(params(), soc_pct=97.5)
    assert full.charge_limit_kw() == pytest.approx(50.0)  # halfway between 95 % and 100 %
    assert full.discharge_limit_kw() == pytest.approx(100.0)
    empty = BatteryPhysics(params(), soc_pct=2.5)
    assert empty.discharge_limit_kw() == pytest.approx(50.0)
    assert empty.charge_limit_kw() == pytest.approx(100.0)
    assert BatteryPhysics(params(), soc_pct=100.0).charge_limit_kw() == 0.0
    assert BatteryPhysics(params(), soc_pct=0.0).discharge_limit_kw() == 0.0


def test_limits_derate_with_temperature() -> None:
    physics = BatteryPhysics(params(), soc_pct=50.0)
    assert physics.charge_limit_kw(40.0) == pytest.approx(100.0)
    assert physics.charge_limit_kw(52.5) == pytest.approx(50.0)  # 45 -> 60 degC linear
    assert physics.discharge_limit_kw(60.0) == 0.0


def test_charging_to_full_stops_at_capacity() -> None:
    physics = BatteryPhysics(params(), soc_pct=90.0)
    run(physics, -100.0, 6 * 3600.0, step_s=10.0)
    assert 99.0 < physics.soc_pct <= 100.0
    assert physics.energy_kwh <= 200.0
    assert abs(physics.power_kw) < 3.0  # derated to (almost) nothing


def test_discharging_to_empty_never_goes_below_zero() -> None:
    physics = BatteryPhysics(params(), soc_pct=3.0)
    physics.step(24 * 3600.0, 100.0)  # one huge step
    assert physics.energy_kwh >= 0.0
    assert physics.soc_pct < 3.0


def test_temperature_rises_with_power_and_cools_to_ambient() -> None:
    physics = BatteryPhysics(params(thermal_time_constant_s=600.0), soc_pct=50.0)
    run(physics, 100.0, 1200.0, step_s=5.0)
    hot = physics.temperature_degc
    assert hot > 25.0 + 0.8 * 15.0  # rated power: steady state 25 + 15 degC
    run(physics, 0.0, 6000.0, step_s=5.0)
    assert physics.temperature_degc == pytest.approx(25.0, abs=0.1)


def test_cell_voltages_follow_ocv_and_current() -> None:
    physics = BatteryPhysics(params(), soc_pct=50.0)
    rest = physics.cell_voltages()
    assert rest.average_v == pytest.approx(ocv_cell_v(50.0))
    assert rest.max_v - rest.min_v == pytest.approx(0.010)
    run(physics, 100.0, 20.0)
    discharging = physics.cell_voltages()
    assert discharging.average_v < ocv_cell_v(physics.soc_pct) - 0.05  # I * R drop
    run(physics, -100.0, 40.0)
    assert physics.cell_voltages().average_v > ocv_cell_v(physics.soc_pct) + 0.05
    assert physics.pack_current_a() < 0  # charging current is negative (+ discharge)


def test_ocv_is_monotonic_and_bounded() -> None:
    values = [ocv_cell_v(soc / 10.0) for soc in range(0, 1001)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[0] == OCV_CURVE[0][1]
    assert values[-1] == OCV_CURVE[-1][1]
    assert ocv_cell_v(-5.0) == values[0] and ocv_cell_v(105.0) == values[-1]


def test_initial_soc_outside_range_is_refused() -> None:
    with pytest.raises(ValueError, match="0-100"):
        BatteryPhysics(params(), soc_pct=101.0)


@settings(max_examples=60, deadline=None)
@given(
    soc=st.floats(0.0, 100.0),
    steps=st.lists(
        st.tuples(st.floats(-300.0, 300.0), st.floats(0.001, 7200.0)),
        min_size=1,
        max_size=25,
    ),
)
def test_any_sequence_keeps_soc_in_range_and_energy_balanced(
    soc: float, steps: list[tuple[float, float]]
) -> None:
    physics = BatteryPhysics(params(), soc_pct=soc)
    start_kwh = physics.energy_kwh
    for target_kw, dt_s in steps:
        physics.step(dt_s, target_kw)
        assert 0.0 <= physics.soc_pct <= 100.0
        assert -100.0 - 1e-9 <= physics.power_kw <= 100.0 + 1e-9
    expected = start_kwh + 0.95 * physics.charged_ac_kwh - physics.discharged_ac_kwh / 0.90
    assert physics.energy_kwh == pytest.approx(expected, abs=1e-6)
