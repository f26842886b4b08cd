"""Valid lower bounds on the dispatch LP's optimal cost, from any row duals.

For the block LP ``min c^T x, A x = b, l <= x <= u`` (:mod:`central.dispatch.block_lp`) and ANY vector of row
duals ``y``, weak duality with the bounds kept gives

    optimum >= b^T y + sum_j min(r_j l_j, r_j u_j),   r = c - A^T y

(the Lagrangian of the rows, minimised over the box). Its value needs no optimality or feasibility of ``y``:
an approximate dual (an interior point iterate, a solver stopped early) still certifies a valid bound, and
the better the dual, the tighter the bound. The finite bounds the block LP gives to variables that are
unbounded in the LP hold at every optimal solution, which is all the argument needs.
"""

from __future__ import annotations

import numpy as np

from central.dispatch.block_lp import BlockLp
from central.dispatch.inputs import FloatArray


def lagrangian_bound(lp: BlockLp, cabinet_dual: FloatArray, site_dual: FloatArray) -> float:
    """A lower bound on the LP's optimal cost from row duals (cabinet rows (B, T + 1), site rows)."""
    reduced = lp.cost - lp.apply_transpose(cabinet_dual, site_dual)
    box = np.minimum(reduced * lp.lower, reduced * lp.upper)
    value = float(np.sum(lp.cabinet_rhs * cabinet_dual)) + float(lp.site_rhs @ site_dual) + float(box.sum())
    return value if np.isfinite(value) else float("-inf")


def trivial_bound(lp: BlockLp) -> float:
    """The bound for zero duals: every variable at its cheapest bound, ignoring all rows."""
    zero_cabinet = np.zeros_like(lp.cabinet_rhs)
    return lagrangian_bound(lp, zero_cabinet, np.zeros_like(lp.site_rhs))
