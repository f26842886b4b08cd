"""What a backend hands back: the LP's primal values as arrays, or why there are none."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from central.dispatch.inputs import FloatArray
from central.dispatch.warm_start import WarmStart


def _empty() -> FloatArray:
    return np.zeros(0, dtype=np.float64)


@dataclass(frozen=True)
class LpSolution:
    """Primal values of the dispatch LP. Cabinet arrays are (B, T), site series (T,).

    ``ok`` is False when the solver gave no usable solution; ``message`` then says why (and the arrays are
    empty). ``objective_value`` is the cost of this solution as the solver computed it, kept to cross-check
    the breakdown; ``cost_optimum`` the LP's optimal cost (equal unless the second stage ran).
    ``solve_s`` counts every solver run, ``stage2_s`` the part of it (and its build) for the second stage.
    """

    ok: bool
    message: str
    build_s: float
    solve_s: float
    objective_value: float = float("nan")
    cost_optimum: float = float("nan")
    stage2_s: float = 0.0
    charge_kw: FloatArray = field(default_factory=_empty)
    discharge_kw: FloatArray = field(default_factory=_empty)
    energy_kwh: FloatArray = field(default_factory=_empty)
    grid_import_kw: FloatArray = field(default_factory=_empty)
    grid_export_kw: FloatArray = field(default_factory=_empty)
    pv_used_kw: FloatArray = field(default_factory=_empty)
    unserved_kw: FloatArray = field(default_factory=_empty)
    warm_start: WarmStart | None = None  # the first stage's basis, for the next re-plan (direct backend)


def failed_solution(message: str, build_s: float = 0.0, solve_s: float = 0.0) -> LpSolution:
    return LpSolution(ok=False, message=message, build_s=build_s, solve_s=solve_s)
