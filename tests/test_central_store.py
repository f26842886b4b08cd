"""The central service's SQLite store: round trips, restore, atomicity under a real crash (SIGKILL)."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from central.edge_link.outcome import PushStatus
from central.service.state import ServiceState
from central.service.store import PushRecord, Store, StoreError, TelemetrySample
from shared.dayahead import DayAhead, parse_dayahead, write_dayahead_csv
from shared.plan import CabinetPlan, ObjectiveBreakdown, Plan, PlanStatus, SolverInfo

START = datetime(2026, 11, 24, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def make_dayahead(steps: int = 4, soc: dict[str, float] | None = None) -> DayAhead:
    return DayAhead(
        start=START,
        interval_minutes=15,
        import_price_per_kwh=tuple(0.1 + 0.01 * i for i in range(steps)),
        export_price_per_kwh=tuple(0.05 for _ in range(steps)),
        load_kw=tuple(100.0 + i for i in range(steps)),
        pv_kw=tuple(0.0 for _ in range(steps)),
        grid_commitment_kw=None,
        initial_soc_pct=soc or {},
    )


def make_plan(plan_id: str, status: PlanStatus = PlanStatus.OPTIMAL, steps: int = 4) -> Plan:
    return Plan(
        plan_id=plan_id,
        created_at=START,
        start=START,
        interval_minutes=15,
        status=status,
        objective=ObjectiveBreakdown(total=12.5, energy_cost=12.5),
        grid_kw=[50.0] * steps,
        pv_used_kw=[0.0] * steps,
        cabinets={"cab-1": CabinetPlan(setpoint_kw=[10.0, -20.0, 0.0, 5.0][:steps], soc_pct=[50.0] * steps)},
        violations=[],
        solver=SolverInfo(backend="highspy", build_s=0.01, solve_s=0.02),
    )


def test_upload_plan_and_push_round_trip_and_restore(tmp_path: Path) -> None:
    path = tmp_path / "db" / "central.sqlite3"
    dayahead = make_dayahead(soc={"cab-1": 55.0})
    with Store(path) as store:
        assert store.latest_upload() is None and store.latest_plan() is None
        store.add_upload("u1", START, "json", b'{"raw": 1}', dayahead)
        store.add_plan(make_plan("p1"), "u1", "upload", START)
        store.add_plan(make_plan("p2", PlanStatus.FAILED), "u1", "schedule", START + timedelta(minutes=15))
        store.add_push_outcomes(
            [
                PushRecord("p1", "cab-1", PushStatus.UNREACHABLE, "timeout", START, 2000.0),
                PushRecord("p1", "cab-2", PushStatus.ACCEPTED, "", START, 12.5),
            ]
        )
        store.add_push_outcomes(
            [PushRecord("p1", "cab-1", PushStatus.ACCEPTED, "", START + timedelta(seconds=10), 9.0)]
        )
    # A new process opening the same file sees everything (restart).
    with Store(path) as store:
        state = ServiceState()
        state.restore(store)
        assert state.upload is not None and state.upload.upload_id == "u1"
        assert state.upload.dayahead == dayahead
        assert state.upload.sha256 == hashlib.sha256(b'{"raw": 1}').hexdigest()
        assert store.upload_raw("u1") == b'{"raw": 1}'
        # The failed plan is on record but is not the active one.
        assert store.count_plans() == 2
        assert (
            state.plan is not None and state.plan.plan == make_plan("p1") and state.plan.trigger == "upload"
        )
        pushes = state.push_outcomes()
        assert {cab: r.status for cab, r in pushes.items()} == {"cab-1": "accepted", "cab-2": "accepted"}
        assert pushes["cab-1"].duration_ms == 9.0
        assert [r.status for r in store.push_outcomes_for("p1")] == ["unreachable", "accepted", "accepted"]
        assert store.has_usable_plan_for("u1")
        journal = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert journal == "wal"
        assert store.integrity_problems() == []


def test_failed_plan_alone_is_not_usable(tmp_path: Path) -> None:
    with Store(tmp_path / "c.sqlite3") as store:
        store.add_upload("u1", START, "csv", b"x", make_dayahead())
        store.add_plan(make_plan("p1", PlanStatus.FAILED), "u1", "upload", START)
        assert store.latest_plan() is None
        assert not store.has_usable_plan_for("u1")


def test_plan_for_unknown_upload_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    with Store(tmp_path / "c.sqlite3") as store:
        with pytest.raises(sqlite3.IntegrityError):
            store.add_plan(make_plan("p1"), "no-such-upload", "upload", START)
        assert store.count_plans() == 0
        store.add_upload("u1", START, "json", b"x", make_dayahead())
        with pytest.raises(sqlite3.IntegrityError):  # same id twice: the second is refused whole
            store.add_upload("u1", START, "json", b"y", make_dayahead(8))
        assert store.count_uploads() == 1
        assert store.upload_raw("u1") == b"x"


def test_telemetry_samples_and_prune(tmp_path: Path) -> None:
    with Store(tmp_path / "c.sqlite3") as store:
        samples = [
            TelemetrySample(
                START + timedelta(seconds=s),
                "cab-1",
                50.0 + s,
                -10.0,
                -10.0,
                "schedule",
                "p/cab-1",
                False,
                "",
            )
            for s in (0, 0.5, 1, 2)
        ]
        assert store.add_telemetry_samples(samples) == 4
        assert store.add_telemetry_samples([]) == 0
        assert store.telemetry_samples("cab-1") == samples
        # Sub-second timestamps sort correctly against whole seconds.
        assert store.prune_telemetry(START + timedelta(seconds=1)) == 2
        assert [s.soc_pct for s in store.telemetry_samples("cab-1")] == [51.0, 52.0]


def test_newer_schema_and_garbage_file_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(newer)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"garbage\.sqlite3"):
        Store(garbage)


series = st.lists(st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    load=series,
    interval=st.sampled_from([1, 5, 15, 60]),
    soc=st.dictionaries(st.sampled_from(["cab-1", "cab-2"]), st.floats(0, 100)),
    commitment=st.booleans(),
)
def test_any_valid_upload_round_trips(
    tmp_path: Path, load: list[float], interval: int, soc: dict[str, float], commitment: bool
) -> None:
    n = len(load)
    dayahead = DayAhead(
        start=START,
        interval_minutes=interval,
        import_price_per_kwh=tuple(-0.1 + 0.013 * i for i in range(n)),
        export_price_per_kwh=tuple(0.0 for _ in range(n)),
        load_kw=tuple(load),
        pv_kw=tuple(reversed(load)),
        grid_commitment_kw=tuple(load) if commitment else None,
        initial_soc_pct=soc,
    )
    path = tmp_path / f"rt-{time.perf_counter_ns()}.sqlite3"
    with Store(path) as store:
        store.add_upload("u", START, "json", dayahead.to_json().encode(), dayahead)
    with Store(path) as store:
        restored = store.latest_upload()
    assert restored is not None and restored.dayahead == dayahead


def test_csv_upload_round_trips(tmp_path: Path) -> None:
    raw = (EXAMPLES / "day-ahead.csv").read_bytes()
    dayahead = parse_dayahead(raw, "csv")
    with Store(tmp_path / "c.sqlite3") as store:
        store.add_upload("u-csv", START, "csv", raw, dayahead)
        restored = store.latest_upload()
    assert restored is not None and restored.source_format == "csv"
    assert write_dayahead_csv(restored.dayahead) == write_dayahead_csv(dayahead)


_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from pathlib import Path
    from central.service.store import Store
    from shared.dayahead import parse_dayahead
    sys.path.insert(0, sys.argv[2])
    from test_central_store import make_plan

    raw = (Path(sys.argv[3])).read_bytes()
    dayahead = parse_dayahead(raw, "json")
    big = raw + b" " * 2_000_000  # a large body makes a transaction take long enough to be killed in
    store = Store(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        store.add_upload(f"u{n}-{id(store)}-{sys.argv[4]}", datetime.now(UTC), "json", big, dayahead)
        upload_id = f"u{n}-{id(store)}-{sys.argv[4]}"
        store.add_plan(make_plan(f"p{n}-{sys.argv[4]}"), upload_id, "upload", datetime.now(UTC))
        if n == 1:
            print("ready", flush=True)
    """
)


