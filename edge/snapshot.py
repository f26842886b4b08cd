"""Decoding one cycle's register reads into typed, scaled readings (pure; no I/O).

Every point is found through :mod:`shared.sunspec.layout` (addresses, types, scale factors, symbols);
nothing here knows a register number. A point the edge needs that reads as SunSpec "not implemented", or a
missing scale factor, makes the whole reading invalid (:class:`DeviceDataError`): unknown is never fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shared.sunspec.layout import ModelLayout, PointDef, decode_value, scale, symbol_value

MAX_REGISTERS_PER_READ = 125  # Modbus function 3 limit

# Points the edge reads every cycle (docs/interfaces.md: Modbus devices), by model.
CABINET_READ_POINTS: Mapping[int, tuple[str, ...]] = {
    701: ("W", "W_SF", "TmpCab", "Tmp_SF"),
    704: ("WSetEna", "WSetMod", "WSet", "WSet_SF"),
    802: (
        "WChaRteMax",
        "WDisChaRteMax",
        "WChaDisChaMax_SF",
        "SoC",
        "SoC_SF",
        "Hb",
        "CtrlHb",
        "State",
        "Evt1",
        "CellVMax",
        "CellVMin",
        "CellV_SF",
        "SetOp",
    ),
}
METER_READ_POINTS: Mapping[int, tuple[str, ...]] = {203: ("W", "W_SF")}

STATE_FAULT = symbol_value(802, "State", "FAULT")
STATE_DISCONNECTED = symbol_value(802, "State", "DISCONNECTED")
SETOP_CONNECT = symbol_value(802, "SetOp", "CONNECT")
SETOP_DISCONNECT = symbol_value(802, "SetOp", "DISCONNECT")
WSET_ENABLED = symbol_value(704, "WSetEna", "ENABLED")
WSET_MODE_WATTS = symbol_value(704, "WSetMod", "WATTS")


class DeviceDataError(ValueError):
    """The device answered, but with data the edge cannot trust (not implemented, missing scale factor)."""


@dataclass(frozen=True)
class Span:
    """A contiguous block of holding registers read with one request."""

    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


def plan_spans(points: Iterable[PointDef], max_count: int = MAX_REGISTERS_PER_READ) -> tuple[Span, ...]:
    """The fewest contiguous reads (each at most ``max_count`` registers) that cover ``points``.

    Points sorted by address are merged greedily into the current span while it stays within
    ``max_count``; the gaps in between are read too (one request is cheaper than two on any bus).
    """
    ordered = sorted(points, key=lambda p: p.address)
    spans: list[Span] = []
    start = end = -1
    for point in ordered:
        if point.size > max_count:
            raise ValueError(f"point {point.name} ({point.size} registers) exceeds one read")
        point_end = point.address + point.size
        if start >= 0 and point_end - start <= max_count:
            end = max(end, point_end)
            continue
        if start >= 0:
            spans.append(Span(start, end - start))
        start, end = point.address, point_end
    if start >= 0:
        spans.append(Span(start, end - start))
    return tuple(spans)


class RegisterImage:
    """The registers of one cycle's reads: ``(span, values)`` pairs."""

    def __init__(self, blocks: Sequence[tuple[Span, Sequence[int]]]) -> None:
        for span, values in blocks:
            if len(values) != span.count:
                raise DeviceDataError(
                    f"read of {span.count} registers at {span.address} returned {len(values)}"
                )
        self._blocks = tuple(blocks)

    def registers(self, point: PointDef) -> Sequence[int]:
        for span, values in self._blocks:
            if span.address <= point.address and point.address + point.size <= span.end:
                offset = point.address - span.address
                return values[offset : offset + point.size]
        raise DeviceDataError(f"point {point.name} at {point.address} was not read")

    def raw(self, model: ModelLayout, name: str) -> int:
        """The point's raw integer; "not implemented" raises :class:`DeviceDataError`."""
        point = model.point(name)
        value = decode_value(point, self.registers(point))
        if value is None or isinstance(value, str):
            raise DeviceDataError(f"{model.model_id}.{name} is not implemented by the device")
        return value

    def counter(self, model: ModelLayout, name: str) -> int:
        """An unsigned 16-bit counter (heartbeats): every bit pattern is a valid value."""
        point = model.point(name)
        return int(self.registers(point)[0]) & 0xFFFF

    def optional_raw(self, model: ModelLayout, name: str) -> int | None:
        point = model.point(name)
        value = decode_value(point, self.registers(point))
        return value if isinstance(value, int) else None

    def scaled(self, model: ModelLayout, name: str) -> float:
        """Engineering value of a point with its scale factor honoured."""
        point = model.point(name)
        if point.sf is None:
            return float(self.raw(model, name))
        sf = self.raw(model, point.sf)
        if not -10 <= sf <= 10:  # SunSpec's range; anything else is garbage, not a huge number
            raise DeviceDataError(f"{model.model_id}.{point.sf} = {sf} is outside -10..10")
        return scale(self.raw(model, name), sf)


