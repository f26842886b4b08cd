"""The demo report's PNG plots (matplotlib, Agg backend: no display needed).

Five figures, each readable at a glance (title, units on the axes, a legend): ``prices.png``,
``power.png`` (planned vs actual power per cabinet), ``soc.png``, ``grid.png`` (import/export against
the PoC limits) and ``modes.png`` (mode timeline per cabinet). Scenario actions are drawn as dotted
vertical lines on the time plots. Figures are sized and rendered to stay small (well under 150 KB).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lab.demo.records import OFFLINE, Sample, TimelineEvent
from lab.demo.report import ReportInputs, held_durations_s, window_samples

DPI = 90
MODE_COLOURS = {
    "schedule": "#2ca02c",
    "fallback": "#ff7f0e",
    "tripped": "#d62728",
    "starting": "#9ecae1",
    OFFLINE: "#7f7f7f",
}
EVENT_LABELS = {
    "kill_central": "central killed",
    "start_central": "central restarted",
    "upload": "upload",
    "kill_edge": "edge killed",
    "start_edge": "edge restarted",
    "inject_over_temperature": "over-temperature",
    "clear_fault": "fault cleared",
    "reset_interlock": "interlock reset",
}


def write_plots(inputs: ReportInputs, out_dir: Path) -> list[Path]:
    """Render every plot into ``out_dir``; return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = window_samples(inputs.record.samples, inputs.dayahead)
    written: list[Path] = []
    for name, draw in (
        ("prices.png", _prices),
        ("power.png", _power),
        ("soc.png", _soc),
        ("grid.png", _grid),
        ("modes.png", _modes),
    ):
        figure = draw(plt, inputs, samples)
        path = out_dir / name
        figure.savefig(path, dpi=DPI)
        plt.close(figure)
        written.append(path)
    return written


def _times(samples: Sequence[Sample]) -> list[datetime]:
    return [datetime.fromtimestamp(s.at_s, tz=UTC) for s in samples]


def _interval_edges(inputs: ReportInputs, steps: int, start: datetime | None = None) -> list[datetime]:
    first = start or inputs.dayahead.start
    return [first + timedelta(minutes=inputs.dayahead.interval_minutes * i) for i in range(steps + 1)]


def _step(values: Sequence[float]) -> list[float]:
    # For ax.step(where="post"): repeat the last value so the last interval is drawn to its end.
    return [*values, values[-1]] if values else []


def _dates() -> Any:
    # matplotlib.dates is untyped; reach it as Any so mypy --strict accepts the calls.
    return importlib.import_module("matplotlib.dates")


def _format_time_axis(plt: Any, ax: Any, inputs: ReportInputs) -> None:
    mdates = _dates()
    ax.set_xlim(inputs.dayahead.start, inputs.dayahead.end)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=UTC))
    ax.grid(True, alpha=0.3)


def _events(ax: Any, inputs: ReportInputs, label: bool, above: bool = False) -> None:
    """Scenario actions as dotted vertical lines; labelled inside the axes, or above them (``above``)."""
    seen: set[str] = set()
    for event in _action_events(inputs.record.events, inputs):
        when = datetime.fromtimestamp(event.at_s, tz=UTC)
        text = EVENT_LABELS.get(event.kind, event.kind)
        ax.axvline(when, color="#555555", linestyle=":", linewidth=1.0)
        if not label or text in seen:
            continue
        seen.add(text)
        if above:
            ax.annotate(
                text,
                (when, 1.02),
                xycoords=("data", "axes fraction"),
                rotation=20,
                fontsize=7,
                va="bottom",
                ha="left",
                color="#333333",
            )
        else:
            ax.annotate(
                text,
                (when, 1.0),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=7,
                va="top",
                ha="right",
                color="#333333",
            )


