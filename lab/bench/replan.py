"""``ems bench replan``: a day of rolling re-optimizations, as the central runs them, in four variants.

On the seeded site of ``ems bench dispatch`` (default 10 cabinets x 96 intervals), re-plan at every interval
k = 0 .. R-1 the rest of the day from interval k, as the central does: the initial SoC is what the previous
plan expected after interval k-1 plus noise (``--soc-noise-pct``, clipped into the window), the load and PV
forecast of the remaining intervals are perturbed (``--forecast-noise``, relative), the end SoC the previous
plan promised is kept, and the setpoints the previous plan ran in interval k-1 are the current setpoints. The
perturbations are the same in every variant:

- ``no_smoothing``: the LP's first optimal vertex;
- ``smoothing``: the second stage without the previous plan (smoothest, from the current setpoints);
- ``stability``: the second stage with the previous plan (what the central does), cold solves;
- ``stability_warm``: the same, each first stage warm-started from the previous solve's basis.

Reported per variant: the whole ``solve_dispatch`` time p50/p99, its first stage's HiGHS time p50/p99, and
``change_next_4h_kw``: the mean |change| of the next 4 hours' setpoints between consecutive plans (over
cabinets and the intervals both plans cover), with the mean total variation per plan and the mean cost.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any

from shared.errors import InputError, Problem

VARIANTS = ("no_smoothing", "smoothing", "stability", "stability_warm")
LOOKAHEAD_H = 4.0


def register_bench(bench_subparsers: Any) -> None:
    parser = bench_subparsers.add_parser(
        "replan",
        help="a day of rolling re-optimizations: solve time cold vs warm, plan stability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cabinets", type=int, default=10, help="number of cabinets (1-1000, default 10)")
    parser.add_argument("--steps", type=int, default=96, help="intervals of the day (2-288, default 96)")
    parser.add_argument(
        "--replans", type=int, default=None, help="re-plans, one per interval (default: steps)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="random seed of the site and the noise (default 1)"
    )
    parser.add_argument(
        "--soc-noise-pct", type=float, default=0.5, help="SoC noise std. dev. [%%] (default 0.5)"
    )
    parser.add_argument(
        "--forecast-noise", type=float, default=0.02, help="relative load/PV noise std. dev. (default 0.02)"
    )
    parser.add_argument("--time-limit-s", type=float, default=60.0, help="HiGHS time limit per re-plan [s]")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.set_defaults(handler=run)


def _check_args(args: argparse.Namespace) -> None:
    problems = []
    if not 1 <= args.cabinets <= 1000:
        problems.append(Problem("--cabinets", f"must be 1-1000, got {args.cabinets}"))
    if not 2 <= args.steps <= 288:
        problems.append(Problem("--steps", f"must be 2-288, got {args.steps}"))
    if args.replans is not None and not 1 <= args.replans <= args.steps:
        problems.append(Problem("--replans", f"must be 1-{args.steps} (--steps), got {args.replans}"))
    for name, value, high in (
        ("--soc-noise-pct", args.soc_noise_pct, 10.0),
        ("--forecast-noise", args.forecast_noise, 0.5),
    ):
        if not (math.isfinite(value) and 0.0 <= value <= high):
            problems.append(Problem(name, f"must be 0-{high:g}, got {value}"))
    if not (math.isfinite(args.time_limit_s) and args.time_limit_s > 0):
        problems.append(Problem("--time-limit-s", f"must be a positive number, got {args.time_limit_s}"))
    if problems:
        raise InputError("ems bench replan", problems)


@dataclass
class _Series:
    """What one variant measured over the day."""

    total_s: list[float] = field(default_factory=list)
    first_stage_s: list[float] = field(default_factory=list)
    change_kw: list[float] = field(default_factory=list)
    variation_kw: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    failed: int = 0


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        report = measure(args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    _print_report(report)
    if args.json:
        print(json.dumps(report))
    return 0 if all(v["failed"] == 0 for v in report["variants"].values()) else 1


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from central.dispatch import solve_dispatch
    from lab.bench.dispatch import bench_site

    site, day = bench_site(args.cabinets, args.steps, args.seed)
    replans = args.replans or args.steps
    warm_site, warm_day = bench_site(1, 4)
    solve_dispatch(warm_site, warm_day)  # imports and the first HiGHS instance
    variants = {name: _day_of_replans(site, day, name, replans, args) for name in VARIANTS}
    lookahead = max(1, round(LOOKAHEAD_H * 60 / day.interval_minutes))
    return {
        "benchmark": "replan",
        "cabinets": args.cabinets,
        "steps": args.steps,
        "replans": replans,
        "seed": args.seed,
        "soc_noise_pct": args.soc_noise_pct,
        "forecast_noise": args.forecast_noise,
        "lookahead_intervals": lookahead,
        "variants": {name: _summary(series) for name, series in variants.items()},
    }


def _day_of_replans(site: Any, day: Any, variant: str, replans: int, args: argparse.Namespace) -> _Series:
    import numpy as np

    from central.dispatch import DispatchOptions, solve_dispatch

    options = DispatchOptions(
        time_limit_s=args.time_limit_s, smoothing=variant != "no_smoothing", interruptible=True
    )
    lookahead = max(1, round(LOOKAHEAD_H * 60 / day.interval_minutes))
    series = _Series()
    result: Any = None
    for k in range(replans):
        rng = np.random.default_rng([args.seed, k])  # the same noise in every variant
        soc, final, current = _state_after(site, day, result, rng, args.soc_noise_pct)
        horizon = _perturbed(day.tail(k, soc), rng, args.forecast_noise)
        start_s = time.perf_counter()
        new = solve_dispatch(
            site,
            horizon,
            options=options,
            initial_soc_pct=soc,
            final_soc_min_pct=final,
            previous_plan=result.to_plan(f"bench-{k - 1}", horizon.start)
            if variant.startswith("stability") and result is not None
            else None,
            current_setpoint_kw=current if variant != "no_smoothing" else None,
            warm_start=result.warm_start if variant == "stability_warm" and result is not None else None,
        )
        series.total_s.append(time.perf_counter() - start_s)
        if new.status.value == "failed":
            series.failed += 1
            continue
        series.first_stage_s.append(new.solver.solve_s - new.solver.stage2_s)
        series.variation_kw.append(float(np.abs(np.diff(new.setpoint_kw, axis=1)).sum()))
        series.cost.append(new.objective.total)
        if result is not None:
            # plan k starts one interval after plan k-1: compare the intervals both cover, up to 4 h ahead
            common = min(lookahead, new.steps, result.steps - 1)
            change = np.abs(new.setpoint_kw[:, :common] - result.setpoint_kw[:, 1 : common + 1])
            series.change_kw.append(float(change.mean()))
        result = new
        print(f"{variant}: re-plan {k + 1}/{replans}", file=sys.stderr, flush=True)
    return series


def _state_after(
    site: Any, day: Any, result: Any, rng: Any, soc_noise_pct: float
) -> tuple[dict[str, float], dict[str, float] | None, dict[str, float] | None]:
    """Initial SoC, promised end SoC and current setpoints after the previous plan's first interval."""
    if result is None:
        return {c.id: day.initial_soc_pct.get(c.id, 50.0) for c in site.cabinets}, None, None
    noise = (
        rng.normal(0.0, soc_noise_pct, len(site.cabinets))
        if soc_noise_pct > 0
        else [0.0] * len(site.cabinets)
    )
    soc = {
        c.id: float(min(max(result.soc_pct[b, 0] + noise[b], c.soc_min_pct), c.soc_max_pct))
        for b, c in enumerate(site.cabinets)
    }
    final = {c.id: float(result.soc_pct[b, -1]) for b, c in enumerate(site.cabinets)}
    current = {c.id: float(result.setpoint_kw[b, 0]) for b, c in enumerate(site.cabinets)}
    return soc, final, current


