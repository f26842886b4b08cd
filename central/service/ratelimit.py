"""Brute-force protection of the HTTP API: failed authentications counted per client address.

More than ``max_failures`` failed authentications from one address within ``window_s`` block the address
for ``block_s``: every request of it that needs a token is answered 429 without looking at the token.
The table of addresses is bounded (``max_clients``, least recently failing first out), so a flood of
addresses cannot exhaust memory; per address at most ``max_failures + 1`` timestamps are kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_FAILURES = 20
WINDOW_S = 60.0
BLOCK_S = 60.0
MAX_CLIENTS = 10_000


@dataclass
class _Client:
    failures: deque[float]
    blocked_until_s: float = 0.0


@dataclass(frozen=True)
class LimiterStats:
    tracked_clients: int
    blocked_clients: int
    failures_total: int
    blocks_total: int
    evicted_total: int


@dataclass
class FailureLimiter:
    """Counts failed authentications per client address; ``now_s`` is a monotonic clock [s]."""

    max_failures: int = MAX_FAILURES
    window_s: float = WINDOW_S
    block_s: float = BLOCK_S
    max_clients: int = MAX_CLIENTS
    now_s: Callable[[], float] = time.monotonic
    _clients: OrderedDict[str, _Client] = field(default_factory=OrderedDict, init=False, repr=False)
    _failures_total: int = field(default=0, init=False)
    _blocks_total: int = field(default=0, init=False)
    _evicted_total: int = field(default=0, init=False)

    def blocked_for_s(self, client: str) -> float:
        """How long ``client`` stays blocked [s]; 0 when it is not blocked."""
        state = self._clients.get(client)
        if state is None:
            return 0.0
        return max(0.0, state.blocked_until_s - self.now_s())

    def record_failure(self, client: str) -> bool:
        """Count a failed authentication of ``client``; True when it is blocked from now on."""
        now = self.now_s()
        self._failures_total += 1
        state = self._clients.get(client)
        if state is None:
            state = _Client(deque(maxlen=self.max_failures + 1))
            self._clients[client] = state
            self._evict()
        else:
            self._clients.move_to_end(client)
        state.failures.append(now)
        while state.failures and state.failures[0] <= now - self.window_s:
            state.failures.popleft()
        if len(state.failures) > self.max_failures and state.blocked_until_s <= now:
            state.blocked_until_s = now + self.block_s
            state.failures.clear()
            self._blocks_total += 1
            return True
        return False

    def stats(self) -> LimiterStats:
        now = self.now_s()
        blocked = sum(1 for state in self._clients.values() if state.blocked_until_s > now)
        return LimiterStats(
            tracked_clients=len(self._clients),
            blocked_clients=blocked,
            failures_total=self._failures_total,
            blocks_total=self._blocks_total,
            evicted_total=self._evicted_total,
        )

    def _evict(self) -> None:
        """Drop the least recently failing addresses beyond ``max_clients``."""
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
            self._evicted_total += 1
