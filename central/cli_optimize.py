"""``ems optimize --site S --day-ahead D [--out P] [--method auto|exact|block_ipm]``: one dispatch run.

Warns on stderr about implausible values in the site file and the upload (the plausibility checks the
central runs on upload; nothing is refused here). Prints the method that ran with its lower bound and gap,
the cost breakdown, the energy, final SoC and total variation per cabinet (and the deviation from
``--previous-plan``) and the violations, and writes the plan JSON (docs/interfaces.md: plan). Exit codes: 0
with an ``optimal`` plan; 3 with an ``optimal_with_violations`` plan (written, and the first violation named
on stderr); 1 when the optimization failed (the plan is still written, with status ``failed`` and the
reason); 2 on a bad site, day-ahead or previous-plan file or option.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from shared.errors import InputError, Problem
from shared.plan import DispatchMethod

EXIT_FAILED = 1
EXIT_VIOLATIONS = 3  # the plan was made (and written) but uses a penalised slack or overlaps charge/discharge
MAX_CABINET_ROWS = 40  # a 1000-cabinet site gets a summary line, the plan has them all


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="economic dispatch of a site over a day-ahead upload; writes the plan",
        description="Solve the economic dispatch LP (docs/dispatch.md) for a site file and a day-ahead "
        "upload, print the cost breakdown, energy per cabinet and violations, and write the plan JSON.",
    )
    parser.add_argument("--site", type=Path, required=True, help="site file (.toml)")
    parser.add_argument("--day-ahead", type=Path, required=True, help="day-ahead upload (.json or .csv)")
    parser.add_argument("--out", type=Path, help="write the plan JSON here (default: do not write)")
    parser.add_argument(
        "--backend", choices=("highspy", "pyomo"), default="highspy", help="solver backend (default highspy)"
    )
    parser.add_argument(
        "--method",
        choices=[m.value for m in DispatchMethod],
        default=None,
        help="exact (the single LP), block_ipm (certified interior point for large sites) or auto (by "
        "size); default: [central] dispatch_method",
    )
    parser.add_argument(
        "--time-limit-s",
        type=float,
        default=None,
        help="time limit of the solve [s]; the best plan found by then is returned (default: [central] "
        "solver_time_limit_s)",
    )
    parser.add_argument(
        "--forbid-simultaneous",
        action="store_true",
        help="forbid charging and discharging a cabinet in the same interval (MIP)",
    )
    parser.add_argument(
        "--no-aggregate", action="store_true", help="do not merge per-unit identical cabinets (same result)"
    )
    parser.add_argument(
        "--previous-plan",
        type=Path,
        help="plan JSON being replaced: the new plan stays as close to it as the same cost allows",
    )
    parser.add_argument(
        "--no-smoothing",
        action="store_true",
        help="skip the second stage: the LP's first optimal vertex (default: [central] plan_smoothing)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from central.dispatch import DispatchOptions, solve_dispatch
    from central.dispatch.optimizer import new_plan_id
    from shared.dayahead import check_against_site, load_dayahead
    from shared.site import load_site

    site = load_site(args.site)
    dayahead = load_dayahead(args.day_ahead)
    check_against_site(dayahead, site, str(args.day_ahead))
    _warn_implausible(site, args.site, dayahead, args.day_ahead)
    previous_plan = None if args.previous_plan is None else load_plan(args.previous_plan)
    time_limit_s = site.central.solver_time_limit_s if args.time_limit_s is None else args.time_limit_s
    if not (math.isfinite(time_limit_s) and time_limit_s > 0):
        raise InputError("--time-limit-s", [Problem("", f"must be a positive number, got {time_limit_s}")])
    method = site.central.dispatch_method if args.method is None else DispatchMethod(args.method)
    options = DispatchOptions(
        method=method,
        backend=args.backend,
        time_limit_s=time_limit_s,
        forbid_simultaneous=args.forbid_simultaneous,
        aggregate_identical=not args.no_aggregate,
        smoothing=site.central.plan_smoothing and not args.no_smoothing,
        interruptible=True,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM stops HiGHS like Ctrl-C
    try:
        print(
            f"optimizing {len(site.cabinets)} cabinets x {dayahead.steps} intervals of "
            f"{dayahead.interval_minutes} min (method {method.value}, {args.backend}, time limit "
            f"{time_limit_s:g} s) ...",
            file=sys.stderr,
            flush=True,
        )
        result = solve_dispatch(site, dayahead, options=options, previous_plan=previous_plan)
    finally:
        signal.signal(signal.SIGTERM, previous)
    plan = result.to_plan(new_plan_id(dayahead.start), datetime.now(UTC))
    print_summary(result, dayahead.interval_h, sys.stdout)
    if args.out is not None:
        try:
            args.out.write_text(plan.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            raise InputError(str(args.out), [Problem("", f"cannot write: {exc.strerror or exc}")]) from exc
        print(f"plan {plan.plan_id} written to {args.out}")
    return exit_code(result.status.value, result.violations)


def _warn_implausible(site: Any, site_path: Path, dayahead: Any, dayahead_path: Path) -> None:
    """Print the plausibility findings of the site file and the upload to stderr, one line each."""
    from shared.dayahead import upload_format
    from shared.plausibility import check_dayahead, check_site

    findings = [(site_path, f) for f in check_site(site)]
    findings += [(dayahead_path, f) for f in check_dayahead(dayahead, site, upload_format(dayahead_path))]
    for path, finding in findings:
        print(f"{finding.severity.value}: {path}: {finding}", file=sys.stderr)


def exit_code(status: str, violations: tuple[str, ...]) -> int:
    """0 optimal, 3 optimal with violations (the first one named on stderr), 1 failed."""
    if status == "failed":
        return EXIT_FAILED
    if status == "optimal_with_violations":
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        first = violations[0] if violations else "see the plan"
        print(f"error: the plan has violations: {first}{more}", file=sys.stderr)
        return EXIT_VIOLATIONS
    return 0


def load_plan(path: Path) -> Any:
    """A plan JSON file; InputError (exit 2) naming the file and what is wrong."""
    from pydantic import ValidationError

    from shared.errors import pydantic_location
    from shared.plan import Plan

    try:
        return Plan.from_json(path.read_bytes())
    except OSError as exc:
        raise InputError(str(path), [Problem("", f"cannot read: {exc.strerror or exc}")]) from exc
    except ValidationError as exc:
        problems = [Problem(pydantic_location(e["loc"]), e["msg"]) for e in exc.errors()[:5]]
        raise InputError(str(path), problems) from exc


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def print_summary(result: Any, interval_h: float, out: TextIO) -> None:
    """The status, the cost breakdown, energy, SoC and plan quality per cabinet and the violations."""
    solver = result.solver
    method = f"   method: {solver.method.value}" if solver.method is not None else ""
    print(
        f"status: {result.status.value}{method}   backend: {solver.backend}   build {solver.build_s:.3f} s, "
        f"solve {solver.solve_s:.3f} s",
        file=out,
    )
    if solver.lower_bound is not None and solver.gap_pct is not None:
        print(f"lower bound: {solver.lower_bound:.2f}   gap: {solver.gap_pct:.4g} %", file=out)
    if solver.message:
        print(f"solver: {solver.message}", file=out)
    if result.status.value != "failed":
        objective = result.objective
        print("\ncost breakdown", file=out)
        for name in (
            "energy_cost",
            "export_revenue",
            "cycle_cost",
            "demand_charge",
            "imbalance_cost",
            "penalties",
        ):
            print(f"  {name:<16}{getattr(objective, name):>14.2f}", file=out)
        print(f"  {'total':<16}{objective.total:>14.2f}", file=out)
        _print_cabinets(result, interval_h, out)
    print(f"\nviolations: {len(result.violations) or 'none'}", file=out)
    for violation in result.violations:
        print(f"  - {violation}", file=out)


def _print_cabinets(result: Any, interval_h: float, out: TextIO) -> None:
    """Per cabinet: energy charged and discharged, final SoC, total variation (and deviation from the
    previous plan); the first MAX_CABINET_ROWS, then a summary line."""
    quality = result.quality
    variation = quality.total_variation_kw
    deviation = quality.deviation_from_previous_kw
    charged, discharged = result.energy_kwh(interval_h)
    width = max(8, *(len(c) for c in result.cabinet_ids))
    header = f"\n{'cabinet':<{width}}  {'charged kWh':>12}  {'discharged kWh':>14}  {'final SoC %':>11}"
    header += f"  {'variation kW':>12}" + (f"  {'deviation kW':>12}" if deviation is not None else "")
    print(header, file=out)
    for b, cabinet_id in enumerate(result.cabinet_ids[:MAX_CABINET_ROWS]):
        row = (
            f"{cabinet_id:<{width}}  {charged[b]:>12.1f}  {discharged[b]:>14.1f}  "
            f"{float(result.soc_pct[b, -1]):>11.1f}  {variation[cabinet_id]:>12.1f}"
        )
        if deviation is not None:
            row += f"  {deviation[cabinet_id]:>12.1f}"
        print(row, file=out)
    hidden = len(result.cabinet_ids) - MAX_CABINET_ROWS
    if hidden > 0:
        print(
            f"... and {hidden} more cabinets (all: {charged.sum():.1f} kWh charged, "
            f"{discharged.sum():.1f} kWh discharged; see the plan)",
            file=out,
        )
    total = f"\ntotal variation {sum(variation.values()):.1f} kW"
    if deviation is not None:
        total += f", deviation from the previous plan {sum(deviation.values()):.1f} kW"
    if quality.cost_tolerance_rel > 0:
        total += (
            f"; cost optimum {quality.cost_optimum:.2f} (plan within {quality.cost_tolerance_rel:g} of it)"
        )
    else:
        total += " (second stage off: the LP's first optimal vertex)"
    print(total, file=out)