@dataclass(frozen=True)
class CabinetModels:
    """Where the cabinet device holds the models the edge uses."""

    inverter: ModelLayout  # 701
    controls: ModelLayout  # 704
    battery: ModelLayout  # 802

    def by_id(self) -> dict[int, ModelLayout]:
        return {701: self.inverter, 704: self.controls, 802: self.battery}

    def read_points(self) -> list[PointDef]:
        models = self.by_id()
        return [models[mid].point(name) for mid, names in CABINET_READ_POINTS.items() for name in names]


@dataclass(frozen=True)
class MeterModels:
    meter: ModelLayout  # 203

    def read_points(self) -> list[PointDef]:
        return [self.meter.point(name) for name in METER_READ_POINTS[203]]


@dataclass(frozen=True)
class CabinetReading:
    """One read of the cabinet device, scaled. Power + discharge."""

    soc_pct: float
    active_power_kw: float  # 701 W
    charge_rate_max_kw: float  # 802 WChaRteMax
    discharge_rate_max_kw: float  # 802 WDisChaRteMax
    cell_voltage_max_v: float
    cell_voltage_min_v: float
    temperature_degc: float  # 701 TmpCab
    alarm_bits: int  # 802 Evt1
    state: int  # 802 State
    heartbeat: int  # 802 Hb (device's own counter)
    control_heartbeat: int  # 802 CtrlHb as the device holds it (the last heartbeat written to it)
    setpoint_readback_kw: float  # 704 WSet
    setpoint_enabled: bool  # 704 WSetEna == ENABLED
    setpoint_mode_watts: bool  # 704 WSetMod == WATTS
    set_op: int | None  # 802 SetOp as last written (None: not implemented)
    wset_sf: int  # 704 WSet_SF, needed to write WSet


@dataclass(frozen=True)
class MeterReading:
    """One read of the site meter. ``grid_power_kw`` is + import."""

    grid_power_kw: float


def decode_cabinet(image: RegisterImage, models: CabinetModels) -> CabinetReading:
    inv, ctl, bat = models.inverter, models.controls, models.battery
    return CabinetReading(
        soc_pct=image.scaled(bat, "SoC"),
        active_power_kw=image.scaled(inv, "W") / 1000.0,
        charge_rate_max_kw=image.scaled(bat, "WChaRteMax") / 1000.0,
        discharge_rate_max_kw=image.scaled(bat, "WDisChaRteMax") / 1000.0,
        cell_voltage_max_v=image.scaled(bat, "CellVMax"),
        cell_voltage_min_v=image.scaled(bat, "CellVMin"),
        temperature_degc=image.scaled(inv, "TmpCab"),
        alarm_bits=image.raw(bat, "Evt1"),
        state=image.raw(bat, "State"),
        heartbeat=image.counter(bat, "Hb"),
        control_heartbeat=image.counter(bat, "CtrlHb"),
        setpoint_readback_kw=image.scaled(ctl, "WSet") / 1000.0,
        setpoint_enabled=image.raw(ctl, "WSetEna") == WSET_ENABLED,
        setpoint_mode_watts=image.raw(ctl, "WSetMod") == WSET_MODE_WATTS,
        set_op=image.optional_raw(bat, "SetOp"),
        wset_sf=image.raw(ctl, "WSet_SF"),
    )


def decode_meter(image: RegisterImage, models: MeterModels) -> MeterReading:
    # SunSpec meter models count W positive for power delivered from the grid to the site (the direction
    # that TotWhImp accumulates), which is the project's + import convention: no sign change.
    return MeterReading(grid_power_kw=image.scaled(models.meter, "W") / 1000.0)


@dataclass(frozen=True)
class Snapshot:
    """Everything one cycle knows about the plant: a valid cabinet and meter reading taken together."""

    cabinet: CabinetReading
    meter: MeterReading
    monotonic_s: float  # when the reads completed (loop time) [s]
