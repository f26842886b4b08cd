"""``timeline.png``: per cabinet its edge's mode over the campaign and the faults that hit it; the central
and the meter on rows of their own (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.demo.plots import MODE_COLOURS
from lab.soak.records import FaultRun, SoakRecord
from lab.soak.schedule import BATTERY_FAULTS, DEVICE_COMM_FAULTS, EVENTS, LINK_FAULTS, FaultKind

DPI = 90
FAMILY_COLOURS = {
    "process": "#000000",
    "battery": "#d62728",
    "comm": "#9467bd",
    "link": "#1f77b4",
    "state": "#8c564b",
}


def _family(kind: FaultKind) -> str:
    if kind in (FaultKind.KILL_CENTRAL, FaultKind.KILL_EDGE):
        return "process"
    if kind in BATTERY_FAULTS:
        return "battery"
    if kind in DEVICE_COMM_FAULTS:
        return "comm"
    if kind in LINK_FAULTS:
        return "link"
    return "state"


def _row_of(run: FaultRun) -> str:
    target = run.spec.target
    return target.split(":", 1)[1] if ":" in target else target


def write_timeline(path: Path, record: SoakRecord, cabinet_ids: Sequence[str], start_s: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["central", "meter", *cabinet_ids]
    figure, ax = plt.subplots(figsize=(14, 1.0 + 0.9 * len(rows)))
    hours = [(s.at_s - start_s) / 3600.0 for s in record.samples]
    end_h = hours[-1] if hours else 1.0
    for index, row in enumerate(rows):
        y = index * 2.0
        if row in cabinet_ids:
            _mode_bars(ax, record, row, hours, y + 1.0)
        for run in record.faults:
            if _row_of(run) != row or run.spec.kind in EVENTS:
                continue
            _fault_bar(ax, run, start_s, y, end_h)
        for upload in record.uploads:
            if row == "central" and upload.accepted:
                ax.plot(
                    [(upload.at_s - start_s) / 3600.0], [y + 0.35], marker="v", color="#2ca02c", markersize=4
                )
    ax.set_yticks([index * 2.0 + 0.8 for index in range(len(rows))])
    ax.set_yticklabels(
        [f"{r}\nfaults / mode" if r in cabinet_ids else f"{r}\nfaults" for r in rows], fontsize=8
    )
    ax.set_xlim(0.0, max(end_h, 1e-3))
    ax.set_xlabel("simulated hours since the campaign's start")
    ax.set_title(
        "Faults (lower bar: black process, red battery, purple device comm, blue link, brown SoC/limits; "
        "green triangles uploads) and edge modes (upper bar)",
        fontsize=9,
    )
    from matplotlib.patches import Patch

    handles = [Patch(color=colour, label=mode) for mode, colour in MODE_COLOURS.items()]
    ax.legend(
        handles=handles, loc="upper right", fontsize=7, ncol=len(handles), title="mode", title_fontsize=7
    )
    ax.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def _mode_bars(ax: Any, record: SoakRecord, cabinet_id: str, hours: Sequence[float], y: float) -> None:
    runs: list[tuple[float, float, str]] = []
    for sample, hour in zip(record.samples, hours, strict=True):
        cabinet = sample.cabinets.get(cabinet_id)
        mode = cabinet.mode if cabinet is not None else "offline"
        if runs and runs[-1][2] == mode:
            runs[-1] = (runs[-1][0], hour, mode)
        else:
            if runs:
                runs[-1] = (runs[-1][0], hour, runs[-1][2])
            runs.append((hour, hour, mode))
    for mode in {r[2] for r in runs}:
        segments = [(start, max(end - start, 1e-3)) for start, end, m in runs if m == mode]
        ax.broken_barh(segments, (y, 0.7), facecolors=MODE_COLOURS.get(mode, "#cccccc"))


def _fault_bar(ax: Any, run: FaultRun, start_s: float, y: float, end_h: float) -> None:
    begin = (run.started_at_s - start_s) / 3600.0
    end = (run.ended_at_s - start_s) / 3600.0 if run.ended_at_s is not None else begin
    colour = FAMILY_COLOURS[_family(run.spec.kind)]
    if end - begin < end_h / 2000.0:
        ax.plot([begin], [y + 0.35], marker="|", color=colour, markersize=8)
    else:
        ax.broken_barh([(begin, end - begin)], (y + 0.05, 0.6), facecolors=colour, alpha=0.55)
