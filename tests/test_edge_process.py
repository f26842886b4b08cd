"""The edge as a process: kill -9 and restart, ``ems edge`` (Ctrl-C, bad input, missing PKI), the bench."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.controller import EdgeController
from edge.persistence import EdgeDatabase, EventKind, read_events
from shared.clock import RealClock
from shared.edge_api import EdgeMode
from shared.schedule import CabinetSchedule
from shared.site import SiteConfig
from simulators import SiteSimulator
from tests.support import write_site
from tests.test_edge_controller import flat_profile, record_writes

EMS = [sys.executable, "-m", "ems"]
EDGE_SETTINGS = """
[edge]
cycle_ms = 20.0
comm_timeout_ms = 300.0
modbus_timeout_ms = 25.0
revert_timeout_s = 1.0
reconnect_min_s = 0.05
reconnect_max_s = 0.2
"""

# A separate edge process that accepts a schedule, then runs until killed.
EDGE_PROCESS = """
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
from edge.controller import EdgeController
from shared.clock import RealClock
from shared.schedule import CabinetSchedule
from shared.site import load_site

async def main() -> None:
    site, clock = load_site(sys.argv[1]), RealClock()
    async with EdgeController(site, "cab-1", clock, state_dir=Path(sys.argv[2])) as edge:
        start = datetime.fromtimestamp(int(clock.time_s()), tz=UTC)
        decision = edge.submit_schedule(CabinetSchedule("persisted", start, 60, (35.0, 35.0, 35.0)))
        print("accepted" if decision.accepted else decision.message, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _site(tmp_path: Path, extra: str = "") -> tuple[Path, SiteConfig]:
    return write_site(tmp_path, 1, extra=EDGE_SETTINGS + extra)


async def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_restart_after_kill_9_restores_the_schedule_before_the_first_setpoint(tmp_path: Path) -> None:
    site_path, site = _site(tmp_path)
    state_dir = tmp_path / "state"
    clock = RealClock()
    async with SiteSimulator(site, clock, profile=flat_profile(50.0)) as sim:
        cabinet = sim.cabinet("cab-1")
        recorder = record_writes(sim, "cab-1", clock)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", EDGE_PROCESS, str(site_path), str(state_dir), stdout=asyncio.subprocess.PIPE
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), 30.0)
            assert line.decode().strip() == "accepted"
            await _wait_for(lambda: cabinet.state.setpoint_kw == 35.0, what="35 kW from the first edge")
        finally:
            process.kill()  # SIGKILL: no clean-up of any kind
            await process.wait()
        assert process.returncode == -signal.SIGKILL
        killed_at = len(recorder.writes)
        # Without its edge the device goes safe by itself (WSetRvrtTms configured by the edge).
        await _wait_for(lambda: cabinet.state.reverted, timeout_s=3.0, what="device-side revert")
        assert cabinet.state.target_kw == 0.0
        async with EdgeController(site, "cab-1", clock, state_dir=state_dir) as edge:
            await _wait_for(
                lambda: edge.mode is EdgeMode.SCHEDULE and cabinet.state.setpoint_kw == 35.0, what="restored"
            )
        restarted = [w.points["WSet"] for w in recorder.writes[killed_at:] if "WSet" in w.points]
        sf = cabinet.image.scale_factor(704, "WSet")
        values_kw = [raw * 10.0**sf / 1000.0 for raw in restarted]
        # The new connection starts at 0 W (the reverted 35 kW must not come back before the loop decides),
        # then ramps from 0 W towards the schedule's 35 kW; the fallback (self-consumption, 50 kW) never ran.
        assert values_kw[0] == 0.0 and values_kw[1] > 0.0 and max(values_kw[:-1]) <= 35.0
        events = read_events(state_dir / "cab-1.sqlite3")
        restored = [i for i, e in enumerate(events) if e.kind is EventKind.SCHEDULE_RESTORED]
        first_writes = [i for i, e in enumerate(events) if e.kind is EventKind.SETPOINT]
        assert restored and len(first_writes) == 2  # one per edge run
        assert restored[-1] < first_writes[-1]
        assert events[restored[-1]].subject == "persisted"
        assert events[first_writes[-1]].subject == "schedule"
        assert "mode schedule (schedule persisted)" in events[first_writes[-1]].message


