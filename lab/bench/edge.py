"""``ems bench edge``: control-loop timing and interlock reaction time of one edge against a simulator.

The simulator runs in its own process (:mod:`lab.bench.sim_worker`), the edge in this one, talking real
Modbus TCP over loopback. The edge follows a constant schedule while faults are injected at random moments
(over-temperature, cell over-/under-voltage, an Evt1 alarm, State FAULT, in turn); after each trip the fault
is cleared and the interlock reset, and the next injection follows 200-400 ms later.

Reported: cycles, period p50/p99/max and period error |period - cycle| p50/p99/max, overruns, work time per
cycle, and the interlock reaction time (fault set on the device to 0 W received by the device) p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.timing import percentile
from lab.loopback import loopback_site_toml

EDGE_RT_PRIORITY = 20
SIMULATOR_RT_PRIORITY = 19
REACTION_TARGET_P99_MS = 20.0
PERIOD_ERROR_TARGET_P99_MS = 2.0
BENCH_SETPOINT_KW = 50.0
WARMUP_TIMEOUT_S = 15.0


def register_bench(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "edge",
        help="edge control-loop timing and interlock reaction time against a simulator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cycle-ms", type=float, default=10.0, help="control cycle [ms] (default 10)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement duration [s] (default 30)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the injection times")
    parser.add_argument(
        "--realtime",
        action="store_true",
        help=(
            "run the edge and the simulator process with SCHED_FIFO priority, as a production edge runs "
            "(Linux; needs root or CAP_SYS_NICE)"
        ),
    )
    parser.set_defaults(handler=_handler)


def _handler(args: argparse.Namespace) -> int:
    from shared.errors import InputError, Problem

    if not 1.0 <= args.cycle_ms <= 10_000.0:
        raise InputError("--cycle-ms", [Problem("", f"must be within 1-10000 ms, got {args.cycle_ms:g}")])
    if not 1.0 <= args.seconds <= 3600.0:
        raise InputError("--seconds", [Problem("", f"must be within 1-3600 s, got {args.seconds:g}")])
    if args.realtime:
        try:
            set_realtime_priority(EDGE_RT_PRIORITY)
        except (OSError, AttributeError) as exc:
            raise InputError("--realtime", [Problem("", f"cannot use real-time scheduling: {exc}")]) from None
    if not args.verbose:
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        logging.getLogger("edge").setLevel(logging.WARNING)
    from edge.cli_edge import SWITCH_INTERVAL_S
    from edge.timing import run_precise

    sys.setswitchinterval(SWITCH_INTERVAL_S)  # as `ems edge` runs
    result = run_precise(_bench(args.cycle_ms, args.seconds, random.Random(args.seed), args.realtime))
    _print_human(result)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def set_realtime_priority(priority: int) -> None:
    """SCHED_FIFO at ``priority`` for this process (raises OSError without the permission)."""
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))


def _site_text(cycle_ms: float, state_dir: Path) -> str:
    return loopback_site_toml(
        1,
        name="bench-edge",
        grid_import_limit_kw=1000.0,
        grid_export_limit_kw=1000.0,
        site_lines=['fallback_mode = "idle"'],
        extra=f'[edge]\ncycle_ms = {cycle_ms}\nstate_dir = "{state_dir.as_posix()}"\n',
    )


class _Worker:
    """The simulator process: commands on stdin, JSON lines on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, site_path: Path, realtime: bool) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lab.bench.sim_worker",
            str(site_path),
            "cab-1",
            str(SIMULATOR_RT_PRIORITY if realtime else 0),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = cls(process)
        ready = await asyncio.wait_for(worker.receive(), 30.0)
        if not ready.get("ready"):
            raise RuntimeError(f"simulator worker did not start: {ready}")
        return worker

    async def receive(self) -> dict[str, Any]:
        stdout = self.process.stdout
        if stdout is None:
            raise RuntimeError("worker has no stdout")
        line = await stdout.readline()
        if not line:
            raise RuntimeError("simulator worker exited")
        message: dict[str, Any] = json.loads(line)
        return message

    async def send(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is None:
            raise RuntimeError("worker has no stdin")
        stdin.write((line + "\n").encode())
        await stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self.send("stop")
                await asyncio.wait_for(self.process.wait(), 10.0)
            except (TimeoutError, RuntimeError, ConnectionError):
                self.process.kill()
                await self.process.wait()


async def _bench(cycle_ms: float, seconds: float, rng: random.Random, realtime: bool) -> dict[str, Any]:
    from edge.controller import EdgeController
    from shared.clock import RealClock
    from shared.schedule import CabinetSchedule
    from shared.site import load_site

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ems-bench-edge-") as tmp:
        directory = Path(tmp)
        site_path = directory / "site.toml"
        site_path.write_text(_site_text(cycle_ms, directory), encoding="utf-8")
        site = load_site(site_path)
        clock = RealClock()
        worker = await _Worker.start(site_path, realtime)
        try:
            edge = EdgeController(site, "cab-1", clock, state_dir=directory, keep_timing_samples=True)
            async with edge:
                now = clock.now().replace(microsecond=0)
                steps = int(seconds // 60) + 3
                edge.submit_schedule(CabinetSchedule("bench", now, 60, (BENCH_SETPOINT_KW,) * steps))
                await _until_running(edge)
                print(f"bench edge: measuring {seconds:g} s at a {cycle_ms:g} ms cycle", file=sys.stderr)
                gc.freeze()  # as `ems edge` does after its start
                edge.timing.reset()
                reactions, missed = await _inject_repeatedly(edge, worker, seconds, cycle_ms, rng)
                summary = edge.timing.summary(full=True)
        finally:
            await worker.stop()
    load_after = os.getloadavg()
    ordered = sorted(reactions)
    reaction_p50 = percentile(ordered, 0.50)
    reaction_p99 = percentile(ordered, 0.99)
    return {
        "cycle_ms": cycle_ms,
        "seconds": seconds,
        "cycles": summary.cycles,
        "overruns": summary.overruns,
        "period_p50_ms": summary.period.p50_ms,
        "period_p99_ms": summary.period.p99_ms,
        "period_max_ms": summary.period.max_ms,
        "period_error_p50_ms": summary.period_error.p50_ms,
        "period_error_p99_ms": summary.period_error.p99_ms,
        "period_error_max_ms": summary.period_error.max_ms,
        "work_p50_ms": summary.work.p50_ms,
        "work_p99_ms": summary.work.p99_ms,
        "work_max_ms": summary.work.max_ms,
        "injections": len(reactions) + missed,
        "reactions_missed": missed,
        "interlock_reaction_p50_ms": reaction_p50,
        "interlock_reaction_p99_ms": reaction_p99,
        "interlock_reaction_max_ms": ordered[-1] if ordered else 0.0,
        "target_period_error_p99_ms": PERIOD_ERROR_TARGET_P99_MS,
        "target_interlock_reaction_p99_ms": REACTION_TARGET_P99_MS,
        "period_target_met": summary.period_error.p99_ms <= PERIOD_ERROR_TARGET_P99_MS,
        "reaction_target_met": bool(ordered) and missed == 0 and reaction_p99 <= REACTION_TARGET_P99_MS,
        "load_avg_1m_before": load_before[0],
        "load_avg_1m_after": load_after[0],
        "cpus": os.cpu_count(),
        "realtime": realtime,
    }


async def _inject_repeatedly(
    edge: Any, worker: _Worker, seconds: float, cycle_ms: float, rng: random.Random
) -> tuple[list[float], int]:
    """Inject faults in turn at random moments for ``seconds``; return the reaction times [ms] and misses."""
    kinds = ("over_temperature", "cell_over_voltage", "cell_under_voltage", "alarm_bit", "state_fault")
    reactions: list[float] = []
    missed = 0
    started = time.monotonic()
    next_progress = started + 5.0
    count = 0
    while time.monotonic() - started < seconds:
        await asyncio.sleep(rng.uniform(0.2, 0.4))
        if time.monotonic() - started >= seconds:
            break
        await worker.send(f"inject {kinds[count % len(kinds)]}")
        count += 1
        answer = await worker.receive()
        if answer.get("reaction_ms") is None:
            missed += 1
        else:
            reactions.append(float(answer["reaction_ms"]))
        await _reset(edge, cycle_ms)
        await _until_running(edge)
        if time.monotonic() >= next_progress:
            next_progress += 5.0
            elapsed_s = time.monotonic() - started
            print(f"  {elapsed_s:4.0f} s: {edge.timing.cycles} cycles, {count} injections", file=sys.stderr)
    return reactions, missed


async def _until_running(edge: Any) -> None:
    """Wait until the edge follows the bench schedule again (after start or a reset)."""
    from shared.edge_api import EdgeMode

    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while time.monotonic() < deadline:
        telemetry = edge.telemetry()
        if telemetry.mode is EdgeMode.SCHEDULE and abs(telemetry.setpoint_kw - BENCH_SETPOINT_KW) < 0.5:
            return
        await asyncio.sleep(0.005)
    raise RuntimeError(f"edge did not reach its schedule within {WARMUP_TIMEOUT_S:g} s: {edge.telemetry()}")


async def _reset(edge: Any, cycle_ms: float) -> None:
    """Reset the interlock as soon as the edge has seen the fault gone (a few cycles)."""
    deadline = time.monotonic() + WARMUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if edge.reset_interlock().accepted:
            return
        await asyncio.sleep(cycle_ms / 1000.0)
    raise RuntimeError(f"interlock could not be reset: {edge.telemetry().interlock_reason}")


def _print_human(result: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"edge bench: {result['cycles']} cycles of {result['cycle_ms']:g} ms in {result['seconds']:g} s, "
        f"{result['overruns']} overruns\n"
        f"  period        p50 {result['period_p50_ms']:.3f}  p99 {result['period_p99_ms']:.3f}  "
        f"max {result['period_max_ms']:.3f} ms\n"
        f"  period error  p50 {result['period_error_p50_ms']:.3f}  p99 {result['period_error_p99_ms']:.3f}  "
        f"max {result['period_error_max_ms']:.3f} ms  (target p99 <= {PERIOD_ERROR_TARGET_P99_MS:g} ms: "
        f"{verdict(result['period_target_met'])})\n"
        f"  work          p50 {result['work_p50_ms']:.3f}  p99 {result['work_p99_ms']:.3f}  "
        f"max {result['work_max_ms']:.3f} ms\n"
        f"  interlock reaction over {result['injections']} injections ({result['reactions_missed']} missed): "
        f"p50 {result['interlock_reaction_p50_ms']:.2f}  p99 {result['interlock_reaction_p99_ms']:.2f}  "
        f"max {result['interlock_reaction_max_ms']:.2f} ms  (target p99 <= {REACTION_TARGET_P99_MS:g} ms: "
        f"{verdict(result['reaction_target_met'])})\n"
        f"  machine: {result['cpus']} CPUs, load average (1 min) {result['load_avg_1m_before']:.2f} before, "
        f"{result['load_avg_1m_after']:.2f} after; "
        f"{'SCHED_FIFO' if result['realtime'] else 'normal'} scheduling"
    )
