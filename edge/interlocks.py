"""Safety interlocks: pure checks of a snapshot, watchdogs for what a single snapshot cannot show, a latch.

Fail-safe throughout: a value the checks cannot interpret (an unknown ``State``, an alarm bit without a
name) trips like a known fault. A trip is latched: it stays until :meth:`InterlockLatch.reset` is called
AND every latched condition is gone in fresh data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from edge.snapshot import STATE_FAULT, CabinetReading
from shared.site import EdgeSettings
from shared.sunspec.layout import device_layout


class Condition(StrEnum):
    """Why an edge trips. The value is the short name used in logs, the event log and OPC UA."""

    ALARM = "alarm"
    CELL_OVER_VOLTAGE = "cell_over_voltage"
    CELL_UNDER_VOLTAGE = "cell_under_voltage"
    OVER_TEMPERATURE = "over_temperature"
    SOC_OUT_OF_LIMITS = "soc_out_of_limits"
    DEVICE_FAULT = "device_fault"
    COMM_LOSS = "comm_loss"
    FROZEN_DATA = "frozen_data"
    SETPOINT_MISMATCH = "setpoint_mismatch"
    INVALID_DATA = "invalid_data"
    INTERNAL_ERROR = "internal_error"


@dataclass(frozen=True)
class Finding:
    """A condition present now, with the values that show it."""

    condition: Condition
    detail: str

    def __str__(self) -> str:
        return f"{self.condition.value}: {self.detail}"


_EVT1 = device_layout([802]).point(802, "Evt1")
EVT1_NAMES: dict[int, str] = {bit: name for name, bit in _EVT1.symbols.items()}
# Warnings are for the operator; everything else in Evt1 (alarms, errors, faults, and bits the model does
# not name) trips.
EVT1_WARNING_MASK = sum(1 << bit for name, bit in _EVT1.symbols.items() if name.endswith("_WARNING"))
EVT1_TRIP_MASK = 0xFFFFFFFF & ~EVT1_WARNING_MASK

# 802 State values the edge understands; anything else is treated as a fault.
_KNOWN_STATES = frozenset(device_layout([802]).point(802, "State").symbols.values())


def alarm_names(bits: int) -> list[str]:
    return [EVT1_NAMES.get(bit, f"bit{bit}") for bit in range(32) if bits & (1 << bit)]


@dataclass(frozen=True)
class InterlockLimits:
    """Trip thresholds, from ``[edge]``."""

    temperature_max_degc: float
    cell_voltage_max_v: float
    cell_voltage_min_v: float
    soc_hard_min_pct: float
    soc_hard_max_pct: float
    setpoint_mismatch_kw: float

    @classmethod
    def from_settings(cls, edge: EdgeSettings) -> InterlockLimits:
        return cls(
            temperature_max_degc=edge.temperature_max_degc,
            cell_voltage_max_v=edge.cell_voltage_max_v,
            cell_voltage_min_v=edge.cell_voltage_min_v,
            soc_hard_min_pct=edge.soc_hard_min_pct,
            soc_hard_max_pct=edge.soc_hard_max_pct,
            setpoint_mismatch_kw=edge.setpoint_mismatch_kw,
        )


EVT1_COMMUNICATION_ERROR = 1 << _EVT1.symbols["COMMUNICATION_ERROR"]


def check_cabinet(reading: CabinetReading, limits: InterlockLimits, ignore_bits: int = 0) -> list[Finding]:
    """Every condition a single cabinet reading shows.

    ``ignore_bits`` masks ``Evt1`` bits the edge knows to be stale: COMMUNICATION_ERROR (the device's
    controller-heartbeat watchdog) in a reading taken before this edge's first heartbeat on the connection.
    """
    findings: list[Finding] = []
    tripping = reading.alarm_bits & EVT1_TRIP_MASK & ~ignore_bits
    if tripping:
        findings.append(Finding(Condition.ALARM, "Evt1 " + ", ".join(alarm_names(tripping))))
    if reading.cell_voltage_max_v > limits.cell_voltage_max_v:
        findings.append(
            Finding(
                Condition.CELL_OVER_VOLTAGE,
                f"CellVMax {reading.cell_voltage_max_v:.3f} V > {limits.cell_voltage_max_v:.3f} V",
            )
        )
    if reading.cell_voltage_min_v < limits.cell_voltage_min_v:
        findings.append(
            Finding(
                Condition.CELL_UNDER_VOLTAGE,
                f"CellVMin {reading.cell_voltage_min_v:.3f} V < {limits.cell_voltage_min_v:.3f} V",
            )
        )
    if reading.temperature_degc > limits.temperature_max_degc:
        findings.append(
            Finding(
                Condition.OVER_TEMPERATURE,
                f"TmpCab {reading.temperature_degc:.1f} degC > {limits.temperature_max_degc:.1f} degC",
            )
        )
    if not limits.soc_hard_min_pct <= reading.soc_pct <= limits.soc_hard_max_pct:
        findings.append(
            Finding(
                Condition.SOC_OUT_OF_LIMITS,
                f"SoC {reading.soc_pct:.1f} % outside [{limits.soc_hard_min_pct:g}, "
                f"{limits.soc_hard_max_pct:g}] %",
            )
        )
    if reading.state == STATE_FAULT:
        findings.append(Finding(Condition.DEVICE_FAULT, "802 State FAULT"))
    elif reading.state not in _KNOWN_STATES:
        findings.append(Finding(Condition.DEVICE_FAULT, f"802 State {reading.state} is unknown"))
    return findings


def check_setpoint_readback(
    reading: CabinetReading, expected_kw: float | None, tolerance_kw: float
) -> Finding | None:
    """The device must hold what the edge wrote last, enabled, in WATTS mode.

    ``expected_kw`` is None when nothing was written on this connection yet (nothing to compare).
    """
    if expected_kw is None:
        return None
    if not reading.setpoint_enabled or not reading.setpoint_mode_watts:
        return Finding(Condition.SETPOINT_MISMATCH, "704 WSetEna/WSetMod no longer ENABLED/WATTS")
    if abs(reading.setpoint_readback_kw - expected_kw) > tolerance_kw:
        return Finding(
            Condition.SETPOINT_MISMATCH,
            f"WSet reads {reading.setpoint_readback_kw:.3f} kW, last written {expected_kw:.3f} kW",
        )
    return None


class FrozenDataDetector:
    """Trips when the device's own heartbeat (802 ``Hb``, +1 per second) stops changing.

    Measured in loop (wall) time: the device's heartbeat ticks in its own real time.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._last: int | None = None
        self._changed_s = 0.0

    def forget(self) -> None:
        """A new connection: start watching afresh."""
        self._last = None

    def update(self, heartbeat: int, now_s: float) -> Finding | None:
        if self._last is None or heartbeat != self._last:
            self._last = heartbeat
            self._changed_s = now_s
            return None
        stale_s = now_s - self._changed_s
        if stale_s > self.timeout_s:
            return Finding(
                Condition.FROZEN_DATA,
                f"802 Hb stuck at {heartbeat} for {stale_s:.1f} s (limit {self.timeout_s:g} s)",
            )
        return None


