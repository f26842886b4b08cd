"""Communication loss is a hold that ends by itself; device faults still latch; flapping latches.

The policy's state machine alone (pure, with a property test), then the controller against the device
simulators over real Modbus TCP on loopback: a device that answers late, a meter that answers with errors.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.comm_loss import (
    CommLossCause,
    CommLossMonitor,
    CommPolicy,
    CommProblem,
    CommSource,
    CommState,
)
from edge.interlocks import Condition
from edge.persistence import EventKind, read_events
from shared.edge_api import EdgeMode
from shared.errors import ConfigError
from shared.site import parse_site
from tests.support import site_toml
from tests.test_edge_controller import COMM_RECOVERY_S, Rig, rig, running, schedule_now, wait_for

POLICY = CommPolicy(timeout_s=0.3, recovery_s=1.0, flap_episodes=3, flap_window_s=60.0)
DEVICE = (CommProblem(CommSource.DEVICE, "device: read 58 @ 40070: timeout"),)
METER = (CommProblem(CommSource.METER, "meter: Modbus exception 4"),)
LATE = (CommProblem(CommSource.DEVICE, "device: read 58 @ 40070: timeout", edge_late=True),)


def _armed(policy: CommPolicy = POLICY) -> CommLossMonitor:
    monitor = CommLossMonitor(policy)
    monitor.valid(0.0)
    return monitor


# ------------------------------------------------------------------------------------------ the policy


def test_nothing_before_the_first_valid_snapshot() -> None:
    monitor = CommLossMonitor(POLICY)
    for k in range(100):
        assert monitor.failed(k * 0.1, k * 0.1, DEVICE).started is None
    assert not monitor.holding and not monitor.armed


def test_hold_starts_after_the_timeout_counted_from_the_first_failed_attempt() -> None:
    monitor = _armed()
    # The loop did not run from 0.0 to 5.0 (a stall): that time is not counted against the device.
    assert monitor.failed(5.0, 5.02, DEVICE).started is None
    assert monitor.failed(5.1, 5.12, DEVICE).started is None
    assert monitor.failed(5.2, 5.3, DEVICE).started is None  # 0.30 s: not yet more than the timeout
    update = monitor.failed(5.3, 5.32, DEVICE)
    assert update.started is not None and update.started.cause is CommLossCause.DEVICE
    assert "no valid data for 320 ms (limit 300 ms)" in update.started.detail
    assert monitor.state is CommState.HOLD and monitor.reason.startswith("comm_loss (not latched")


def test_resumes_only_after_the_recovery_time_of_uninterrupted_valid_data() -> None:
    monitor = _armed()
    monitor.failed(1.0, 1.0, METER)
    assert monitor.failed(1.4, 1.4, METER).started is not None
    assert monitor.valid(2.0).ended is None and monitor.state is CommState.RECOVERING
    assert "data valid again" in monitor.reason
    assert monitor.valid(2.9).ended is None
    monitor.failed(2.95, 2.95, METER)  # one failure: back to the hold, the same episode
    assert monitor.state is CommState.HOLD
    assert monitor.valid(3.0).ended is None
    assert monitor.valid(3.99).ended is None
    ended = monitor.valid(4.0).ended
    assert ended is not None and ended.cause is CommLossCause.METER
    assert ended.missing_s == 2.0 and ended.held_s == 2.6
    assert monitor.state is CommState.NORMAL and monitor.reason == "" and not monitor.holding


def _episode(monitor: CommLossMonitor, at_s: float, problems: tuple[CommProblem, ...]) -> bool:
    """One episode from ``at_s``; True when it reported flapping."""
    monitor.failed(at_s, at_s, problems)
    flapping = monitor.failed(at_s + 0.5, at_s + 0.5, problems).flapping is not None
    monitor.valid(at_s + 1.0)
    monitor.valid(at_s + 2.0)
    assert not monitor.holding
    return flapping


def test_flapping_latches_only_device_or_meter_episodes_within_the_window() -> None:
    monitor = _armed()
    assert not any(_episode(monitor, 10.0 * k, LATE) for k in range(1, 10))  # the edge's own lateness
    assert not _episode(monitor, 100.0, DEVICE)
    assert not _episode(monitor, 110.0, METER)
    assert not _episode(monitor, 200.0, DEVICE)  # the first two are outside the 60 s window now
    assert not _episode(monitor, 210.0, DEVICE)
    assert _episode(monitor, 220.0, METER)
    monitor.forget_episodes()  # an operator reset
    assert not _episode(monitor, 230.0, DEVICE)


def test_an_edge_late_episode_that_turns_out_to_be_the_device_counts() -> None:
    monitor = _armed(CommPolicy(timeout_s=0.3, recovery_s=1.0, flap_episodes=1, flap_window_s=60.0))
    monitor.failed(1.0, 1.0, LATE)
    update = monitor.failed(1.4, 1.4, LATE)
    assert update.started is not None and update.started.cause is CommLossCause.EDGE_LATE
    assert update.flapping is None
    flapping = monitor.failed(1.5, 1.5, DEVICE).flapping
    assert monitor.cause is CommLossCause.DEVICE
    assert flapping is not None and flapping.condition is Condition.COMM_LOSS


_CYCLE = st.tuples(st.floats(0.01, 0.5), st.sampled_from(["valid", "device", "late"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_CYCLE, min_size=1, max_size=200))
def test_property_no_resume_without_the_recovery_time_no_flapping_from_lateness(
    cycles: list[tuple[float, str]],
) -> None:
    monitor = _armed()
    now_s = 0.0
    valid_since: float | None = 0.0
    only_late = True
    episodes = 0
    for dt_s, outcome in cycles:
        now_s += dt_s
        if outcome == "valid":
            valid_since = now_s if valid_since is None else valid_since
            update = monitor.valid(now_s)
            if update.ended is not None:
                assert now_s - valid_since >= POLICY.recovery_s
        else:
            valid_since = None
            only_late = only_late and outcome == "late"
            update = monitor.failed(now_s, now_s, LATE if outcome == "late" else DEVICE)
            assert update.ended is None and monitor.holding == (monitor.state is not CommState.NORMAL)
            episodes += update.started is not None
        if update.flapping is not None:
            assert not only_late and episodes >= POLICY.flap_episodes
        assert monitor.holding == (monitor.reason != "")


# ------------------------------------------------------------------------------------------ the [edge] keys


def _edge_keys(lines: str) -> CommPolicy:
    return CommPolicy.from_settings(parse_site(site_toml(1, extra="[edge]\n" + lines), "site.toml").edge)


def test_the_policy_keys_have_sane_defaults() -> None:
    policy = _edge_keys("cycle_ms = 20.0\n")
    assert policy == CommPolicy(timeout_s=0.06, recovery_s=3.0, flap_episodes=5, flap_window_s=600.0)


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(st.integers(-5, 50), st.floats(-5.0, 50.0, allow_nan=False)),
    st.sampled_from(["comm_recovery_s", "comm_flap_episodes", "comm_flap_window_s"]),
)
def test_property_a_bad_policy_value_is_refused_naming_its_key(value: float, key: str) -> None:
    valid = {
        "comm_recovery_s": value >= 0.0,
        "comm_flap_episodes": value >= 1 and float(value) == int(value),
        "comm_flap_window_s": value > 0.0,
    }[key]
    if valid:
        policy = _edge_keys(f"{key} = {value!r}\n")
        field = {"comm_recovery_s": "recovery_s", "comm_flap_episodes": "flap_episodes"}.get(
            key, "flap_window_s"
        )
        assert getattr(policy, field) == value
        return
    with pytest.raises(ConfigError) as info:
        _edge_keys(f"{key} = {value!r}\n")
    assert f"edge.{key}" in str(info.value)


# ------------------------------------------------------------------------------------------ the controller


async def _hold(r: Rig, source: str) -> float:
    """Wait for the comm-loss hold; check how it shows; return when it was seen (monotonic)."""
    await wait_for(lambda: r.edge.telemetry().interlock_active, timeout_s=3.0, what="comm-loss hold")
    seen_s = time.monotonic()
    telemetry = r.edge.telemetry()
    assert telemetry.mode is EdgeMode.STARTING, telemetry
    assert telemetry.interlock_reason.startswith("comm_loss (not latched"), telemetry.interlock_reason
    assert f"{source}:" in telemetry.interlock_reason
    assert r.edge.latched == []
    return seen_s


def _wset_writes_after(r: Rig, after_s: float) -> list[float]:
    """Setpoints written after ``after_s``: not the 0 W that starts every new connection (a reconnection
    during the hold writes it, so that a setpoint the device reverted cannot come back)."""
    return [
        w.loop_s for w in r.recorders["cab-1"].writes if w.points.get("WSet", 0) != 0 and w.loop_s > after_s
    ]


async def _events(r: Rig, kind: EventKind, count: int) -> list[str]:
    """The subjects of ``count`` events of ``kind`` (waiting for the store's thread to write them)."""
    await wait_for(
        lambda: len(read_events(r.edge.database_path, kind)) >= count, what=f"{count} {kind.value} event(s)"
    )
    return [e.subject for e in read_events(r.edge.database_path, kind)]


async def test_a_device_answering_late_holds_and_the_edge_resumes_by_itself(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [30.0, 30.0])).accepted
        await running(r, 30.0)
        device = r.sim.cabinet("cab-1")
        late_at = time.monotonic()
        device.faults.delay(200.0)  # every answer 200 ms late; modbus_timeout_ms is 25
        held_s = await _hold(r, "device")
        # Meanwhile the device makes itself safe: no WSet refresh for revert_timeout_s -> 0 W.
        await wait_for(lambda: device.state.reverted, timeout_s=3.0, what="the device's own revert")
        assert time.monotonic() - late_at >= 0.9 and device.state.target_kw == 0.0
        # The edge's telemetry says so too: SetpointKw is the revert value once the revert time has passed.
        await wait_for(lambda: r.edge.telemetry().setpoint_kw == 0.0, what="SetpointKw 0 after the revert")
        assert r.edge.reset_interlock().message.startswith("no interlock is latched; the comm_loss hold ends")
        device.faults.clear_all()
        cleared_s = time.monotonic()
        await running(r, 30.0)  # back in schedule mode: no reset
        assert r.edge.latched == [] and not r.edge.telemetry().interlock_active
        # No setpoint while data was missing, nor before it had been valid for comm_recovery_s.
        assert min(_wset_writes_after(r, held_s)) >= cleared_s + COMM_RECOVERY_S
        assert await _events(r, EventKind.COMM_LOSS_START, 1) == ["device"]
        assert await _events(r, EventKind.COMM_LOSS_END, 1) == ["device"]
        [end] = read_events(r.edge.database_path, EventKind.COMM_LOSS_END)
        assert "ended: data missing for" in end.message
        assert EventKind.TRIP not in {e.kind for e in read_events(r.edge.database_path)}


