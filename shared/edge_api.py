"""The edge's internal API: what the OPC UA server (and tests) call, and what it publishes.

The edge controller implements :class:`EdgeControl`; the OPC UA server of the same process calls it and
mirrors :class:`EdgeTelemetry` into the address space of docs/interfaces.md: edge OPC UA server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from shared.schedule import CabinetSchedule


class EdgeMode(StrEnum):
    STARTING = "starting"
    SCHEDULE = "schedule"
    FALLBACK = "fallback"
    TRIPPED = "tripped"


@dataclass(frozen=True)
class Decision:
    """Outcome of a method call: accepted or refused with the reason."""

    accepted: bool
    message: str


@dataclass(frozen=True)
class EdgeTelemetry:
    """A consistent snapshot of one edge, as published over OPC UA."""

    cabinet_id: str
    soc_pct: float
    active_power_kw: float  # + discharge
    setpoint_kw: float  # + discharge, as last written to the device
    charge_limit_kw: float
    discharge_limit_kw: float
    mode: EdgeMode
    schedule_id: str
    schedule_valid_until: datetime | None
    interlock_active: bool
    interlock_reason: str
    cycle_time_p99_ms: float


class EdgeControl(Protocol):
    """Implemented by the edge controller; called by the OPC UA server."""

    def submit_schedule(self, schedule: CabinetSchedule) -> Decision:
        """Validate and store a schedule; the active one is unchanged when refused."""
        ...

    def reset_interlock(self) -> Decision:
        """Clear a latched interlock if its condition is gone."""
        ...

    def telemetry(self) -> EdgeTelemetry:
        """The latest snapshot (cheap: never blocks on I/O)."""
        ...
