"""Battery and PCS physics of one cabinet, stepped on (simulated) time.

Pure computation, no I/O and no clock: the device calls :meth:`BatteryPhysics.step` with the elapsed
simulated seconds. Every first-order process (power response, temperature) uses the exact exponential
solution, so a step of any length is stable (a simulated clock at 100x makes 10 ms of wall time 1 s).

Sign: AC power is positive when the cabinet discharges (delivers to the AC bus), as SunSpec ``WSet``.
Energy: ``stored += charge_efficiency * AC charge energy``, ``AC discharge energy = discharge_efficiency *
energy taken from the store`` (docs/interfaces.md: economic dispatch), so the simulator and the optimizer
agree on losses.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from shared.site import CabinetConfig, SimSettings

# Open-circuit voltage of one LFP cell [V] over SoC [%]: flat in the middle, steep at both ends.
OCV_CURVE: tuple[tuple[float, float], ...] = (
    (0.0, 2.90),
    (2.0, 3.00),
    (5.0, 3.10),
    (10.0, 3.20),
    (20.0, 3.25),
    (40.0, 3.28),
    (60.0, 3.30),
    (80.0, 3.32),
    (90.0, 3.34),
    (95.0, 3.38),
    (98.0, 3.42),
    (100.0, 3.48),
)
_OCV_SOC = [soc for soc, _ in OCV_CURVE]
NOMINAL_CELL_V = 3.2


def ocv_cell_v(soc_pct: float) -> float:
    """Open-circuit voltage of one cell [V] at ``soc_pct`` (linear between the curve's points)."""
    soc = min(max(soc_pct, 0.0), 100.0)
    index = bisect.bisect_right(_OCV_SOC, soc)
    if index >= len(OCV_CURVE):
        return OCV_CURVE[-1][1]
    (soc_a, v_a), (soc_b, v_b) = OCV_CURVE[index - 1], OCV_CURVE[index]
    return v_a + (v_b - v_a) * (soc - soc_a) / (soc_b - soc_a)


@dataclass(frozen=True)
class BatteryParams:
    """Parameters of one cabinet; powers are AC [kW], rated = the site file's limits."""

    capacity_kwh: float
    charge_limit_kw: float
    discharge_limit_kw: float
    charge_efficiency: float
    discharge_efficiency: float
    ambient_temperature_degc: float = 25.0
    response_time_constant_s: float = 0.5  # PCS first-order response to a setpoint step
    thermal_time_constant_s: float = 1800.0
    temperature_rise_at_rated_degc: float = 15.0  # steady state above ambient at rated power
    cells_in_series: int = 240
    cell_resistance_ohm: float = 0.001
    cell_spread_v: float = 0.010  # max - min cell voltage (imbalance)
    soc_derate_high_pct: float = 95.0  # charge limit falls linearly to 0 between this and 100 %
    soc_derate_low_pct: float = 5.0  # discharge limit falls linearly to 0 between this and 0 %
    temperature_derate_start_degc: float = 45.0  # both limits fall linearly to 0 ...
    temperature_derate_end_degc: float = 60.0  # ... at this temperature

    @classmethod
    def from_cabinet(cls, cabinet: CabinetConfig, sim: SimSettings) -> BatteryParams:
        return cls(
            capacity_kwh=cabinet.capacity_kwh,
            charge_limit_kw=cabinet.charge_limit_kw,
            discharge_limit_kw=cabinet.discharge_limit_kw,
            charge_efficiency=cabinet.charge_efficiency,
            discharge_efficiency=cabinet.discharge_efficiency,
            ambient_temperature_degc=sim.ambient_temperature_degc,
            response_time_constant_s=sim.response_time_constant_s,
            thermal_time_constant_s=sim.thermal_time_constant_s,
            temperature_rise_at_rated_degc=sim.temperature_rise_at_rated_degc,
        )

    @property
    def rated_kw(self) -> float:
        return max(self.charge_limit_kw, self.discharge_limit_kw)

    @property
    def nominal_pack_v(self) -> float:
        return self.cells_in_series * NOMINAL_CELL_V


@dataclass(frozen=True)
class CellVoltages:
    """Cell voltages [V] under the present current."""

    average_v: float
    max_v: float
    min_v: float


class BatteryPhysics:
    """State of one cabinet: stored energy, AC power, temperature, energy counters."""

    def __init__(self, params: BatteryParams, soc_pct: float) -> None:
        if not 0.0 <= soc_pct <= 100.0:
            raise ValueError(f"initial SoC must be 0-100 %, got {soc_pct}")
        self.params = params
        self.energy_kwh = params.capacity_kwh * soc_pct / 100.0
        self.power_kw = 0.0  # AC, + discharge
        self.temperature_degc = params.ambient_temperature_degc
        self.charged_ac_kwh = 0.0  # AC energy absorbed, ever
        self.discharged_ac_kwh = 0.0  # AC energy delivered, ever
        self.limit_factor = 1.0  # BMS derating on top of SoC and temperature (the ``derate`` fault)

    @property
    def soc_pct(self) -> float:
        return 100.0 * self.energy_kwh / self.params.capacity_kwh

    def set_soc_pct(self, soc_pct: float) -> None:
        """Move the stored energy to ``soc_pct`` (a BMS recalibration); counters and power are kept."""
        if not (math.isfinite(soc_pct) and 0.0 <= soc_pct <= 100.0):
            raise ValueError(f"SoC must be 0-100 %, got {soc_pct}")
        self.energy_kwh = self.params.capacity_kwh * soc_pct / 100.0

    # ----------------------------------------------------------------------------------- limits

    def soc_charge_factor(self) -> float:
        """Charge derating [0..1] near full."""
        start = self.params.soc_derate_high_pct
        return _ramp_down(self.soc_pct, start, 100.0)

    def soc_discharge_factor(self) -> float:
        """Discharge derating [0..1] near empty."""
        start = self.params.soc_derate_low_pct
        return 1.0 - _ramp_down(self.soc_pct, 0.0, start) if start > 0 else 1.0

    def temperature_factor(self, temperature_degc: float) -> float:
        """Derating [0..1] of both directions with cabinet temperature."""
        return _ramp_down(
            temperature_degc,
            self.params.temperature_derate_start_degc,
            self.params.temperature_derate_end_degc,
        )

    def charge_limit_kw(self, temperature_degc: float | None = None) -> float:
        """Present charge capability [kW] (SunSpec ``WChaRteMax``)."""
        temperature = self.temperature_degc if temperature_degc is None else temperature_degc
        factor = self.soc_charge_factor() * self.temperature_factor(temperature) * self.limit_factor
        return self.params.charge_limit_kw * factor

    def discharge_limit_kw(self, temperature_degc: float | None = None) -> float:
        """Present discharge capability [kW] (SunSpec ``WDisChaRteMax``)."""
        temperature = self.temperature_degc if temperature_degc is None else temperature_degc
        factor = self.soc_discharge_factor() * self.temperature_factor(temperature) * self.limit_factor
        return self.params.discharge_limit_kw * factor

    # ----------------------------------------------------------------------------------- step

    def step(self, dt_s: float, target_kw: float, temperature_degc: float | None = None) -> None:
        """Advance ``dt_s`` simulated seconds towards ``target_kw`` (+ discharge, clamped to the limits).

        ``temperature_degc`` overrides the cabinet temperature used for derating (over-temperature fault).
        """
        if dt_s <= 0.0:
            return
        p = self.params
        charge_max = self.charge_limit_kw(temperature_degc)
        discharge_max = self.discharge_limit_kw(temperature_degc)
        target = min(max(target_kw, -charge_max), discharge_max)
        decay = math.exp(-dt_s / p.response_time_constant_s)
        start_kw = min(max(self.power_kw, -charge_max), discharge_max)
        end_kw = target + (start_kw - target) * decay
        # Exact mean of the exponential over the step, so energy matches the power actually delivered.
        mean_kw = target + (start_kw - target) * p.response_time_constant_s / dt_s * (1.0 - decay)
        dt_h = dt_s / 3600.0
        if mean_kw >= 0.0:
            delta_kwh = -mean_kw / p.discharge_efficiency * dt_h
            if self.energy_kwh + delta_kwh < 0.0:  # empty within the step: deliver only what is left
                mean_kw = self.energy_kwh * p.discharge_efficiency / dt_h
                delta_kwh = -self.energy_kwh
                end_kw = min(end_kw, mean_kw)
            self.discharged_ac_kwh += mean_kw * dt_h
        else:
            delta_kwh = -mean_kw * p.charge_efficiency * dt_h
            room_kwh = p.capacity_kwh - self.energy_kwh
            if delta_kwh > room_kwh:  # full within the step: absorb only what fits
                mean_kw = -room_kwh / p.charge_efficiency / dt_h
                delta_kwh = room_kwh
                end_kw = max(end_kw, mean_kw)
            self.charged_ac_kwh += -mean_kw * dt_h
        self.energy_kwh = min(max(self.energy_kwh + delta_kwh, 0.0), p.capacity_kwh)
        self.power_kw = end_kw
        # Losses grow with current squared: steady-state rise proportional to (P / P_rated)^2.
        load = mean_kw / p.rated_kw if p.rated_kw > 0 else 0.0
        steady_degc = p.ambient_temperature_degc + p.temperature_rise_at_rated_degc * load * load
        thermal_decay = math.exp(-dt_s / p.thermal_time_constant_s)
        self.temperature_degc = steady_degc + (self.temperature_degc - steady_degc) * thermal_decay

    # ----------------------------------------------------------------------------------- electrical

    def dc_power_kw(self) -> float:
        """Battery-side power [kW] (+ discharge): AC power plus (discharge) or minus (charge) PCS losses."""
        p = self.params
        if self.power_kw >= 0.0:
            return self.power_kw / p.discharge_efficiency
        return self.power_kw * p.charge_efficiency

    def pack_voltage_v(self) -> float:
        return self.cell_voltages().average_v * self.params.cells_in_series

    def pack_current_a(self) -> float:
        """DC current [A] (+ discharge)."""
        open_circuit_v = ocv_cell_v(self.soc_pct) * self.params.cells_in_series
        return self.dc_power_kw() * 1000.0 / open_circuit_v

    def cell_voltages(self) -> CellVoltages:
        """Cell voltages: OCV at the present SoC minus the drop over the internal resistance."""
        p = self.params
        current_a = self.pack_current_a()
        average = ocv_cell_v(self.soc_pct) - current_a * p.cell_resistance_ohm
        half_spread = p.cell_spread_v / 2.0
        return CellVoltages(average, average + half_spread, average - half_spread)


def _ramp_down(value: float, start: float, end: float) -> float:
    """1 below ``start``, 0 above ``end``, linear between."""
    if value <= start:
        return 1.0
    if value >= end:
        return 0.0
    return (end - value) / (end - start)
