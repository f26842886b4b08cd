"""What the edge does when no schedule covers the present: the site's ``fallback_mode`` (chain step 1)."""

from __future__ import annotations

from shared.site import FallbackMode


def fallback_setpoint_kw(
    mode: FallbackMode,
    active_power_kw: float,
    grid_power_kw: float,
    share: float,
    peak_shave_threshold_kw: float,
) -> float:
    """Step 1 without a schedule [kW].

    The site's load as seen by this cabinet is ``active_power_kw + share * grid_power_kw``: each cabinet
    covers its share of what the meter measures now, on top of what it already delivers. Because the
    target is rebuilt from measurements every cycle (not integrated), cabinets sharing one meter never wind
    up against each other.

    - ``idle``: 0 kW.
    - ``self_consumption``: drive the grid power to 0 (discharge against import, charge from export).
    - ``peak_shave``: discharge only, to hold import at or below ``peak_shave_threshold_kw``.
    """
    if mode is FallbackMode.IDLE:
        return 0.0
    if mode is FallbackMode.SELF_CONSUMPTION:
        return active_power_kw + share * grid_power_kw
    return max(0.0, active_power_kw + share * (grid_power_kw - peak_shave_threshold_kw))