@dataclass(frozen=True)
class Trip:
    """A latched condition and when it tripped (UTC Unix time [s], from the edge's clock)."""

    finding: Finding
    at_s: float


class InterlockLatch:
    """Latched trips. Once tripped, stays tripped until reset with every condition gone."""

    def __init__(self, restored: list[Trip] | None = None) -> None:
        self._trips: dict[Condition, Trip] = {}
        for trip in restored or []:
            self._trips.setdefault(trip.finding.condition, trip)

    @property
    def active(self) -> bool:
        return bool(self._trips)

    @property
    def trips(self) -> list[Trip]:
        return list(self._trips.values())

    @property
    def reason(self) -> str:
        """The first trip's reason, then the other latched conditions (empty when not tripped)."""
        trips = sorted(self._trips.values(), key=lambda t: t.at_s)
        if not trips:
            return ""
        first = str(trips[0].finding)
        others = [t.finding.condition.value for t in trips[1:]]
        return first + (f" (also: {', '.join(others)})" if others else "")

    def trip(self, findings: list[Finding], at_s: float) -> list[Trip]:
        """Latch ``findings``; return the newly latched ones (a condition already latched is kept)."""
        new: list[Trip] = []
        for finding in findings:
            if finding.condition not in self._trips:
                trip = Trip(finding, at_s)
                self._trips[finding.condition] = trip
                new.append(trip)
        return new

    def reset(self) -> list[Trip]:
        """Clear every latched trip; return what was cleared."""
        cleared = list(self._trips.values())
        self._trips.clear()
        return cleared
