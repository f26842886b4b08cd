"""Site load and PV [kW] over simulated time, from a day-ahead file.

Values are held constant within each interval (as the optimizer assumes) and the horizon repeats with its
own length as the period, aligned to its start: a one-day file gives the same day every day, so the
simulators run under any clock, also a real one long after the file's date.
"""

from __future__ import annotations

import logging
from pathlib import Path

from shared.dayahead import DayAhead, load_dayahead

log = logging.getLogger(__name__)

EXAMPLE_PROFILE = Path(__file__).resolve().parents[1] / "examples" / "day-ahead.json"


class LoadProfile:
    """Load and PV of a site; ``None`` gives a flat zero profile."""

    def __init__(self, dayahead: DayAhead | None) -> None:
        self.dayahead = dayahead
        if dayahead is None:
            self._start_s = 0.0
            self._interval_s = 1.0
            self._load_kw: tuple[float, ...] = (0.0,)
            self._pv_kw: tuple[float, ...] = (0.0,)
        else:
            self._start_s = dayahead.start.timestamp()
            self._interval_s = float(dayahead.interval_s)
            self._load_kw = dayahead.load_kw
            self._pv_kw = dayahead.pv_kw

    def index_at(self, time_s: float) -> int:
        """Index of the interval that applies at simulated Unix time ``time_s`` (the horizon repeats)."""
        return int((time_s - self._start_s) // self._interval_s) % len(self._load_kw)

    def load_kw(self, time_s: float) -> float:
        return self._load_kw[self.index_at(time_s)]

    def pv_kw(self, time_s: float) -> float:
        return self._pv_kw[self.index_at(time_s)]

    @property
    def max_load_kw(self) -> float:
        return max(self._load_kw)

    @property
    def max_pv_kw(self) -> float:
        return max(self._pv_kw)


def default_profile(configured_path: str | None) -> LoadProfile:
    """The profile of ``[sim] profile`` when set (relative to the working directory), else the example one.

    A configured file that cannot be read is an error (:class:`shared.errors.UploadError`); a missing example
    file (installed without the repository) gives a flat zero profile with a warning.
    """
    if configured_path is not None:
        return LoadProfile(load_dayahead(configured_path))
    if EXAMPLE_PROFILE.is_file():
        return LoadProfile(load_dayahead(EXAMPLE_PROFILE))
    log.warning("no load/PV profile configured and %s not found: load and PV are 0 kW", EXAMPLE_PROFILE)
    return LoadProfile(None)
