"""What the edge shows: its mode and its telemetry, from the controller's state (pure).

How a comm-loss hold appears (docs/edge.md, "Communication loss"): ``Mode`` = ``starting`` (the edge
waits for valid data and writes no setpoint, as at start), ``InterlockActive`` = true and
``InterlockReason`` starting with ``comm_loss (not latched; ...)``. ``Mode`` = ``tripped`` always means a
latched interlock that needs a reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from edge.comm_loss import CommLossMonitor
from edge.interlocks import InterlockLatch
from edge.snapshot import CabinetReading
from edge.timing import CycleStats
from shared.edge_api import EdgeMode, EdgeTelemetry
from shared.schedule import CabinetSchedule
from shared.site import CabinetConfig, FallbackMode


def decide_mode(
    latch: InterlockLatch,
    comm: CommLossMonitor,
    active: CabinetSchedule | None,
    fallback: FallbackMode,
) -> tuple[EdgeMode, str]:
    """The mode and a short detail for the log line of a change."""
    if latch.active:
        return EdgeMode.TRIPPED, latch.reason
    if not comm.armed:
        return EdgeMode.STARTING, ""
    if comm.holding:
        return EdgeMode.STARTING, f"comm_loss hold, not latched: {comm.cause}"
    if active is not None:
        return EdgeMode.SCHEDULE, active.schedule_id
    return EdgeMode.FALLBACK, fallback.value


@dataclass(frozen=True)
class StatusInputs:
    """What the telemetry is built from (taken under the controller's lock)."""

    cabinet: CabinetConfig
    mode: EdgeMode
    reading: CabinetReading | None  # the last valid cabinet reading
    device_setpoint_kw: float
    active: CabinetSchedule | None
    valid_until: datetime | None
    latch: InterlockLatch
    comm: CommLossMonitor
    timing: CycleStats


def build_telemetry(inputs: StatusInputs) -> EdgeTelemetry:
    reading, config = inputs.reading, inputs.cabinet
    charge_kw, discharge_kw = config.charge_limit_kw, config.discharge_limit_kw
    if reading is not None:
        charge_kw = min(charge_kw, reading.charge_rate_max_kw)
        discharge_kw = min(discharge_kw, reading.discharge_rate_max_kw)
    reasons = [r for r in (inputs.latch.reason, inputs.comm.reason) if r]
    return EdgeTelemetry(
        cabinet_id=config.id,
        soc_pct=reading.soc_pct if reading is not None else float("nan"),
        active_power_kw=reading.active_power_kw if reading is not None else float("nan"),
        setpoint_kw=inputs.device_setpoint_kw,
        charge_limit_kw=charge_kw,
        discharge_limit_kw=discharge_kw,
        mode=inputs.mode,
        schedule_id=inputs.active.schedule_id if inputs.active is not None else "",
        schedule_valid_until=inputs.valid_until,
        interlock_active=inputs.latch.active or inputs.comm.holding,
        interlock_reason="; ".join(reasons),
        cycle_time_p99_ms=inputs.timing.period_p99_ms(),
    )