async def test_a_device_fault_during_the_late_answers_still_latches(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [30.0, 30.0])).accepted
        await running(r, 30.0)
        device = r.sim.cabinet("cab-1")
        device.faults.delay(200.0)
        await _hold(r, "device")
        device.faults.over_temperature(58.0)
        await asyncio.sleep(0.5)
        device.faults.clear("delay")
        await wait_for(lambda: r.edge.mode is EdgeMode.TRIPPED, timeout_s=5.0, what="over-temperature trip")
        assert Condition.OVER_TEMPERATURE in {t.finding.condition for t in r.edge.latched}
        device.faults.clear_all()
        await asyncio.sleep(3 * COMM_RECOVERY_S)  # a latch does not end by itself
        assert r.edge.mode is EdgeMode.TRIPPED and r.wset_kw() == 0.0
        assert device.state.state == "DISCONNECTED"
        await wait_for(lambda: r.edge.reset_interlock().accepted, what="reset accepted")
        await running(r, 30.0)


async def test_meter_errors_hold_with_the_heartbeat_fed_and_no_setpoint(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [10.0, 10.0])).accepted
        await running(r, 10.0)
        device = r.sim.cabinet("cab-1")
        r.sim.meter.faults.modbus_exception(4)
        held_s = await _hold(r, "meter")
        beat = device.state.heartbeat
        await asyncio.sleep(0.3)
        assert device.state.heartbeat != beat  # the device answers: its watchdog stays fed
        assert _wset_writes_after(r, held_s) == []  # no setpoint without the meter
        r.sim.meter.faults.clear_all()
        await running(r, 10.0)
        assert await _events(r, EventKind.COMM_LOSS_END, 1) == ["meter"]


