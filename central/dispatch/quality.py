"""The second stage's criteria and measures (docs/dispatch.md: plan quality), the same for both backends.

Among the plans whose cost is within ``cost_tolerance_rel`` of the LP optimum, the second stage minimises,
in this order (each criterion only when it applies):

1. ``DEVIATION``: ``sum |p[b,t] - previous[b,t]|`` over the intervals the previous plan covers [kW];
2. ``VARIATION``: ``sum_b sum_t |p[b,t] - p[b,t-1]|``, ``p[b,-1]`` the current setpoint when known [kW];
3. ``SPREAD``: ``sum_t (max - min)`` of the SoC [%] of the cabinets of one per-unit model, per model;
4. ``THROUGHPUT``: ``sum (c + d)`` [kW], only when the plan would otherwise charge and discharge a cabinet
   in the same interval for no gain (possible where that costs nothing, e.g. efficiency 1 and no cycle cost).

Each criterion is minimised over the optimal face of the one before (the variables and rows the previous
optimum's reduced costs and duals hold at a bound stay there) plus a row that keeps its value within
``CHAIN_TOLERANCE_REL``; the first one over the LP's optimal face plus the cost-bound row.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from central.dispatch.inputs import DispatchInputs, FloatArray

IndexArray = NDArray[np.intp]

# |reduced cost| or |dual| above this holds a column or an inequality row at its bound in later stages
# (complementary slackness: every optimal solution does so). HiGHS's own values for "zero" are ~1e-12.
FACE_TOLERANCE = 1e-9
# A criterion already minimised may grow by this (relative to max(1, |value|)) in the later stages: solver
# round-off, not a trade-off.
CHAIN_TOLERANCE_REL = 1e-7
POWER_TOLERANCE_KW = 1e-6


class Criterion(StrEnum):
    """A second-stage criterion, in the order they are minimised."""

    DEVIATION = "deviation"
    VARIATION = "variation"
    SPREAD = "spread"
    THROUGHPUT = "throughput"


def cost_bound(optimum: float, tolerance_rel: float) -> float:
    """The highest cost the second stage may reach: ``optimum + tolerance_rel * max(|optimum|, 1)``."""
    return optimum + tolerance_rel * max(abs(optimum), 1.0)


def chain_bound(value: float) -> float:
    """The bound a minimised criterion keeps in the later stages."""
    return value + CHAIN_TOLERANCE_REL * max(abs(value), 1.0)


def covered(x: DispatchInputs) -> NDArray[np.bool_]:
    """(B, T): where the previous plan gives a reference setpoint."""
    if x.previous_setpoint_kw is None:
        return np.zeros((x.cabinets, x.steps), dtype=bool)
    return np.isfinite(x.previous_setpoint_kw)


def current_known(x: DispatchInputs) -> NDArray[np.bool_]:
    """(B,): cabinets whose current setpoint is known."""
    if x.current_setpoint_kw is None:
        return np.zeros(x.cabinets, dtype=bool)
    return np.isfinite(x.current_setpoint_kw)


def per_unit_models(x: DispatchInputs) -> IndexArray:
    """The per-unit model of every cabinet: same C-rates, efficiencies, SoC window and cycle cost."""
    keys = np.column_stack(
        [
            x.charge_limit_kw / x.capacity_kwh,
            x.discharge_limit_kw / x.capacity_kwh,
            x.charge_efficiency,
            x.discharge_efficiency,
            x.soc_min_pct,
            x.soc_max_pct,
            x.cycle_cost_per_kwh,
        ]
    )
    _, model = np.unique(keys, axis=0, return_inverse=True)
    return np.asarray(model, dtype=np.intp).ravel()


def spread_groups(x: DispatchInputs) -> list[IndexArray]:
    """Cabinets (LP order) of every per-unit model that has more than one."""
    model = per_unit_models(x)
    counts = np.bincount(model)
    return [np.flatnonzero(model == m).astype(np.intp) for m in np.flatnonzero(counts > 1)]


def criteria(x: DispatchInputs) -> tuple[Criterion, ...]:
    """The criteria that apply to ``x`` (THROUGHPUT is decided after the others)."""
    applicable: list[Criterion] = []
    if covered(x).any():
        applicable.append(Criterion.DEVIATION)
    if x.steps > 1 or current_known(x).any():
        applicable.append(Criterion.VARIATION)
    if spread_groups(x):
        applicable.append(Criterion.SPREAD)
    return tuple(applicable)


def needs_throughput(charge_kw: FloatArray, discharge_kw: FloatArray) -> bool:
    """True when some cabinet charges and discharges in the same interval."""
    return bool(np.any(np.minimum(charge_kw, discharge_kw) > POWER_TOLERANCE_KW))


def total_variation_kw(setpoint_kw: FloatArray, current_setpoint_kw: FloatArray | None) -> FloatArray:
    """(B,): ``sum_t |p[t] - p[t-1]|``, from the current setpoint where it is known."""
    variation = np.abs(np.diff(setpoint_kw, axis=1)).sum(axis=1)
    if current_setpoint_kw is not None and setpoint_kw.shape[1] > 0:
        first_step = np.abs(setpoint_kw[:, 0] - current_setpoint_kw)
        variation = variation + np.where(np.isfinite(first_step), first_step, 0.0)
    return np.asarray(variation, dtype=np.float64)


def deviation_kw(setpoint_kw: FloatArray, previous_setpoint_kw: FloatArray) -> FloatArray:
    """(B,): ``sum |p[t] - previous[t]|`` over the intervals the previous plan covers."""
    difference = np.abs(setpoint_kw - previous_setpoint_kw)
    return np.asarray(np.where(np.isfinite(difference), difference, 0.0).sum(axis=1), dtype=np.float64)


def describe_second_stage(completed: tuple[Criterion, ...], stopped: str, solve_s: float) -> str:
    """The solver message's part about the second stage."""
    done = ", ".join(c.value for c in completed) or "nothing"
    if not stopped:
        return f"; second stage minimised {done} in {solve_s:.3f} s"
    return f"; second stage stopped at {stopped} (minimised: {done}; the plan is that of the last stage done)"
