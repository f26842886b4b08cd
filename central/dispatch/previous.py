"""What the plan being replaced asked of each cabinet, on the intervals of the new horizon.

The second stage of the dispatch (docs/dispatch.md: plan quality) keeps a re-plan close to the previous plan
on the intervals both cover. The two plans need not share a start or an interval length: each new interval
that lies entirely inside the previous plan's horizon gets the previous plan's mean setpoint over that
interval (the energy it asked for, spread evenly), computed exactly from the previous step function's running
integral. Intervals the previous plan does not cover entirely get NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from shared.plan import Plan, PlanStatus

_TIME_TOLERANCE_S = 1e-6


def previous_setpoints_kw(
    previous: Plan, cabinet_ids: Sequence[str], start: datetime, interval_minutes: int, steps: int
) -> NDArray[np.float64]:
    """(B, T): the previous plan's mean setpoint [kW] over each new interval it covers entirely, else NaN.

    A failed previous plan, a cabinet the previous plan does not have and a series of the wrong length or with
    a non-finite value cover nothing.
    """
    reference = np.full((len(cabinet_ids), steps), np.nan)
    if previous.status is PlanStatus.FAILED or previous.steps == 0:
        return reference
    previous_interval_s = previous.interval_minutes * 60.0
    interval_s = interval_minutes * 60.0
    offset_s = (start - previous.start).total_seconds()
    starts_s = offset_s + np.arange(steps) * interval_s
    ends_s = starts_s + interval_s
    covered = (starts_s >= -_TIME_TOLERANCE_S) & (
        ends_s <= previous.steps * previous_interval_s + _TIME_TOLERANCE_S
    )
    if not covered.any():
        return reference
    breaks_s = np.arange(previous.steps + 1) * previous_interval_s
    for b, cabinet_id in enumerate(cabinet_ids):
        cabinet = previous.cabinets.get(cabinet_id)
        if cabinet is None or len(cabinet.setpoint_kw) != previous.steps:
            continue
        if not all(math.isfinite(value) for value in cabinet.setpoint_kw):
            continue
        energy = np.concatenate(([0.0], np.cumsum(np.asarray(cabinet.setpoint_kw) * previous_interval_s)))
        mean_kw = (np.interp(ends_s, breaks_s, energy) - np.interp(starts_s, breaks_s, energy)) / interval_s
        reference[b] = np.where(covered, mean_kw, np.nan)
    return reference
