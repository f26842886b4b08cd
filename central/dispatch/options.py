"""Options of the economic dispatch: backend, limits and the HiGHS settings chosen by measurement.

The HiGHS defaults here were measured with ``ems bench dispatch`` on a 2-core machine (docs/dispatch.md):
the dual simplex beats the interior point method (IPX) on this LP at every size tried (100 x 96: 0.6 s vs
1.5 s; 1000 x 96: 44 s vs 58 s, 43 s without crossover), presolve helps a little, and the parallel dual
simplex gains nothing on 2 cores. Every solve runs with a time limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from shared.plan import DispatchMethod

Backend = Literal["highspy", "pyomo"]
LpAlgorithm = Literal["simplex", "ipm", "choose"]
BACKENDS: tuple[Backend, ...] = ("highspy", "pyomo")
LP_ALGORITHMS: tuple[LpAlgorithm, ...] = ("simplex", "ipm", "choose")


@dataclass(frozen=True)
class DispatchOptions:
    """How to solve the dispatch LP.

    - ``backend``: ``highspy`` (direct, fast, default) or ``pyomo`` (the readable reference model).
    - ``time_limit_s``: HiGHS stops after this [s]; the plan is then ``failed``.
    - ``forbid_simultaneous``: forbid charging and discharging a cabinet in the same interval. This adds a
      binary per cabinet and interval (a MIP, solved to ``mip_gap`` within the time limit).
    - ``mip_gap``: relative MIP gap [-] at which the MIP stops (only with ``forbid_simultaneous``).
    - ``lp_algorithm``: HiGHS LP algorithm: ``simplex`` (measured fastest), ``ipm`` or ``choose``.
    - ``presolve``: HiGHS presolve on or off.
    - ``threads``: HiGHS threads (1: the machine is shared with the edges and the service).
    - ``aggregate_identical``: solve cabinets with identical per-unit parameters and state as one (exact,
      see :mod:`central.dispatch.aggregation`), then split the result in proportion to capacity.
    - ``smoothing``: run the second stage (docs/dispatch.md: plan quality): among the plans within
      ``cost_tolerance_rel`` of the optimal cost, the one closest to the previous plan, then with the least
      total variation of the setpoints, then with the least SoC spread between cabinets of one model. Off:
      the plan is the LP's first optimal vertex.
    - ``cost_tolerance_rel``: how far above the optimal cost [-, relative to ``max(|optimum|, 1)``] the
      second stage may go.
    - ``method``: ``exact`` (the single LP), ``block_ipm`` (the certified block interior point for large
      sites) or ``auto``: ``exact`` up to ``exact_max_cabinet_steps`` cabinets x intervals (after merging
      per-unit identical cabinets), ``block_ipm`` above (docs/dispatch.md: choosing the method).
      ``forbid_simultaneous`` (a MIP) always runs ``exact``.
    - ``gap_target_pct``: ``block_ipm`` stops when its certified gap is at or below this [%].
    - ``exact_max_cabinet_steps``: the size up to which ``auto`` runs ``exact``.
    - ``in_worker``: run ``block_ipm`` in a worker process (the central service: its event loop, HTTP and
      OPC UA stay responsive); otherwise in the calling thread.
    - ``polish``: let the exact path's second stage be the interior point polish where it applies (no
      previous plan, no current setpoints; docs/dispatch.md: plan quality): faster, within the cost
      tolerance and near the smoothest plan, but not the lexicographic optimum of the plan-quality criteria
      (so off by default).
    - ``interruptible``: let Ctrl-C stop HiGHS (``highspy`` backend). For command-line processes only: it
      takes the GIL at every simplex iteration, so with another busy Python thread (a service's event loop)
      the solve slows down by orders of magnitude. Off, HiGHS runs without touching the GIL.
    """

    backend: Backend = "highspy"
    time_limit_s: float = 30.0
    forbid_simultaneous: bool = False
    mip_gap: float = 1e-4
    lp_algorithm: LpAlgorithm = "simplex"
    presolve: bool = True
    threads: int = 1
    aggregate_identical: bool = True
    smoothing: bool = True
    cost_tolerance_rel: float = 1e-6
    interruptible: bool = False
    method: DispatchMethod = DispatchMethod.AUTO
    gap_target_pct: float = 0.01
    exact_max_cabinet_steps: int = 12_000
    in_worker: bool = False
    polish: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not (math.isfinite(self.time_limit_s) and self.time_limit_s > 0):
            raise ValueError(f"time_limit_s must be a positive number of seconds, got {self.time_limit_s!r}")
        if not (math.isfinite(self.mip_gap) and 0.0 <= self.mip_gap < 1.0):
            raise ValueError(f"mip_gap must be in [0, 1), got {self.mip_gap!r}")
        if self.lp_algorithm not in LP_ALGORITHMS:
            raise ValueError(
                f"lp_algorithm must be one of {', '.join(LP_ALGORITHMS)}, got {self.lp_algorithm!r}"
            )
        if not (math.isfinite(self.cost_tolerance_rel) and 0.0 <= self.cost_tolerance_rel < 1.0):
            raise ValueError(f"cost_tolerance_rel must be in [0, 1), got {self.cost_tolerance_rel!r}")
        if not isinstance(self.method, DispatchMethod):
            raise ValueError(f"method must be one of auto, exact, block_ipm, got {self.method!r}")
        if not (math.isfinite(self.gap_target_pct) and self.gap_target_pct >= 0):
            raise ValueError(f"gap_target_pct must be a number >= 0, got {self.gap_target_pct!r}")
        if self.exact_max_cabinet_steps < 0:
            raise ValueError(f"exact_max_cabinet_steps must be >= 0, got {self.exact_max_cabinet_steps!r}")
        if not 1 <= self.threads <= 64:
            raise ValueError(f"threads must be 1-64, got {self.threads!r}")

    def highs_options(self) -> dict[str, bool | int | float | str]:
        """The HiGHS option values for these options (both backends pass the same ones)."""
        options: dict[str, bool | int | float | str] = {
            "time_limit": float(self.time_limit_s),
            "solver": self.lp_algorithm,
            "presolve": "on" if self.presolve else "off",
            "threads": self.threads,
            "output_flag": False,
        }
        if self.forbid_simultaneous:
            options["mip_rel_gap"] = float(self.mip_gap)
            del options["solver"]  # the MIP solver picks its own LP algorithm
        return options
