"""The contract's objective terms (docs/interfaces.md: economic dispatch) evaluated on power series, planned
or realised.

The same function prices the day-ahead plan and what really happened, so the two are comparable term by
term. Realised data is sampled more often than the day-ahead interval; it is first reduced to per-interval
averages (import and export separately, so an interval with both is priced correctly), which is also how
a meter bills demand charges (on interval averages, not on one-minute peaks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from shared.dayahead import DayAhead
from shared.site import SiteConfig


@dataclass(frozen=True)
class IntervalPower:
    """Average powers over one day-ahead interval [kW] (import/export and discharge/charge split)."""

    index: int  # day-ahead interval index
    import_kw: float  # >= 0
    export_kw: float  # >= 0
    cabinet_throughput_kw: Mapping[str, float]  # average |cabinet power| (charge + discharge), >= 0


@dataclass(frozen=True)
class CostBreakdown:
    """Cost components [currency], as in the plan's ``objective``.

    total = energy_cost - export_revenue + cycle_cost + demand_charge + imbalance_cost + penalties
    """

    total: float
    energy_cost: float
    export_revenue: float
    cycle_cost: float
    demand_charge: float
    imbalance_cost: float
    penalties: float

    def as_dict(self) -> dict[str, float]:
        return {key: round(value, 4) for key, value in asdict(self).items()}


def evaluate_costs(
    site: SiteConfig, dayahead: DayAhead, intervals: Sequence[IntervalPower], penalties: float = 0.0
) -> CostBreakdown:
    """Price ``intervals`` with the day-ahead's prices and the site's tariffs.

    ``penalties`` is added as given (the plan's slack penalties; realised data has no slack).
    """
    dt_h = dayahead.interval_h
    cycle_cost_per_kwh = {c.id: c.cycle_cost_per_kwh for c in site.cabinets}
    energy_cost = export_revenue = cycle_cost = imbalance_cost = 0.0
    peak_import_kw = 0.0
    for item in intervals:
        energy_cost += dt_h * dayahead.import_price_per_kwh[item.index] * item.import_kw
        export_revenue += dt_h * dayahead.export_price_per_kwh[item.index] * item.export_kw
        for cabinet_id, throughput_kw in item.cabinet_throughput_kw.items():
            cycle_cost += dt_h * cycle_cost_per_kwh.get(cabinet_id, 0.0) * throughput_kw
        if dayahead.grid_commitment_kw is not None:
            deviation_kw = item.import_kw - item.export_kw - dayahead.grid_commitment_kw[item.index]
            imbalance_cost += site.site.imbalance_price_per_kwh * dt_h * abs(deviation_kw)
        peak_import_kw = max(peak_import_kw, item.import_kw)
    demand_charge = site.site.demand_charge_per_kw * peak_import_kw
    total = energy_cost - export_revenue + cycle_cost + demand_charge + imbalance_cost + penalties
    return CostBreakdown(
        total=total,
        energy_cost=energy_cost,
        export_revenue=export_revenue,
        cycle_cost=cycle_cost,
        demand_charge=demand_charge,
        imbalance_cost=imbalance_cost,
        penalties=penalties,
    )


def interval_averages(
    dayahead: DayAhead,
    times_s: Sequence[float],
    grid_kw: Sequence[float | None],
    cabinet_kw: Mapping[str, Sequence[float | None]],
) -> list[IntervalPower]:
    """Per-interval averages of sampled grid and cabinet power; intervals without samples are left out.

    ``times_s`` are simulated Unix times; a sample belongs to the interval containing it. Missing values
    (``None``: a device that could not be read) are skipped, not counted as zero.
    """
    start_s = dayahead.start.timestamp()
    buckets: dict[int, list[int]] = {}
    for position, at_s in enumerate(times_s):
        index = int((at_s - start_s) // dayahead.interval_s)
        if 0 <= index < dayahead.steps:
            buckets.setdefault(index, []).append(position)
    result: list[IntervalPower] = []
    for index in sorted(buckets):
        positions = buckets[index]
        grid = [v for v in (grid_kw[p] for p in positions) if v is not None]
        if not grid:
            continue
        throughput: dict[str, float] = {}
        for cabinet_id, series in cabinet_kw.items():
            values = [abs(v) for v in (series[p] for p in positions) if v is not None]
            throughput[cabinet_id] = sum(values) / len(values) if values else 0.0
        result.append(
            IntervalPower(
                index=index,
                import_kw=sum(max(v, 0.0) for v in grid) / len(grid),
                export_kw=sum(max(-v, 0.0) for v in grid) / len(grid),
                cabinet_throughput_kw=throughput,
            )
        )
    return result


def plan_intervals(
    dayahead: DayAhead,
    plan_start_index: int,
    grid_kw: Sequence[float],
    setpoints_kw: Mapping[str, Sequence[float]],
) -> list[IntervalPower]:
    """A plan's intervals (its grid power and setpoints) as :class:`IntervalPower` for pricing.

    ``plan_start_index`` is the day-ahead index of the plan's first interval.
    """
    return [
        IntervalPower(
            index=plan_start_index + step,
            import_kw=max(value, 0.0),
            export_kw=max(-value, 0.0),
            cabinet_throughput_kw={
                cabinet_id: abs(series[step]) for cabinet_id, series in setpoints_kw.items()
            },
        )
        for step, value in enumerate(grid_kw)
    ]