def _titled(ax: Any, inputs: ReportInputs, title: str) -> None:
    """The axes title, and above the axes (under the title) the scenario's actions as labels."""
    labelled = bool(_action_events(inputs.record.events, inputs))
    ax.set_title(title, pad=40 if labelled else 6)
    _events(ax, inputs, label=labelled, above=True)


def _action_events(events: Sequence[TimelineEvent], inputs: ReportInputs) -> list[TimelineEvent]:
    start_s, end_s = inputs.dayahead.start.timestamp(), inputs.dayahead.end.timestamp()
    return [e for e in events if e.kind in EVENT_LABELS and start_s <= e.at_s < end_s]


def _prices(plt: Any, inputs: ReportInputs, samples: Sequence[Sample]) -> Any:
    dayahead = inputs.dayahead
    edges = _interval_edges(inputs, dayahead.steps)
    figure, (ax_price, ax_power) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    ax_price.step(edges, _step(list(dayahead.import_price_per_kwh)), where="post", label="import price")
    ax_price.step(edges, _step(list(dayahead.export_price_per_kwh)), where="post", label="export price")
    ax_price.axhline(0.0, color="black", linewidth=0.6)
    ax_price.set_ylabel("price [currency/kWh]")
    ax_price.set_title(f"Day-ahead prices and forecast, {inputs.site.site.name}")
    ax_price.legend(loc="upper left", fontsize=8)
    ax_power.step(edges, _step(list(dayahead.load_kw)), where="post", label="load forecast")
    ax_power.step(edges, _step(list(dayahead.pv_kw)), where="post", label="PV forecast")
    ax_power.set_ylabel("power [kW]")
    ax_power.set_xlabel("time [UTC]")
    ax_power.legend(loc="upper left", fontsize=8)
    for ax in (ax_price, ax_power):
        _format_time_axis(plt, ax, inputs)
    figure.tight_layout()
    return figure


def _power(plt: Any, inputs: ReportInputs, samples: Sequence[Sample]) -> Any:
    cabinet_ids = inputs.site.cabinet_ids
    figure, axes = plt.subplots(
        len(cabinet_ids), 1, figsize=(10, 2.3 * len(cabinet_ids) + 0.8), sharex=True, squeeze=False
    )
    times = _times(samples)
    plan = inputs.plan
    for row, cabinet_id in enumerate(cabinet_ids):
        ax = axes[row][0]
        if plan is not None and cabinet_id in plan.cabinets:
            setpoints = plan.cabinets[cabinet_id].setpoint_kw
            ax.step(
                _interval_edges(inputs, len(setpoints), plan.start),
                _step(setpoints),
                where="post",
                label="day-ahead plan",
                color="#1f77b4",
                linewidth=1.2,
            )
        ax.plot(
            times,
            [_nan(s.cabinets[cabinet_id].setpoint_kw) for s in samples],
            label="edge setpoint",
            color="#9467bd",
            linewidth=0.9,
            alpha=0.8,
        )
        ax.plot(
            times,
            [_nan(s.cabinets[cabinet_id].power_kw) for s in samples],
            label="actual (device)",
            color="#d62728",
            linewidth=1.0,
        )
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_ylabel(f"{cabinet_id}\npower [kW]")
        _format_time_axis(plt, ax, inputs)
        if row == 0:
            _titled(ax, inputs, "Cabinet power, planned vs actual (+ discharge, - charge)")
        else:
            _events(ax, inputs, label=False)
        if row == 0:
            ax.legend(loc="upper left", fontsize=8, ncol=3)
    axes[-1][0].set_xlabel("time [UTC]")
    figure.tight_layout()
    return figure


