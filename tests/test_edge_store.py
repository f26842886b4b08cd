"""The edge's local database: event kinds, the schema upgrade, the schedules cap, the writer thread."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.controller import EdgeController
from edge.persistence import EdgeDatabase, EventKind, read_events
from edge.schedule_store import MAX_KEPT_SCHEDULES
from edge.store_worker import StoreWorker
from shared.clock import RealClock
from shared.schedule import CabinetSchedule
from tests.support import write_site

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def _schedule(sid: str, start: datetime, values: tuple[float, ...] = (1.0,)) -> CabinetSchedule:
    return CabinetSchedule(sid, start, 60, values)


def _rows(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in db.execute("SELECT schedule_id FROM schedules ORDER BY sequence")]
    finally:
        db.close()


# ------------------------------------------------------------------------------------------ the database


def test_the_schedules_table_keeps_the_same_cap_as_memory(tmp_path: Path) -> None:
    db = EdgeDatabase(tmp_path / "cab-1.sqlite3")
    dropped: list[str] = []
    for k in range(79):
        dropped += db.save_schedule(_schedule(f"s{k}", T0), T0, k + 1)
    db.close()
    assert _rows(tmp_path / "cab-1.sqlite3") == [f"s{k}" for k in range(79 - MAX_KEPT_SCHEDULES, 79)]
    assert dropped == [f"s{k}" for k in range(79 - MAX_KEPT_SCHEDULES)]


def test_a_schema_1_database_is_upgraded_and_read_as_before(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, kind TEXT NOT NULL,"
        " message TEXT NOT NULL)"
    )
    old.executemany(
        "INSERT INTO events(at, kind, message) VALUES (?, ?, ?)",
        [
            ("2026-11-24T00:00:00Z", "refused", "schedule x refused"),
            ("2026-11-24T00:00:01Z", "trip", "alarm: Evt1 X"),
            ("2026-11-24T00:00:02Z", "gremlin", "from the future"),
        ],
    )
    old.commit()
    old.close()
    before = read_events(path)  # the reader never changes the file
    assert [(e.kind, e.subject) for e in before] == [
        (EventKind.SCHEDULE_REFUSED, ""),
        (EventKind.TRIP, ""),
        (EventKind.UNKNOWN, ""),
    ]
    assert before[2].message == "[gremlin] from the future"
    EdgeDatabase(path).close()  # what an edge does at start
    after = read_events(path)
    assert [e.kind for e in after] == [EventKind.SCHEDULE_REFUSED, EventKind.TRIP, EventKind.UNKNOWN]
    assert read_events(path, EventKind.SCHEDULE_REFUSED)[0].message == "schedule x refused"


def test_read_events_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "missing.sqlite3")
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(list(EventKind)), st.text(max_size=40), st.text(max_size=20))
def test_property_every_kind_round_trips_as_stored(kind: EventKind, message: str, subject: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "e.sqlite3"
        db = EdgeDatabase(path)
        db.log_event(T0, kind, message, subject)
        db.close()
        [event] = read_events(path)
        assert (event.kind, event.message, event.subject) == (kind, message, subject)
        assert event.kind.value == kind.value  # stored as its readable value
        raw = sqlite3.connect(path)
        assert raw.execute("SELECT kind FROM events").fetchone()[0] == kind.value
        raw.close()


# ------------------------------------------------------------------------------------------ the writer


def test_the_worker_writes_in_order_off_the_callers_thread(tmp_path: Path) -> None:
    worker = StoreWorker(tmp_path / "w.sqlite3", "w")
    worker.start()
    threads: set[str] = set()

    def log(k: int) -> None:
        def job(db: EdgeDatabase) -> None:
            threads.add(threading.current_thread().name)
            db.log_event(T0 + timedelta(seconds=k), EventKind.MODE, f"m{k}", str(k))

        worker.post(job, "event")

    for k in range(200):
        log(k)
    # A call runs after everything posted before it.
    count = worker.call(lambda db: len(db.events(limit=10_000)), "count")
    assert count == 200
    with pytest.raises(sqlite3.OperationalError):
        worker.call(lambda db: db._db.execute("SELECT * FROM no_such_table"), "bad")
    worker.post(lambda db: db._db.execute("SELECT * FROM no_such_table"), "bad post")  # logged, not fatal
    worker.post(lambda db: db.log_event(T0, EventKind.STOP, "last"), "event")
    worker.close()
    assert threads == {"edge-store-w"}
    events = read_events(tmp_path / "w.sqlite3", limit=10_000)
    assert [e.subject for e in events[:-1]] == [str(k) for k in range(200)]
    assert events[-1].kind is EventKind.STOP
    with pytest.raises(RuntimeError, match="not running"):
        worker.call(lambda db: None, "after close")


# ------------------------------------------------------------------------------------------ the edge


async def test_the_edge_prunes_its_schedules_table_and_restores_the_same_ones(tmp_path: Path) -> None:
    _, site = write_site(tmp_path, 1)  # no devices listen: the edge stays "starting", which is fine here
    state_dir = tmp_path / "state"
    database = state_dir / "cab-1.sqlite3"
    # A database left by a version that capped only in memory: 79 rows.
    now = datetime.now(UTC).replace(microsecond=0)
    db = EdgeDatabase(database)
    for k in range(79):
        db.save_schedule(_schedule(f"old{k}", now + timedelta(minutes=k)), now, k + 1, keep=1000)
    db.close()
    assert len(_rows(database)) == 79
    clock = RealClock()
    async with EdgeController(site, "cab-1", clock, state_dir=state_dir) as edge:
        assert _rows(database) == [f"old{k}" for k in range(79 - MAX_KEPT_SCHEDULES, 79)]
        assert edge.schedules.kept_ids() == _rows(database)
        for k in range(40):
            decision = edge.submit_schedule(_schedule(f"new{k}", now + timedelta(minutes=k), (2.0, 3.0)))
            assert decision.accepted, decision.message
            # Durable when accepted: the row is there as soon as the call returns.
            assert f"new{k}" in _rows(database)
        kept = _rows(database)
        assert kept == [f"new{k}" for k in range(40 - MAX_KEPT_SCHEDULES, 40)]
        assert edge.schedules.kept_ids() == kept
    async with EdgeController(site, "cab-1", clock, state_dir=state_dir) as again:
        assert again.schedules.kept_ids() == kept
