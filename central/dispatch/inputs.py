"""The dispatch LP's data as numpy arrays, from a :class:`SiteConfig` and a :class:`DayAhead`.

Everything both backends need, in LP units: power [kW], energy [kWh], prices [currency/kWh] and the
interval length [h]. Cabinet arrays have shape (B,), series shape (T,).

Decisions where docs/interfaces.md: economic dispatch is silent (documented in docs/dispatch.md):

- initial SoC of a cabinet: the ``initial_soc_pct`` argument (live telemetry), else the upload's
  ``initial_soc_pct``, else 50 %;
- ``soc_final_min_pct`` left out: the initial SoC, clipped into ``[soc_min_pct, soc_max_pct]`` (a cabinet
  that starts outside its window is not asked to end outside it);
- penalties that keep impossible inputs solvable, all at the site's ``unserved_energy_price_per_kwh``:
  unserved load [per kWh], terminal SoC shortfall [per kWh short] and SoC outside the window for a cabinet
  that starts outside it [per kWh outside, per hour].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from numpy.typing import NDArray

from central.dispatch.previous import previous_setpoints_kw
from shared.dayahead import DayAhead
from shared.plan import Plan
from shared.site import SiteConfig

FloatArray = NDArray[np.float64]
DEFAULT_INITIAL_SOC_PCT = 50.0


class DispatchInputError(ValueError):
    """Inputs the optimizer cannot use (an unknown cabinet, a SoC outside 0-100 %); one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class DispatchInputs:
    """The LP data. Cabinet arrays (B,) are in site order; series (T,) in interval order."""

    cabinet_ids: tuple[str, ...]
    capacity_kwh: FloatArray
    charge_limit_kw: FloatArray
    discharge_limit_kw: FloatArray
    charge_efficiency: FloatArray
    discharge_efficiency: FloatArray
    soc_min_pct: FloatArray
    soc_max_pct: FloatArray
    soc_final_min_pct: FloatArray  # effective (default applied)
    initial_soc_pct: FloatArray
    cycle_cost_per_kwh: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    load_kw: FloatArray
    pv_kw: FloatArray
    grid_commitment_kw: FloatArray | None
    grid_import_limit_kw: float
    grid_export_limit_kw: float
    demand_charge_per_kw: float
    imbalance_price_per_kwh: float
    unserved_energy_price_per_kwh: float
    interval_h: float
    start: datetime
    interval_minutes: int
    # Second stage (docs/dispatch.md: plan quality); NaN where unknown.
    previous_setpoint_kw: FloatArray | None = None  # (B, T): the previous plan on the intervals it covers
    current_setpoint_kw: FloatArray | None = None  # (B,): the setpoint each cabinet runs at planning time

    @property
    def cabinets(self) -> int:
        """Number of cabinets B."""
        return len(self.cabinet_ids)

    @property
    def steps(self) -> int:
        """Number of intervals T."""
        return int(self.load_kw.shape[0])

    @property
    def energy_min_kwh(self) -> FloatArray:
        return self.soc_min_pct / 100.0 * self.capacity_kwh

    @property
    def energy_max_kwh(self) -> FloatArray:
        return self.soc_max_pct / 100.0 * self.capacity_kwh

    @property
    def energy_initial_kwh(self) -> FloatArray:
        return self.initial_soc_pct / 100.0 * self.capacity_kwh

    @property
    def energy_final_min_kwh(self) -> FloatArray:
        return self.soc_final_min_pct / 100.0 * self.capacity_kwh

    @property
    def excess_above_window_kwh(self) -> FloatArray:
        """Initial stored energy above ``soc_max_pct`` [kWh] (0 for a cabinet inside its window)."""
        return np.maximum(0.0, self.energy_initial_kwh - self.energy_max_kwh)

    @property
    def deficit_below_window_kwh(self) -> FloatArray:
        """Initial stored energy missing to ``soc_min_pct`` [kWh] (0 for a cabinet inside its window)."""
        return np.maximum(0.0, self.energy_min_kwh - self.energy_initial_kwh)

    @property
    def window_penalty_per_kwh_h(self) -> float:
        """Penalty of stored energy outside the SoC window [currency per kWh per hour]."""
        return self.unserved_energy_price_per_kwh

    @property
    def terminal_penalty_per_kwh(self) -> float:
        """Penalty of stored energy missing at the end of the horizon [currency per kWh]."""
        return self.unserved_energy_price_per_kwh


def initial_soc(
    site: SiteConfig, dayahead: DayAhead, live_soc_pct: Mapping[str, float] | None
) -> dict[str, float]:
    """Initial SoC [%] per cabinet: ``live_soc_pct`` (telemetry), else the upload's, else 50 %."""
    live = live_soc_pct or {}
    return {
        cabinet_id: float(
            live.get(cabinet_id, dayahead.initial_soc_pct.get(cabinet_id, DEFAULT_INITIAL_SOC_PCT))
        )
        for cabinet_id in site.cabinet_ids
    }