def test_sigkill_mid_write_never_leaves_a_half_stored_upload(tmp_path: Path) -> None:
    """Kill a writer process at arbitrary moments; every stored upload and plan is whole afterwards."""
    path = tmp_path / "crash.sqlite3"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER, encoding="utf-8")
    tests_dir = Path(__file__).resolve().parent
    for attempt, delay_s in enumerate((0.05, 0.17, 0.31)):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(path),
                str(tests_dir),
                str(EXAMPLES / "day-ahead.json"),
                str(attempt),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(delay_s)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        with Store(path) as store:
            assert store.integrity_problems() == []
            conn = sqlite3.connect(path)
            rows = conn.execute("SELECT upload_id, sha256, raw, steps FROM uploads").fetchall()
            plans = conn.execute("SELECT plan_id, upload_id, plan_json FROM plans").fetchall()
            conn.close()
            assert rows, "the first upload was committed before 'ready'"
            for upload_id, sha256, raw, steps in rows:
                assert hashlib.sha256(raw).hexdigest() == sha256, upload_id
                assert store.upload(upload_id) is not None
                assert store.upload(upload_id).dayahead.steps == steps  # type: ignore[union-attr]
            known = {row[0] for row in rows}
            for _, upload_id, plan_json in plans:
                assert upload_id in known
                Plan.from_json(plan_json)
            latest = store.latest_upload()
            assert latest is not None and latest.dayahead.steps == 96
