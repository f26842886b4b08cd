"""UTC timestamp parsing and formatting (ISO 8601 with ``Z``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class NotUtcError(ValueError):
    """A timestamp without offset, or with an offset other than UTC."""


def parse_utc(text: str) -> datetime:
    """Parse an ISO 8601 timestamp that must be UTC (``Z`` or ``+00:00``).

    Raises :class:`NotUtcError` for a naive or non-UTC timestamp and ``ValueError`` for garbage.
    """
    stripped = text.strip()
    try:
        value = datetime.fromisoformat(stripped)
    except ValueError as exc:
        raise ValueError(f"not an ISO 8601 timestamp: {text!r}") from exc
    return ensure_utc(value, text)


def ensure_utc(value: datetime, original: object | None = None) -> datetime:
    """Return ``value`` as an aware UTC datetime; refuse naive or non-UTC values."""
    shown = original if original is not None else value.isoformat()
    if value.tzinfo is None or value.utcoffset() is None:
        raise NotUtcError(f"timestamp {shown!r} has no time zone; it must be UTC with 'Z'")
    if value.utcoffset() != timedelta(0):
        raise NotUtcError(f"timestamp {shown!r} is not UTC; it must end in 'Z'")
    return value.astimezone(UTC)


def format_utc(value: datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with ``Z`` (seconds, or microseconds when present)."""
    utc = ensure_utc(value)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.replace(tzinfo=None).isoformat(timespec=spec) + "Z"
