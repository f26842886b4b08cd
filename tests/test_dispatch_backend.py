"""The direct HiGHS backend: the LP's shape, the MIP against the reference, and Ctrl-C during a solve."""

from __future__ import annotations

import os
import signal
import threading

import highspy
import numpy as np
import pytest

from central.dispatch import DispatchOptions, highs_runtime, solve_dispatch
from central.dispatch import highs_backend as backend
from central.dispatch.inputs import build_inputs
from lab.bench.dispatch import bench_site
from tests.test_dispatch_equivalence import check_feasible, random_case
from tests.test_dispatch_hand import make_day, make_site


def test_lp_shape_follows_the_formulation() -> None:
    # 2 cabinets x 3 intervals, a demand charge, a commitment and one cabinet starting above its window.
    site = make_site([{"soc_max_pct": 90.0}, {}], demand_charge_per_kw=1.0)
    day = make_day([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], grid_commitment_kw=[0.0, 0.0, 0.0])
    x = build_inputs(site, day, {"cab-1": 95.0})
    lp, integer_cols, cols = backend.build_lp(x, forbid_simultaneous=False)
    b, t = 2, 3
    # c, d, e; gi, ge, u, unserved; terminal shortfall; window slack of cab-1; peak; over, under
    assert lp.num_col_ == 3 * b * t + 4 * t + b + t + 1 + 2 * t
    # storage, balance, terminal, window of cab-1, peak, imbalance
    assert lp.num_row_ == b * t + t + b + t + t + t
    # storage 4 per (b,t) minus the missing e[b,-1]; balance 4 + 2B per t; terminal 2 per b; window 2 per t;
    # peak 2 per t; imbalance 4 per t
    assert len(lp.a_matrix_.value_) == 4 * b * t - b + (4 + 2 * b) * t + 2 * b + 2 * t + 2 * t + 4 * t
    assert integer_cols.size == 0 and cols.charge.shape == (b, t)
    _, integer_cols, _ = backend.build_lp(x, forbid_simultaneous=True)
    assert integer_cols.size == b * t


@pytest.mark.parametrize("seed", [1, 4, 9, 12])
def test_mip_agrees_with_the_reference_and_never_overlaps(seed: int) -> None:
    site, day = random_case(seed)
    options = [
        DispatchOptions(backend=name, forbid_simultaneous=True, mip_gap=0.0) for name in ("highspy", "pyomo")
    ]
    results = [solve_dispatch(site, day, options=option) for option in options]
    for result in results:
        assert result.status.value != "failed", result.solver.message
        assert not np.any(np.minimum(result.charge_kw, result.discharge_kw) > 1e-6)
        assert not any("simultaneous" in v for v in result.violations)
        check_feasible(site, day, result)
    assert results[0].objective.total == pytest.approx(results[1].objective.total, rel=1e-6, abs=1e-6)


def test_ctrl_c_stops_highs_and_propagates() -> None:
    site, day = bench_site(300, 96)
    lp, integer_cols, _ = backend.build_lp(build_inputs(site, day), forbid_simultaneous=False)
    highs = highs_runtime.new_highs(lp, integer_cols, DispatchOptions(time_limit_s=600).highs_options())
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            highs_runtime.run_highs(highs, interruptible=True)
    finally:
        timer.cancel()
    # HiGHS itself was stopped (not left running in its thread) and says so
    assert highs.getModelStatus() == highspy.HighsModelStatus.kInterrupt


def test_default_solve_is_not_slowed_by_a_busy_python_thread() -> None:
    # The central service solves in a worker thread next to a busy event loop. A per-iteration Python
    # callback would starve HiGHS of the GIL (seconds per thousand iterations, then the time limit); the
    # default solve must not touch the GIL. Generous bound: the solve takes about 0.05 s when idle.
    site, day = bench_site(30, 96)
    stop = threading.Event()

    def busy() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    spinner = threading.Thread(target=busy, daemon=True)
    spinner.start()
    try:
        result = solve_dispatch(site, day, options=DispatchOptions(time_limit_s=20.0))
    finally:
        stop.set()
        spinner.join()
    assert result.status.value == "optimal", result.solver.message
    assert result.solver.solve_s < 5.0
