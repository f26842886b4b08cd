"""The setpoint chain: pure functions, one per documented step, applied in this order each cycle.

1. target: the schedule's value for the current interval, or the fallback mode's value
   (:mod:`edge.fallback`)
2. BMS limits: ``[-WChaRteMax, WDisChaRteMax]`` as the BMS reports them now
3. SoC window: no discharge at or below ``soc_min_pct``, no charge at or above ``soc_max_pct``
4. ramp: at most ``ramp_kw_per_s`` x elapsed (clock) time away from the previous setpoint
5. point of connection: keep the site's import/export within its limits, this cabinet taking its share
   of the headroom (steps after the ramp: a PoC limit outranks the ramp)
6. device limits: the cabinet's rated power (site file) and, again, the BMS limits; nothing outside them
   ever leaves the edge, not even to hold a PoC limit

All powers in kW, + discharge; grid power + import.
"""

from __future__ import annotations

from dataclasses import dataclass


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def apply_bms_limits(setpoint_kw: float, charge_rate_max_kw: float, discharge_rate_max_kw: float) -> float:
    """Step 2: the BMS's present charge/discharge limits (802 WChaRteMax/WDisChaRteMax) [kW]."""
    return clamp(setpoint_kw, -max(0.0, charge_rate_max_kw), max(0.0, discharge_rate_max_kw))


def apply_soc_window(setpoint_kw: float, soc_pct: float, soc_min_pct: float, soc_max_pct: float) -> float:
    """Step 3: stop discharging at ``soc_min_pct`` and charging at ``soc_max_pct`` [kW]."""
    if soc_pct <= soc_min_pct and setpoint_kw > 0.0:
        return 0.0
    if soc_pct >= soc_max_pct and setpoint_kw < 0.0:
        return 0.0
    return setpoint_kw


def apply_ramp(setpoint_kw: float, previous_kw: float, ramp_kw_per_s: float, elapsed_s: float) -> float:
    """Step 4: move at most ``ramp_kw_per_s * elapsed_s`` from ``previous_kw`` [kW]."""
    step_kw = ramp_kw_per_s * max(0.0, elapsed_s)
    return clamp(setpoint_kw, previous_kw - step_kw, previous_kw + step_kw)


def poc_window_kw(
    active_power_kw: float,
    grid_power_kw: float,
    import_limit_kw: float,
    export_limit_kw: float,
    share: float,
) -> tuple[float, float]:
    """The setpoints [kW] that keep the PoC within limits if this cabinet takes ``share`` of the headroom.

    Grid power falls by what the cabinets' power rises. With every cabinet moving by its share at once,
    this one may discharge at most ``share * (grid + export_limit)`` more than now before export exceeds
    its limit, and must discharge at least ``share * (grid - import_limit)`` more to bring import within
    its limit (a negative "more" is a permitted reduction).
    """
    low = active_power_kw + share * (grid_power_kw - import_limit_kw)
    high = active_power_kw + share * (grid_power_kw + export_limit_kw)
    return low, high


def apply_poc_limits(
    setpoint_kw: float,
    active_power_kw: float,
    grid_power_kw: float,
    import_limit_kw: float,
    export_limit_kw: float,
    share: float,
) -> float:
    """Step 5: hold the site's import and export limits at the point of connection [kW]."""
    low, high = poc_window_kw(active_power_kw, grid_power_kw, import_limit_kw, export_limit_kw, share)
    return clamp(setpoint_kw, low, high)


def apply_device_limits(
    setpoint_kw: float,
    charge_limit_kw: float,
    discharge_limit_kw: float,
    charge_rate_max_kw: float,
    discharge_rate_max_kw: float,
) -> float:
    """Step 6: the cabinet's rated power and the BMS limits, the last word [kW]."""
    charge_kw = max(0.0, min(charge_limit_kw, charge_rate_max_kw))
    discharge_kw = max(0.0, min(discharge_limit_kw, discharge_rate_max_kw))
    return clamp(setpoint_kw, -charge_kw, discharge_kw)


@dataclass(frozen=True)
class ChainInputs:
    """Everything one cycle's setpoint depends on."""

    target_kw: float  # step 1, already chosen (schedule or fallback)
    previous_kw: float  # the setpoint written last (ramp origin)
    elapsed_s: float  # clock time since that write
    soc_pct: float
    active_power_kw: float
    grid_power_kw: float
    charge_rate_max_kw: float
    discharge_rate_max_kw: float
    soc_min_pct: float
    soc_max_pct: float
    ramp_kw_per_s: float
    import_limit_kw: float
    export_limit_kw: float
    share: float
    charge_limit_kw: float
    discharge_limit_kw: float


@dataclass(frozen=True)
class ChainResult:
    """The value after every step, so logs and tests can see which step decided."""

    target_kw: float
    after_bms_kw: float
    after_soc_kw: float
    after_ramp_kw: float
    after_poc_kw: float
    setpoint_kw: float


def run_chain(inputs: ChainInputs) -> ChainResult:
    """Apply steps 2-6 to ``inputs.target_kw``."""
    bms = apply_bms_limits(inputs.target_kw, inputs.charge_rate_max_kw, inputs.discharge_rate_max_kw)
    soc = apply_soc_window(bms, inputs.soc_pct, inputs.soc_min_pct, inputs.soc_max_pct)
    ramp = apply_ramp(soc, inputs.previous_kw, inputs.ramp_kw_per_s, inputs.elapsed_s)
    poc = apply_poc_limits(
        ramp,
        inputs.active_power_kw,
        inputs.grid_power_kw,
        inputs.import_limit_kw,
        inputs.export_limit_kw,
        inputs.share,
    )
    final = apply_device_limits(
        poc,
        inputs.charge_limit_kw,
        inputs.discharge_limit_kw,
        inputs.charge_rate_max_kw,
        inputs.discharge_rate_max_kw,
    )
    return ChainResult(inputs.target_kw, bms, soc, ramp, poc, final)
