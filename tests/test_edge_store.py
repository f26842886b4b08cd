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
from edge.schedule_store import MAX_KEPT_SCHEDULES, ScheduleStore
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


def test_the_schedules_table_stores_and_drops_in_one_transaction(tmp_path: Path) -> None:
    db = EdgeDatabase(tmp_path / "cab-1.sqlite3")
    for k in range(5):
        db.save_schedule(_schedule(f"s{k}", T0), T0, k + 1)
    db.save_schedule(_schedule("s5", T0), T0, 6, dropped=["s1", "s3"])
    db.close()
    assert _rows(tmp_path / "cab-1.sqlite3") == ["s0", "s2", "s4", "s5"]


# ------------------------------------------------------------------------------------------ the cap


def _decision(stored: list[tuple[int, CabinetSchedule]], at: datetime) -> str | None:
    """The schedule that decides at ``at`` among ``stored`` (acceptance order), without any cap."""
    for _, schedule in reversed(stored):
        if schedule.index_at(at) is not None:
            return schedule.schedule_id
    return None


def test_a_plan_for_tomorrow_does_not_push_the_running_schedule_out() -> None:
    # Found by the fault campaign: with the cap forgetting by age only, re-optimized plans for tomorrow
    # (each newer than today's running schedule) made the edge forget today's and run its fallback.
    now = T0 + timedelta(hours=13)
    store = ScheduleStore(100.0, 100.0)
    store.add(CabinetSchedule("today", T0, 900, (10.0,) * 96), T0)
    tomorrow = T0 + timedelta(days=1)
    for k in range(2 * MAX_KEPT_SCHEDULES):
        plan = CabinetSchedule(f"tomorrow-{k}", tomorrow, 900, (float(k % 7),) * 96)
        dropped = store.dropped_by(plan, store.next_sequence, now)
        assert store.add(plan, now) == dropped
        assert "today" not in dropped
        active = store.active(now)
        assert active is not None and active.schedule_id == "today"
    kept = [s.schedule.schedule_id for s in store.stored]
    assert len(kept) == MAX_KEPT_SCHEDULES
    # Of tomorrow's plans only the newest decides; the older ones went first.
    assert kept[0] == "today" and kept[-1] == f"tomorrow-{2 * MAX_KEPT_SCHEDULES - 1}"


_spans = st.lists(
    st.tuples(st.integers(-40, 200), st.integers(1, 40)),  # start [min from now], length [min]
    min_size=1,
    max_size=2 * MAX_KEPT_SCHEDULES + 8,
)


@settings(max_examples=60, deadline=None)
@given(_spans)
def test_property_the_cap_never_changes_what_runs_now(spans: list[tuple[int, int]]) -> None:
    now = T0 + timedelta(hours=1)
    store = ScheduleStore(100.0, 100.0)
    uncapped: list[tuple[int, CabinetSchedule]] = []
    for k, (start_min, length_min) in enumerate(spans):
        schedule = CabinetSchedule(f"s{k}", now + timedelta(minutes=start_min), 60, (1.0,) * length_min)
        store.add(schedule, now)
        uncapped.append((k, schedule))
        assert len(store.stored) <= MAX_KEPT_SCHEDULES
        active = store.active(now)
        assert (active.schedule_id if active is not None else None) == _decision(uncapped, now)
    # While no more schedules still decide something than the cap keeps, every moment runs as uncapped.
    moments = [now + timedelta(minutes=m) for m in range(0, 241)]
    deciding = {_decision(uncapped, t) for t in moments} - {None}
    if len(deciding) <= MAX_KEPT_SCHEDULES:
        for t in moments:
            active = store.active(t)
            assert (active.schedule_id if active is not None else None) == _decision(uncapped, t), t


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


async def test_the_edge_caps_its_schedules_table_and_restores_the_same_ones(tmp_path: Path) -> None:
    _, site = write_site(tmp_path, 1)  # no devices listen: the edge stays "starting", which is fine here
    state_dir = tmp_path / "state"
    database = state_dir / "cab-1.sqlite3"
    # A database left by a version that capped only in memory: 79 rows, one minute each, back to back.
    now = datetime.now(UTC).replace(microsecond=0)
    db = EdgeDatabase(database)
    for k in range(79):
        db.save_schedule(_schedule(f"old{k}", now + timedelta(minutes=k)), now, k + 1)
    db.close()
    assert len(_rows(database)) == 79
    clock = RealClock()
    async with EdgeController(site, "cab-1", clock, state_dir=state_dir) as edge:
        edge.store.call(lambda db: None, "sync")  # the restore's deletions are queued before this
        assert len(_rows(database)) == MAX_KEPT_SCHEDULES
        assert edge.schedules.kept_ids() == _rows(database)
        assert "old0" in _rows(database)  # the one running now is kept
        for k in range(40):
            decision = edge.submit_schedule(_schedule(f"new{k}", now + timedelta(minutes=k), (2.0, 3.0)))
            assert decision.accepted, decision.message
            # Durable when accepted: the row is there as soon as the call returns.
            assert f"new{k}" in _rows(database)
            assert edge.schedules.kept_ids() == _rows(database)
        kept = _rows(database)
        assert len(kept) == MAX_KEPT_SCHEDULES
        active = edge.schedules.active(clock.now())
        assert active is not None and active.schedule_id.startswith("new")
    async with EdgeController(site, "cab-1", clock, state_dir=state_dir) as again:
        assert again.schedules.kept_ids() == kept


async def test_a_restarted_edge_still_runs_todays_schedule_after_plans_for_tomorrow(tmp_path: Path) -> None:
    _, site = write_site(tmp_path, 1)
    state_dir = tmp_path / "state"
    clock = RealClock()
    now = clock.now().replace(microsecond=0)
    today = CabinetSchedule("today", now - timedelta(hours=1), 900, (5.0,) * 16)
    async with EdgeController(site, "cab-1", clock, state_dir=state_dir) as edge:
        assert edge.submit_schedule(today).accepted
        for k in range(MAX_KEPT_SCHEDULES + 8):
            plan = CabinetSchedule(f"tomorrow-{k}", now + timedelta(days=1), 900, (float(k % 5),) * 96)
            decision = edge.submit_schedule(plan)
            assert decision.accepted, decision.message
        active = edge.schedules.active(clock.now())
        assert active is not None and active.schedule_id == "today"
        assert "today" in _rows(state_dir / "cab-1.sqlite3")
    async with EdgeController(site, "cab-1", clock, state_dir=state_dir) as again:
        active = again.schedules.active(clock.now())
        assert active is not None and active.schedule_id == "today"
