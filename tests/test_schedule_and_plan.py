"""Cabinet schedules (refusals, interval lookup) and the plan JSON (docs/interfaces.md: plan)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.plan import CabinetPlan, ObjectiveBreakdown, Plan, PlanStatus, SolverInfo
from shared.schedule import CabinetSchedule, schedule_problem

START = datetime(2026, 11, 24, tzinfo=UTC)


def schedule(setpoints: tuple[float, ...] = (10.0, -20.0, 0.0), start: datetime = START) -> CabinetSchedule:
    return CabinetSchedule("plan-1/cab-1", start, 900, setpoints)


def test_interval_lookup_is_half_open() -> None:
    s = schedule()
    assert s.setpoint_at(START) == 10.0
    assert s.setpoint_at(START + timedelta(seconds=899.999)) == 10.0
    assert s.setpoint_at(START + timedelta(seconds=900)) == -20.0
    assert s.setpoint_at(START + timedelta(seconds=2700)) is None
    assert s.setpoint_at(START - timedelta(seconds=1)) is None
    assert s.end == START + timedelta(minutes=45)


@pytest.mark.parametrize(
    ("setpoints", "start", "reason"),
    [
        ((), START, "empty"),
        ((10.0, math.nan), START, "finite"),
        ((10.0, math.inf), START, "finite"),
        ((150.0,), START, "discharge limit"),
        ((-100.5,), START, "charge limit"),
        ((10.0,), START - timedelta(hours=2), "before now"),
    ],
)
def test_refusals_say_why(setpoints: tuple[float, ...], start: datetime, reason: str) -> None:
    problem = schedule_problem(schedule(setpoints, start), 100.0, 120.0, START + timedelta(minutes=1))
    assert problem is not None
    assert reason in problem


def test_acceptable_schedule_partly_in_the_past() -> None:
    assert schedule_problem(schedule(), 100.0, 100.0, START + timedelta(minutes=20)) is None
    naive = CabinetSchedule("x", START.replace(tzinfo=None), 900, (1.0,))
    assert "start" in (schedule_problem(naive, 100.0, 100.0, START) or "")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=5), st.integers(-10, 3600))
def test_accepted_schedules_are_within_limits(setpoints: list[float], interval_s: int) -> None:
    candidate = CabinetSchedule("id", START, interval_s, tuple(setpoints))
    if schedule_problem(candidate, 50.0, 60.0, START) is None:
        assert setpoints
        assert interval_s > 0
        assert all(math.isfinite(v) and -50.0 - 1e-6 <= v <= 60.0 + 1e-6 for v in setpoints)


def make_plan() -> Plan:
    return Plan(
        plan_id="p1",
        created_at=START,
        start=START,
        interval_minutes=15,
        status=PlanStatus.OPTIMAL,
        objective=ObjectiveBreakdown(total=1.5, energy_cost=2.0, export_revenue=0.5),
        grid_kw=[100.0, 50.0],
        pv_used_kw=[0.0, 10.0],
        cabinets={"cab-1": CabinetPlan(setpoint_kw=[-10.0, 40.0], soc_pct=[55.0, 35.0])},
        solver=SolverInfo(backend="highspy", build_s=0.001, solve_s=0.002),
    )


def test_plan_json_matches_the_contract() -> None:
    data = json.loads(make_plan().to_json())
    assert set(data) == {
        "plan_id", "created_at", "start", "interval_minutes", "status", "objective", "grid_kw",
        "pv_used_kw", "cabinets", "violations", "solver", "quality",
    }  # fmt: skip
    assert data["quality"] is None  # a plan without the second stage's measures (e.g. failed)
    assert data["created_at"] == "2026-11-24T00:00:00Z"
    assert data["status"] == "optimal"
    components = {
        "energy_cost",
        "export_revenue",
        "cycle_cost",
        "demand_charge",
        "imbalance_cost",
        "penalties",
    }
    assert set(data["objective"]) == {"total", *components}
    assert data["cabinets"]["cab-1"] == {"setpoint_kw": [-10.0, 40.0], "soc_pct": [55.0, 35.0]}
    assert Plan.from_json(make_plan().to_json()) == make_plan()
    del data["quality"]  # plans stored before the quality block existed still load
    assert Plan.from_json(json.dumps(data)) == make_plan()


def test_plan_gives_each_cabinet_its_schedule() -> None:
    plan = make_plan()
    s = plan.schedule_for("cab-1")
    assert s.setpoints_kw == (-10.0, 40.0)
    assert s.interval_s == 900
    assert s.end == plan.end


def test_plan_refuses_non_utc() -> None:
    with pytest.raises(ValueError, match="UTC"):
        Plan.model_validate({**make_plan().model_dump(), "start": "2026-11-24T00:00:00+02:00"})
