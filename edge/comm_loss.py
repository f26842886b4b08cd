"""Communication loss: a hold that ends by itself, not a battery fault (docs/edge.md, "Communication loss").

The controller tells the monitor, every cycle, whether its reads gave a valid snapshot (cabinet AND meter)
or which problems they had. The monitor decides, on the loop's monotonic clock:

- ``NORMAL``: data is fresh, or missing for less than ``comm_timeout_ms`` (the edge writes nothing in a
  cycle without a valid snapshot, so a short gap needs no state of its own);
- ``HOLD``: the reads have failed for ``comm_timeout_ms``, counted from the first failed attempt (so the
  time this edge's own loop did not run is never counted against the device); the edge writes no setpoint
  and the device's revert timer takes it to 0 W;
- ``RECOVERING``: valid data again, but not yet for ``comm_recovery_s``; one failed read goes back to
  ``HOLD`` (same episode). After ``comm_recovery_s`` of valid data the edge resumes by itself.

Each episode has a cause: the cabinet ``device`` or the ``meter`` did not answer in time or answered
unusably, or ``edge_late``: every failure was explained by this edge's own loop running late (a request
whose timeout fired far too late). ``comm_flap_episodes`` episodes of a device or meter cause within
``comm_flap_window_s`` latch ``comm_loss`` like a fault; ``edge_late`` episodes are not evidence against
the devices and do not count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from edge.interlocks import Condition, Finding
from shared.site import EdgeSettings


class CommSource(StrEnum):
    """Which link a problem came from."""

    DEVICE = "device"
    METER = "meter"


class CommLossCause(StrEnum):
    """Why data went missing in an episode (stored as the subject of its events)."""

    DEVICE = "device"  # the cabinet's device did not answer in time, or answered unusably
    METER = "meter"  # the site meter did
    EDGE_LATE = "edge_late"  # only this edge's own loop ran late: no evidence against either device


class CommState(StrEnum):
    NORMAL = "normal"
    HOLD = "hold"
    RECOVERING = "recovering"


@dataclass(frozen=True)
class CommProblem:
    """One failed read of a cycle. ``edge_late``: the failure is explained by the edge's own lateness."""

    source: CommSource
    detail: str
    edge_late: bool = False


@dataclass(frozen=True)
class CommPolicy:
    """The ``[edge]`` keys of the policy, in seconds."""

    timeout_s: float
    recovery_s: float
    flap_episodes: int
    flap_window_s: float

    @classmethod
    def from_settings(cls, settings: EdgeSettings) -> CommPolicy:
        return cls(
            timeout_s=settings.effective_comm_timeout_ms / 1000.0,
            recovery_s=settings.comm_recovery_s,
            flap_episodes=settings.comm_flap_episodes,
            flap_window_s=settings.comm_flap_window_s,
        )


@dataclass(frozen=True)
class EpisodeStarted:
    cause: CommLossCause
    detail: str  # what failed, and for how long

    def __str__(self) -> str:
        return f"comm_loss ({self.cause.value}), holding: {self.detail}"


@dataclass(frozen=True)
class EpisodeEnded:
    cause: CommLossCause
    missing_s: float  # from the first failed read to the last return of valid data
    held_s: float  # from the start of the hold to the resumption

    def __str__(self) -> str:
        return (
            f"comm_loss ({self.cause.value}) ended: data missing for {self.missing_s:.2f} s, "
            f"resumed after {self.held_s:.2f} s in hold"
        )


@dataclass(frozen=True)
class CommUpdate:
    """What one cycle changed (all None: nothing to log or latch)."""

    started: EpisodeStarted | None = None
    ended: EpisodeEnded | None = None
    flapping: Finding | None = None  # to latch


NOTHING = CommUpdate()


@dataclass
class _Episode:
    cause: CommLossCause
    detail: str
    failing_since_s: float
    hold_since_s: float
    data_back_s: float | None = None  # start of the current run of valid data (RECOVERING)
    counted: bool = False  # counted towards flapping


