"""The clock abstraction: simulated time runs at its speed and agrees across processes."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import ManualClock, RealClock, SimulatedClock, clock_from_spec

START = datetime(2026, 11, 24, tzinfo=UTC)


def test_simulated_clock_runs_at_its_speed() -> None:
    anchor = time.time() - 10.0  # started 10 wall seconds ago
    clock = SimulatedClock(START, speed=60.0, anchor_unix_s=anchor)
    elapsed_s = clock.time_s() - START.timestamp()
    assert 600.0 <= elapsed_s < 600.0 + 60.0 * 2.0
    assert clock.now().tzinfo is not None


async def test_simulated_sleep_is_shortened_by_speed() -> None:
    clock = SimulatedClock(START, speed=100.0)
    wall = time.perf_counter()
    before = clock.time_s()
    await clock.sleep(10.0)  # 10 simulated seconds = 0.1 wall seconds
    assert time.perf_counter() - wall < 1.0
    assert clock.time_s() - before >= 9.9


def test_spec_round_trip_gives_the_same_timeline() -> None:
    clock = SimulatedClock(START, speed=480.0, anchor_unix_s=1_700_000_000.5)
    twin = clock_from_spec(clock.spec())
    assert isinstance(twin, SimulatedClock)
    assert twin.speed == 480.0
    assert abs(twin.time_s() - clock.time_s()) < 480.0 * 0.05
    assert clock_from_spec("real").spec() == "real"


def test_bad_spec_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"expected sim:START:SPEED"):
        clock_from_spec("sim:bad")


def test_spec_without_anchor_starts_now() -> None:
    clock = clock_from_spec("sim:2026-11-24T06:00:00Z:10")
    assert abs(clock.time_s() - (START + timedelta(hours=6)).timestamp()) < 5.0


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "fast",
        "sim:",
        "sim:2026-11-24T00:00:00Z",
        "sim:2026-11-24T00:00:00:10",
        "sim:x:10",
        "sim:2026-11-24T00:00:00Z:0",
    ],
)
def test_bad_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="clock spec"):
        clock_from_spec(spec)


async def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(START)
    assert clock.now() == START
    await clock.sleep(30.0)
    assert clock.now() == START + timedelta(seconds=30)
    with pytest.raises(ValueError):
        clock.advance(-1.0)


async def test_real_clock_is_wall_time() -> None:
    clock = RealClock()
    assert abs(clock.time_s() - time.time()) < 1.0
    await asyncio.wait_for(clock.sleep(0.01), timeout=1.0)
