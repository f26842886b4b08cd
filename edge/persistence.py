"""Local persistence of one edge in SQLite: accepted schedules, the latched interlock, the event log.

One file per cabinet (``STATE_DIR/CABINET_ID.sqlite3``) in WAL mode. Every change is one committed
transaction, so a ``kill -9`` at any moment leaves either the old or the new state, never a torn one.
``synchronous=NORMAL``: a commit does not wait for the disk (it would stall the control loop for an fsync);
that is durable against the edge process dying, and on an OS crash or power loss the last commits may be
lost (never corrupted) — the edge then starts in its fallback mode until the central re-pushes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.interlocks import Condition, Finding, Trip
from shared.schedule import CabinetSchedule
from shared.timeutil import format_utc, parse_utc

SCHEMA_VERSION = 1

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
    message TEXT NOT NULL
);
"""

MAX_EVENTS_KEPT = 100_000


@dataclass(frozen=True)
class Event:
    """One line of the local event log."""

    at: str  # UTC ISO 8601 with Z
    kind: str  # "mode", "trip", "reset", "schedule", "refused", "comm", "start", "stop"
    message: str


@dataclass(frozen=True)
class PersistedSchedule:
    schedule: CabinetSchedule
    accepted_at: datetime
    sequence: int


class EdgeDatabase:
    """The SQLite file of one edge. Not thread-safe by itself: callers serialize access."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Used from the edge's loop thread and from callers of its API, always under the controller's lock.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=2000")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        self._events_since_trim = 0

    def close(self) -> None:
        self._db.close()

    # --------------------------------------------------------------------------------- schedules

    def save_schedule(self, schedule: CabinetSchedule, accepted_at: datetime, sequence: int) -> None:
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

    def log_event(self, at: datetime, kind: str, message: str) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO events(at, kind, message) VALUES (?, ?, ?)", (format_utc(at), kind, message)
            )
            self._events_since_trim += 1
            if self._events_since_trim >= 1000:
                self._events_since_trim = 0
                self._db.execute(
                    "DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?", (MAX_EVENTS_KEPT,)
                )

    def events(self, kind: str | None = None, limit: int = 1000) -> list[Event]:
        """The newest ``limit`` events (optionally of one kind), oldest first."""
        if kind is None:
            rows = self._db.execute(
                "SELECT at, kind, message FROM events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT at, kind, message FROM events WHERE kind = ? ORDER BY id DESC LIMIT ?", (kind, limit)
            ).fetchall()
        return [Event(str(a), str(k), str(m)) for a, k, m in reversed(rows)]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def read_events(path: Path, kind: str | None = None, limit: int = 1000) -> list[Event]:
    """Read the event log of an edge database (also while the edge runs: WAL allows a reader)."""
    db = EdgeDatabase(path)
    try:
        return db.events(kind, limit)
    finally:
        db.close()