def _soc(plt: Any, inputs: ReportInputs, samples: Sequence[Sample]) -> Any:
    figure, ax = plt.subplots(figsize=(10, 4))
    times = _times(samples)
    plan = inputs.plan
    for index, cabinet_id in enumerate(inputs.site.cabinet_ids):
        colour = f"C{index}"
        ax.plot(
            times,
            [_nan(s.cabinets[cabinet_id].soc_pct) for s in samples],
            color=colour,
            label=f"{cabinet_id} actual",
        )
        if plan is not None and cabinet_id in plan.cabinets:
            soc = plan.cabinets[cabinet_id].soc_pct
            ends = _interval_edges(inputs, len(soc), plan.start)[1:]
            ax.plot(ends, soc, color=colour, linestyle="--", linewidth=1.0, label=f"{cabinet_id} plan")
    ax.set_ylim(0, 100)
    ax.set_ylabel("state of charge [%]")
    ax.set_xlabel("time [UTC]")
    _format_time_axis(plt, ax, inputs)
    _titled(ax, inputs, "State of charge per cabinet (solid: actual, dashed: day-ahead plan)")
    ax.legend(loc="lower left", fontsize=8, ncol=len(inputs.site.cabinet_ids))
    figure.tight_layout()
    return figure


def _grid(plt: Any, inputs: ReportInputs, samples: Sequence[Sample]) -> Any:
    figure, ax = plt.subplots(figsize=(10, 4))
    site = inputs.site.site
    plan = inputs.plan
    if plan is not None:
        ax.step(
            _interval_edges(inputs, plan.steps, plan.start),
            _step(plan.grid_kw),
            where="post",
            color="#1f77b4",
            linewidth=1.0,
            label="day-ahead plan",
        )
    ax.plot(
        _times(samples),
        [_nan(s.grid_kw) for s in samples],
        color="#d62728",
        linewidth=1.0,
        label="actual (meter)",
    )
    ax.axhline(
        site.grid_import_limit_kw,
        color="black",
        linestyle="--",
        linewidth=1.0,
        label=f"import limit {site.grid_import_limit_kw:g} kW",
    )
    ax.axhline(
        -site.grid_export_limit_kw,
        color="grey",
        linestyle="--",
        linewidth=1.0,
        label=f"export limit {site.grid_export_limit_kw:g} kW",
    )
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel("grid power [kW] (+ import, - export)")
    ax.set_xlabel("time [UTC]")
    _format_time_axis(plt, ax, inputs)
    _titled(ax, inputs, "Grid power at the point of connection against the PoC limits")
    ax.legend(loc="lower left", fontsize=8, ncol=4)
    figure.tight_layout()
    return figure


def _modes(plt: Any, inputs: ReportInputs, samples: Sequence[Sample]) -> Any:
    from matplotlib.patches import Patch

    mdates = _dates()

    cabinet_ids = inputs.site.cabinet_ids
    figure, ax = plt.subplots(figsize=(10, 1.6 + 0.5 * len(cabinet_ids)))
    durations_s = held_durations_s(samples, inputs.dayahead.end.timestamp(), inputs.sample_period_s)
    used: set[str] = set()
    for row, cabinet_id in enumerate(cabinet_ids):
        bars: dict[str, list[tuple[float, float]]] = {}
        for sample, duration_s in zip(samples, durations_s, strict=True):
            mode = sample.cabinets[cabinet_id].mode
            start = mdates.date2num(datetime.fromtimestamp(sample.at_s, tz=UTC))
            bars.setdefault(mode, []).append((start, duration_s / 86400.0))
        for mode, spans in bars.items():
            ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=MODE_COLOURS.get(mode, "#bcbd22"))
            used.add(mode)
    ax.set_yticks(range(len(cabinet_ids)), labels=cabinet_ids)
    ax.set_ylim(-0.6, len(cabinet_ids) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel("time [UTC]")
    _format_time_axis(plt, ax, inputs)
    _titled(ax, inputs, "Edge mode per cabinet")
    order = [m for m in MODE_COLOURS if m in used] + sorted(used - set(MODE_COLOURS))
    ax.legend(
        handles=[Patch(color=MODE_COLOURS.get(m, "#bcbd22"), label=m) for m in order],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        title="mode",
        title_fontsize=8,
    )
    figure.tight_layout()
    return figure


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
