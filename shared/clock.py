"""The one clock abstraction every component takes its time from.

``RealClock`` is wall time. ``SimulatedClock`` maps wall time onto simulated time with a speed factor, so a
whole day can run in minutes. Two processes that build a ``SimulatedClock`` from the same spec (start,
speed and wall-clock anchor) agree on simulated time, which is how ``ems demo`` keeps the simulators, the
edges and the central service on one timeline. ``ManualClock`` is advanced by hand (unit tests).

A clock spec string (``--clock`` options and the ``EMS_CLOCK`` environment variable) is either ``real`` or
``sim:START:SPEED:ANCHOR_UNIX_S`` with START an ISO 8601 UTC timestamp, e.g.
``sim:2026-11-24T00:00:00Z:480:1764000000.0``.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from shared.timeutil import format_utc, parse_utc

CLOCK_ENV_VAR = "EMS_CLOCK"


@runtime_checkable
class Clock(Protocol):
    """Source of time. All durations are in simulated seconds."""

    @property
    def speed(self) -> float:
        """Simulated seconds per wall-clock second [-]."""
        ...

    def time_s(self) -> float:
        """Current (simulated) Unix time [s]."""
        ...

    def now(self) -> datetime:
        """Current (simulated) time as an aware UTC datetime."""
        ...

    async def sleep(self, duration_s: float) -> None:
        """Sleep for ``duration_s`` simulated seconds."""
        ...

    def spec(self) -> str:
        """The spec string that rebuilds an equal clock in another process."""
        ...


class RealClock:
    """Wall-clock time."""

    @property
    def speed(self) -> float:
        return 1.0

    def time_s(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time_s(), tz=UTC)

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s))

    def spec(self) -> str:
        return "real"


class SimulatedClock:
    """Simulated time: ``speed`` x wall time, ``start`` at wall time ``anchor_unix_s``."""

    def __init__(self, start: datetime, speed: float, anchor_unix_s: float | None = None) -> None:
        if not speed > 0.0:
            raise ValueError(f"clock speed must be > 0, got {speed}")
        self._start_s = start.timestamp()
        self._start = start
        self._speed = float(speed)
        self._anchor_unix_s = time.time() if anchor_unix_s is None else float(anchor_unix_s)

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def start(self) -> datetime:
        return self._start

    def time_s(self) -> float:
        return self._start_s + (time.time() - self._anchor_unix_s) * self._speed

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.time_s(), tz=UTC)

    async def sleep(self, duration_s: float) -> None:
        await asyncio.sleep(max(0.0, duration_s) / self._speed)

    def spec(self) -> str:
        return f"sim:{format_utc(self._start)}:{self._speed:g}:{self._anchor_unix_s!r}"


class ManualClock:
    """A clock that only moves when told to (tests). ``sleep`` advances it and yields once."""

    def __init__(self, start: datetime) -> None:
        self._now_s = start.timestamp()

    @property
    def speed(self) -> float:
        return 1.0

    def time_s(self) -> float:
        return self._now_s

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now_s, tz=UTC)

    def advance(self, duration_s: float) -> None:
        if duration_s < 0:
            raise ValueError("a clock never goes backwards")
        self._now_s += duration_s

    async def sleep(self, duration_s: float) -> None:
        self.advance(max(0.0, duration_s))
        await asyncio.sleep(0)

    def spec(self) -> str:
        raise ValueError("a ManualClock cannot be shared with another process")


def clock_from_spec(spec: str) -> RealClock | SimulatedClock:
    """Build a clock from ``real`` or ``sim:START:SPEED:ANCHOR_UNIX_S`` (ANCHOR optional: now)."""
    text = spec.strip()
    if text == "real":
        return RealClock()
    if not text.startswith("sim:"):
        raise ValueError(f"clock spec {spec!r}: expected 'real' or 'sim:START:SPEED[:ANCHOR_UNIX_S]'")
    body = text[len("sim:") :]
    # START contains ':' itself, so split from the right.
    parts = body.rsplit(":", 2)
    try:
        if len(parts) == 3 and _is_number(parts[1]) and _is_number(parts[2]):
            start_text, speed_text, anchor_text = parts
            anchor: float | None = float(anchor_text)
        else:
            if ":" not in body:
                raise ValueError("expected sim:START:SPEED[:ANCHOR_UNIX_S]")
            start_text, speed_text = body.rsplit(":", 1)
            anchor = None
        return SimulatedClock(parse_utc(start_text), float(speed_text), anchor)
    except ValueError as exc:
        raise ValueError(f"clock spec {spec!r}: {exc}") from exc


def clock_from_env(default: str = "real") -> RealClock | SimulatedClock:
    """The clock named by ``EMS_CLOCK``, else ``default``."""
    return clock_from_spec(os.environ.get(CLOCK_ENV_VAR, default))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
