"""What the central accepts beyond a valid day-ahead: an upload that starts near now and is not over.

The parser (``shared.dayahead``) accepts any start from 1970 to 9000; a plant's service only takes uploads
whose start lies within ``[central] upload_start_max_past_days`` before and ``upload_start_max_future_days``
after the clock's now (a start in year 3000, or last month's file, is a mistake, not a forecast), and
whose last interval has not ended yet (an over upload could only replace a useful one with nothing).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.dayahead import DayAhead
from shared.errors import Problem, UploadError
from shared.site import CentralSettings
from shared.timeutil import format_utc


def check_timing(
    dayahead: DayAhead, now: datetime, settings: CentralSettings, source: str = "upload"
) -> None:
    """:class:`UploadError` naming ``start`` when the upload is over or starts outside the window."""
    earliest = now - timedelta(days=settings.upload_start_max_past_days)
    latest = now + timedelta(days=settings.upload_start_max_future_days)
    start = format_utc(dayahead.start)
    if dayahead.end <= now:
        over = (
            f"the upload covers {start} to {format_utc(dayahead.end)}, which is over (now {format_utc(now)});"
            " `ems upload FILE --start today` re-dates a file"
        )
        raise UploadError(source, [Problem("start", over)])
    if dayahead.start < earliest:
        message = (
            f"{start} is more than {settings.upload_start_max_past_days:g} days before now"
            f" ({format_utc(now)}); [central] upload_start_max_past_days sets the limit"
        )
        raise UploadError(source, [Problem("start", message)])
    if dayahead.start > latest:
        message = (
            f"{start} is more than {settings.upload_start_max_future_days:g} days after now"
            f" ({format_utc(now)}); [central] upload_start_max_future_days sets the limit"
        )
        raise UploadError(source, [Problem("start", message)])
