"""``ems bench dispatch --method auto|exact|block_ipm``: time the certified large-site dispatch.

Each run is end to end as the central would do it: the LP's arrays from the site and the upload, the solve
(:func:`central.dispatch.certified.solve_certified`, or in a worker process with ``--worker``), and the plan
object. Reported as medians over ``--repeat`` runs: ``total_s`` and ``cpu_s`` (this process's CPU time,
close to the wall time on an idle machine: the solve is single-threaded); and from the last run: the method
that ran, the plan's cost (``objective``), the ``lower_bound``, ``gap_pct``, why it stopped and the
iterations.
``targets`` compares with the issue's: total <= 1 s at 100 x 96 (and exact), <= 8 s at 1000 x 96, <= 30 s
at 1000 x 288, gap <= 0.1 %.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from shared.errors import Problem

METHODS = ("auto", "exact", "block_ipm")
TARGET_TOTAL_S = {(100, 96): 1.0, (1000, 96): 8.0, (1000, 288): 30.0}
TARGET_GAP_PCT = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the certified path (``--method`` selects it)."""
    parser.add_argument(
        "--method",
        choices=METHODS,
        default=None,
        help="time the certified dispatch with this method instead of ems optimize's single LP",
    )
    parser.add_argument(
        "--gap-target-pct",
        type=float,
        default=None,
        help="with --method: stop when the certified gap is at or below this [%%] (default 0.01)",
    )
    parser.add_argument(
        "--worker", action="store_true", help="with --method: solve in a worker process, as the central will"
    )


def check_arguments(args: argparse.Namespace) -> list[Problem]:
    problems = []
    gap = args.gap_target_pct
    if gap is not None and not (math.isfinite(gap) and gap >= 0):
        problems.append(Problem("--gap-target-pct", f"must be a number >= 0, got {gap}"))
    if args.method is None and (gap is not None or args.worker):
        problems.append(Problem("--gap-target-pct/--worker", "only apply with --method"))
    return problems


def measure_certified(
    args: argparse.Namespace, site: Any, dayahead: Any, description: dict[str, Any]
) -> dict[str, Any]:
    """Time ``--repeat`` certified solves of the bench site (module docstring); ``description`` (the site's
    size and seed) starts the report."""
    from central.dispatch.certified import CertifiedOptions, DispatchMethod, solve_certified
    from central.dispatch.inputs import build_inputs
    from central.dispatch.optimizer import new_plan_id
    from central.dispatch.worker import solve_in_worker

    options = CertifiedOptions(
        method=DispatchMethod(args.method),
        time_limit_s=args.time_limit_s,
        aggregate_identical=not args.no_aggregate,
        **({} if args.gap_target_pct is None else {"gap_target_pct": args.gap_target_pct}),
    )
    totals: list[float] = []
    cpu: list[float] = []
    result = None
    for index in range(args.repeat):
        start_s = time.perf_counter()
        start_cpu_s = time.process_time()
        inputs = build_inputs(site, dayahead)
        result = solve_in_worker(inputs, options) if args.worker else solve_certified(inputs, options)
        result.result.to_plan(new_plan_id(dayahead.start), datetime.now(UTC))
        totals.append(time.perf_counter() - start_s)
        cpu.append(time.process_time() - start_cpu_s)
        print(
            f"run {index + 1}/{args.repeat}: total {totals[-1]:.3f} s, {result.method.value}, gap "
            f"{result.gap_pct:.4g} % ({result.stop.value}, {result.iterations} iterations)",
            file=sys.stderr,
            flush=True,
        )
    if result is None:  # pragma: no cover - repeat >= 1 is checked
        raise RuntimeError("no run")
    report = {
        **description,
        "method": result.method.value,
        "worker": bool(args.worker),
        "status": result.result.status.value,
        "objective": result.upper_bound,
        "lower_bound": result.lower_bound,
        "gap_pct": result.gap_pct,
        "stop": result.stop.value,
        "iterations": result.iterations,
        "solver_message": result.result.solver.message,
        "total_s": statistics.median(totals),
        "total_s_runs": totals,
        # CPU time of this process (single-threaded solve: close to the wall time on an idle machine; without
        # the worker's time with --worker)
        "cpu_s": statistics.median(cpu),
    }
    report["targets"] = targets(report)
    return report


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets for this size, met or not."""
    out: dict[str, Any] = {"gap_pct_max": TARGET_GAP_PCT, "gap_met": report["gap_pct"] <= TARGET_GAP_PCT}
    size = (report["cabinets"], report["steps"])
    if size in TARGET_TOTAL_S:
        out["total_s_max"] = TARGET_TOTAL_S[size]
        out["total_met"] = report["total_s"] <= TARGET_TOTAL_S[size]
    if size == (100, 96):
        out["exact_met"] = report["method"] == "exact"
    return out


def print_report(report: dict[str, Any]) -> None:
    print(
        f"dispatch {report['cabinets']} cabinets x {report['steps']} steps ({report['method']}"
        f"{' in a worker' if report['worker'] else ''}, median of {report['repeat']}): total "
        f"{report['total_s']:.4f} s (CPU {report['cpu_s']:.4f} s); cost {report['objective']:.4f}, "
        f"lower bound {report['lower_bound']:.4f}, gap {report['gap_pct']:.4g} % ({report['stop']}, "
        f"{report['iterations']} iterations; {report['status']})"
    )
    for key, value in report["targets"].items():
        print(f"target {key}: {value}")