async def test_comm_flap_episodes_1_latches_the_first_loss(tmp_path: Path) -> None:
    async with rig(tmp_path, extra="comm_flap_episodes = 1\n") as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [10.0, 10.0])).accepted
        await running(r, 10.0)
        r.sim.meter.faults.modbus_exception(4)
        await wait_for(lambda: r.edge.mode is EdgeMode.TRIPPED, timeout_s=2.0, what="trip")
        [trip] = r.edge.latched
        assert trip.finding.condition is Condition.COMM_LOSS and "meter" in trip.finding.detail
        await wait_for(lambda: r.wset_kw() == 0.0, what="0 W")


async def test_repeated_episodes_latch_comm_loss(tmp_path: Path) -> None:
    extra = "comm_flap_episodes = 3\ncomm_flap_window_s = 60.0\n"
    async with rig(tmp_path, extra=extra) as r:
        assert r.edge.submit_schedule(schedule_now(r.clock, [10.0, 10.0])).accepted
        await running(r, 10.0)
        meter = r.sim.meter.faults
        for _ in range(2):
            meter.modbus_exception(4)
            await _hold(r, "meter")
            meter.clear_all()
            await running(r, 10.0)
        meter.modbus_exception(4)
        await wait_for(lambda: r.edge.mode is EdgeMode.TRIPPED, timeout_s=3.0, what="flapping latch")
        [trip] = r.edge.latched
        assert trip.finding.condition is Condition.COMM_LOSS
        assert "3 communication-loss episodes within 60 s" in trip.finding.detail
        meter.clear_all()
        await asyncio.sleep(3 * COMM_RECOVERY_S)
        assert r.edge.mode is EdgeMode.TRIPPED and r.wset_kw() == 0.0
        await wait_for(lambda: r.edge.reset_interlock().accepted, what="reset accepted")
        await running(r, 10.0)
        assert await _events(r, EventKind.TRIP, 1) == ["comm_loss"]
        assert len(await _events(r, EventKind.COMM_LOSS_START, 3)) == 3
