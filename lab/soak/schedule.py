"""The campaign's seeded fault schedule: what goes wrong, where, when and for how long.

:func:`generate_schedule` draws, from one ``random.Random(seed)``, every simulated day's faults (at least
:data:`MIN_FAULTS_PER_DAY`), the deliberate overlaps the campaign must survive (an edge killed while the
central is down, an upload during an OPC UA partition, a device stalling during an upload, a battery fault
during a link fault), the daily day-ahead uploads and random re-uploads. The same seed, days and cabinets
always give the same schedule; it is written to ``faults.json`` and can be run again from there
(``ems soak --replay-from``).

Times are simulated seconds from the campaign's start; durations are simulated seconds (docs/soak.md says
what each is in wall time at the default speed).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

DAY_S = 86_400.0
MIN_FAULTS_PER_DAY = 70
FAULTS_PER_DAY_RANGE = (74, 86)
FIRST_FAULT_S = 15 * 60.0  # the first quarter hour runs clean: every process has settled
COMBOS_PER_DAY = 4  # deliberate overlaps per day (one of each kind in COMBO_BUILDERS, drawn in turn)
UPLOAD_WINDOW_S = (11 * 3600.0, 14 * 3600.0)  # when the next day's day-ahead arrives (trading at noon)
REUPLOADS_PER_DAY = (1, 3)
SCHEDULE_VERSION = 1


class FaultKind(StrEnum):
    """Everything the campaign does to the system. Uploads are events, not faults."""

    KILL_CENTRAL = "kill_central"  # SIGKILL the central; restarted after the duration
    KILL_EDGE = "kill_edge"  # SIGKILL one edge; restarted after the duration
    OVER_TEMPERATURE = "over_temperature"  # simulator battery faults: the edge must trip
    CELL_OVER_VOLTAGE = "cell_over_voltage"
    CELL_UNDER_VOLTAGE = "cell_under_voltage"
    ALARM_BIT = "alarm_bit"
    STATE_FAULT = "state_fault"
    NO_RESPONSE = "no_response"  # simulator communication faults (a cabinet or the meter)
    DELAY = "delay"
    FREEZE = "freeze"
    MODBUS_EXCEPTION = "modbus_exception"
    LINK_LATENCY = "link_latency"  # proxy faults on one link
    LINK_THROTTLE = "link_throttle"
    LINK_BLACKHOLE = "link_blackhole"
    LINK_PARTITION = "link_partition"
    LINK_RESET = "link_reset"
    SOC_CHANGE = "soc_change"  # the cabinet's SoC jumps (BMS recalibration); one-shot
    LIMIT_DERATE = "limit_derate"  # the cabinet's charge/discharge limits drop to a share of the rating
    UPLOAD = "upload"  # the next day's day-ahead (event, not a fault)
    REUPLOAD = "reupload"  # the latest day-ahead again with new prices (event, not a fault)


BATTERY_FAULTS = frozenset(
    {
        FaultKind.OVER_TEMPERATURE,
        FaultKind.CELL_OVER_VOLTAGE,
        FaultKind.CELL_UNDER_VOLTAGE,
        FaultKind.ALARM_BIT,
        FaultKind.STATE_FAULT,
    }
)
DEVICE_COMM_FAULTS = frozenset(
    {FaultKind.NO_RESPONSE, FaultKind.DELAY, FaultKind.FREEZE, FaultKind.MODBUS_EXCEPTION}
)
LINK_FAULTS = frozenset(
    {
        FaultKind.LINK_LATENCY,
        FaultKind.LINK_THROTTLE,
        FaultKind.LINK_BLACKHOLE,
        FaultKind.LINK_PARTITION,
        FaultKind.LINK_RESET,
    }
)
PROCESS_FAULTS = frozenset({FaultKind.KILL_CENTRAL, FaultKind.KILL_EDGE})
EVENTS = frozenset({FaultKind.UPLOAD, FaultKind.REUPLOAD})
ONE_SHOT = frozenset({FaultKind.LINK_RESET, FaultKind.SOC_CHANGE, *EVENTS})

# Weights of the random faults (the deliberate overlaps come on top).
WEIGHTS: Mapping[FaultKind, float] = {
    FaultKind.KILL_CENTRAL: 3,
    FaultKind.KILL_EDGE: 5,
    FaultKind.OVER_TEMPERATURE: 4,
    FaultKind.CELL_OVER_VOLTAGE: 3,
    FaultKind.CELL_UNDER_VOLTAGE: 3,
    FaultKind.ALARM_BIT: 3,
    FaultKind.STATE_FAULT: 3,
    FaultKind.NO_RESPONSE: 4,
    FaultKind.DELAY: 4,
    FaultKind.FREEZE: 4,
    FaultKind.MODBUS_EXCEPTION: 3,
    FaultKind.LINK_LATENCY: 6,
    FaultKind.LINK_THROTTLE: 4,
    FaultKind.LINK_BLACKHOLE: 6,
    FaultKind.LINK_PARTITION: 7,
    FaultKind.LINK_RESET: 6,
    FaultKind.SOC_CHANGE: 4,
    FaultKind.LIMIT_DERATE: 4,
}

# Duration ranges [simulated s] (log-uniform between the bounds).
DURATIONS_S: Mapping[FaultKind, tuple[float, float]] = {
    FaultKind.KILL_CENTRAL: (5 * 60.0, 60 * 60.0),
    FaultKind.KILL_EDGE: (2 * 60.0, 30 * 60.0),
    **{kind: (10 * 60.0, 90 * 60.0) for kind in BATTERY_FAULTS},
    FaultKind.NO_RESPONSE: (2 * 60.0, 30 * 60.0),
    FaultKind.DELAY: (2 * 60.0, 30 * 60.0),
    FaultKind.FREEZE: (5 * 60.0, 60 * 60.0),
    FaultKind.MODBUS_EXCEPTION: (2 * 60.0, 20 * 60.0),
    FaultKind.LINK_LATENCY: (5 * 60.0, 60 * 60.0),
    FaultKind.LINK_THROTTLE: (5 * 60.0, 60 * 60.0),
    FaultKind.LINK_BLACKHOLE: (90.0, 45 * 60.0),
    FaultKind.LINK_PARTITION: (90.0, 60 * 60.0),
    FaultKind.LIMIT_DERATE: (15 * 60.0, 120 * 60.0),
}

# 802 Evt1 alarms (not *_WARNING bits, which the edge does not trip on) a BMS raises.
EVT1_ALARMS = (
    "GROUND_FAULT",
    "OVER_TEMP_ALARM",
    "UNDER_VOLT_ALARM",
    "OPEN_DOOR_ERROR",
    "CONTACTOR_ERROR",
    "FAN_ERROR",
    "OVER_CHARGE_CURRENT_ALARM",
)


@dataclass(frozen=True)
class FaultSpec:
    """One scheduled fault or event.

    ``target`` is a cabinet id, ``"meter"``, ``"central"`` or a link (``opcua:CAB``, ``modbus:CAB``,
    ``modbus:meter``); ``value`` the fault's argument (degC, V, alarm name, ms, B/s, %, a price seed);
    ``group`` ties the faults of one deliberate overlap together ("" for independent ones).
    """

    at_s: float  # simulated seconds from the campaign's start
    kind: FaultKind
    target: str
    duration_s: float = 0.0  # 0 for one-shot faults and events
    value: float | str | None = None
    group: str = ""

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    @property
    def is_fault(self) -> bool:
        return self.kind not in EVENTS

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "fault") -> FaultSpec:
        try:
            kind = FaultKind(data["kind"])
            at_s = float(data["at_s"])
            duration_s = float(data.get("duration_s", 0.0))
            target = str(data["target"])
        except KeyError as exc:
            raise ValueError(f"{where}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not (math.isfinite(at_s) and at_s >= 0.0 and math.isfinite(duration_s) and duration_s >= 0.0):
            raise ValueError(f"{where}: at_s and duration_s must be finite and >= 0")
        value = data.get("value")
        if value is not None and not isinstance(value, int | float | str):
            raise ValueError(f"{where}.value: must be a number, a string or null, got {value!r}")
        return cls(at_s, kind, target, duration_s, value, str(data.get("group", "")))


@dataclass(frozen=True)
class CampaignSchedule:
    """A whole campaign: seed, length, the cabinets it was drawn for, and every fault in time order."""

    seed: int
    days: float
    cabinet_ids: tuple[str, ...]
    faults: tuple[FaultSpec, ...]

    @property
    def fault_count(self) -> int:
        return sum(1 for f in self.faults if f.is_fault)

    def to_json(self, extra: Mapping[str, Any] | None = None) -> str:
        document: dict[str, Any] = {
            "version": SCHEDULE_VERSION,
            "seed": self.seed,
            "days": self.days,
            "cabinet_ids": list(self.cabinet_ids),
            **(extra or {}),
            "faults": [f.as_dict() for f in self.faults],
        }
        return json.dumps(document, indent=1) + "\n"

    def until(self, end_s: float) -> CampaignSchedule:
        """The schedule cut to what starts before ``end_s`` (a replay up to a failure)."""
        days = max(1.0 / 24.0, math.ceil(end_s / 3600.0) / 24.0)
        return CampaignSchedule(
            self.seed, min(self.days, days), self.cabinet_ids, tuple(f for f in self.faults if f.at_s < end_s)
        )


def load_schedule(path: Path) -> CampaignSchedule:
    """A schedule from ``faults.json`` or ``replay.json``; ``ValueError`` naming the entry when bad."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != SCHEDULE_VERSION:
        raise ValueError(f"{path}: not a fault schedule of version {SCHEDULE_VERSION}")
    try:
        seed = int(document["seed"])
        days = float(document["days"])
        cabinet_ids = tuple(str(c) for c in document["cabinet_ids"])
        entries = document["faults"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: missing or bad key {exc}") from None
    if not (math.isfinite(days) and days > 0) or not isinstance(entries, list):
        raise ValueError(f"{path}: 'days' must be > 0 and 'faults' a list")
    faults = tuple(FaultSpec.from_dict(e, f"{path}: faults[{i}]") for i, e in enumerate(entries))
    return CampaignSchedule(seed, days, cabinet_ids, tuple(sorted(faults, key=_order)))


def _order(fault: FaultSpec) -> tuple[float, str, str]:
    return (fault.at_s, fault.kind.value, fault.target)


# ----------------------------------------------------------------------------------------- generation


class _Slots:
    """Which (kind family, target) is busy until when: the same fault never overlaps itself on a target."""

    def __init__(self) -> None:
        self._busy: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def free(self, family: str, target: str, start_s: float, end_s: float) -> bool:
        return all(end_s <= s or start_s >= e for s, e in self._busy.get((family, target), []))

    def take(self, family: str, target: str, start_s: float, end_s: float) -> None:
        self._busy.setdefault((family, target), []).append((start_s, end_s))


def _family(kind: FaultKind, target: str) -> tuple[str, str]:
    """The slot a fault occupies: one link fault per link, one process fault per process, one of each
    device fault per device (so overlapping different faults on one cabinet is allowed)."""
    if kind in LINK_FAULTS:
        return ("link", target)
    if kind in PROCESS_FAULTS:
        return ("process", target)
    return (kind.value, target)


def _targets(kind: FaultKind, cabinet_ids: Sequence[str]) -> list[str]:
    if kind is FaultKind.KILL_CENTRAL:
        return ["central"]
    if kind in DEVICE_COMM_FAULTS:
        return [*cabinet_ids, "meter"]
    if kind in LINK_FAULTS:
        return [
            *(f"opcua:{c}" for c in cabinet_ids),
            *(f"modbus:{c}" for c in cabinet_ids),
            "modbus:meter",
        ]
    return list(cabinet_ids)


def _duration(rng: random.Random, kind: FaultKind) -> float:
    if kind in ONE_SHOT:
        return 0.0
    low, high = DURATIONS_S[kind]
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def _value(rng: random.Random, kind: FaultKind) -> float | str | None:
    # Battery faults are beyond the edge's default thresholds (docs/edge.md) by a clear margin.
    values: dict[FaultKind, Callable[[], float | str | None]] = {
        FaultKind.OVER_TEMPERATURE: lambda: round(rng.uniform(60.0, 80.0), 1),
        FaultKind.CELL_OVER_VOLTAGE: lambda: round(rng.uniform(3.70, 3.90), 3),
        FaultKind.CELL_UNDER_VOLTAGE: lambda: round(rng.uniform(2.40, 2.70), 3),
        FaultKind.ALARM_BIT: lambda: rng.choice(EVT1_ALARMS),
        FaultKind.DELAY: lambda: round(rng.uniform(20.0, 400.0)),
        FaultKind.MODBUS_EXCEPTION: lambda: rng.choice((4, 6, 11)),
        FaultKind.LINK_LATENCY: lambda: round(rng.uniform(10.0, 500.0)),
        FaultKind.LINK_THROTTLE: lambda: round(math.exp(rng.uniform(math.log(300.0), math.log(50_000.0)))),
        FaultKind.SOC_CHANGE: lambda: round(rng.uniform(20.0, 80.0), 1),
        FaultKind.LIMIT_DERATE: lambda: round(rng.uniform(20.0, 80.0)),
        FaultKind.REUPLOAD: lambda: rng.randrange(1, 2**31),
    }
    make = values.get(kind)
    return make() if make is not None else None


def _place(
    rng: random.Random,
    slots: _Slots,
    kind: FaultKind,
    targets: Sequence[str],
    window: tuple[float, float],
    group: str = "",
    duration_s: float | None = None,
) -> FaultSpec | None:
    """A fault of ``kind`` starting within ``window`` on a free target (None after 40 tries)."""
    for _ in range(40):
        target = rng.choice(list(targets))
        at_s = round(rng.uniform(*window))
        length = _duration(rng, kind) if duration_s is None else duration_s
        family = _family(kind, target)
        # One-shot faults hold their slot for a minute so they never pile up on one target.
        end_s = at_s + max(length, 60.0)
        if slots.free(*family, at_s, end_s):
            slots.take(*family, at_s, end_s)
            return FaultSpec(float(at_s), kind, target, float(length), _value(rng, kind), group)
    return None


def _combo_edge_during_central(
    rng: random.Random, slots: _Slots, day: int, cabinets: Sequence[str], window: tuple[float, float]
) -> list[FaultSpec]:
    group = f"d{day}-edge-restart-while-central-down"
    central = _place(
        rng, slots, FaultKind.KILL_CENTRAL, ["central"], window, group, float(rng.randint(1200, 2400))
    )
    if central is None:
        return []
    inner = (central.at_s + 60.0, central.at_s + central.duration_s / 2.0)
    edge = _place(rng, slots, FaultKind.KILL_EDGE, cabinets, inner, group, float(rng.randint(120, 600)))
    return [central] + ([edge] if edge else [])


def _combo_upload_during_partition(
    rng: random.Random, slots: _Slots, day: int, cabinets: Sequence[str], window: tuple[float, float]
) -> list[FaultSpec]:
    group = f"d{day}-reupload-during-partition"
    targets = [f"opcua:{c}" for c in cabinets]
    partition = _place(
        rng, slots, FaultKind.LINK_PARTITION, targets, window, group, float(rng.randint(90, 900))
    )
    if partition is None:
        return []
    upload_at = partition.at_s + min(60.0, partition.duration_s / 2.0)
    return [
        partition,
        FaultSpec(upload_at, FaultKind.REUPLOAD, "central", 0.0, _value(rng, FaultKind.REUPLOAD), group),
    ]


def _combo_stall_during_upload(
    rng: random.Random, slots: _Slots, day: int, cabinets: Sequence[str], window: tuple[float, float]
) -> list[FaultSpec]:
    group = f"d{day}-device-stall-during-upload"
    stall = _place(rng, slots, FaultKind.NO_RESPONSE, cabinets, window, group, float(rng.randint(300, 1200)))
    if stall is None:
        return []
    upload_at = stall.at_s + 30.0
    return [
        stall,
        FaultSpec(upload_at, FaultKind.REUPLOAD, "central", 0.0, _value(rng, FaultKind.REUPLOAD), group),
    ]


def _combo_battery_during_link(
    rng: random.Random, slots: _Slots, day: int, cabinets: Sequence[str], window: tuple[float, float]
) -> list[FaultSpec]:
    group = f"d{day}-battery-fault-during-opcua-blackhole"
    cabinet = rng.choice(list(cabinets))
    link = _place(
        rng,
        slots,
        FaultKind.LINK_BLACKHOLE,
        [f"opcua:{cabinet}"],
        window,
        group,
        float(rng.randint(600, 1800)),
    )
    if link is None:
        return []
    inner = (link.at_s + 60.0, link.at_s + link.duration_s / 2.0)
    kind = rng.choice(sorted(BATTERY_FAULTS))
    battery = _place(rng, slots, kind, [cabinet], inner, group)
    return [link] + ([battery] if battery else [])


COMBO_BUILDERS = (
    _combo_edge_during_central,
    _combo_upload_during_partition,
    _combo_stall_during_upload,
    _combo_battery_during_link,
)


def generate_schedule(seed: int, days: float, cabinet_ids: Sequence[str]) -> CampaignSchedule:
    """The seeded campaign over ``days`` simulated days (see the module docstring)."""
    if not (math.isfinite(days) and days > 0):
        raise ValueError(f"days must be > 0, got {days}")
    if not cabinet_ids:
        raise ValueError("a campaign needs at least one cabinet")
    rng = random.Random(seed)
    slots = _Slots()
    total_s = days * DAY_S
    faults: list[FaultSpec] = []
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]
    for day in range(math.ceil(days)):
        day_start = day * DAY_S
        day_end = min(total_s, day_start + DAY_S)
        first = max(FIRST_FAULT_S, day_start)
        # Faults must end within the campaign so their recovery is seen.
        window = (first, max(first, day_end - 20 * 60.0))
        share = (day_end - day_start) / DAY_S
        wanted = max(1, math.ceil(rng.randint(*FAULTS_PER_DAY_RANGE) * share))
        day_faults: list[FaultSpec] = []
        for builder in COMBO_BUILDERS[: max(1, round(COMBOS_PER_DAY * share))]:
            day_faults += [f for f in builder(rng, slots, day, cabinet_ids, window) if f.end_s <= total_s]
        attempts = 0
        while sum(1 for f in day_faults if f.is_fault) < wanted and attempts < 20 * wanted:
            attempts += 1
            kind = rng.choices(kinds, weights)[0]
            fault = _place(rng, slots, kind, _targets(kind, cabinet_ids), window)
            if fault is not None and fault.end_s <= total_s:
                day_faults.append(fault)
        faults += day_faults
        faults += _uploads(rng, day, day_start, day_end)
    return CampaignSchedule(seed, days, tuple(cabinet_ids), tuple(sorted(_dedupe(faults), key=_order)))


def _dedupe(faults: Iterable[FaultSpec]) -> list[FaultSpec]:
    seen: set[FaultSpec] = set()
    result = []
    for fault in faults:
        if fault not in seen:
            seen.add(fault)
            result.append(fault)
    return result


def _uploads(rng: random.Random, day: int, day_start: float, day_end: float) -> list[FaultSpec]:
    """The next day's day-ahead around noon, and random re-uploads of the latest one with new prices."""
    events: list[FaultSpec] = []
    upload_at = day_start + rng.uniform(*UPLOAD_WINDOW_S)
    # Also on the last day: the campaign starts once every process runs (up to a quarter hour or more after
    # the day-ahead's start), so it always ends a little into the next day.
    if upload_at < day_end:
        events.append(FaultSpec(float(round(upload_at)), FaultKind.UPLOAD, "central", 0.0, day + 1))
    for _ in range(rng.randint(*REUPLOADS_PER_DAY)):
        at_s = rng.uniform(day_start + FIRST_FAULT_S, day_end - 30 * 60.0)
        if at_s > day_start:
            events.append(
                FaultSpec(round(at_s), FaultKind.REUPLOAD, "central", 0.0, _value(rng, FaultKind.REUPLOAD))
            )
    return events
