"""Normal equations ``A Theta A^T dy = r`` of the block LP (:mod:`central.dispatch.block_lp`), solved by
exploiting its structure.

Ordered cabinet by cabinet, the matrix is block-arrow shaped: each cabinet's own rows (T storage rows and its
terminal row) form a tridiagonal block ``K_b`` (stored energy links consecutive rows), each such block touches
only the site's balance rows (through the cabinet's charge and discharge, one diagonal ``G_b``), and the site
rows form a small block ``M``. Eliminating the cabinets leaves the site's Schur complement

    S = M - sum_b G_b K_b^-1 G_b     (on the balance rows)

Everything per cabinet is vectorised across cabinets (arrays are time-major, ``(rows, B)``): an ``L D L^T``
factorisation of all tridiagonal blocks at once, and the Schur sum from the closed form of a tridiagonal
inverse, ``(K^-1)[i, j] = sigma[j] * prod_{m=i+1..j} (-l[m])`` for ``i <= j`` (``l`` the factor's
sub-diagonal, ``sigma`` the inverse's diagonal), computed block-wise in time so that it needs only products of
factors of modulus <= 1 (``K`` is diagonally dominant): no overflow, no division. The peak and imbalance rows
(:class:`_OtherSiteRows`) touch the balance rows only through diagonals and each other through diagonals and
one rank-one term (the peak), so they are eliminated in closed form too; only a dense T x T matrix is
inverted. Cost per factorisation: O(B T^2) flops in BLAS calls plus O(T) vectorised steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from central.dispatch.block_lp import BlockLp
from central.dispatch.inputs import FloatArray

BLOCK = 32  # time steps per block of the Schur sum


@dataclass(frozen=True)
class _OtherSiteRows:
    """The peak rows P and imbalance rows I (either may be absent) and their coupling to the balance rows b.

    Their block of the matrix is ``C = [[diag(pp) + peak 1 1^T, diag(pi)], [diag(pi), diag(ii)]]`` and their
    coupling to the balance rows ``B = [diag(bp); diag(bi)]``; zero-length arrays stand for absent rows.
    """

    steps: int
    pp: FloatArray
    peak: float
    pi: FloatArray
    ii: FloatArray
    bp: FloatArray
    bi: FloatArray

    def _reduced_peak(self) -> tuple[FloatArray, FloatArray, float]:
        """After eliminating I: the peak block is ``diag(lam) + peak 1 1^T``; returns lam, 1 / lam and the
        Sherman-Morrison factor ``peak / (1 + peak sum(1 / lam))``."""
        lam = self.pp - (self.pi**2 / self.ii if self.ii.size else 0.0)
        inverse = 1.0 / lam
        return lam, inverse, self.peak / (1.0 + self.peak * float(inverse.sum()))

    def balance_correction(self) -> tuple[FloatArray, FloatArray, float]:
        """``B^T C^-1 B = diag(d) - k v v^T`` on the balance rows: returns d, v, k."""
        diag = self.bi**2 / self.ii if self.ii.size else np.zeros(self.steps)
        if not self.pp.size:
            return diag, np.zeros(self.steps), 0.0
        g = self.bp - (self.pi * self.bi / self.ii if self.ii.size else 0.0)
        _, inverse, k = self._reduced_peak()
        return diag + g**2 * inverse, g * inverse, k

    def solve(self, rhs_peak: FloatArray, rhs_imbalance: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``C^-1 [rhs_peak; rhs_imbalance]``."""
        if not self.pp.size:
            return rhs_peak, rhs_imbalance / self.ii if self.ii.size else rhs_imbalance
        u = rhs_peak - (self.pi * rhs_imbalance / self.ii if self.ii.size else 0.0)
        _, inverse, k = self._reduced_peak()
        w_peak = inverse * u - k * inverse * float(inverse @ u)
        w_imbalance = (rhs_imbalance - self.pi * w_peak) / self.ii if self.ii.size else rhs_imbalance
        return w_peak, w_imbalance

    def apply_coupling(self, balance: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``B z`` for balance-row values z."""
        return self.bp * balance if self.pp.size else self.bp, self.bi * balance if self.ii.size else self.bi

    def apply_coupling_transpose(self, peak: FloatArray, imbalance: FloatArray) -> FloatArray:
        """``B^T [peak; imbalance]`` on the balance rows."""
        out = np.zeros(self.steps)
        if self.pp.size:
            out += self.bp * peak
        if self.ii.size:
            out += self.bi * imbalance
        return out


@dataclass(frozen=True)
class _Factor:
    pivot: FloatArray  # (n, B): D of K = L D L^T
    lower: FloatArray  # (n, B): l[t] = L[t, t-1] (row 0 unused)
    coupling: FloatArray  # (T, B): G, storage row (b, t) x balance row t
    others: _OtherSiteRows
    schur_inverse: FloatArray  # (T, T): inverse of the Schur complement on the balance rows


class BlockNormalSolver:
    """Factor ``A Theta A^T`` (regularised) for one ``theta`` and solve with it."""

    def __init__(self, lp: BlockLp) -> None:
        self.lp = lp
        self._factor: _Factor | None = None

    def factor(self, theta: FloatArray, regularization: float) -> None:
        """Factor for the diagonal ``theta`` (0 for fixed variables); every diagonal entry of the matrix is
        raised by ``regularization`` times itself (plus a tiny floor), which keeps the pivots positive."""
        diag, off, coupling = self._cabinet_blocks(theta)
        floor = regularization * float(diag.max(initial=1.0)) * 1e-6

        def raise_diagonal(values: FloatArray) -> FloatArray:
            return values + regularization * values + floor

        pivot, lower = _ldl(raise_diagonal(diag), off)
        balance, others = self._site_rows(theta, raise_diagonal)
        correction, vector, weight = others.balance_correction()
        schur = -_schur_sum(pivot, lower, coupling)
        schur[np.diag_indices(self.lp.layout.steps)] += balance - correction
        schur += weight * np.outer(vector, vector)
        inverse = np.asarray(np.linalg.inv(schur), dtype=np.float64)
        self._factor = _Factor(pivot, lower, coupling, others, inverse)

    def solve(self, cabinet_rhs: FloatArray, site_rhs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """``dy`` for the right-hand side (cabinet rows (B, T + 1), site rows)."""
        f = self._factor
        if f is None:
            raise RuntimeError("factor() first")
        lay = self.lp.layout
        steps = lay.steps
        rhs = np.array(cabinet_rhs.T, order="C")  # a copy: the caller's array is not modified
        first = _tridiagonal_solve(f.pivot, f.lower, rhs)
        rhs_peak = site_rhs[lay.peak_rows] if lay.has_peak else np.zeros(0)
        rhs_imbalance = site_rhs[lay.imbalance_rows] if lay.has_commitment else np.zeros(0)
        inner_peak, inner_imbalance = f.others.solve(rhs_peak, rhs_imbalance)
        reduced = site_rhs[:steps] - (f.coupling * first[:steps]).sum(axis=1)
        reduced -= f.others.apply_coupling_transpose(inner_peak, inner_imbalance)
        balance = f.schur_inverse @ reduced
        coupled_peak, coupled_imbalance = f.others.apply_coupling(balance)
        peak, imbalance = f.others.solve(rhs_peak - coupled_peak, rhs_imbalance - coupled_imbalance)
        site = np.empty(lay.site_rows)
        site[:steps] = balance
        if lay.has_peak:
            site[lay.peak_rows] = peak
        if lay.has_commitment:
            site[lay.imbalance_rows] = imbalance
        rhs[:steps] -= f.coupling * balance[:, np.newaxis]
        cabinet = _tridiagonal_solve(f.pivot, f.lower, rhs)
        return np.ascontiguousarray(cabinet.T), site

    def _cabinet_blocks(self, theta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Tridiagonal blocks (diagonal (n, B), super-diagonal (n - 1, B)) and the coupling G (T, B)."""
        lp, lay = self.lp, self.lp.layout
        steps = lay.steps
        charge = lp.cabinet_series(theta, "charge").T
        discharge = lp.cabinet_series(theta, "discharge").T
        energy = lp.cabinet_series(theta, "energy").copy()
        energy[lay.above_cabinets] += lp.cabinet_series(theta, "above")
        energy[lay.below_cabinets] += lp.cabinet_series(theta, "below")
        stored = energy.T
        charge_coef, discharge_coef = lp.charge_coef, lp.discharge_coef
        diag = np.empty((steps + 1, lay.cabinets))
        diag[:steps] = stored + charge_coef**2 * charge + discharge_coef**2 * discharge
        diag[1:steps] += stored[:-1]
        diag[steps] = stored[-1] + theta[lay.scalar("shortfall")] + theta[lay.scalar("terminal_slack")]
        off = np.empty((steps, lay.cabinets))
        off[: steps - 1] = -stored[:-1]
        off[steps - 1] = stored[-1]
        coupling = charge_coef * charge + discharge_coef * discharge
        return diag, off, coupling

    def _site_rows(
        self, theta: FloatArray, raise_: Callable[[FloatArray], FloatArray]
    ) -> tuple[FloatArray, _OtherSiteRows]:
        """The balance rows' diagonal of ``A Theta A^T`` and the other site rows' blocks, their diagonals
        passed through ``raise_`` (the regularisation)."""
        lp, lay = self.lp, self.lp.layout

        def t(name: str) -> FloatArray:
            return theta[lay.site(name)]

        empty = np.zeros(0)
        cabinets = (lp.cabinet_series(theta, "charge") + lp.cabinet_series(theta, "discharge")).sum(axis=0)
        gi, ge = t("grid_import"), t("grid_export")
        balance = raise_(cabinets + gi + ge + t("pv_used") + t("unserved"))
        pp, peak, bp = empty, 0.0, empty
        if lay.has_peak:
            pp, peak, bp = raise_(gi + t("peak_slack")), float(t("peak")[0]), gi
        ii, pi, bi = empty, empty, empty
        if lay.has_commitment:
            ii, bi = raise_(gi + ge + t("over") + t("under")), gi + ge
            pi = gi if lay.has_peak else empty
        return balance, _OtherSiteRows(steps=lay.steps, pp=pp, peak=peak, pi=pi, ii=ii, bp=bp, bi=bi)


def _ldl(diag: FloatArray, off: FloatArray) -> tuple[FloatArray, FloatArray]:
    """``K = L D L^T`` of symmetric tridiagonal blocks, vectorised over the columns (cabinets)."""
    pivot = np.empty_like(diag)
    lower = np.zeros_like(diag)
    pivot[0] = diag[0]
    for t in range(1, diag.shape[0]):
        lower[t] = off[t - 1] / pivot[t - 1]
        pivot[t] = diag[t] - lower[t] * off[t - 1]
    return pivot, lower


def _tridiagonal_solve(pivot: FloatArray, lower: FloatArray, rhs: FloatArray) -> FloatArray:
    """Solve ``L D L^T x = rhs`` column by column (vectorised); ``rhs`` (n, B) is not modified."""
    x = rhs.copy()
    for t in range(1, x.shape[0]):
        x[t] -= lower[t] * x[t - 1]
    x /= pivot
    for t in range(x.shape[0] - 2, -1, -1):
        x[t] -= lower[t + 1] * x[t + 1]
    return x


def _inverse_diagonal(pivot: FloatArray, lower: FloatArray) -> FloatArray:
    """Diagonal of ``K^-1``: sigma[t] = 1 / D[t] + l[t + 1]^2 sigma[t + 1]."""
    sigma = np.empty_like(pivot)
    sigma[-1] = 1.0 / pivot[-1]
    for t in range(pivot.shape[0] - 2, -1, -1):
        sigma[t] = 1.0 / pivot[t] + lower[t + 1] ** 2 * sigma[t + 1]
    return sigma


def _schur_sum(pivot: FloatArray, lower: FloatArray, coupling: FloatArray) -> FloatArray:
    """``sum_b diag(G_b) K_b^-1 diag(G_b)`` restricted to the storage rows (T x T)."""
    steps = coupling.shape[0]
    sigma = _inverse_diagonal(pivot, lower)[:steps]
    factor = -lower[:steps]  # (K^-1)[i, j] = sigma[j] prod_{m=i+1..j} factor[m] for i <= j
    blocks = [(start, min(start + BLOCK, steps)) for start in range(0, steps, BLOCK)]
    ones = np.ones((1, factor.shape[1]))
    left, right, through = [], [], []
    for start, stop in blocks:
        part = factor[start + 1 : stop]
        suffix = np.concatenate([np.cumprod(part[::-1], axis=0)[::-1], ones])  # prod_{m=i+1..stop-1}
        prefix = np.concatenate([ones, np.cumprod(part, axis=0)])  # prod_{m=start+1..j}
        left.append(coupling[start:stop] * suffix)
        right.append(coupling[start:stop] * sigma[start:stop] * prefix)
        through.append(factor[start] * prefix[-1])  # prod_{m=start..stop-1}
    out = np.empty((steps, steps))
    for i, (a, b) in enumerate(blocks):
        out[a:b, a:b] = _diagonal_block(factor[a:b], coupling[a:b], sigma[a:b])
        between = np.ones(factor.shape[1])  # prod over the blocks strictly between block i and block j
        for j in range(i + 1, len(blocks)):
            c, d = blocks[j]
            out[a:b, c:d] = (left[i] * (between * factor[c])) @ right[j].T
            out[c:d, a:b] = out[a:b, c:d].T
            between = between * through[j]
    return out


def _diagonal_block(factor: FloatArray, coupling: FloatArray, sigma: FloatArray) -> FloatArray:
    """Within one time block: ``sum_b G_i G_j sigma_j prod_{m=i+1..j} factor[m]`` for i <= j, symmetrised."""
    size = factor.shape[0]
    products = np.zeros((size, size, factor.shape[1]))  # products[i, j] = prod_{m=i+1..j} factor[m]
    for j in range(size):
        products[:j, j] = products[:j, j - 1] * factor[j]
        products[j, j] = 1.0
    upper = np.asarray(np.einsum("ib,ijb,jb->ij", coupling, products, coupling * sigma), dtype=np.float64)
    return np.triu(upper) + np.triu(upper, 1).T
