"""A small in-memory :class:`shared.edge_api.EdgeControl`: the edge's API without devices.

It validates schedules exactly as the contract asks (``shared.schedule.schedule_problem``), keeps the active
one, follows it as an ideal device would (active power = setpoint) and holds an interlock that can be
tripped and reset. The OPC UA tests, ``ems bench push`` and link demos use it; the real controller is
``edge``'s control loop.
"""

from __future__ import annotations

import math

from shared.clock import Clock
from shared.edge_api import Decision, EdgeMode, EdgeTelemetry
from shared.schedule import CabinetSchedule, schedule_problem
from shared.site import CabinetConfig


class InMemoryEdgeControl:
    """Schedule store and telemetry of one cabinet, in memory; time from ``clock``."""

    def __init__(self, cabinet: CabinetConfig, clock: Clock, *, soc_pct: float = 50.0) -> None:
        self._cabinet = cabinet
        self._clock = clock
        self._schedule: CabinetSchedule | None = None
        self._soc_pct = _checked_soc(soc_pct)
        self._interlock_reason = ""
        self._interlock_condition_present = False
        self._cycle_time_p99_ms = 0.0

    @property
    def active_schedule(self) -> CabinetSchedule | None:
        return self._schedule

    def submit_schedule(self, schedule: CabinetSchedule) -> Decision:
        problem = schedule_problem(
            schedule, self._cabinet.charge_limit_kw, self._cabinet.discharge_limit_kw, self._clock.now()
        )
        if problem is not None:
            return Decision(False, problem)
        self._schedule = schedule
        return Decision(True, f"accepted {schedule.describe()}")

    def reset_interlock(self) -> Decision:
        if not self._interlock_reason:
            return Decision(True, "no interlock was active")
        if self._interlock_condition_present:
            return Decision(False, f"cannot reset: {self._interlock_reason} is still present")
        self._interlock_reason = ""
        return Decision(True, "interlock reset")

    def telemetry(self) -> EdgeTelemetry:
        now = self._clock.now()
        scheduled = self._schedule.setpoint_at(now) if self._schedule is not None else None
        if self._interlock_reason:
            mode, setpoint_kw = EdgeMode.TRIPPED, 0.0
        elif scheduled is not None:
            mode, setpoint_kw = EdgeMode.SCHEDULE, scheduled
        else:
            mode, setpoint_kw = EdgeMode.FALLBACK, 0.0
        return EdgeTelemetry(
            cabinet_id=self._cabinet.id,
            soc_pct=self._soc_pct,
            active_power_kw=setpoint_kw,
            setpoint_kw=setpoint_kw,
            charge_limit_kw=self._cabinet.charge_limit_kw,
            discharge_limit_kw=self._cabinet.discharge_limit_kw,
            mode=mode,
            schedule_id=self._schedule.schedule_id if self._schedule is not None else "",
            schedule_valid_until=self._schedule.end if self._schedule is not None else None,
            interlock_active=bool(self._interlock_reason),
            interlock_reason=self._interlock_reason,
            cycle_time_p99_ms=self._cycle_time_p99_ms,
        )

    def set_soc_pct(self, soc_pct: float) -> None:
        """Set the state of charge [%] the telemetry reports."""
        self._soc_pct = _checked_soc(soc_pct)

    def trip(self, reason: str) -> None:
        """Latch an interlock whose condition is present until :meth:`clear_condition`."""
        if not reason.strip():
            raise ValueError("an interlock needs a reason")
        self._interlock_reason = reason
        self._interlock_condition_present = True

    def clear_condition(self) -> None:
        """The interlock's condition is gone; the latch stays until ``reset_interlock``."""
        self._interlock_condition_present = False


def _checked_soc(soc_pct: float) -> float:
    if not math.isfinite(soc_pct) or not 0.0 <= soc_pct <= 100.0:
        raise ValueError(f"soc_pct must be in [0, 100], got {soc_pct}")
    return float(soc_pct)
