"""Local persistence of one edge in SQLite: accepted schedules, the latched interlock, the event log.

One file per cabinet (``STATE_DIR/CABINET_ID.sqlite3``) in WAL mode. Every change is one committed
transaction, so a ``kill -9`` at any moment leaves either the old or the new state, never a torn one.
``synchronous=NORMAL``: a commit does not wait for the disk (it would stall the control loop for an fsync);
that is durable against the edge process dying, and on an OS crash or power loss the last commits may be
lost (never corrupted) — the edge then starts in its fallback mode until the central re-pushes.

The control loop never writes here itself: :class:`edge.store_worker.StoreWorker` owns the connection and
does every write in its own thread, in order.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from edge.interlocks import Condition, Finding, Trip
from shared.schedule import CabinetSchedule
from shared.timeutil import format_utc, parse_utc

SCHEMA_VERSION = 2  # 2: events.subject

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    accepted_at TEXT NOT NULL,
    start TEXT NOT NULL,
    interval_s INTEGER NOT NULL,
    setpoints_kw TEXT NOT NULL,
    end_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS latch (
    condition TEXT PRIMARY KEY,
    detail TEXT NOT NULL,
    at_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT ''
);
"""

MAX_EVENTS_KEPT = 100_000


class EventKind(StrEnum):
    """What an event of the local log records. The value is stored; ``subject`` names what it is about."""

    START = "start"  # the edge started
    STOP = "stop"  # the edge stopped (the message says whether 0 W was written)
    MODE = "mode"  # a mode change; subject: the new mode
    SETPOINT = "setpoint"  # the first setpoint after start; subject: the mode it was written in
    TRIP = "trip"  # an interlock latched; subject: its condition
    TRIP_RESTORED = "trip_restored"  # latched before a restart, still latched; subject: the conditions
    RESET = "reset"  # an operator reset the latch; subject: the cleared conditions
    RESET_REFUSED = "reset_refused"  # a reset was refused (the message says why)
    SCHEDULE = "schedule"  # a schedule was accepted; subject: its id
    SCHEDULE_RESTORED = "schedule_restored"  # schedules restored at start; subject: the active one's id
    SCHEDULE_REFUSED = "schedule_refused"  # a schedule was refused; subject: its id
    COMM = "comm"  # a Modbus link was lost or (re)connected; subject: the link's name
    COMM_LOSS_START = "comm_loss_start"  # a comm-loss hold started; subject: its cause
    COMM_LOSS_END = "comm_loss_end"  # the hold ended, the edge resumed by itself; subject: its cause
    LOOP_LATE = "loop_late"  # the control loop itself ran late (the process was not scheduled)
    UNKNOWN = "unknown"  # read back: a kind this version does not know (the stored kind leads the message)


@dataclass(frozen=True)
class Event:
    """One line of the local event log."""

    at: str  # UTC ISO 8601 with Z
    kind: EventKind
    message: str
    subject: str = ""


@dataclass(frozen=True)
class PersistedSchedule:
    schedule: CabinetSchedule
    accepted_at: datetime
    sequence: int


@dataclass(frozen=True)
class RestoredState:
    """What an edge restores at start."""

    schedules: list[PersistedSchedule]
    latch: list[Trip]


