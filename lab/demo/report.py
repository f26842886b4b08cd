"""The demo report's numbers: ``summary.json`` and ``samples.csv`` from a :class:`RunRecord`.

Every quantity has its unit in its key. Times are UTC with ``Z``. Realised values come from the samples
(the devices' true state read from the simulator, the edges' modes read over OPC UA), planned values from
the day-ahead plan of ``central.dispatch.optimize`` over the demo window.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.persistence import EventKind
from lab.demo.costs import evaluate_costs, interval_averages, plan_intervals
from lab.demo.records import RunRecord, Sample
from shared.dayahead import DayAhead
from shared.plan import Plan
from shared.site import SiteConfig
from shared.timeutil import format_utc

LIMIT_TOLERANCE_KW = 1.0  # meter resolution and rounding: import within 1 kW of the limit is "at" it


@dataclass(frozen=True)
class ReportInputs:
    """What the report is computed from."""

    site: SiteConfig
    dayahead: DayAhead  # the demo window's day-ahead (the first ``hours`` of the file)
    plan: Plan | None  # the day-ahead plan over the window (None when the optimizer failed)
    scenario: str
    speed: float  # simulated seconds per wall second
    sample_period_s: float  # simulated
    record: RunRecord


def utc(at_s: float) -> str:
    return format_utc(datetime.fromtimestamp(round(at_s, 3), tz=UTC))


def window_samples(samples: Sequence[Sample], dayahead: DayAhead) -> list[Sample]:
    start_s, end_s = dayahead.start.timestamp(), dayahead.end.timestamp()
    return [s for s in samples if start_s <= s.at_s < end_s]


def held_durations_s(samples: Sequence[Sample], end_s: float, period_s: float) -> list[float]:
    """How long each sample stands for: until the next sample, the last one for one period (capped)."""
    durations: list[float] = []
    for position, sample in enumerate(samples):
        following = samples[position + 1].at_s if position + 1 < len(samples) else sample.at_s + period_s
        durations.append(max(0.0, min(following, end_s) - sample.at_s))
    return durations


def mode_summary(samples: Sequence[Sample], cabinet_id: str, durations_s: Sequence[float]) -> dict[str, Any]:
    """Seconds in each mode and the mode timeline (runs of equal mode) of one cabinet."""
    seconds: dict[str, float] = {}
    runs: list[dict[str, Any]] = []
    for sample, duration_s in zip(samples, durations_s, strict=True):
        mode = sample.cabinets[cabinet_id].mode
        seconds[mode] = seconds.get(mode, 0.0) + duration_s
        if runs and runs[-1]["mode"] == mode:
            runs[-1]["to"] = utc(sample.at_s + duration_s)
        else:
            runs.append({"mode": mode, "from": utc(sample.at_s), "to": utc(sample.at_s + duration_s)})
    return {
        "seconds": {mode: round(value, 1) for mode, value in sorted(seconds.items())},
        "sequence": [run["mode"] for run in runs],
        "timeline": runs,
    }


def energy_summary(
    samples: Sequence[Sample], cabinet_id: str, durations_s: Sequence[float]
) -> dict[str, Any]:
    """AC energy charged and discharged in the window [kWh], and the SoC.

    From the device's own energy counters (first and last sample) when the simulator reports them, else
    by sample-and-hold integration of the sampled power.
    """
    cabinets = [s.cabinets[cabinet_id] for s in samples]
    counted = [c for c in cabinets if c.charged_ac_kwh is not None and c.discharged_ac_kwh is not None]
    if len(counted) >= 2:
        charged_kwh = (counted[-1].charged_ac_kwh or 0.0) - (counted[0].charged_ac_kwh or 0.0)
        discharged_kwh = (counted[-1].discharged_ac_kwh or 0.0) - (counted[0].discharged_ac_kwh or 0.0)
        source = "device energy counters"
    else:
        charged_kwh = discharged_kwh = 0.0
        for cabinet, duration_s in zip(cabinets, durations_s, strict=True):
            if cabinet.power_kw is None:
                continue
            energy_kwh = cabinet.power_kw * duration_s / 3600.0
            if energy_kwh >= 0:
                discharged_kwh += energy_kwh
            else:
                charged_kwh -= energy_kwh
        source = "integrated samples"
    socs = [c.soc_pct for c in cabinets if c.soc_pct is not None]
    return {
        "charged_kwh": round(charged_kwh, 2),
        "discharged_kwh": round(discharged_kwh, 2),
        "source": source,
        "soc_start_pct": round(socs[0], 2) if socs else None,
        "soc_end_pct": round(socs[-1], 2) if socs else None,
        "soc_min_pct": round(min(socs), 2) if socs else None,
        "soc_max_pct": round(max(socs), 2) if socs else None,
    }


def longest_run(flags: Sequence[bool]) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


def grid_summary(
    site: SiteConfig,
    samples: Sequence[Sample],
    durations_s: Sequence[float],
    interval_import_kw: Sequence[float],
) -> dict[str, Any]:
    """Peak import and export against the PoC limits, and energy through the PoC."""
    import_limit_kw = site.site.grid_import_limit_kw
    export_limit_kw = site.site.grid_export_limit_kw
    values = [s.grid_kw for s in samples]
    known = [v for v in values if v is not None]
    above_import = [v is not None and v > import_limit_kw + LIMIT_TOLERANCE_KW for v in values]
    above_export = [v is not None and -v > export_limit_kw + LIMIT_TOLERANCE_KW for v in values]
    import_kwh = sum(
        max(v, 0.0) * d / 3600.0 for v, d in zip(values, durations_s, strict=True) if v is not None
    )
    export_kwh = sum(
        max(-v, 0.0) * d / 3600.0 for v, d in zip(values, durations_s, strict=True) if v is not None
    )
    return {
        "import_limit_kw": import_limit_kw,
        "export_limit_kw": export_limit_kw,
        "limit_tolerance_kw": LIMIT_TOLERANCE_KW,
        "peak_import_kw": round(max([0.0, *known]), 2),
        "peak_import_interval_avg_kw": round(max([0.0, *interval_import_kw]), 2),
        "peak_export_kw": round(max([0.0, *(-v for v in known)]), 2),
        "samples_above_import_limit": sum(above_import),
        "longest_run_above_import_limit_samples": longest_run(above_import),
        "samples_above_export_limit": sum(above_export),
        "longest_run_above_export_limit_samples": longest_run(above_export),
        "samples_without_meter_reading": len(values) - len(known),
        "import_kwh": round(import_kwh, 2),
        "export_kwh": round(export_kwh, 2),
    }


def cost_summary(inputs: ReportInputs, samples: Sequence[Sample]) -> dict[str, Any]:
    """Cost by component as planned (the day-ahead plan) and as realised (the samples)."""
    site, dayahead, plan = inputs.site, inputs.dayahead, inputs.plan
    cabinet_ids = site.cabinet_ids
    realised_intervals = interval_averages(
        dayahead,
        [s.at_s for s in samples],
        [s.grid_kw for s in samples],
        {c: [s.cabinets[c].power_kw for s in samples] for c in cabinet_ids},
    )
    realised = evaluate_costs(site, dayahead, realised_intervals)
    result: dict[str, Any] = {
        "realised": realised.as_dict(),
        "realised_intervals": len(realised_intervals),
        "note": "currency of the day-ahead prices; realised = the contract's objective terms on realised "
        "grid and cabinet power (interval averages); no slack penalties in realised data",
    }
    if plan is not None:
        start_index = dayahead.index_at(plan.start) or 0
        planned = evaluate_costs(
            site,
            dayahead,
            plan_intervals(
                dayahead,
                start_index,
                plan.grid_kw,
                {c: plan.cabinets[c].setpoint_kw for c in cabinet_ids if c in plan.cabinets},
            ),
            penalties=plan.objective.penalties,
        )
        result["planned"] = planned.as_dict()
        result["plan_objective"] = {k: round(v, 4) for k, v in plan.objective.model_dump().items()}
        result["plan_status"] = str(plan.status)
        result["realised_minus_planned"] = round(realised.total - planned.total, 4)
    return result


def build_summary(inputs: ReportInputs, checks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The whole ``summary.json`` document."""
    site, dayahead, record = inputs.site, inputs.dayahead, inputs.record
    samples = window_samples(record.samples, dayahead)
    durations_s = held_durations_s(samples, dayahead.end.timestamp(), inputs.sample_period_s)
    costs = cost_summary(inputs, samples)
    interval_imports = [
        i.import_kw
        for i in interval_averages(dayahead, [s.at_s for s in samples], [s.grid_kw for s in samples], {})
    ]
    trips: list[dict[str, Any]] = []
    for reaction in record.fault_reactions:
        trips.append(
            {
                "cabinet_id": reaction.cabinet_id,
                "injected_at": utc(reaction.injected_at_s),
                "fault": "over_temperature",
                "power_before_kw": None
                if reaction.power_before_kw is None
                else round(reaction.power_before_kw, 2),
                "reaction_ms": None if reaction.reaction_ms is None else round(reaction.reaction_ms, 1),
                "zero_power_ms": None if reaction.zero_power_ms is None else round(reaction.zero_power_ms, 1),
                "reaction_cycles": None
                if reaction.reaction_cycles is None
                else round(reaction.reaction_cycles, 2),
                "cycle_ms": reaction.cycle_ms,
                "poll_period_ms": reaction.poll_period_ms,
                "edge_log": [
                    {"at": e.at, "kind": e.kind.value, "message": e.message}
                    for e in record.edge_logs.get(reaction.cabinet_id, [])
                    if e.kind in (EventKind.TRIP, EventKind.RESET)
                ],
            }
        )
    logged_trips = {
        cabinet_id: [{"at": e.at, "message": e.message} for e in events if e.kind is EventKind.TRIP]
        for cabinet_id, events in record.edge_logs.items()
    }
    passed = all(bool(check["passed"]) for check in checks)
    return {
        "site": site.site.name,
        "scenario": inputs.scenario,
        "passed": passed,
        "checks": list(checks),
        "window": {
            "start": format_utc(dayahead.start),
            "end": format_utc(dayahead.end),
            "hours": round((dayahead.end - dayahead.start).total_seconds() / 3600.0, 3),
            "interval_minutes": dayahead.interval_minutes,
        },
        "clock": {"speed": inputs.speed, "sample_period_s": inputs.sample_period_s},
        "wall_time_s": round(record.wall_time_s, 1),
        "startup_wall_s": round(record.startup_wall_s, 1),
        "samples": len(samples),
        "samples_expected": round((dayahead.end - dayahead.start).total_seconds() / inputs.sample_period_s),
        "first_sample_at": utc(samples[0].at_s) if samples else None,
        "cost": costs,
        "energy": {c: energy_summary(samples, c, durations_s) for c in site.cabinet_ids},
        "grid": grid_summary(site, samples, durations_s, interval_imports),
        "interlock_trips": trips,
        "edge_logged_trips": logged_trips,
        "modes": {c: mode_summary(samples, c, durations_s) for c in site.cabinet_ids},
        "pushes": {c: record.pushes[c].as_dict() for c in site.cabinet_ids if c in record.pushes},
        "events": [
            {"at": utc(e.at_s), "kind": e.kind, "cabinet_id": e.cabinet_id, "detail": e.detail}
            for e in record.events
        ],
    }


def write_summary(path: Path, summary: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def write_samples_csv(path: Path, samples: Sequence[Sample], cabinet_ids: Sequence[str]) -> None:
    """Every sample as one row (the raw realised data behind the plots)."""
    fields = ("power_kw", "soc_pct", "temperature_degc", "setpoint_kw", "mode", "schedule_id")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", "grid_kw", *(f"{c}.{f}" for c in cabinet_ids for f in fields)])
        for sample in samples:
            row: list[object] = [utc(sample.at_s), _cell(sample.grid_kw)]
            for cabinet_id in cabinet_ids:
                cabinet = sample.cabinets[cabinet_id]
                row += [
                    _cell(cabinet.power_kw),
                    _cell(cabinet.soc_pct),
                    _cell(cabinet.temperature_degc),
                    _cell(cabinet.setpoint_kw),
                    cabinet.mode,
                    cabinet.schedule_id,
                ]
            writer.writerow(row)


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"
