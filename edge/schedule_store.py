"""Accepted schedules and which one drives the cabinet now.

Rule: at time ``t`` the most recently accepted schedule that covers ``t`` decides (its value for the
interval containing ``t``). A newer schedule therefore replaces an older one from its own start on, and an
older one still covers the times the newer one does not. Setpoints change exactly at interval boundaries:
the value is looked up from the clock every cycle, never cached across cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.schedule import CabinetSchedule, schedule_problem

MAX_KEPT_SCHEDULES = 32


@dataclass(frozen=True)
class StoredSchedule:
    """An accepted schedule and when it was accepted (acceptance order decides precedence)."""

    schedule: CabinetSchedule
    accepted_at: datetime
    sequence: int


class ScheduleStore:
    """In-memory schedules of one cabinet, checked against its limits."""

    def __init__(self, charge_limit_kw: float, discharge_limit_kw: float) -> None:
        self.charge_limit_kw = charge_limit_kw
        self.discharge_limit_kw = discharge_limit_kw
        self._stored: list[StoredSchedule] = []
        self._next_sequence = 1

    @property
    def stored(self) -> list[StoredSchedule]:
        return list(self._stored)

    def problem(self, schedule: CabinetSchedule, now: datetime) -> str | None:
        """Why ``schedule`` must be refused, or None. An identical re-push of a kept id is fine."""
        problem = schedule_problem(schedule, self.charge_limit_kw, self.discharge_limit_kw, now)
        if problem is not None:
            return problem
        for stored in self._stored:
            if stored.schedule.schedule_id == schedule.schedule_id and stored.schedule != schedule:
                return f"schedule id {schedule.schedule_id!r} was already accepted with different content"
        return None

    def is_known(self, schedule: CabinetSchedule) -> bool:
        return any(stored.schedule == schedule for stored in self._stored)

    def add(self, schedule: CabinetSchedule, accepted_at: datetime, sequence: int | None = None) -> list[str]:
        """Keep an accepted schedule (checked with :meth:`problem` first); return the ids of the oldest
        ones dropped to stay within :data:`MAX_KEPT_SCHEDULES` (the database applies the same cap)."""
        seq = self._next_sequence if sequence is None else sequence
        self._next_sequence = max(self._next_sequence, seq + 1)
        self._stored = [s for s in self._stored if s.schedule.schedule_id != schedule.schedule_id]
        self._stored.append(StoredSchedule(schedule, accepted_at, seq))
        self._stored.sort(key=lambda s: s.sequence)
        dropped: list[str] = []
        while len(self._stored) > MAX_KEPT_SCHEDULES:
            dropped.append(self._stored.pop(0).schedule.schedule_id)
        return dropped

    def active(self, now: datetime) -> CabinetSchedule | None:
        """The schedule that decides at ``now``, or None (then the fallback mode runs)."""
        for stored in reversed(self._stored):
            if stored.schedule.index_at(now) is not None:
                return stored.schedule
        return None

    def valid_until(self, now: datetime) -> datetime | None:
        """Until when schedules cover time without a gap, starting at ``now`` (None: not covered now)."""
        if self.active(now) is None:
            return None
        until = now
        extended = True
        while extended:
            extended = False
            for stored in self._stored:
                sched = stored.schedule
                if sched.start <= until < sched.end:
                    until = sched.end
                    extended = True
        return until

    def prune(self, now: datetime) -> list[str]:
        """Forget schedules that ended; return their ids."""
        ended = [s.schedule.schedule_id for s in self._stored if s.schedule.end <= now]
        if ended:
            self._stored = [s for s in self._stored if s.schedule.end > now]
        return ended

    @property
    def next_sequence(self) -> int:
        return self._next_sequence
