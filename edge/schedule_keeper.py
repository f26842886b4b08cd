"""The accepted schedules of one cabinet, kept in memory for the loop and durably in the local database.

A schedule is accepted only once it is committed (by the store's thread): ``WriteSchedule`` answers
Accepted after the commit, so a schedule the central was told is accepted survives a ``kill -9`` of the
edge. That wait happens under this keeper's own submission lock, never under the control loop's lock; the
loop only takes the short in-memory lock to look the active schedule up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from edge.persistence import EventKind, PersistedSchedule
from edge.schedule_store import ScheduleStore
from edge.store_worker import StoreWorker
from shared.edge_api import Decision
from shared.schedule import CabinetSchedule

SCHEDULE_STORE_TIMEOUT_S = 5.0  # longest a WriteSchedule waits for its schedule to be stored

EventRecorder = Callable[[EventKind, str, str], None]  # (kind, message, subject)


class ScheduleKeeper:
    """Thread-safe: ``submit`` from any thread, ``active``/``valid_until``/``prune`` from the loop."""

    def __init__(
        self, charge_limit_kw: float, discharge_limit_kw: float, store: StoreWorker, record: EventRecorder
    ) -> None:
        self._store = store
        self._record = record
        self._schedules = ScheduleStore(charge_limit_kw, discharge_limit_kw)
        self._lock = threading.Lock()  # the in-memory store; never held across I/O
        self._submit_lock = threading.Lock()  # one acceptance at a time, its commit included

    def submit(self, schedule: CabinetSchedule, now: datetime) -> Decision:
        """Validate, commit, keep; a refusal (with the reason) leaves the active schedule unchanged."""
        with self._submit_lock:
            if not self._store.running:
                return Decision(False, "edge is not running")
            with self._lock:
                try:
                    problem = self._schedules.problem(schedule, now)
                except (TypeError, ValueError, AttributeError) as exc:
                    problem = f"malformed schedule: {exc}"
                known = problem is None and self._schedules.is_known(schedule)
                sequence = self._schedules.next_sequence
                dropped = (
                    []
                    if problem is not None or known
                    else self._schedules.dropped_by(schedule, sequence, now)
                )
            if problem is not None:
                sid = str(getattr(schedule, "schedule_id", "?"))
                self._record(EventKind.SCHEDULE_REFUSED, f"schedule {sid!r} refused: {problem}", sid)
                return Decision(False, problem)
            if known:
                return Decision(True, f"schedule {schedule.schedule_id} was already accepted")
            try:
                self._store.call(
                    lambda db: db.save_schedule(schedule, now, sequence, dropped),
                    "schedule",
                    SCHEDULE_STORE_TIMEOUT_S,
                )
            except Exception as exc:  # sqlite, a full disk, a stopped store, a timeout: not accepted
                return Decision(False, f"cannot store the schedule locally: {exc or type(exc).__name__}")
            with self._lock:
                self._schedules.add(schedule, now, sequence, dropped=dropped)  # as the database did
            self._record(EventKind.SCHEDULE, f"accepted {schedule.describe()}", schedule.schedule_id)
            return Decision(True, f"accepted {schedule.describe()}")

    def restore(self, persisted: list[PersistedSchedule], now: datetime) -> None:
        """Keep the stored schedules that have not ended, within the cap; forget the others (also in the
        database: one written by a version whose cap forgot by age only may hold more)."""
        kept = [item for item in persisted if item.schedule.end > now]
        ended = [item.schedule.schedule_id for item in persisted if item.schedule.end <= now]
        with self._lock:
            for item in kept:
                ended += self._schedules.add(item.schedule, item.accepted_at, item.sequence, now)
            active = self._schedules.active(now)
            kept_count = len(self._schedules.stored)
        if ended:
            self._store.post(lambda db: db.delete_schedules(ended), "ended schedules")
        if kept:
            what = f"active now: {active.describe()}" if active is not None else "none covers the present"
            self._record(
                EventKind.SCHEDULE_RESTORED,
                f"restored {kept_count} schedule(s); {what}",
                active.schedule_id if active is not None else "",
            )

    def active(self, now: datetime) -> CabinetSchedule | None:
        with self._lock:
            return self._schedules.active(now)

    def valid_until(self, now: datetime) -> datetime | None:
        with self._lock:
            return self._schedules.valid_until(now)

    def kept_ids(self) -> list[str]:
        """Ids of the schedules kept in memory, oldest acceptance first."""
        with self._lock:
            return [stored.schedule.schedule_id for stored in self._schedules.stored]

    def prune(self, now: datetime) -> None:
        """Forget ended schedules, in memory and (queued) in the database."""
        with self._lock:
            ended = self._schedules.prune(now)
        if ended:
            self._store.post(lambda db: db.delete_schedules(ended), "ended schedules")
