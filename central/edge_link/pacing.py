"""Fleet-wide pacing of the central's edge links, so the cost of keeping N links stays linear in N and the
central's event loop stays responsive however many edges are down.

* Connection attempts: a cheap TCP probe first (no crypto); only an edge that accepts the connection gets
  a secure handshake (RSA signatures and decryptions on the event loop), and at most
  ``[opcua] connect_concurrency`` handshakes run at once (:class:`ConnectGate`). Without the gate, 1000
  edges connecting together would all time out at once and start over (a reconnect storm).
* Retries: exponential backoff from ``reconnect_min_s`` with ±20 % jitter (:class:`Backoff`, RNG
  injectable for deterministic tests), capped at ``reconnect_max_s`` but never below
  N / ``reconnect_attempts_per_s``: with every edge down, the fleet retries at about that rate in total.
* Liveness probes: asyncua reads the server state of every idle session every ``watchdog_s`` seconds;
  that is at least 1 s and at least N / ``watchdog_probes_per_s``, so the probes cost a bounded share of
  the central's CPU whatever the fleet's size.
* Telemetry: each subscription publishes at most every ``publishing_interval_ms``, raised to
  N x 1000 / ``telemetry_publishes_per_s`` ms for a large fleet. Every publish is two encrypted
  messages (the notification and the next publish request), about half a millisecond of the central's CPU
  whatever it carries, so this bounds the telemetry's CPU while an edge's changes within one interval
  arrive together.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from types import TracebackType

from shared.site import OpcUaSettings

WATCHDOG_MIN_S = 1.0  # the shortest probe period of an idle session (a small site)


@dataclass(frozen=True)
class LinkPacing:
    """The timing every link of one fleet uses; build with :meth:`for_fleet`."""

    reconnect_min_s: float
    reconnect_max_s: float
    watchdog_s: float
    connect_concurrency: int
    publishing_interval_ms: float

    @classmethod
    def for_fleet(cls, settings: OpcUaSettings, edges: int) -> LinkPacing:
        """Pacing for a fleet of ``edges`` links with the ``[opcua]`` settings."""
        edges = max(1, edges)
        return cls(
            reconnect_min_s=settings.reconnect_min_s,
            reconnect_max_s=max(settings.reconnect_max_s, edges / settings.reconnect_attempts_per_s),
            watchdog_s=max(WATCHDOG_MIN_S, edges / settings.watchdog_probes_per_s),
            connect_concurrency=settings.connect_concurrency,
            publishing_interval_ms=max(
                settings.publishing_interval_ms, edges * 1000.0 / settings.telemetry_publishes_per_s
            ),
        )


class Backoff:
    """Delays between connection attempts: doubling from ``min_s`` to ``max_s``, each with ±20 % jitter
    so a fleet that lost its edges together does not retry in lockstep."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random) -> None:
        if not 0.0 < min_s <= max_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got {min_s} and {max_s}")
        self._min_s = min_s
        self._max_s = max_s
        self._rng = rng
        self._delay_s = min_s

    def next_s(self) -> float:
        """The delay before the next attempt (after a failed one)."""
        delay_s = self._delay_s * self._rng.uniform(0.8, 1.2)
        self._delay_s = min(self._delay_s * 2.0, self._max_s)
        return delay_s

    @property
    def current_s(self) -> float:
        """The delay the next failure starts from (without jitter), for log lines."""
        return self._delay_s

    def reset(self) -> None:
        """After a successful connection: the next failure starts from ``min_s`` again."""
        self._delay_s = self._min_s


class ConnectGate:
    """At most ``limit`` secure handshakes at once across a fleet: ``async with gate: ...``.

    ``in_flight`` and ``peak`` (the most at once since creation) are for the fleet's status and tests."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"connect concurrency must be at least 1, got {limit}")
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.peak = 0

    async def __aenter__(self) -> ConnectGate:
        await self._semaphore.acquire()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.in_flight -= 1
        self._semaphore.release()
