"""The live one-line progress of a demo: simulated time, SoC per cabinet, grid power, modes.

On a terminal the line is redrawn in place (carriage return); otherwise (a log file, CI) a full line is
printed every ``every_fraction`` of the window, so logs stay short.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from lab.demo.records import Sample
from shared.timeutil import format_utc

_MODE_SHORT = {
    "schedule": "sched",
    "fallback": "fallb",
    "tripped": "TRIP",
    "starting": "start",
    "offline": "OFF",
}


def progress_line(sample: Sample, fraction_done: float) -> str:
    """``06:15Z 26% | grid +123 kW | cab-1 55.1% sched | cab-2 ...`` (fits a wide terminal)."""
    when = format_utc(datetime.fromtimestamp(sample.at_s, tz=UTC))[11:16] + "Z"
    grid = "   ? kW" if sample.grid_kw is None else f"{sample.grid_kw:+5.0f} kW"
    parts = [f"{when} {100.0 * fraction_done:3.0f}%", f"grid {grid}"]
    for cabinet_id, cabinet in sample.cabinets.items():
        soc = "  ?  " if cabinet.soc_pct is None else f"{cabinet.soc_pct:4.1f}%"
        parts.append(f"{cabinet_id} {soc} {_MODE_SHORT.get(cabinet.mode, cabinet.mode)}")
    return " | ".join(parts)


class ProgressDisplay:
    """Writes progress lines to ``stream`` (stderr by default)."""

    def __init__(self, stream: TextIO | None = None, every_fraction: float = 0.05) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._every_fraction = every_fraction
        self._next_fraction = 0.0
        self._width = 0

    def update(self, sample: Sample, fraction_done: float) -> None:
        line = progress_line(sample, fraction_done)
        if self._tty:
            padding = " " * max(0, self._width - len(line))
            self._stream.write("\r" + line + padding)
            self._width = len(line)
            self._stream.flush()
        elif fraction_done >= self._next_fraction:
            self._stream.write(line + "\n")
            self._stream.flush()
            self._next_fraction = fraction_done + self._every_fraction

    def message(self, text: str) -> None:
        """A line of its own (an action, a warning), not overwritten by the next update."""
        if self._tty and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._width = 0
        self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._tty and self._width:
            self._stream.write("\n")
            self._width = 0
            self._stream.flush()