def build_inputs(
    site: SiteConfig,
    dayahead: DayAhead,
    live_soc_pct: Mapping[str, float] | None = None,
    final_soc_min_pct: Mapping[str, float] | None = None,
    *,
    previous_plan: Plan | None = None,
    current_setpoint_kw: Mapping[str, float] | None = None,
) -> DispatchInputs:
    """Arrays for the LP; raise :class:`DispatchInputError` naming every unusable input.

    ``final_soc_min_pct`` [%] replaces the default terminal SoC (the initial SoC) of cabinets whose site
    entry has no ``soc_final_min_pct``; the central's rolling re-optimization passes the end SoC its active
    plan promised, so re-planning during the day never lowers the day's end target.
    ``previous_plan`` and ``current_setpoint_kw`` [kW, + discharge] are what the second stage keeps the plan
    close to (docs/dispatch.md: plan quality).
    """
    _check(site, dayahead, live_soc_pct or {}, final_soc_min_pct or {})
    _check_setpoints(site, current_setpoint_kw or {})
    soc0 = initial_soc(site, dayahead, live_soc_pct)
    cabinets = site.cabinets

    def column(values: list[float]) -> FloatArray:
        return np.asarray(values, dtype=np.float64)

    soc_min = column([c.soc_min_pct for c in cabinets])
    soc_max = column([c.soc_max_pct for c in cabinets])
    initial = column([soc0[c.id] for c in cabinets])
    override = final_soc_min_pct or {}
    default_final = np.clip(column([override.get(c.id, soc0[c.id]) for c in cabinets]), soc_min, soc_max)
    final = column(
        [
            float(default_final[i]) if c.soc_final_min_pct is None else c.soc_final_min_pct
            for i, c in enumerate(cabinets)
        ]
    )
    commitment = dayahead.grid_commitment_kw
    info = site.site
    return DispatchInputs(
        cabinet_ids=tuple(c.id for c in cabinets),
        capacity_kwh=column([c.capacity_kwh for c in cabinets]),
        charge_limit_kw=column([c.charge_limit_kw for c in cabinets]),
        discharge_limit_kw=column([c.discharge_limit_kw for c in cabinets]),
        charge_efficiency=column([c.charge_efficiency for c in cabinets]),
        discharge_efficiency=column([c.discharge_efficiency for c in cabinets]),
        soc_min_pct=soc_min,
        soc_max_pct=soc_max,
        soc_final_min_pct=final,
        initial_soc_pct=initial,
        cycle_cost_per_kwh=column([c.cycle_cost_per_kwh for c in cabinets]),
        import_price_per_kwh=column(list(dayahead.import_price_per_kwh)),
        export_price_per_kwh=column(list(dayahead.export_price_per_kwh)),
        load_kw=column(list(dayahead.load_kw)),
        pv_kw=column(list(dayahead.pv_kw)),
        grid_commitment_kw=None if commitment is None else column(list(commitment)),
        grid_import_limit_kw=info.grid_import_limit_kw,
        grid_export_limit_kw=info.grid_export_limit_kw,
        demand_charge_per_kw=info.demand_charge_per_kw,
        imbalance_price_per_kwh=info.imbalance_price_per_kwh,
        unserved_energy_price_per_kwh=info.unserved_energy_price_per_kwh,
        interval_h=dayahead.interval_h,
        start=dayahead.start,
        interval_minutes=dayahead.interval_minutes,
        previous_setpoint_kw=None
        if previous_plan is None
        else previous_setpoints_kw(
            previous_plan, site.cabinet_ids, dayahead.start, dayahead.interval_minutes, dayahead.steps
        ),
        current_setpoint_kw=None
        if not current_setpoint_kw
        else column([float(current_setpoint_kw.get(c.id, math.nan)) for c in cabinets]),
    )


def _check_setpoints(site: SiteConfig, current_setpoint_kw: Mapping[str, float]) -> None:
    problems: list[str] = []
    known = set(site.cabinet_ids)
    for cabinet_id, value in current_setpoint_kw.items():
        if cabinet_id not in known:
            problems.append(f"current_setpoint_kw: unknown cabinet {cabinet_id!r}")
        elif isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value)):
            problems.append(f"current_setpoint_kw.{cabinet_id}: must be a finite number of kW, got {value!r}")
    if problems:
        raise DispatchInputError(problems)


def _check(
    site: SiteConfig,
    dayahead: DayAhead,
    live_soc_pct: Mapping[str, float],
    final_soc_min_pct: Mapping[str, float],
) -> None:
    # The parsers validate uploads, but optimize() is also called with telemetry and hand-made objects.
    problems: list[str] = []
    known = set(site.cabinet_ids)
    for where, soc in (
        ("initial_soc_pct", live_soc_pct),
        ("day-ahead initial_soc_pct", dayahead.initial_soc_pct),
        ("final_soc_min_pct", final_soc_min_pct),
    ):
        for cabinet_id, value in soc.items():
            if cabinet_id not in known:
                problems.append(f"{where}: unknown cabinet {cabinet_id!r}")
            elif isinstance(value, bool) or not (
                isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 100.0
            ):
                problems.append(f"{where}.{cabinet_id}: SoC must be 0-100 %, got {value!r}")
    steps = dayahead.steps
    if steps == 0:
        problems.append("day-ahead has no intervals")
    series = {
        "import_price_per_kwh": dayahead.import_price_per_kwh,
        "export_price_per_kwh": dayahead.export_price_per_kwh,
        "load_kw": dayahead.load_kw,
        "pv_kw": dayahead.pv_kw,
        "grid_commitment_kw": dayahead.grid_commitment_kw,
    }
    for name, values in series.items():
        if values is None:
            continue
        if len(values) != steps:
            problems.append(f"day-ahead {name}: {len(values)} values, expected {steps}")
        elif not all(math.isfinite(v) for v in values):
            problems.append(f"day-ahead {name}: not all values are finite")
        elif name in ("load_kw", "pv_kw") and min(values, default=0.0) < 0.0:
            problems.append(f"day-ahead {name}: negative values")
    if problems:
        raise DispatchInputError(problems)
