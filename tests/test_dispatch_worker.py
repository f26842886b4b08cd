"""The dispatch worker process: a result by the time limit, whatever the worker does."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from dataclasses import replace
from multiprocessing.connection import Connection

import pytest

from central.dispatch.certified import (
    CertifiedOptions,
    CertifiedResult,
    DispatchMethod,
    StopReason,
    idle_result,
    solve_certified,
)
from central.dispatch.feasibility import check_result
from central.dispatch.inputs import DispatchInputs, build_inputs
from central.dispatch.worker import WorkerOptions, solve_in_worker
from lab.bench.dispatch import bench_site

START_UP_S = 10.0  # a spawned Python importing numpy and HiGHS on a loaded machine


def crash(connection: Connection, inputs: DispatchInputs, *args: object) -> None:
    os._exit(3)


def hang(connection: Connection, inputs: DispatchInputs, *args: object) -> None:
    time.sleep(3600)


def report_then_hang(connection: Connection, inputs: DispatchInputs, *args: object) -> None:
    result = idle_result(inputs)
    connection.send(("progress", replace(result, iterations=7)))
    time.sleep(3600)


def fail(connection: Connection, inputs: DispatchInputs, *args: object) -> None:
    connection.send(("error", "RuntimeError: broken on purpose"))


def test_worker_returns_the_certified_result() -> None:
    x = build_inputs(*bench_site(20, 48, seed=6))
    options = CertifiedOptions(method=DispatchMethod.BLOCK_IPM, gap_target_pct=0.01, time_limit_s=60.0)
    result = solve_in_worker(x, options)
    assert result.stop == StopReason.GAP_REACHED
    assert check_result(x, result.result) == []
    here = solve_certified(x, options)
    assert abs(result.upper_bound - here.upper_bound) <= 1e-4 * abs(here.upper_bound)
    assert result.lower_bound <= here.upper_bound and here.lower_bound <= result.upper_bound


def test_worker_stops_at_the_time_limit_with_its_best_plan() -> None:
    x = build_inputs(*bench_site(300, 288, seed=7))
    options = CertifiedOptions(method=DispatchMethod.BLOCK_IPM, time_limit_s=3.0, gap_target_pct=0.0)
    began = time.perf_counter()
    result = solve_in_worker(x, options, WorkerOptions(grace_s=2.0))
    elapsed = time.perf_counter() - began
    assert elapsed <= 3.0 + 2.0 + START_UP_S
    assert result.stop in (StopReason.TIME_LIMIT, StopReason.INTERRUPTED)
    assert check_result(x, result.result) == []
    assert result.lower_bound <= result.upper_bound


def _assert_idle_fallback(x: DispatchInputs, result: CertifiedResult) -> None:
    assert result.stop == StopReason.WORKER_FAILED
    assert check_result(x, result.result) == []
    assert not result.result.setpoint_kw.any()
    assert result.lower_bound <= result.upper_bound


def test_a_crashed_worker_gives_the_idle_plan() -> None:
    x = build_inputs(*bench_site(5, 24, seed=8))
    began = time.perf_counter()
    result = solve_in_worker(x, CertifiedOptions(time_limit_s=30.0), target=crash)
    assert time.perf_counter() - began < START_UP_S + 5.0  # noticed at once, not at the time limit
    _assert_idle_fallback(x, result)


def test_a_failing_worker_gives_the_idle_plan() -> None:
    x = build_inputs(*bench_site(5, 24, seed=8))
    _assert_idle_fallback(x, solve_in_worker(x, CertifiedOptions(time_limit_s=30.0), target=fail))


def test_a_hung_worker_is_ended_after_the_grace_period() -> None:
    x = build_inputs(*bench_site(5, 24, seed=9))
    began = time.perf_counter()
    result = solve_in_worker(x, CertifiedOptions(time_limit_s=1.0), WorkerOptions(grace_s=0.5), target=hang)
    elapsed = time.perf_counter() - began
    assert 1.5 <= elapsed <= 1.5 + START_UP_S
    _assert_idle_fallback(x, result)


def test_a_hung_worker_s_last_report_is_kept() -> None:
    x = build_inputs(*bench_site(5, 24, seed=10))
    options = CertifiedOptions(time_limit_s=START_UP_S)
    result = solve_in_worker(x, options, WorkerOptions(grace_s=0.5), target=report_then_hang)
    assert result.iterations == 7  # the report, not the parent's own fallback
    assert check_result(x, result.result) == []


def test_ctrl_c_while_waiting_ends_the_worker() -> None:
    x = build_inputs(*bench_site(5, 24, seed=11))
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            solve_in_worker(x, CertifiedOptions(time_limit_s=60.0), target=hang)
    finally:
        timer.cancel()
    assert multiprocessing.active_children() == []