class CommLossMonitor:
    """The comm-loss state machine of one edge (pure: times are passed in, monotonic seconds)."""

    def __init__(self, policy: CommPolicy) -> None:
        self.policy = policy
        self.state = CommState.NORMAL
        self.armed = False  # a valid snapshot was seen since start: before that the edge is "starting"
        self._failing_since_s: float | None = None
        self._run_cause: CommLossCause | None = None  # cause of the failures since _failing_since_s
        self._episode: _Episode | None = None
        self._counted_starts: deque[float] = deque()

    @property
    def holding(self) -> bool:
        """No setpoint may be written: in a hold or waiting for the data to stay valid."""
        return self.state is not CommState.NORMAL

    @property
    def reason(self) -> str:
        """Telemetry's InterlockReason while holding ("" otherwise); stable for the whole state."""
        episode = self._episode
        if episode is None:
            return ""
        if self.state is CommState.RECOVERING:
            resumes = f"resumes after {self.policy.recovery_s:g} s of valid data"
            return f"comm_loss (not latched; data valid again, {resumes}): {episode.detail}"
        return f"comm_loss (not latched; holding until valid data): {episode.detail}"

    @property
    def cause(self) -> CommLossCause | None:
        return self._episode.cause if self._episode is not None else None

    def valid(self, now_s: float) -> CommUpdate:
        """A cycle with a valid snapshot."""
        self.armed = True
        self._failing_since_s = None
        self._run_cause = None
        episode = self._episode
        if episode is None:
            return NOTHING
        if episode.data_back_s is None:
            episode.data_back_s = now_s
            self.state = CommState.RECOVERING
        if now_s - episode.data_back_s < self.policy.recovery_s:
            return NOTHING
        self.state = CommState.NORMAL
        self._episode = None
        ended = EpisodeEnded(
            episode.cause, episode.data_back_s - episode.failing_since_s, now_s - episode.hold_since_s
        )
        return CommUpdate(ended=ended)

    def failed(self, attempt_s: float, now_s: float, problems: tuple[CommProblem, ...]) -> CommUpdate:
        """A cycle without a valid snapshot; ``attempt_s`` is when its reads started."""
        if not self.armed:
            return NOTHING  # starting: the policy arms with the first valid snapshot
        if self._failing_since_s is None:
            self._failing_since_s = attempt_s
        self._run_cause = _combined(self._run_cause, problems)
        episode = self._episode
        if episode is not None:
            episode.data_back_s = None
            self.state = CommState.HOLD
            if episode.cause is CommLossCause.EDGE_LATE and self._run_cause is not CommLossCause.EDGE_LATE:
                episode.cause = self._run_cause
            return self._count(episode, now_s)
        missing_s = now_s - self._failing_since_s
        if missing_s <= self.policy.timeout_s:
            return NOTHING
        what = "; ".join(p.detail for p in problems) or "no data"
        limit_ms = self.policy.timeout_s * 1000.0
        detail = f"no valid data for {missing_s * 1000:.0f} ms (limit {limit_ms:.0f} ms): {what}"
        episode = _Episode(self._run_cause, detail, self._failing_since_s, now_s)
        self._episode = episode
        self.state = CommState.HOLD
        counted = self._count(episode, now_s)
        return CommUpdate(started=EpisodeStarted(episode.cause, detail), flapping=counted.flapping)

    def forget_episodes(self) -> None:
        """An operator reset the latch: start counting episodes afresh."""
        self._counted_starts.clear()
        if self._episode is not None:
            self._episode.counted = True  # the running episode was part of what the operator cleared

    def _count(self, episode: _Episode, now_s: float) -> CommUpdate:
        """Count an episode with a device or meter cause (once) and report flapping."""
        if episode.counted or episode.cause is CommLossCause.EDGE_LATE:
            return NOTHING
        episode.counted = True
        window_s = self.policy.flap_window_s
        starts = self._counted_starts
        starts.append(episode.hold_since_s)
        while starts and starts[0] < now_s - window_s:
            starts.popleft()
        if len(starts) < self.policy.flap_episodes:
            return NOTHING
        finding = Finding(
            Condition.COMM_LOSS,
            f"{len(starts)} communication-loss episodes within {window_s:g} s "
            f"(limit {self.policy.flap_episodes}); latest: {episode.detail}",
        )
        return CommUpdate(flapping=finding)


def _combined(known: CommLossCause | None, problems: tuple[CommProblem, ...]) -> CommLossCause:
    """The cause of a run of failures: the first device or meter problem wins over edge lateness."""
    if known is not None and known is not CommLossCause.EDGE_LATE:
        return known
    for problem in problems:
        if not problem.edge_late:
            return CommLossCause(problem.source.value)
    if problems or known is not None:
        return CommLossCause.EDGE_LATE
    return CommLossCause.DEVICE  # no data and no explanation: count it against the device (fail-safe)
