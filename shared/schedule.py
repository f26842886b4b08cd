"""A cabinet's setpoint schedule: what the central pushes and the edge runs (+ discharge)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.timeutil import ensure_utc, format_utc

MAX_SCHEDULE_STEPS = 20_160
LIMIT_TOLERANCE_KW = 1e-6  # solver round-off on a setpoint that sits exactly on a limit


@dataclass(frozen=True)
class CabinetSchedule:
    """Setpoints [kW] (+ discharge) for equal intervals of ``interval_s`` from ``start`` (UTC)."""

    schedule_id: str
    start: datetime
    interval_s: int
    setpoints_kw: tuple[float, ...]

    @property
    def end(self) -> datetime:
        """End of the last interval (exclusive): the schedule is valid until then."""
        return self.start + timedelta(seconds=self.interval_s * len(self.setpoints_kw))

    def index_at(self, when: datetime) -> int | None:
        """Index of the interval containing ``when`` (half-open), or None outside the schedule."""
        offset_s = (when - self.start).total_seconds()
        if offset_s < 0 or self.interval_s <= 0:
            return None
        index = int(offset_s // self.interval_s)
        return index if index < len(self.setpoints_kw) else None

    def setpoint_at(self, when: datetime) -> float | None:
        index = self.index_at(when)
        return None if index is None else self.setpoints_kw[index]

    def describe(self) -> str:
        return (
            f"{self.schedule_id}: {len(self.setpoints_kw)} x {self.interval_s} s "
            f"from {format_utc(self.start)} to {format_utc(self.end)}"
        )


def schedule_problem(
    schedule: CabinetSchedule,
    charge_limit_kw: float,
    discharge_limit_kw: float,
    now: datetime,
) -> str | None:
    """Why ``schedule`` must be refused, or None when it is acceptable.

    Refused: an empty id, a non-UTC start, a non-positive interval, no setpoints, too many, NaN or infinite
    values, values outside ``[-charge_limit_kw, discharge_limit_kw]``, or a schedule entirely in the past.
    """
    if not schedule.schedule_id.strip():
        return "schedule id is empty"
    try:
        ensure_utc(schedule.start)
    except ValueError as exc:
        return f"start: {exc}"
    if schedule.interval_s <= 0:
        return f"interval must be > 0 s, got {schedule.interval_s}"
    if not schedule.setpoints_kw:
        return "schedule is empty"
    if len(schedule.setpoints_kw) > MAX_SCHEDULE_STEPS:
        return f"schedule has {len(schedule.setpoints_kw)} setpoints; at most {MAX_SCHEDULE_STEPS}"
    for index, value in enumerate(schedule.setpoints_kw):
        if not math.isfinite(value):
            return f"setpoint {index} is {value}; all setpoints must be finite numbers"
        if value > discharge_limit_kw + LIMIT_TOLERANCE_KW:
            return f"setpoint {index} = {value:g} kW exceeds the discharge limit {discharge_limit_kw:g} kW"
        if value < -charge_limit_kw - LIMIT_TOLERANCE_KW:
            return f"setpoint {index} = {value:g} kW exceeds the charge limit {charge_limit_kw:g} kW"
    if schedule.end <= now:
        return f"schedule ended at {format_utc(schedule.end)}, before now ({format_utc(now)})"
    return None
