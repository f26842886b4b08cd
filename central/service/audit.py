"""The audit trail of the central: every write on the HTTP API and every token change, in its SQLite
database (table ``audit_log``).

A record says when (wall-clock UTC: the audit trail is about the real world, whatever the EMS clock
says), who (the token's name and role), from where (the client address), what (the action), how it ended
(the outcome and HTTP status) and a short factual detail (an upload id, a plan id, a token name). It never
holds a secret: no token, no password, no request body.

The table belongs to this module (created if missing, next to the service's own tables); writes run in a
worker thread, never on the event loop. Records older than ``[central] audit_retention_days`` are deleted
(at start and at most hourly while records are written).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.timeutil import parse_utc

log = logging.getLogger(__name__)

MAX_DETAIL_CHARS = 500
PRUNE_EVERY = timedelta(hours=1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    token_name TEXT NOT NULL,
    role TEXT NOT NULL,
    client_address TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_log(at);
"""


class AuditAction(StrEnum):
    UPLOAD = "upload"
    OPTIMIZE = "optimize"
    RESET_INTERLOCK = "reset-interlock"
    TOKEN_ADD = "token-add"  # nosec B105  # an action name, not a secret
    TOKEN_REVOKE = "token-revoke"  # nosec B105  # an action name, not a secret


class AuditOutcome(StrEnum):
    SUCCESS = "success"  # done (2xx)
    REFUSED = "refused"  # bad input or nothing to do (4xx other than the ones below)
    DENIED = "denied"  # authentication or authorization refused (401, 403, 429)
    FAILED = "failed"  # the service could not do it (5xx)

    @classmethod
    def of_status(cls, status_code: int) -> AuditOutcome:
        if status_code < 400:
            return cls.SUCCESS
        if status_code in (401, 403, 429):
            return cls.DENIED
        return cls.REFUSED if status_code < 500 else cls.FAILED


@dataclass(frozen=True)
class AuditEntry:
    """One record to write."""

    token_name: str  # "" when the request carried no valid token
    role: str  # "" likewise
    client_address: str
    action: AuditAction
    outcome: AuditOutcome
    status_code: int
    detail: str


@dataclass(frozen=True)
class AuditRecord:
    """A stored record."""

    seq: int
    at: datetime
    token_name: str
    role: str
    client_address: str
    action: AuditAction
    outcome: AuditOutcome
    status_code: int
    detail: str


class AuditLog:
    """The audit table of one database file. Thread-safe; every write is one transaction."""

    def __init__(
        self,
        path: Path,
        retention_days: float,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.path = path
        self.retention = timedelta(days=retention_days)
        self._now = wall_clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        self._lock = threading.Lock()
        self._pruned_at: datetime | None = None
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
            self.prune()
        except sqlite3.Error:
            self._conn.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add(self, entry: AuditEntry) -> AuditRecord:
        """Store ``entry`` now; delete expired records when the last pruning is an hour old."""
        at = self._now()
        row = (
            _ts(at),
            entry.token_name,
            entry.role,
            entry.client_address,
            entry.action.value,
            entry.outcome.value,
            entry.status_code,
            entry.detail[:MAX_DETAIL_CHARS],
        )
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO audit_log (at, token_name, role, client_address, action, outcome, status_code,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            seq = int(cursor.lastrowid or 0)
        if self._pruned_at is None or at - self._pruned_at >= PRUNE_EVERY:
            self.prune()
        return _record((seq, *row))

    def records(
        self, *, limit: int = 100, since: datetime | None = None, action: AuditAction | None = None
    ) -> list[AuditRecord]:
        """The newest ``limit`` records (newest first), optionally since a time and of one action."""
        since_text = None if since is None else _ts(since)
        action_text = None if action is None else action.value
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, at, token_name, role, client_address, action, outcome, status_code, detail"
                " FROM audit_log WHERE (? IS NULL OR at >= ?) AND (? IS NULL OR action = ?)"
                " ORDER BY seq DESC LIMIT ?",
                (since_text, since_text, action_text, action_text, limit),
            ).fetchall()
        return [_record(row) for row in rows]

    def prune(self) -> int:
        """Delete records older than the retention; return how many."""
        now = self._now()
        with self._lock:
            cursor = self._conn.execute("DELETE FROM audit_log WHERE at < ?", (_ts(now - self.retention),))
        self._pruned_at = now
        return int(cursor.rowcount)


class AuditTrail:
    """Writes audit records from the event loop in a worker thread; a failed write is logged and counted
    (the request it records has already been answered)."""

    def __init__(self, audit_log: AuditLog) -> None:
        self.log = audit_log
        self.written_total = 0
        self.failures_total = 0

    async def record(self, entry: AuditEntry) -> None:
        try:
            await asyncio.to_thread(self.log.add, entry)
        except Exception:
            self.failures_total += 1
            log.exception("audit record of %s by %r could not be written", entry.action, entry.token_name)
        else:
            self.written_total += 1


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(row: Any) -> AuditRecord:
    seq, at, token_name, role, client, action, outcome, status_code, detail = row
    return AuditRecord(
        seq=int(seq),
        at=parse_utc(str(at)),
        token_name=str(token_name),
        role=str(role),
        client_address=str(client),
        action=AuditAction(action),
        outcome=AuditOutcome(outcome),
        status_code=int(status_code),
        detail=str(detail),
    )
