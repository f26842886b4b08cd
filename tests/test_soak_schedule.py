"""The campaign's fault schedule: seeded, reproducible, dense enough, overlapping, and round-tripping."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.soak.schedule import (
    BATTERY_FAULTS,
    DAY_S,
    LINK_FAULTS,
    MIN_FAULTS_PER_DAY,
    FaultKind,
    generate_schedule,
    load_schedule,
)

CABINETS = ("cab-1", "cab-2", "cab-3")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), days=st.integers(1, 3))
def test_schedule_properties(seed: int, days: int) -> None:
    schedule = generate_schedule(seed, days, CABINETS)
    assert schedule == generate_schedule(seed, days, CABINETS)  # reproducible
    faults = [f for f in schedule.faults if f.is_fault]
    for day in range(days):
        in_day = [f for f in faults if day * DAY_S <= f.at_s < (day + 1) * DAY_S]
        assert len(in_day) >= MIN_FAULTS_PER_DAY
    assert all(f.at_s >= 0 and f.end_s <= days * DAY_S for f in schedule.faults)
    assert [f.at_s for f in schedule.faults] == sorted(f.at_s for f in schedule.faults)
    # The same fault never overlaps itself on one target; one link fault per link at a time.
    by_slot: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for fault in faults:
        slot = ("link" if fault.kind in LINK_FAULTS else fault.kind.value, fault.target)
        by_slot.setdefault(slot, []).append((fault.at_s, fault.end_s))
    for spans in by_slot.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
    # Overlapping faults exist (on different targets), and the deliberate combinations are there.
    overlaps = sum(1 for a, b in itertools.pairwise(faults) if b.at_s < a.end_s)
    assert overlaps > 0
    groups = {f.group.split("-", 1)[1] for f in schedule.faults if f.group}
    assert "edge-restart-while-central-down" in groups
    # Every kind of fault the campaign knows shows up over a few days.
    if days == 3:
        assert {f.kind for f in faults} >= {
            *BATTERY_FAULTS,
            *LINK_FAULTS,
            FaultKind.KILL_CENTRAL,
            FaultKind.KILL_EDGE,
        }
    assert sum(1 for f in schedule.faults if f.kind is FaultKind.UPLOAD) == days


def test_an_edge_is_killed_while_the_central_is_down() -> None:
    schedule = generate_schedule(11, 1, CABINETS)
    group = [f for f in schedule.faults if f.group.endswith("edge-restart-while-central-down")]
    central = next(f for f in group if f.kind is FaultKind.KILL_CENTRAL)
    edge = next(f for f in group if f.kind is FaultKind.KILL_EDGE)
    assert central.at_s < edge.at_s < central.end_s


def test_different_seeds_differ_and_short_campaigns_scale() -> None:
    assert generate_schedule(1, 1, CABINETS) != generate_schedule(2, 1, CABINETS)
    short = generate_schedule(1, 2 / 24, CABINETS)
    assert 1 <= short.fault_count <= 20
    assert all(f.end_s <= 2 * 3600 for f in short.faults)


def test_round_trip_and_cut_for_a_replay(tmp_path: Path) -> None:
    schedule = generate_schedule(7, 2, CABINETS)
    path = tmp_path / "faults.json"
    path.write_text(schedule.to_json({"speed": 360.0}), encoding="utf-8")
    assert load_schedule(path) == schedule
    cut = schedule.until(DAY_S / 2)
    assert cut.seed == 7 and cut.days == 0.5
    assert cut.faults and all(f.at_s < DAY_S / 2 for f in cut.faults)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "Expecting"),
        ('{"version": 9}', "version"),
        (
            '{"version": 1, "seed": 1, "days": 1, "cabinet_ids": [], "faults": [{"kind": "boom"}]}',
            "faults\\[0\\]",
        ),
        (
            '{"version": 1, "seed": 1, "days": 1, "cabinet_ids": [], "faults": '
            '[{"kind": "kill_edge", "at_s": -1, "target": "cab-1"}]}',
            ">= 0",
        ),
    ],
)
def test_bad_schedule_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_schedule(path)


def test_alarm_values_are_evt1_alarms_the_edge_trips_on() -> None:
    from lab.soak.schedule import EVT1_ALARMS
    from shared.sunspec.layout import symbol_value

    for name in EVT1_ALARMS:
        assert 0 <= symbol_value(802, "Evt1", name) <= 31
        assert not name.endswith("_WARNING")
