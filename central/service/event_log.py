"""The events history of the central (``GET /api/v1/events``): every event of the hub except live
telemetry, in its SQLite database (table ``events``).

The table belongs to this module (created if missing, next to the service's own tables). The event loop
only appends to a bounded in-memory queue (:meth:`EventRecorder.record`); a writer task stores what has
queued in one transaction per batch in a worker thread, so persistence never runs on the control path
of the event loop. When the database cannot keep up, the oldest unsaved events are dropped and counted.
Records older than ``retention_days`` are deleted at start and at most hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from central.service.events import Event, EventKind
from shared.timeutil import parse_utc

log = logging.getLogger(__name__)

MAX_PENDING = 10_000
PRUNE_EVERY = timedelta(hours=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    cabinet_id TEXT,
    data_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_kind ON events(kind, seq);
CREATE INDEX IF NOT EXISTS events_by_cabinet ON events(cabinet_id, seq);
"""


@dataclass(frozen=True)
class EventRecord:
    """A stored event (``seq`` is the history's own number, not the stream's id)."""

    seq: int
    at: datetime
    kind: EventKind
    cabinet_id: str | None
    data: dict[str, Any]


class EventLog:
    """The events table of one database file. Thread-safe."""

    def __init__(self, path: Path, retention_days: float) -> None:
        self.path = path
        self.retention = timedelta(days=retention_days)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._lock = threading.Lock()
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, events: list[Event]) -> None:
        rows = [
            (
                _ts(e.at),
                e.kind.value,
                e.cabinet_id,
                json.dumps(dict(e.data), separators=(",", ":"), default=str),
            )
            for e in events
        ]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO events (at, kind, cabinet_id, data_json) VALUES (?, ?, ?, ?)", rows
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def records(
        self,
        *,
        limit: int = 100,
        kinds: tuple[EventKind, ...] = (),
        cabinet_id: str | None = None,
        before_seq: int | None = None,
    ) -> list[EventRecord]:
        """The newest ``limit`` records, newest first, optionally of some kinds, of one cabinet, and
        older than ``before_seq`` (paging)."""
        kind_values = json.dumps([k.value for k in kinds])
        params = (len(kinds), kind_values, cabinet_id, cabinet_id, before_seq, before_seq, limit)
        sql = (
            "SELECT seq, at, kind, cabinet_id, data_json FROM events"
            " WHERE (? = 0 OR kind IN (SELECT value FROM json_each(?)))"
            " AND (? IS NULL OR cabinet_id = ?) AND (? IS NULL OR seq < ?)"
            " ORDER BY seq DESC LIMIT ?"
        )
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [_record(row) for row in rows]

    def prune(self, now: datetime) -> int:
        with self._lock:
            cursor = self._conn.execute("DELETE FROM events WHERE at < ?", (_ts(now - self.retention),))
        return int(cursor.rowcount)


class EventRecorder:
    """Queues events on the event loop and writes them in batches in a worker thread."""

    def __init__(self, event_log: EventLog) -> None:
        self.log = event_log
        self._pending: deque[Event] = deque(maxlen=MAX_PENDING)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pruned_at: datetime | None = None
        self.written_total = 0
        self.dropped_total = 0
        self.failures_total = 0

    def record(self, event: Event) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.dropped_total += 1
        self._pending.append(event)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-recorder")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            await self._write_batch()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._write_batch()

    async def _write_batch(self) -> None:
        if not self._pending:
            return
        batch = list(self._pending)
        self._pending.clear()
        try:
            await asyncio.to_thread(self.log.add, batch)
        except Exception:
            self.failures_total += 1
            log.exception("events history: %d events could not be written", len(batch))
            return
        self.written_total += len(batch)
        now = datetime.now(UTC)
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            await asyncio.to_thread(self.log.prune, batch[-1].at)


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(row: Any) -> EventRecord:
    seq, at, kind, cabinet_id, data_json = row
    data = json.loads(data_json)
    return EventRecord(
        seq=int(seq),
        at=parse_utc(str(at)),
        kind=EventKind(kind),
        cabinet_id=None if cabinet_id is None else str(cabinet_id),
        data=data if isinstance(data, dict) else {},
    )