class EdgeDatabase:
    """The SQLite file of one edge. Not thread-safe by itself: callers serialize access."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Opened by the caller, then used by the store worker's thread only.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._db.executescript(_SCHEMA)
        if "subject" not in _columns(self._db, "events"):  # a database of schema 1
            with self._transaction():
                self._db.execute("ALTER TABLE events ADD COLUMN subject TEXT NOT NULL DEFAULT ''")
                self._db.execute("UPDATE events SET kind = 'schedule_refused' WHERE kind = 'refused'")
        self._db.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._events_since_trim = 0

    def close(self) -> None:
        self._db.close()

    # --------------------------------------------------------------------------------- schedules

    def save_schedule(
        self, schedule: CabinetSchedule, accepted_at: datetime, sequence: int, dropped: Sequence[str] = ()
    ) -> None:
        """Store an accepted schedule and delete the ``dropped`` ones in one transaction (the cap of
        :class:`edge.schedule_store.ScheduleStore`, which decides which ones it forgets)."""
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO schedules"
                "(schedule_id, sequence, accepted_at, start, interval_s, setpoints_kw, end_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    schedule.schedule_id,
                    sequence,
                    format_utc(accepted_at),
                    format_utc(schedule.start),
                    schedule.interval_s,
                    json.dumps(list(schedule.setpoints_kw)),
                    format_utc(schedule.end),
                ),
            )
            self._db.executemany("DELETE FROM schedules WHERE schedule_id = ?", [(i,) for i in dropped])

    def delete_schedules(self, schedule_ids: list[str]) -> None:
        with self._transaction():
            self._db.executemany("DELETE FROM schedules WHERE schedule_id = ?", [(i,) for i in schedule_ids])

    def load_schedules(self) -> list[PersistedSchedule]:
        """Every stored schedule in acceptance order; rows that do not parse are skipped."""
        rows = self._db.execute(
            "SELECT schedule_id, sequence, accepted_at, start, interval_s, setpoints_kw"
            " FROM schedules ORDER BY sequence"
        ).fetchall()
        loaded: list[PersistedSchedule] = []
        for schedule_id, sequence, accepted_at, start, interval_s, setpoints in rows:
            try:
                values = tuple(float(v) for v in json.loads(setpoints))
                schedule = CabinetSchedule(str(schedule_id), parse_utc(start), int(interval_s), values)
                loaded.append(PersistedSchedule(schedule, parse_utc(accepted_at), int(sequence)))
            except (ValueError, TypeError):
                continue
        return loaded

    def load_state(self) -> RestoredState:
        """The stored schedules (the keeper cuts them to the cap) and the latched interlocks."""
        return RestoredState(self.load_schedules(), self.load_latch())

    # --------------------------------------------------------------------------------- latch

    def save_latch(self, trips: list[Trip]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO latch(condition, detail, at_s) VALUES (?, ?, ?)",
                [(t.finding.condition.value, t.finding.detail, t.at_s) for t in trips],
            )

    def clear_latch(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM latch")

    def load_latch(self) -> list[Trip]:
        trips: list[Trip] = []
        for condition, detail, at_s in self._db.execute("SELECT condition, detail, at_s FROM latch"):
            try:
                kind = Condition(condition)
            except ValueError:
                kind = Condition.INVALID_DATA  # unknown (newer) condition: stay tripped all the same
            trips.append(Trip(Finding(kind, str(detail)), float(at_s)))
        return trips

    # --------------------------------------------------------------------------------- events

    def log_event(self, at: datetime, kind: EventKind, message: str, subject: str = "") -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO events(at, kind, message, subject) VALUES (?, ?, ?, ?)",
                (format_utc(at), kind.value, message, subject),
            )
            self._events_since_trim += 1
            if self._events_since_trim >= 1000:
                self._events_since_trim = 0
                self._db.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (MAX_EVENTS_KEPT,)
                )

    def events(self, kind: EventKind | None = None, limit: int = 1000) -> list[Event]:
        """The newest ``limit`` events (optionally of one kind), oldest first."""
        return _select_events(self._db, kind, limit)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def read_events(path: Path, kind: EventKind | None = None, limit: int = 1000) -> list[Event]:
    """Read the event log of an edge database, also while the edge runs (WAL allows a reader).

    Never creates or migrates anything: a missing file raises ``FileNotFoundError``; a database of schema 1
    reads with empty subjects. (A plain connection, not ``mode=ro``: a WAL left by a killed edge must be
    recovered on open.)
    """
    if not path.is_file():
        raise FileNotFoundError(f"no edge database at {path}")
    db = sqlite3.connect(path, timeout=5.0)
    try:
        return _select_events(db, kind, limit)
    finally:
        db.close()


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


_SELECT_EVENTS = "SELECT at, kind, message, subject FROM events"
_SELECT_EVENTS_SCHEMA_1 = "SELECT at, kind, message, '' FROM events"


def _select_events(db: sqlite3.Connection, kind: EventKind | None, limit: int) -> list[Event]:
    # The column list is one of two constants (schema 1 files have no subject), never caller data.
    has_subject = "subject" in _columns(db, "events")
    query = _SELECT_EVENTS if has_subject else _SELECT_EVENTS_SCHEMA_1
    if kind is None:
        rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    else:
        rows = db.execute(query + " WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind.value, limit)).fetchall()
    return [_event(str(a), str(k), str(m), str(s)) for a, k, m, s in reversed(rows)]


_SCHEMA_1_KINDS = {"refused": EventKind.SCHEDULE_REFUSED}  # renamed when the schema became 2


def _event(at: str, kind: str, message: str, subject: str) -> Event:
    known = _SCHEMA_1_KINDS.get(kind)
    if known is not None:
        return Event(at, known, message, subject)
    try:
        return Event(at, EventKind(kind), message, subject)
    except ValueError:
        return Event(at, EventKind.UNKNOWN, f"[{kind}] {message}", subject)
