"""Scheduling on the shared clock, the rolling horizon and the initial-SoC rule of the central service."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from central.edge_link.outcome import PushStatus
from central.service.jobs import ClockIntervalTrigger
from central.service.metrics import Metrics, Snapshot, render
from central.service.planner import horizon_start_index, resolve_initial_soc
from central.service.state import RunResult, RunTrigger
from central.service.store import PushRecord
from shared.clock import RealClock, SimulatedClock
from shared.edge_api import EdgeMode, EdgeTelemetry
from tests.support import write_site
from tests.test_central_store import make_dayahead

START = datetime(2026, 11, 24, tzinfo=UTC)


def telemetry(cabinet_id: str, soc_pct: float) -> EdgeTelemetry:
    return EdgeTelemetry(
        cabinet_id=cabinet_id,
        soc_pct=soc_pct,
        active_power_kw=0.0,
        setpoint_kw=0.0,
        charge_limit_kw=100.0,
        discharge_limit_kw=100.0,
        mode=EdgeMode.SCHEDULE,
        schedule_id="s",
        schedule_valid_until=None,
        interlock_active=False,
        interlock_reason="",
        cycle_time_p99_ms=1.0,
    )


def test_trigger_fires_on_boundaries_of_simulated_time() -> None:
    clock = SimulatedClock(START + timedelta(minutes=7), speed=900.0)
    trigger = ClockIntervalTrigger(clock, 900.0)
    now = datetime.now(UTC)
    first = trigger.get_next_fire_time(None, now)
    # The next quarter hour of simulated time (00:15) is 8 simulated minutes = 480/900 wall s away.
    assert abs((first - now).total_seconds() - 480.0 / 900.0) < 0.05
    second = trigger.get_next_fire_time(first, first)
    assert abs((second - first).total_seconds() - 1.0) < 1e-3  # 900 simulated s at speed 900
    real = ClockIntervalTrigger(RealClock(), 60.0).get_next_fire_time(None, now)
    offset_s = real.timestamp() % 60.0
    assert min(offset_s, 60.0 - offset_s) < 1e-3 and 0 < (real - now).total_seconds() <= 60.0


async def test_scheduler_runs_a_job_every_period_of_simulated_time() -> None:
    clock = SimulatedClock(START + timedelta(minutes=14), speed=1800.0)
    fired: list[datetime] = []

    async def job() -> None:
        fired.append(clock.now())

    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(job, ClockIntervalTrigger(clock, 900.0), misfire_grace_time=None, coalesce=True)
    scheduler.start()
    try:
        await asyncio.sleep(1.15)  # simulated 00:14 -> ~00:48:30: boundaries 00:15, 00:30, 00:45
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0)
    assert len(fired) == 3
    for index, at in enumerate(fired):
        boundary = START + timedelta(minutes=15 * (index + 1))
        assert timedelta(0) <= at - boundary < timedelta(seconds=30), at  # < 17 ms wall late
        assert horizon_start_index(make_dayahead(8), at) == index + 1


def test_horizon_starts_at_the_current_interval() -> None:
    dayahead = make_dayahead(4)  # 00:00 .. 01:00
    assert horizon_start_index(dayahead, START - timedelta(hours=3)) == 0
    assert horizon_start_index(dayahead, START) == 0
    assert horizon_start_index(dayahead, START + timedelta(minutes=29, seconds=59)) == 1
    # A clock read a hair before a boundary belongs to the interval that starts.
    assert horizon_start_index(dayahead, START + timedelta(minutes=30) - timedelta(microseconds=10)) == 2
    assert horizon_start_index(dayahead, START + timedelta(minutes=59)) == 3
    assert horizon_start_index(dayahead, START + timedelta(hours=1)) is None


def test_initial_soc_upload_then_telemetry_then_default(tmp_path: Path) -> None:
    _, site = write_site(tmp_path, cabinets=3)
    dayahead = make_dayahead(4, soc={"cab-1": 61.0, "cab-2": 62.0})
    live = {"cab-1": telemetry("cab-1", 40.0), "cab-2": None, "cab-3": telemetry("cab-3", 33.0)}
    up = {"cab-1": True, "cab-2": False, "cab-3": True}

    first = resolve_initial_soc(site, dayahead, 0, True, live, up)
    assert {c: (s.soc_pct, s.source) for c, s in first.items()} == {
        "cab-1": (61.0, "upload"),
        "cab-2": (62.0, "upload"),
        "cab-3": (33.0, "telemetry"),
    }
    # Later runs from the upload's start: live SoC wins; the upload's figure beats a blind 50 %.
    later = resolve_initial_soc(site, dayahead, 0, False, live, up)
    assert {c: s.source for c, s in later.items()} == {
        "cab-1": "telemetry",
        "cab-2": "upload",
        "cab-3": "telemetry",
    }
    # Mid-upload: telemetry, else 50 % (the upload's SoC was for its start, not for now).
    mid = resolve_initial_soc(site, dayahead, 2, True, live, up)
    assert {c: (s.soc_pct, s.source) for c, s in mid.items()} == {
        "cab-1": (40.0, "telemetry"),
        "cab-2": (50.0, "default"),
        "cab-3": (33.0, "telemetry"),
    }
    # Telemetry of a disconnected edge, or an impossible value, is not trusted.
    stale = resolve_initial_soc(
        site,
        dayahead,
        2,
        False,
        {"cab-1": telemetry("cab-1", 40.0), "cab-3": telemetry("cab-3", 140.0)},
        {"cab-3": True},
    )
    assert {c: s.source for c, s in stale.items()} == {
        "cab-1": "default",
        "cab-2": "default",
        "cab-3": "default",
    }


def test_metrics_text_format() -> None:
    metrics = Metrics()
    metrics.upload(True)
    metrics.upload(False)
    record = PushRecord("p1", 'cab"1', PushStatus.ACCEPTED, "", START, 12.0)
    metrics.push({'cab"1': record})
    metrics.run(RunResult(RunTrigger.UPLOAD, True, "", START, START, optimize_wall_s=0.3))
    text = render(
        metrics,
        Snapshot(
            plan=None,
            push={'cab"1': record},
            connected={'cab"1': True},
            telemetry={'cab"1': telemetry('cab"1', 55.5)},
            jobs={},
            cabinet_ids=('cab"1',),
        ),
    )
    lines = text.splitlines()
    assert 'ems_central_uploads_total{result="accepted"} 1' in lines
    assert 'ems_central_push_total{cabinet="cab\\"1",status="accepted"} 1' in lines
    assert 'ems_central_edge_soc_pct{cabinet="cab\\"1"} 55.5' in lines
    assert 'ems_central_edge_mode{cabinet="cab\\"1",mode="schedule"} 1' in lines
    assert 'ems_central_optimizations_total{trigger="upload",result="ok"} 1' in lines
    # Every family's samples follow its own TYPE line.
    current = ""
    for line in lines:
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif not line.startswith("#"):
            assert line.startswith(current), line


def test_replans_of_one_upload_keep_the_end_soc_the_active_plan_promised(tmp_path: Path) -> None:
    from central.service.planner import promised_final_soc
    from central.service.store import StoredPlan
    from shared.plan import CabinetPlan, ObjectiveBreakdown, Plan, PlanStatus, SolverInfo

    _, site = write_site(tmp_path, 2)
    site = site.model_copy(
        update={
            "cabinets": [site.cabinets[0], site.cabinets[1].model_copy(update={"soc_final_min_pct": 60.0})]
        }
    )
    day = make_dayahead()
    steps = day.steps
    plan = Plan(
        plan_id="p1",
        created_at=day.start,
        start=day.start,
        interval_minutes=day.interval_minutes,
        status=PlanStatus.OPTIMAL,
        objective=ObjectiveBreakdown(),
        grid_kw=[0.0] * steps,
        pv_used_kw=[0.0] * steps,
        cabinets={
            "cab-1": CabinetPlan(setpoint_kw=[0.0] * steps, soc_pct=[50.0] * (steps - 1) + [47.5]),
            "cab-2": CabinetPlan(setpoint_kw=[0.0] * steps, soc_pct=[60.0] * steps),
        },
        solver=SolverInfo(backend="highspy"),
    )
    active = StoredPlan(plan, "u1", "upload", day.start)
    # Same upload, same end: cab-1 keeps 47.5 %; cab-2 has its own configured target.
    assert promised_final_soc(site, "u1", day, active) == {"cab-1": 47.5}
    # A plan of another upload, none at all, or a failed one promise nothing.
    assert promised_final_soc(site, "u2", day, active) == {}
    assert promised_final_soc(site, "u1", day, None) == {}
    failed = StoredPlan(plan.model_copy(update={"status": PlanStatus.FAILED}), "u1", "upload", day.start)
    assert promised_final_soc(site, "u1", day, failed) == {}