async def test_ems_edge_stops_on_ctrl_c_writing_0_w_first(tmp_path: Path) -> None:
    site_path, site = _site(tmp_path)
    state_dir = tmp_path / "state"
    async with SiteSimulator(site, RealClock(), profile=flat_profile(50.0)) as sim:
        cabinet = sim.cabinet("cab-1")
        process = await asyncio.create_subprocess_exec(
            *EMS,
            "edge",
            "--site",
            str(site_path),
            "--cabinet",
            "cab-1",
            "--no-opcua",
            "--state-dir",
            str(state_dir),
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            # Fallback self-consumption: the cabinet covers the 50 kW load.
            await _wait_for(lambda: cabinet.state.setpoint_kw > 40.0, timeout_s=30.0, what="fallback running")
            process.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(process.communicate(), 15.0)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0, stderr.decode()
        assert cabinet.state.setpoint_kw == 0.0
        log = stderr.decode()
        assert "mode starting -> fallback (self_consumption)" in log and "stopping (writing 0 W)" in log
        [stop] = read_events(state_dir / "cab-1.sqlite3", EventKind.STOP)
        assert "0 W written" in stop.message


def test_ems_edge_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    site_path, _ = _site(tmp_path, f'\n[opcua]\npki_dir = "{(tmp_path / "no-pki").as_posix()}"\n')
    unknown = subprocess.run(
        [*EMS, "edge", "--site", str(site_path), "--cabinet", "cab-9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2
    assert unknown.stderr.strip().count("\n") == 0 and "no cabinet 'cab-9'" in unknown.stderr
    clock = subprocess.run(
        [*EMS, "edge", "--site", str(site_path), "--cabinet", "cab-1", "--clock", "sim:yesterday:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert clock.returncode == 2 and "clock spec" in clock.stderr
    no_pki = subprocess.run(
        [*EMS, "edge", "--site", str(site_path), "--cabinet", "cab-1", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [line for line in no_pki.stderr.splitlines() if line.startswith("error:")]
    assert no_pki.returncode == 2, no_pki.stderr
    assert len(errors) == 1 and "ems certs" in errors[0]


def test_bench_edge_reports_timing_and_reaction(tmp_path: Path) -> None:
    result = subprocess.run(
        [*EMS, "bench", "edge", "--cycle-ms", "20", "--seconds", "3", "--json", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # 150 cycles at best; a busy machine skips deadlines (overruns), and the bench must still report.
    assert report["cycles"] >= 50 and report["cycle_ms"] == 20.0
    assert report["period_p50_ms"] > 15.0
    # One injection every 0.2-0.4 s plus its reset and the ramp back: about 6 in 3 s, fewer when busy.
    assert report["injections"] >= 3 and report["reactions_missed"] == 0
    assert 0.0 < report["interlock_reaction_p50_ms"] <= report["interlock_reaction_p99_ms"]


# The device's own protections act within the stall: WSet reverts after 1 s, the heartbeat watchdog after 1 s.
STALL_SETTINGS = "comm_recovery_s = 0.5\n[sim]\nheartbeat_timeout_s = 1.0\n"


def _seed_schedule(state_dir: Path, setpoint_kw: float) -> None:
    """Put an accepted schedule in the edge's database: the edge restores and runs it at start."""
    now = datetime.now(UTC).replace(microsecond=0)
    db = EdgeDatabase(state_dir / "cab-1.sqlite3")
    try:
        db.save_schedule(CabinetSchedule("stall", now, 600, (setpoint_kw,)), now, 1)
    finally:
        db.close()


@pytest.mark.parametrize("fault_meanwhile", [False, True], ids=["stall", "stall-with-over-temperature"])
async def test_a_stalled_edge_process_resumes_by_itself_but_a_fault_meanwhile_latches(
    tmp_path: Path, fault_meanwhile: bool
) -> None:
    site_path, site = _site(tmp_path, STALL_SETTINGS)
    state_dir = tmp_path / "state"
    database = state_dir / "cab-1.sqlite3"
    _seed_schedule(state_dir, 35.0)
    async with SiteSimulator(site, RealClock(), profile=flat_profile(50.0)) as sim:
        cabinet = sim.cabinet("cab-1")
        with (tmp_path / "edge.log").open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *EMS,
                "edge",
                "--site",
                str(site_path),
                "--cabinet",
                "cab-1",
                "--no-opcua",
                "--state-dir",
                str(state_dir),
                stderr=log_file,
            )
        try:
            await _wait_for(
                lambda: cabinet.state.setpoint_kw == 35.0, timeout_s=30.0, what="schedule running"
            )
            process.send_signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            if fault_meanwhile:
                cabinet.faults.over_temperature(58.0)
            # Safe meanwhile, by the device's own protections: 0 W and standby.
            await _wait_for(
                lambda: cabinet.state.reverted and cabinet.state.standby,
                timeout_s=5.0,
                what="device-side safety",
            )
            assert cabinet.state.target_kw == 0.0
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - stopped_at)))
            process.send_signal(signal.SIGCONT)
            if fault_meanwhile:
                await _wait_for(
                    lambda: any(
                        e.subject == "over_temperature" for e in read_events(database, EventKind.TRIP)
                    ),
                    what="over-temperature trip after the stall",
                )
                cabinet.faults.clear_all()
                await asyncio.sleep(1.5)  # three times comm_recovery_s: a latched trip stays
                assert cabinet.state.setpoint_kw == 0.0 and cabinet.state.state == "DISCONNECTED"
                assert read_events(database, EventKind.MODE)[-1].subject == "tripped"
            else:
                await _wait_for(
                    lambda: cabinet.state.setpoint_kw == 35.0 and not cabinet.state.standby,
                    what="back in schedule mode after the stall",
                )
                await asyncio.sleep(0.5)
                events = read_events(database)
                assert not [e for e in events if e.kind in (EventKind.TRIP, EventKind.RESET)]
                assert [e.subject for e in events if e.kind is EventKind.MODE][-1] == "schedule"
                assert EventKind.LOOP_LATE in {e.kind for e in events}  # the stall is told apart
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.terminate()
                await asyncio.wait_for(process.wait(), 15.0)


def test_ems_edge_refuses_a_plan_window_that_reaches_its_hard_soc_limits(tmp_path: Path) -> None:
    """The plan must never aim where the edge trips: a soc_min_pct at or below [edge] soc_hard_min_pct
    starts nothing, naming the key."""
    site_path, _ = _site(tmp_path, "soc_hard_min_pct = 12.0\n")  # the example cabinets plan from 10 %
    done = subprocess.run(
        [*EMS, "edge", "--site", str(site_path), "--cabinet", "cab-1", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "cabinets[0].soc_min_pct" in done.stderr and "soc_hard_min_pct" in done.stderr
    assert not (tmp_path / "s").exists()  # nothing started: no database
