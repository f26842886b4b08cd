"""Re-dating a day-ahead upload: the same intervals and values from another start.

The example files carry a fixed date; a central service on the real clock refuses an upload that is
already over. ``ems upload FILE --start now|today|ISO`` and ``examples/make_dayahead.py --start ...`` move
the file's start while keeping its interval length, its values and its initial SoC:

- ``today``: today's date (UTC) at the file's own time of day, so a 24 h profile keeps its hours
  (the central then plans from the current interval to the end of the day);
- ``now``: the start of the interval that contains now (intervals counted from midnight UTC);
- an ISO 8601 UTC timestamp: exactly that start.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from shared.dayahead import DayAhead
from shared.errors import Problem, UploadError
from shared.timeutil import ensure_utc, parse_utc

START_NOW = "now"
START_TODAY = "today"
START_HELP = "'now' (the current interval), 'today' (the file's time of day, today UTC) or an ISO UTC time"


def resolve_start(spec: str, interval_minutes: int, file_start: datetime, now: datetime) -> datetime:
    """The start ``spec`` names (see the module docstring); an UploadError names ``--start`` otherwise."""
    text = spec.strip().lower()
    now = ensure_utc(now)
    if text == START_NOW:
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        elapsed_min = int((now - midnight).total_seconds() // 60)
        return midnight + timedelta(minutes=elapsed_min - elapsed_min % interval_minutes)
    if text == START_TODAY:
        time_of_day = ensure_utc(file_start).timetz()
        return datetime.combine(now.date(), time_of_day)
    try:
        return parse_utc(spec)
    except ValueError as exc:
        raise UploadError("--start", [Problem("", f"{exc}; expected {START_HELP}")]) from None


def redate(dayahead: DayAhead, spec: str, now: datetime) -> DayAhead:
    """``dayahead`` moved to the start ``spec`` names; intervals, values and initial SoC unchanged."""
    start = resolve_start(spec, dayahead.interval_minutes, dayahead.start, now)
    return dataclasses.replace(dayahead, start=start)
