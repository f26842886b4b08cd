"""Persistence of the central service in one embedded SQLite database.

Holds what the service must still know after a restart: the accepted day-ahead uploads (normalized and
raw), every plan it made (with the upload and the trigger that caused it), the outcome of every push per
edge, and sampled edge telemetry.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a crash mid-write leaves either
the whole upload or plan or nothing. The database runs in WAL mode with ``synchronous=FULL``: a committed
upload or plan survives a power loss, and readers never block the writer.

The planning queue lives here too: an upload is stored ``pending`` (the intent "optimize it" is in the same
transaction as the upload), and leaves that state only through :meth:`Store.claim_newest_pending` (older
pending uploads become ``superseded``), :meth:`Store.add_plan` (``planned`` or ``failed`` in the plan's
transaction) or :meth:`Store.set_planning` (``expired``, ``failed``).
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from central.edge_link.outcome import PushStatus
from central.service.records import (
    Claim,
    PushRecord,
    StoredPlan,
    StoredUpload,
    TelemetrySample,
    UploadPlanning,
    UploadRecord,
)
from central.service.schema import MIGRATE_1_TO_2, SCHEMA, SCHEMA_VERSION
from shared.dayahead import DayAhead, parse_dayahead_json
from shared.errors import InputError
from shared.plan import Plan, PlanStatus
from shared.timeutil import ensure_utc, parse_utc

__all__ = [
    "Claim",
    "PushRecord",
    "Store",
    "StoreError",
    "StoredPlan",
    "StoredUpload",
    "TelemetrySample",
    "UploadPlanning",
    "UploadRecord",
]


class StoreError(RuntimeError):
    """The database cannot be opened or is not one of ours."""


class Store:
    """The service's SQLite database. Thread-safe; every public write is one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), never implicit.
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        self._lock = threading.Lock()
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"{path}: not a usable central database: {exc}") from exc

    def _setup(self) -> None:
        conn = self._conn
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL journal mode (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this program's ({SCHEMA_VERSION})"
            )
        with self._transaction() as tx:
            if version == 1:
                _execute_script(tx, MIGRATE_1_TO_2)
            _execute_script(tx, SCHEMA)
            tx.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    # ------------------------------------------------------------------------------------------ uploads

    def add_upload(
        self, upload_id: str, received_at: datetime, source_format: str, raw: bytes, dayahead: DayAhead
    ) -> StoredUpload:
        """Store an accepted upload (raw body and normalized form) in one transaction."""
        sha256 = hashlib.sha256(raw).hexdigest()
        with self._transaction() as tx:
            tx.execute(
                "INSERT INTO uploads (upload_id, received_at, source_format, start, interval_minutes, steps,"
                " sha256, raw, dayahead_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload_id,
                    _ts(received_at),
                    source_format,
                    _ts(dayahead.start),
                    dayahead.interval_minutes,
                    dayahead.steps,
                    sha256,
                    raw,
                    dayahead.to_json(),
                ),
            )
        return StoredUpload(upload_id, received_at, source_format, sha256, dayahead)

    def latest_upload(self) -> StoredUpload | None:
        rows = self._query(
            "SELECT upload_id, received_at, source_format, sha256, dayahead_json FROM uploads"
            " ORDER BY seq DESC LIMIT 1"
        )
        return _upload(rows[0]) if rows else None

    def upload(self, upload_id: str) -> StoredUpload | None:
        rows = self._query(
            "SELECT upload_id, received_at, source_format, sha256, dayahead_json FROM uploads"
            " WHERE upload_id = ?",
            (upload_id,),
        )
        return _upload(rows[0]) if rows else None

    def upload_raw(self, upload_id: str) -> bytes | None:
        rows = self._query("SELECT raw FROM uploads WHERE upload_id = ?", (upload_id,))
        return bytes(rows[0][0]) if rows else None

    def count_uploads(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM uploads")[0][0])

    # ----------------------------------------------------------------------------------- planning queue

    def claim_newest_pending(self) -> Claim:
        """Take the newest ``pending`` upload to optimize; every older ``pending`` one becomes
        ``superseded`` by it, in the same transaction. The claimed upload stays ``pending`` until its
        plan (or :meth:`set_planning`) says otherwise, so a crash during its run leaves it queued."""
        with self._transaction() as tx:
            rows = tx.execute(
                "SELECT upload_id, seq FROM uploads WHERE planning = ? ORDER BY seq DESC",
                (UploadPlanning.PENDING.value,),
            ).fetchall()
            if not rows:
                return Claim(None, ())
            newest, newest_seq = str(rows[0][0]), int(rows[0][1])
            older = tuple(str(row[0]) for row in rows[1:])
            if older:
                tx.execute(
                    "UPDATE uploads SET planning = ?, superseded_by = ? WHERE planning = ? AND seq < ?",
                    (UploadPlanning.SUPERSEDED.value, newest, UploadPlanning.PENDING.value, newest_seq),
                )
        return Claim(newest, older)

    def set_planning(self, upload_id: str, planning: UploadPlanning) -> None:
        """Record the planning state of an upload (``expired`` or ``failed`` without a plan; ``pending``
        to queue it again). An upload that was ``planned`` stays so."""
        with self._transaction() as tx:
            tx.execute(
                "UPDATE uploads SET planning = ? WHERE upload_id = ? AND planning != ?",
                (planning.value, upload_id, UploadPlanning.PLANNED.value),
            )

    def upload_record(self, upload_id: str) -> UploadRecord | None:
        rows = self._query(
            "SELECT upload_id, received_at, planning, superseded_by FROM uploads WHERE upload_id = ?",
            (upload_id,),
        )
        return _upload_record(rows[0]) if rows else None

    def upload_records(self) -> list[UploadRecord]:
        """Every upload's planning state, oldest first."""
        rows = self._query("SELECT upload_id, received_at, planning, superseded_by FROM uploads ORDER BY seq")
        return [_upload_record(row) for row in rows]

    # -------------------------------------------------------------------------------------------- plans

    def add_plan(self, plan: Plan, upload_id: str, trigger: str, stored_at: datetime) -> StoredPlan:
        """Store a plan (also a failed one, for the record) in one transaction, and in the same one mark
        its upload ``planned`` (a usable plan) or, if it has no usable plan yet, ``failed``."""
        usable = plan.status is not PlanStatus.FAILED
        with self._transaction() as tx:
            tx.execute(
                "INSERT INTO plans (plan_id, upload_id, trigger, stored_at, status, start, steps,"
                " objective_total, plan_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    plan.plan_id,
                    upload_id,
                    trigger,
                    _ts(stored_at),
                    plan.status.value,
                    _ts(plan.start),
                    plan.steps,
                    plan.objective.total,
                    plan.model_dump_json(),
                ),
            )
            if usable:
                tx.execute(
                    "UPDATE uploads SET planning = ? WHERE upload_id = ?",
                    (UploadPlanning.PLANNED.value, upload_id),
                )
            else:
                tx.execute(
                    "UPDATE uploads SET planning = ? WHERE upload_id = ? AND planning != ?",
                    (UploadPlanning.FAILED.value, upload_id, UploadPlanning.PLANNED.value),
                )
        return StoredPlan(plan, upload_id, trigger, stored_at)

    def latest_plan(self) -> StoredPlan | None:
        """The newest plan that is not ``failed`` (the one the edges should be running)."""
        rows = self._query(
            "SELECT plan_json, upload_id, trigger, stored_at FROM plans WHERE status != ?"
            " ORDER BY seq DESC LIMIT 1",
            (PlanStatus.FAILED.value,),
        )
        return _plan(rows[0]) if rows else None

    def first_plan_for(self, upload_id: str) -> StoredPlan | None:
        """The first usable plan of an upload (its day-ahead plan, before any re-plan)."""
        rows = self._query(
            "SELECT plan_json, upload_id, trigger, stored_at FROM plans WHERE upload_id = ? AND status != ?"
            " ORDER BY seq ASC LIMIT 1",
            (upload_id, PlanStatus.FAILED.value),
        )
        return _plan(rows[0]) if rows else None

    def plan_times_for(self, upload_id: str) -> list[tuple[str, str, datetime, datetime]]:
        """Every plan of an upload, oldest first: plan id, trigger, stored at, plan start."""
        rows = self._query(
            "SELECT plan_id, trigger, stored_at, start FROM plans WHERE upload_id = ? ORDER BY seq ASC",
            (upload_id,),
        )
        return [(str(r[0]), str(r[1]), parse_utc(str(r[2])), parse_utc(str(r[3]))) for r in rows]

    def has_usable_plan_for(self, upload_id: str) -> bool:
        rows = self._query(
            "SELECT 1 FROM plans WHERE upload_id = ? AND status != ? LIMIT 1",
            (upload_id, PlanStatus.FAILED.value),
        )
        return bool(rows)

    def count_plans(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM plans")[0][0])

    # ------------------------------------------------------------------------------------- push outcomes

    def add_push_outcomes(self, records: Iterable[PushRecord]) -> None:
        """Store the outcomes of one push round in one transaction."""
        rows = [
            (r.plan_id, r.cabinet_id, r.status.value, r.message, _ts(r.at), float(r.duration_ms))
            for r in records
        ]
        with self._transaction() as tx:
            tx.executemany(
                "INSERT INTO push_outcomes (plan_id, cabinet_id, status, message, at, duration_ms)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    def latest_push_outcomes(self) -> dict[str, PushRecord]:
        """The newest push outcome of every cabinet that was ever pushed to."""
        rows = self._query(
            "SELECT plan_id, cabinet_id, status, message, at, duration_ms FROM push_outcomes"
            " WHERE seq IN (SELECT MAX(seq) FROM push_outcomes GROUP BY cabinet_id)"
        )
        records = [_push(row) for row in rows]
        return {r.cabinet_id: r for r in records}

    def push_outcomes_for(self, plan_id: str) -> list[PushRecord]:
        rows = self._query(
            "SELECT plan_id, cabinet_id, status, message, at, duration_ms FROM push_outcomes"
            " WHERE plan_id = ? ORDER BY seq",
            (plan_id,),
        )
        return [_push(row) for row in rows]

    # ----------------------------------------------------------------------------------------- telemetry

    def add_telemetry_samples(self, samples: Iterable[TelemetrySample]) -> int:
        rows = [
            (
                _ts(s.at),
                s.cabinet_id,
                s.soc_pct,
                s.active_power_kw,
                s.setpoint_kw,
                s.mode,
                s.schedule_id,
                int(s.interlock_active),
                s.interlock_reason,
            )
            for s in samples
        ]
        if not rows:
            return 0
        with self._transaction() as tx:
            tx.executemany(
                "INSERT INTO telemetry_samples (at, cabinet_id, soc_pct, active_power_kw, setpoint_kw, mode,"
                " schedule_id, interlock_active, interlock_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        return len(rows)

    def telemetry_samples(self, cabinet_id: str, limit: int = 1000) -> list[TelemetrySample]:
        """The newest ``limit`` samples of a cabinet, oldest first."""
        rows = self._query(
            "SELECT at, cabinet_id, soc_pct, active_power_kw, setpoint_kw, mode, schedule_id,"
            " interlock_active, interlock_reason FROM telemetry_samples WHERE cabinet_id = ?"
            " ORDER BY seq DESC LIMIT ?",
            (cabinet_id, limit),
        )
        return [_sample(row) for row in reversed(rows)]

    def prune_telemetry(self, before: datetime) -> int:
        """Delete samples older than ``before``; return how many."""
        with self._transaction() as tx:
            cursor = tx.execute("DELETE FROM telemetry_samples WHERE at < ?", (_ts(before),))
            return int(cursor.rowcount)

    def integrity_problems(self) -> list[str]:
        """``PRAGMA integrity_check`` findings (empty when the file is sound)."""
        rows = self._query("PRAGMA integrity_check")
        findings = [str(row[0]) for row in rows]
        return [] if findings == ["ok"] else findings


def _execute_script(tx: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the open transaction (``executescript`` would commit)."""
    for statement in script.split(";"):
        if statement.strip():
            tx.execute(statement)


def _ts(value: datetime) -> str:
    """A stored timestamp: UTC, always with microseconds and 'Z', so text order is time order."""
    return ensure_utc(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Rows are decoded here and nowhere else.


def _upload(row: Any) -> StoredUpload:
    upload_id, received_at, source_format, sha256, dayahead_json = row
    try:
        dayahead = parse_dayahead_json(str(dayahead_json), f"stored upload {upload_id}")
    except InputError as exc:
        raise StoreError(f"stored upload {upload_id} cannot be read back: {exc}") from exc
    return StoredUpload(
        str(upload_id), parse_utc(str(received_at)), str(source_format), str(sha256), dayahead
    )


def _plan(row: Any) -> StoredPlan:
    plan_json, upload_id, trigger, stored_at = row
    return StoredPlan(Plan.from_json(str(plan_json)), str(upload_id), str(trigger), parse_utc(str(stored_at)))


def _push(row: Any) -> PushRecord:
    plan_id, cabinet_id, status, message, at, duration_ms = row
    return PushRecord(
        str(plan_id),
        str(cabinet_id),
        PushStatus(str(status)),
        str(message),
        parse_utc(str(at)),
        float(duration_ms),
    )


def _upload_record(row: Any) -> UploadRecord:
    upload_id, received_at, planning, superseded_by = row
    return UploadRecord(
        str(upload_id),
        parse_utc(str(received_at)),
        UploadPlanning(str(planning)),
        None if superseded_by is None else str(superseded_by),
    )


def _sample(row: Any) -> TelemetrySample:
    at, cabinet_id, soc, power, setpoint, mode, schedule_id, interlock, reason = row
    return TelemetrySample(
        at=parse_utc(str(at)),
        cabinet_id=str(cabinet_id),
        soc_pct=float(soc),
        active_power_kw=float(power),
        setpoint_kw=float(setpoint),
        mode=str(mode),
        schedule_id=str(schedule_id),
        interlock_active=bool(interlock),
        interlock_reason=str(reason),
    )
