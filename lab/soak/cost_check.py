"""Invariant ``cost_vs_plan``: outside fault windows the realised energy cost follows the plans."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from lab.demo.records import Sample
from lab.soak.records import CentralState, FaultRun, PlanInfo
from lab.soak.schedule import EVENTS, FaultKind
from lab.soak.verdict import COST_VS_PLAN, Bounds, InvariantResult, plan_id_of


def _central_side(fault: FaultRun) -> bool:
    """Faults between the central and the edges: the edges keep running the plan they hold, so these
    must not change the realised cost (the promise of distributed execution)."""
    return fault.spec.kind is FaultKind.KILL_CENTRAL or fault.spec.target.startswith("opcua:")


def fault_windows(faults: Sequence[FaultRun], settle_s: float, end_s: float) -> list[tuple[float, float]]:
    """Where faults act on execution (from start to end + settle), merged; events (uploads) and faults
    between the central and the edges do not count."""
    spans = sorted(
        (f.started_at_s, (f.ended_at_s if f.ended_at_s is not None else f.started_at_s) + settle_s)
        for f in faults
        if f.spec.kind not in EVENTS and not _central_side(f)
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        end = min(end, end_s) if start <= end_s else end
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


@dataclass
class _IntervalCost:
    planned: float = 0.0
    realised: float = 0.0
    samples: int = 0


def _sample_costs(
    sample: Sample, plans: Mapping[str, PlanInfo], central: CentralState
) -> tuple[float, float] | None:
    """(planned, realised) cost rate [currency/h] at one sample, or None when it cannot be priced."""
    if sample.grid_kw is None or not sample.cabinets:
        return None
    plan_ids = {plan_id_of(c.schedule_id) for c in sample.cabinets.values()}
    if len(plan_ids) != 1 or any(c.mode != "schedule" for c in sample.cabinets.values()):
        return None
    plan = plans.get(plan_ids.pop())
    dayahead = central.dayaheads.get(plan.upload_id) if plan is not None else None
    if plan is None or dayahead is None:
        return None
    step = plan.index_at(sample.at_s)
    index = dayahead.index_at(datetime.fromtimestamp(sample.at_s, tz=UTC))
    if step is None or index is None or step >= len(plan.grid_kw):
        return None
    import_price = dayahead.import_price_per_kwh[index]
    export_price = dayahead.export_price_per_kwh[index]

    def rate(grid_kw: float) -> float:
        return import_price * max(grid_kw, 0.0) - export_price * max(-grid_kw, 0.0)

    return rate(plan.grid_kw[step]), rate(sample.grid_kw)


def cost_vs_plan(
    samples: Sequence[Sample],
    faults: Sequence[FaultRun],
    central: CentralState,
    sample_period_s: float,
    bounds: Bounds,
) -> InvariantResult:
    """Outside fault windows, the realised energy cost stays within the bound of what the plans promised.

    Each sample is priced twice with the prices of the upload its plan was made from: the grid power the
    running plan planned for that moment, and the grid power the meter measured. Samples where the
    cabinets do not all run one plan in schedule mode, or inside a fault window, are left out.
    """
    end_s = samples[-1].at_s if samples else 0.0
    windows = fault_windows(faults, bounds.fault_settle_s, end_s)
    starts = [w[0] for w in windows]
    plans = {p.plan_id: p for p in central.plans}
    intervals: dict[int, _IntervalCost] = {}
    for sample in samples:
        position = bisect.bisect_right(starts, sample.at_s) - 1
        if position >= 0 and windows[position][0] <= sample.at_s <= windows[position][1]:
            continue
        priced = _sample_costs(sample, plans, central)
        if priced is None:
            continue
        entry = intervals.setdefault(int(sample.at_s // 900), _IntervalCost())
        entry.planned += priced[0] * sample_period_s / 3600.0
        entry.realised += priced[1] * sample_period_s / 3600.0
        entry.samples += 1
    planned = sum(e.planned for e in intervals.values())
    realised = sum(e.realised for e in intervals.values())
    magnitude = sum(abs(e.planned) for e in intervals.values())
    allowed = bounds.cost_rel * magnitude + bounds.cost_abs_per_interval * len(intervals)
    passed = abs(realised - planned) <= allowed
    detail = (
        f"{len(intervals)} clean interval(s): planned energy cost {planned:.2f}, realised {realised:.2f}, "
        f"difference {realised - planned:+.2f}, allowed +/-{allowed:.2f} ({100 * bounds.cost_rel:g} % of "
        f"{magnitude:.2f} + {bounds.cost_abs_per_interval:g} per interval)"
    )
    return InvariantResult(COST_VS_PLAN, passed, detail)
