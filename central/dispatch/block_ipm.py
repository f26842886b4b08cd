"""A primal-dual interior point method (Mehrotra predictor-corrector) for the block LP.

Every variable of :class:`~central.dispatch.block_lp.BlockLp` is boxed, ``l <= x <= u``, and every row an
equality, ``A x = b``. One iteration solves the Newton system of the perturbed optimality conditions

    A x = b,   A^T y + z_l - z_u = c,   (x - l) z_l = mu,   (u - x) z_u = mu

through the normal equations ``A Theta A^T dy = r`` (:class:`~central.dispatch.block_kkt.BlockNormalSolver`,
which exploits the cabinet blocks), once for the affine direction and once for the centred, corrected one.
Variables with ``l == u`` are held at their value (their ``Theta`` and bound duals are 0). The iterates are
not exactly feasible; the driver (:mod:`central.dispatch.certified`) turns them into feasible plans and valid
lower bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from central.dispatch.block_kkt import BlockNormalSolver
from central.dispatch.block_lp import BlockLp
from central.dispatch.inputs import FloatArray

STEP_TO_BOUNDARY = 0.995  # fraction of the way to the boundary that a step goes
FIXED_WIDTH = 1e-9  # a box narrower than this [kW or kWh] holds a fixed variable
REGULARIZATION = 1e-12  # relative increase of the normal equations' diagonal
MIN_GAP = 1e-300  # distances to a bound are kept above this (a step may round onto the bound)
START_INSET = 0.45  # the starting point keeps this fraction of each box width away from the bounds
REFINEMENTS = 1  # iterative refinement steps of every Newton direction


@dataclass(frozen=True)
class Iterate:
    """What the driver needs from an iteration: primal values, row duals and the progress measures."""

    iteration: int
    x: FloatArray
    cabinet_dual: FloatArray  # (B, T + 1)
    site_dual: FloatArray
    mu: float  # average complementarity
    primal_residual: float  # max |A x - b| relative to 1 + max |b|


@dataclass(frozen=True)
class _Direction:
    x: FloatArray
    cabinet_dual: FloatArray
    site_dual: FloatArray
    lower_dual: FloatArray
    upper_dual: FloatArray


class InteriorPoint:
    """The iteration state; :meth:`step` performs one predictor-corrector iteration."""

    def __init__(self, lp: BlockLp) -> None:
        self.lp = lp
        self.solver = BlockNormalSolver(lp)
        width = lp.upper - lp.lower
        self.fixed: NDArray[np.intp] = np.flatnonzero(width <= FIXED_WIDTH)
        self.free = np.ones(lp.layout.size)
        self.free[self.fixed] = 0.0
        self.count = max(2 * (lp.layout.size - self.fixed.size), 1)
        self.iteration = 0
        self._start()

    def _start(self) -> None:
        """Primal point: the middle of every box, moved toward the rows' least-squares solution by at most
        ``0.5 - START_INSET`` of the box width; dual point: a least-squares fit of ``A^T y`` to the costs;
        bound duals from the remaining reduced costs."""
        lp = self.lp
        width = (lp.upper - lp.lower) * self.free
        middle = lp.lower + 0.5 * width
        unit = self.free.copy()
        self.solver.factor(unit, REGULARIZATION)
        residual_cabinet, residual_site = lp.apply(middle)
        step_cabinet, step_site = self.solver.solve(
            lp.cabinet_rhs - residual_cabinet, lp.site_rhs - residual_site
        )
        x = middle + unit * lp.apply_transpose(step_cabinet, step_site)
        self.x = np.clip(x, lp.lower + START_INSET * width, lp.upper - START_INSET * width)
        cost_cabinet, cost_site = lp.apply(unit * lp.cost)
        self.cabinet_dual, self.site_dual = self.solver.solve(cost_cabinet, cost_site)
        reduced = (lp.cost - lp.apply_transpose(self.cabinet_dual, self.site_dual)) * self.free
        floor = max(float(np.abs(reduced).max(initial=0.0)) * 1e-2, 1e-8)
        self.lower_dual = (np.maximum(reduced, 0.0) + floor) * self.free
        self.upper_dual = (np.maximum(-reduced, 0.0) + floor) * self.free

    def _gaps(self) -> tuple[FloatArray, FloatArray]:
        """Distances to the lower and upper bounds (1 for fixed variables, which carry no duals)."""
        lower_gap = np.maximum(self.x - self.lp.lower, MIN_GAP)
        upper_gap = np.maximum(self.lp.upper - self.x, MIN_GAP)
        lower_gap[self.fixed] = 1.0
        upper_gap[self.fixed] = 1.0
        return lower_gap, upper_gap

    def _primal_residuals(self) -> tuple[FloatArray, FloatArray]:
        ax_cabinet, ax_site = self.lp.apply(self.x)
        return self.lp.cabinet_rhs - ax_cabinet, self.lp.site_rhs - ax_site

    def _mu(self, lower_gap: FloatArray, upper_gap: FloatArray) -> float:
        return float((lower_gap @ self.lower_dual + upper_gap @ self.upper_dual) / self.count)

    def step(self) -> Iterate:
        """One iteration: Mehrotra's affine predictor, then the centred, second-order corrected direction."""
        newton = _Newton(self)
        lower_product = newton.lower_gap * self.lower_dual
        upper_product = newton.upper_gap * self.upper_dual
        affine = newton.direction(-lower_product, -upper_product)
        primal_step, dual_step = self._step_lengths(affine, newton, 1.0)
        affine_mu = (
            (newton.lower_gap + primal_step * affine.x) @ (self.lower_dual + dual_step * affine.lower_dual)
            + (newton.upper_gap - primal_step * affine.x) @ (self.upper_dual + dual_step * affine.upper_dual)
        ) / self.count
        mu = newton.mu
        target = (min(1.0, (float(affine_mu) / mu) ** 3) * mu if mu > 0 else 0.0) * self.free
        corrected = newton.direction(
            target - lower_product - affine.x * affine.lower_dual,
            target - upper_product + affine.x * affine.upper_dual,
        )
        primal_step, dual_step = self._step_lengths(corrected, newton, STEP_TO_BOUNDARY)
        self.x = self.x + primal_step * corrected.x
        self.cabinet_dual = self.cabinet_dual + dual_step * corrected.cabinet_dual
        self.site_dual = self.site_dual + dual_step * corrected.site_dual
        self.lower_dual = self.lower_dual + dual_step * corrected.lower_dual
        self.upper_dual = self.upper_dual + dual_step * corrected.upper_dual
        self.iteration += 1
        return self._iterate()

    def _step_lengths(self, d: _Direction, newton: _Newton, fraction: float) -> tuple[float, float]:
        """The longest steps in [0, 1] (times ``fraction``) that keep gaps and bound duals non-negative."""
        primal = 1.0 / max(
            _fastest_decrease(d.x, newton.lower_gap), _fastest_decrease(-d.x, newton.upper_gap)
        )
        fixed = 1.0 - self.free  # bound duals of fixed variables are 0 and do not move
        dual = 1.0 / max(
            _fastest_decrease(d.lower_dual, self.lower_dual + fixed),
            _fastest_decrease(d.upper_dual, self.upper_dual + fixed),
        )
        return min(1.0, fraction * primal), min(1.0, fraction * dual)

    def _iterate(self) -> Iterate:
        lower_gap, upper_gap = self._gaps()
        primal_cabinet, primal_site = self._primal_residuals()
        rhs_scale = 1.0 + max(float(np.abs(self.lp.cabinet_rhs).max()), float(np.abs(self.lp.site_rhs).max()))
        primal = max(float(np.abs(primal_cabinet).max()), float(np.abs(primal_site).max())) / rhs_scale
        return Iterate(
            iteration=self.iteration,
            x=self.x,
            cabinet_dual=self.cabinet_dual,
            site_dual=self.site_dual,
            mu=self._mu(lower_gap, upper_gap),
            primal_residual=primal,
        )


