"""The method options of ``ems bench dispatch`` (``--method auto|exact|block_ipm``, ``--gap-target-pct``,
``--worker``) and the large-site targets (with the total times in :mod:`lab.bench.dispatch`): 100 x 96 runs
``exact``, the gap is at most 0.1 %.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from shared.errors import Problem

METHODS = ("auto", "exact", "block_ipm")
TARGET_GAP_PCT = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method``, ``--gap-target-pct``, ``--worker``."""
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="the dispatch method (default auto: exact for small sites, block_ipm by size)",
    )
    parser.add_argument(
        "--gap-target-pct",
        type=float,
        default=None,
        help="block_ipm stops when the certified gap is at or below this [%%] (default 0.01)",
    )
    parser.add_argument(
        "--worker", action="store_true", help="run block_ipm in a worker process, as the central does"
    )


def check_arguments(args: argparse.Namespace) -> list[Problem]:
    problems = []
    gap = args.gap_target_pct
    if gap is not None and not (math.isfinite(gap) and gap >= 0):
        problems.append(Problem("--gap-target-pct", f"must be a number >= 0, got {gap}"))
    return problems


def targets(report: dict[str, Any]) -> dict[str, Any]:
    """The large-site issue's targets for this size, met or not."""
    out: dict[str, Any] = {"gap_pct_max": TARGET_GAP_PCT}
    if report["gap_pct"] is not None:
        out["gap_met"] = report["gap_pct"] <= TARGET_GAP_PCT
    if (report["cabinets"], report["steps"]) == (100, 96):
        out["exact_met"] = report["method"] == "exact"
    return out
