"""Warm start of a re-optimization: the previous solve's basis, shifted by the elapsed intervals.

Every column and row of the direct backend's LP carries a label: its family (``charge``, ``storage``, ...),
its cabinet and the start time of its interval. A re-plan of the same site later in the day has the same
families for the intervals both horizons cover, so each of its columns and rows takes the basis status of
the previous column or row with the same label; new ones start nonbasic (columns, at their lower bound) or
basic (rows). The count of basic variables is then repaired (a basis has one per row) and HiGHS starts the
dual simplex from there instead of from scratch (it skips presolve for a given basis, so this only pays
when the basis is close: measured with ``ems bench replan``, docs/dispatch.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import highspy
import numpy as np
from numpy.typing import NDArray

IndexArray = NDArray[np.int64]
_BASIC = int(highspy.HighsBasisStatus.kBasic)
_LOWER = int(highspy.HighsBasisStatus.kLower)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NONE = -1


@dataclass
class Labels:
    """Per column (or row): family code, cabinet index (-1: none) and interval index (-1: none)."""

    family: list[IndexArray] = field(default_factory=list)
    cabinet: list[IndexArray] = field(default_factory=list)
    step: list[IndexArray] = field(default_factory=list)

    def add(self, family: int, cabinet: IndexArray, step: IndexArray) -> None:
        count = int(np.broadcast_shapes(cabinet.shape, step.shape)[0])
        self.family.append(np.full(count, family, dtype=np.int64))
        self.cabinet.append(np.broadcast_to(cabinet, (count,)).astype(np.int64))
        self.step.append(np.broadcast_to(step, (count,)).astype(np.int64))

    def arrays(self) -> tuple[IndexArray, IndexArray, IndexArray]:
        empty = np.zeros(0, dtype=np.int64)
        return (
            np.concatenate(self.family) if self.family else empty,
            np.concatenate(self.cabinet) if self.cabinet else empty,
            np.concatenate(self.step) if self.step else empty,
        )


def cabinet_steps(cabinets: IndexArray, steps: int) -> tuple[IndexArray, IndexArray]:
    """Labels of a (cabinets, T) block, cabinet-major."""
    return np.repeat(cabinets, steps), np.tile(np.arange(steps, dtype=np.int64), cabinets.size)


def steps_only(steps: int) -> tuple[IndexArray, IndexArray]:
    return np.full(1, _NONE, dtype=np.int64), np.arange(steps, dtype=np.int64)


def cabinets_only(cabinets: IndexArray) -> tuple[IndexArray, IndexArray]:
    return cabinets, np.full(1, _NONE, dtype=np.int64)


def scalar() -> tuple[IndexArray, IndexArray]:
    return np.full(1, _NONE, dtype=np.int64), np.full(1, _NONE, dtype=np.int64)


@dataclass(frozen=True)
class LpLayout:
    """What every column and row of one LP means, in absolute terms (cabinet ids, interval start times)."""

    cabinet_ids: tuple[str, ...]
    start: datetime
    interval_minutes: int
    columns: tuple[IndexArray, IndexArray, IndexArray]
    rows: tuple[IndexArray, IndexArray, IndexArray]

    def keys(
        self, labels: tuple[IndexArray, IndexArray, IndexArray], cabinet_codes: dict[str, int]
    ) -> IndexArray:
        """One int64 per column or row: family, cabinet (by id) and interval start (minutes since 1970)."""
        family, cabinet, step = labels
        codes = np.array([cabinet_codes.setdefault(c, len(cabinet_codes)) for c in self.cabinet_ids] + [0])
        cabinet_code = np.where(cabinet >= 0, codes[cabinet] + 1, 0)
        first_minute = int((self.start - _EPOCH).total_seconds() // 60)
        minute = np.where(step >= 0, first_minute + step * self.interval_minutes + 1, 0)
        return (family * (1 << 20) + cabinet_code) * (1 << 32) + minute


@dataclass(frozen=True)
class WarmStart:
    """A solved LP's basis with its layout; :func:`shifted_basis` maps it onto a later LP."""

    layout: LpLayout
    col_status: NDArray[np.int8]
    row_status: NDArray[np.int8]


def capture(highs: highspy.Highs, layout: LpLayout) -> WarmStart | None:
    """The basis HiGHS holds now (None when it has no valid one)."""
    basis = highs.getBasis()
    if not basis.valid:
        return None
    cols = np.fromiter((int(s) for s in basis.col_status), dtype=np.int8, count=len(basis.col_status))
    rows = np.fromiter((int(s) for s in basis.row_status), dtype=np.int8, count=len(basis.row_status))
    return WarmStart(layout, cols, rows)


def shifted_basis(previous: WarmStart, layout: LpLayout) -> highspy.HighsBasis | None:
    """The previous basis on the new LP's columns and rows (same labels), with one basic variable per row;
    None when nothing matches."""
    codes: dict[str, int] = {}
    col_status, col_matched = _carry(previous, layout, codes, rows=False)
    row_status, row_matched = _carry(previous, layout, codes, rows=True)
    if not (col_matched.any() or row_matched.any()):
        return None
    _repair_count(col_status, row_status, col_matched, row_matched)
    basis = highspy.HighsBasis()
    basis.col_status = [highspy.HighsBasisStatus(int(s)) for s in col_status]
    basis.row_status = [highspy.HighsBasisStatus(int(s)) for s in row_status]
    basis.valid = True
    return basis


def _carry(
    previous: WarmStart, layout: LpLayout, codes: dict[str, int], *, rows: bool
) -> tuple[NDArray[np.int8], NDArray[np.bool_]]:
    old_keys = previous.layout.keys(previous.layout.rows if rows else previous.layout.columns, codes)
    new_keys = layout.keys(layout.rows if rows else layout.columns, codes)
    default = _BASIC if rows else _LOWER
    if old_keys.size == 0:
        return np.full(new_keys.size, default, dtype=np.int8), np.zeros(new_keys.size, dtype=bool)
    old_status = previous.row_status if rows else previous.col_status
    order = np.argsort(old_keys, kind="stable")
    sorted_keys, sorted_status = old_keys[order], old_status[order]
    position = np.minimum(np.searchsorted(sorted_keys, new_keys), sorted_keys.size - 1)
    matched = sorted_keys[position] == new_keys
    return np.where(matched, sorted_status[position], default).astype(np.int8), matched


def _repair_count(
    col_status: NDArray[np.int8],
    row_status: NDArray[np.int8],
    col_matched: NDArray[np.bool_],
    row_matched: NDArray[np.bool_],
) -> None:
    """Make the number of basic variables equal the number of rows: drop new columns from the basis first
    (then any), or add the slacks of new rows first (then any)."""
    surplus = int((col_status == _BASIC).sum() + (row_status == _BASIC).sum()) - row_status.size
    if surplus > 0:
        basic = np.flatnonzero(col_status == _BASIC)
        ranked = basic[np.argsort(col_matched[basic], kind="stable")]  # unmatched (False) first
        col_status[ranked[:surplus]] = _LOWER
    elif surplus < 0:
        nonbasic = np.flatnonzero(row_status != _BASIC)
        ranked = nonbasic[np.argsort(row_matched[nonbasic], kind="stable")]
        row_status[ranked[:-surplus]] = _BASIC