class _Newton:
    """The Newton system of one iteration: gaps, residuals, ``Theta`` and its factorisation."""

    def __init__(self, ipm: InteriorPoint) -> None:
        lp = ipm.lp
        self.ipm = ipm
        self.lower_gap, self.upper_gap = ipm._gaps()
        self.primal_cabinet, self.primal_site = ipm._primal_residuals()
        dual = lp.cost - lp.apply_transpose(ipm.cabinet_dual, ipm.site_dual) - ipm.lower_dual
        dual += ipm.upper_dual
        self.dual = dual * ipm.free
        self.mu = ipm._mu(self.lower_gap, self.upper_gap)
        with np.errstate(
            over="ignore"
        ):  # a gap of ~1e-300 gives inf, and Theta 0: the variable is at its bound
            scaling = ipm.lower_dual / self.lower_gap + ipm.upper_dual / self.upper_gap
            self.theta = ipm.free / (scaling + (1.0 - ipm.free))
        ipm.solver.factor(self.theta, REGULARIZATION)

    def direction(self, lower_rhs: FloatArray, upper_rhs: FloatArray) -> _Direction:
        """The Newton direction for complementarity right-hand sides ``lower_rhs``, ``upper_rhs``."""
        ipm, lp, theta = self.ipm, self.ipm.lp, self.theta
        reduced = self.dual - lower_rhs / self.lower_gap + upper_rhs / self.upper_gap
        a_cabinet, a_site = lp.apply(theta * reduced)
        dy_cabinet, dy_site = ipm.solver.solve(self.primal_cabinet + a_cabinet, self.primal_site + a_site)
        dx = theta * (lp.apply_transpose(dy_cabinet, dy_site) - reduced)
        for _ in range(REFINEMENTS):  # A dx = primal residual, to the accuracy the factor allows
            ax_cabinet, ax_site = lp.apply(dx)
            fix_cabinet, fix_site = ipm.solver.solve(
                self.primal_cabinet - ax_cabinet, self.primal_site - ax_site
            )
            dy_cabinet += fix_cabinet
            dy_site += fix_site
            dx += theta * lp.apply_transpose(fix_cabinet, fix_site)
        dz_lower = (lower_rhs - ipm.lower_dual * dx) / self.lower_gap
        dz_upper = (upper_rhs + ipm.upper_dual * dx) / self.upper_gap
        return _Direction(dx, dy_cabinet, dy_site, dz_lower, dz_upper)


def _fastest_decrease(change: FloatArray, value: FloatArray) -> float:
    """``max(-change / value)`` over positive ``value``, at least a tiny positive number: ``value + a *
    change >= 0`` holds for every ``a`` up to its inverse."""
    with np.errstate(divide="ignore", over="ignore"):
        return max(float(np.max(-change / value, initial=0.0)), 1e-300)
