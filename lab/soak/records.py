"""What a campaign records while it runs, and what it reads from the central's database.

Samples are the demo's (:class:`lab.demo.records.Sample`: the devices' truth from the simulator and each
edge's mode and schedule over OPC UA). The rest is the campaign's own: every fault as it ran, every upload
attempt, the integrity checks after kills, process resources, operator resets and when each process was
up. All times ``*_s`` are simulated Unix seconds unless the name says ``wall``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lab.demo.records import Sample
from lab.soak.schedule import FaultSpec
from shared.dayahead import DayAhead


@dataclass
class FaultRun:
    """One fault (or event) as the campaign ran it."""

    spec: FaultSpec
    started_at_s: float
    ended_at_s: float | None = None  # None: one-shot, or still running when the campaign stopped
    actions: list[str] = field(default_factory=list)  # what the campaign did and what the system did
    reaction_ms: float | None = None  # battery faults: wall ms until the safe state reached the device
    reaction_at_device: bool = False  # timed by the simulator's own clock (else by the campaign's poll)
    exempt: str = ""  # why the safe-state bound does not apply (the edge could not reach the device, ...)
    failed: str = ""  # the campaign could not inject or end the fault (why)
    probing: bool = False  # battery faults: the safe-state probe still runs (not judged yet)

    def note(self, text: str) -> None:
        self.actions.append(text)


@dataclass(frozen=True)
class UploadAttempt:
    """One day-ahead upload as the campaign (the trading system) sent it."""

    at_s: float
    kind: str  # "upload" (the next day) or "reupload" (the latest day-ahead with new prices)
    day: int  # index of the day the day-ahead covers
    http_status: int | None  # None: no answer (connection refused or lost)
    upload_id: str | None
    plan_id: str | None
    message: str

    @property
    def accepted(self) -> bool:
        return self.http_status in (201, 202)


@dataclass(frozen=True)
class IntegrityCheck:
    at_s: float
    process: str  # "central" or "edge-CAB"
    path: str
    result: str  # "ok", or what PRAGMA integrity_check (or opening the file) said


@dataclass(frozen=True)
class ResourceSample:
    wall_s: float  # wall seconds since the campaign started
    process: str
    pid: int
    rss_kb: int
    threads: int
    fds: int
    group_processes: int  # processes in the child's process group (1: nothing leaked)


@dataclass(frozen=True)
class OperatorReset:
    at_s: float
    cabinet_id: str
    accepted: bool
    message: str


@dataclass(frozen=True)
class ProcessSpan:
    """A process was up (started) from ``started_at_s`` until ``ended_at_s`` (None: until the end)."""

    process: str
    started_at_s: float
    ended_at_s: float | None


@dataclass(frozen=True)
class PlanInfo:
    seq: int  # the central's order of plans; -1 for the campaign's own hold schedules
    plan_id: str
    upload_id: str
    status: str
    start_s: float
    end_s: float
    interval_s: float
    stored_at_s: float
    grid_kw: tuple[float, ...] = ()
    setpoints_kw: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def index_at(self, at_s: float) -> int | None:
        if not self.start_s <= at_s < self.end_s or self.interval_s <= 0:
            return None
        return int((at_s - self.start_s) // self.interval_s)


@dataclass(frozen=True)
class PushInfo:
    plan_id: str
    cabinet_id: str
    status: str  # accepted | refused | unreachable
    at_s: float


@dataclass(frozen=True)
class CentralState:
    """The central's database, read by the campaign (uploads, plans, push outcomes)."""

    upload_ids: tuple[str, ...] = ()
    superseded_upload_ids: frozenset[str] = frozenset()
    plans: tuple[PlanInfo, ...] = ()
    pushes: tuple[PushInfo, ...] = ()
    dayaheads: Mapping[str, DayAhead] = field(default_factory=dict)  # by upload id


@dataclass
class SoakRecord:
    """Everything a campaign collected; the invariants and the report are computed from it."""

    samples: list[Sample] = field(default_factory=list)
    faults: list[FaultRun] = field(default_factory=list)
    uploads: list[UploadAttempt] = field(default_factory=list)
    integrity: list[IntegrityCheck] = field(default_factory=list)
    resources: list[ResourceSample] = field(default_factory=list)
    resets: list[OperatorReset] = field(default_factory=list)
    spans: list[ProcessSpan] = field(default_factory=list)
    holds: list[PlanInfo] = field(default_factory=list)  # the campaign's own 0 kW schedules before the start
    leftover_processes: list[str] = field(default_factory=list)  # children still alive after the stop
    crashes: list[str] = field(default_factory=list)  # children that exited without being killed
    kills: int = 0
    wall_time_s: float = 0.0
    startup_wall_s: float = 0.0