def _perturbed(horizon: Any, rng: Any, noise: float) -> Any:
    """The horizon with its load and PV forecast multiplied by 1 + N(0, noise) (never negative)."""
    if noise <= 0:
        return horizon
    load = [max(0.0, v * (1.0 + rng.normal(0.0, noise))) for v in horizon.load_kw]
    pv = [max(0.0, v * (1.0 + rng.normal(0.0, noise))) for v in horizon.pv_kw]
    return replace(horizon, load_kw=tuple(load), pv_kw=tuple(pv))


def _percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return float(np.percentile(values, q)) if values else None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _summary(series: _Series) -> dict[str, Any]:
    return {
        "total_p50_s": _percentile(series.total_s, 50),
        "total_p99_s": _percentile(series.total_s, 99),
        "first_stage_p50_s": _percentile(series.first_stage_s, 50),
        "first_stage_p99_s": _percentile(series.first_stage_s, 99),
        "change_next_4h_kw": _mean(series.change_kw),
        "mean_total_variation_kw": _mean(series.variation_kw),
        "mean_cost": _mean(series.cost),
        "failed": series.failed,
    }


def _print_report(report: dict[str, Any]) -> None:
    print(
        f"replan: {report['replans']} re-plans of {report['cabinets']} cabinets x {report['steps']} "
        f"intervals (SoC noise {report['soc_noise_pct']:g} %, forecast noise {report['forecast_noise']:g})"
    )
    print(
        f"{'variant':<16}{'total p50 s':>12}{'p99 s':>9}{'1st stage p50':>15}{'p99 s':>9}"
        f"{'change 4h kW':>14}{'variation kW':>14}{'failed':>8}"
    )
    for name, v in report["variants"].items():
        print(
            f"{name:<16}{_show(v['total_p50_s'], '12.4f')}{_show(v['total_p99_s'], '9.4f')}"
            f"{_show(v['first_stage_p50_s'], '15.4f')}{_show(v['first_stage_p99_s'], '9.4f')}"
            f"{_show(v['change_next_4h_kw'], '14.2f')}{_show(v['mean_total_variation_kw'], '14.1f')}"
            f"{v['failed']:>8}"
        )


def _show(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
