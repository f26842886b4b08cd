"""What a demo run records: samples of the realised day, timeline events, fault reactions, push counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from edge.persistence import Event

OFFLINE = "offline"  # mode shown for an edge that does not answer (process down or not up yet)


@dataclass(frozen=True)
class CabinetSample:
    """One cabinet at one sample: the device's true state (simulator) and its edge's view (OPC UA)."""

    power_kw: float | None  # actual AC power at the device, + discharge; None when unreadable
    soc_pct: float | None  # actual state of charge of the device
    temperature_degc: float | None  # cabinet temperature at the device
    mode: str  # edge mode (schedule, fallback, tripped, starting) or OFFLINE
    schedule_id: str  # the edge's active schedule ("" when none or offline)
    setpoint_kw: float | None  # what the edge last wrote to the device, + discharge
    interlock_reason: str  # "" when no interlock is latched and no comm-loss hold runs
    charged_ac_kwh: float | None = None  # the device's AC energy counters since the simulator started
    discharged_ac_kwh: float | None = None


@dataclass(frozen=True)
class Sample:
    """The whole site at one simulated instant."""

    at_s: float  # simulated Unix time [s]
    grid_kw: float | None  # site meter at the PoC, + import
    cabinets: Mapping[str, CabinetSample]


@dataclass(frozen=True)
class TimelineEvent:
    """Something the demo did or saw, on the simulated timeline."""

    at_s: float  # simulated Unix time [s]
    kind: str  # an ActionKind value, "upload", "plan", "edge_event", ...
    cabinet_id: str | None
    detail: str


@dataclass(frozen=True)
class FaultReaction:
    """How fast the edge reacted to an injected fault, seen at the device (by polling the simulator).

    ``reaction_ms`` ends when the edge's safe state reaches the device (DISCONNECT, or its setpoint replaced
    by 0 W): that is the interlock acting. ``zero_power_ms`` ends when the device's power is ~0; it may come
    sooner, because a hot PCS derates on its own.
    """

    cabinet_id: str
    injected_at_s: float  # simulated Unix time of the injection [s]
    power_before_kw: float | None  # device power just before the injection
    reaction_ms: float | None  # wall time from injection to the edge's safe state at the device; None: never
    zero_power_ms: float | None  # wall time from injection to |AC power| <= ZERO_POWER_KW at the device
    poll_period_ms: float  # how often the device was polled while waiting [ms]
    cycle_ms: float  # the edge's control cycle [ms]
    at_device: bool = False  # reaction_ms from the simulator's own timestamps (else from the probe's poll)

    @property
    def reaction_cycles(self) -> float | None:
        return None if self.reaction_ms is None else self.reaction_ms / self.cycle_ms


@dataclass
class PushCounts:
    """Outcomes of the central's schedule pushes to one cabinet."""

    accepted: int = 0
    refused: int = 0
    unreachable: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "refused": self.refused, "unreachable": self.unreachable}


@dataclass
class RunRecord:
    """Everything a run collected; the report and the plots are computed from it."""

    samples: list[Sample] = field(default_factory=list)
    events: list[TimelineEvent] = field(default_factory=list)
    fault_reactions: list[FaultReaction] = field(default_factory=list)
    pushes: dict[str, PushCounts] = field(default_factory=dict)
    edge_logs: dict[str, list[Event]] = field(default_factory=dict)  # each edge's local event log
    wall_time_s: float = 0.0
    startup_wall_s: float = 0.0
