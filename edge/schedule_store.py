"""Accepted schedules and which one drives the cabinet now.

Rule: at time ``t`` the most recently accepted schedule that covers ``t`` decides (its value for the
interval containing ``t``). A newer schedule therefore replaces an older one from its own start on, and an
older one still covers the times the newer one does not. Setpoints change exactly at interval boundaries:
the value is looked up from the clock every cycle, never cached across cycles.

At most :data:`MAX_KEPT_SCHEDULES` are kept. Over the cap the store forgets, oldest first, a schedule that
decides no moment from now on (newer ones cover all of its remaining time), and only when every kept
schedule still decides some moment, the oldest one that does not decide now: the running schedule is never
forgotten for a newer one that starts later (a plan for tomorrow arriving while today's runs).
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def add(
        self,
        schedule: CabinetSchedule,
        accepted_at: datetime,
        sequence: int | None = None,
        now: datetime | None = None,
        dropped: Sequence[str] | None = None,
    ) -> list[str]:
        """Keep an accepted schedule (checked with :meth:`problem` first); return the ids of the ones
        dropped to stay within :data:`MAX_KEPT_SCHEDULES` at ``now`` (default ``accepted_at``), or exactly
        ``dropped`` when given (what :meth:`dropped_by` said and the database already dropped)."""
        seq = self._next_sequence if sequence is None else sequence
        self._next_sequence = max(self._next_sequence, seq + 1)
        self._stored = _with(self._stored, StoredSchedule(schedule, accepted_at, seq))
        if dropped is None:
            dropped = over_cap(self._stored, now if now is not None else accepted_at)
        gone = set(dropped)
        self._stored = [s for s in self._stored if s.schedule.schedule_id not in gone]
        return list(dropped)

    def dropped_by(self, schedule: CabinetSchedule, sequence: int, now: datetime) -> list[str]:
        """The ids :meth:`add` would drop for ``schedule`` at ``now`` (the database drops them first)."""
        return over_cap(_with(self._stored, StoredSchedule(schedule, now, sequence)), now)

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


def _with(stored: list[StoredSchedule], item: StoredSchedule) -> list[StoredSchedule]:
    kept = [s for s in stored if s.schedule.schedule_id != item.schedule.schedule_id]
    return sorted([*kept, item], key=lambda s: s.sequence)


def _decides_from(item: StoredSchedule, newer: Sequence[StoredSchedule], now: datetime) -> bool:
    """Whether ``item`` decides some moment at or after ``now``: part of its time no newer one covers."""
    gaps = [(max(item.schedule.start, now), item.schedule.end)]
    for other in newer:
        start, end = other.schedule.start, other.schedule.end
        gaps = [
            piece
            for lo, hi in gaps
            for piece in ((lo, min(hi, start)), (max(lo, end), hi))
            if piece[0] < piece[1]
        ]
    return bool(gaps)


def over_cap(stored: Sequence[StoredSchedule], now: datetime, cap: int = MAX_KEPT_SCHEDULES) -> list[str]:
    """Ids to forget so that ``cap`` schedules (in acceptance order) remain, least needed first: those that
    decide no moment from ``now`` on, oldest first; then the oldest that do not decide ``now``."""
    kept = sorted(stored, key=lambda s: s.sequence)
    dropped: list[str] = []
    while len(kept) > cap:
        idle = [s for k, s in enumerate(kept) if not _decides_from(s, kept[k + 1 :], now)]
        if idle:
            victim = idle[0]
        else:
            deciding_now = next((s for s in reversed(kept) if s.schedule.index_at(now) is not None), None)
            victim = next(s for s in kept if s is not deciding_now)
        kept.remove(victim)
        dropped.append(victim.schedule.schedule_id)
    return dropped
