"""Register layout of a SunSpec device from pysunspec2's JSON model definitions.

A device is ``"SunS"`` at :data:`BASE_ADDRESS` (40000, 2 registers), then each model as ``ID``, ``L`` and its
``L`` registers of points, then the end marker ``0xFFFF, 0``. Addresses here are the Modbus protocol
addresses (0-based) that a client passes to ``read_holding_registers``: SunSpec's "40000" is address 40000.

Points of (non-repeating) groups inside a model are named ``Group.Point`` (e.g. ``PFWInj.PF`` in 704).
Repeating groups are not used by the models this project serves (1, 701, 704, 802, 203) and are refused.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import sunspec2

BASE_ADDRESS = 40000
SUNS_MARKER = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF
CABINET_MODELS: tuple[int, ...] = (1, 701, 704, 802)
METER_MODELS: tuple[int, ...] = (1, 203)

# "Not implemented" value of each point type (SunSpec Information Model spec).
UNIMPLEMENTED: Mapping[str, int] = {
    "int16": 0x8000,
    "uint16": 0xFFFF,
    "count": 0,
    "acc16": 0,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "acc32": 0,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "ipaddr": 0,
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
    "acc64": 0,
    "sunssf": 0x8000,
    "pad": 0x8000,
}
_SIGNED = frozenset({"int16", "int32", "int64", "sunssf"})


@dataclass(frozen=True)
class PointDef:
    """One point: absolute ``address`` [register], ``size`` [registers], scale-factor point name ``sf``."""

    name: str
    type: str
    size: int
    address: int
    sf: str | None
    writable: bool
    symbols: Mapping[str, int]

    @property
    def signed(self) -> bool:
        return self.type in _SIGNED

    @property
    def unimplemented(self) -> int:
        return UNIMPLEMENTED.get(self.type, 0)


@dataclass(frozen=True)
class ModelLayout:
    """A model instance: ``address`` of its ``ID`` register and ``length`` L (registers after ID and L)."""

    model_id: int
    address: int
    length: int
    points: Mapping[str, PointDef]

    @property
    def end_address(self) -> int:
        """First register after this model."""
        return self.address + 2 + self.length

    def point(self, name: str) -> PointDef:
        try:
            return self.points[name]
        except KeyError:
            raise KeyError(f"model {self.model_id} has no point {name!r}") from None


@dataclass(frozen=True)
class DeviceLayout:
    """The whole register image of a device: SunS marker, models in order, end marker."""

    base_address: int
    models: Mapping[int, ModelLayout]

    @property
    def end_marker_address(self) -> int:
        last = list(self.models.values())[-1]
        return last.end_address

    @property
    def register_count(self) -> int:
        """Registers from the base address through the end marker (2 registers)."""
        return self.end_marker_address + 2 - self.base_address

    def point(self, model_id: int, name: str) -> PointDef:
        return self.model(model_id).point(name)

    def model(self, model_id: int) -> ModelLayout:
        try:
            return self.models[model_id]
        except KeyError:
            raise KeyError(f"device has no model {model_id}") from None


@cache
def model_definition(model_id: int) -> dict[str, Any]:
    """The pysunspec2 JSON definition of ``model_id``."""
    path = Path(sunspec2.__file__).parent / "models" / "json" / f"model_{model_id}.json"
    with path.open(encoding="utf-8") as handle:
        definition: dict[str, Any] = json.load(handle)
    return definition


def _flatten(group: Mapping[str, Any], prefix: str, address: int, out: dict[str, PointDef]) -> int:
    if group.get("count") not in (None, 1):
        raise ValueError(f"repeating group {group['name']!r} is not supported")
    for raw in group.get("points", []):
        size = int(raw["size"])
        name = prefix + raw["name"]
        out[name] = PointDef(
            name=name,
            type=str(raw["type"]),
            size=size,
            address=address,
            sf=raw.get("sf") if isinstance(raw.get("sf"), str) else None,
            writable=raw.get("access", "R") == "RW",
            symbols={str(s["name"]): int(s["value"]) for s in raw.get("symbols", [])},
        )
        address += size
    for sub in group.get("groups", []):
        address = _flatten(sub, f"{prefix}{sub['name']}.", address, out)
    return address


@cache
def _model_points(model_id: int) -> tuple[tuple[PointDef, ...], int]:
    """Points of a model with addresses relative to its ID register (0), and its length L."""
    points: dict[str, PointDef] = {}
    end = _flatten(model_definition(model_id)["group"], "", 0, points)
    return tuple(points.values()), end - 2


def device_layout(model_ids: Sequence[int], base_address: int = BASE_ADDRESS) -> DeviceLayout:
    """Lay out ``model_ids`` in order after the SunS marker at ``base_address``."""
    models: dict[int, ModelLayout] = {}
    address = base_address + 2
    for model_id in model_ids:
        if model_id in models:
            raise ValueError(f"model {model_id} twice")
        relative, length = _model_points(model_id)
        points = {
            p.name: PointDef(p.name, p.type, p.size, address + p.address, p.sf, p.writable, p.symbols)
            for p in relative
        }
        models[model_id] = ModelLayout(model_id, address, length, points)
        address += 2 + length
    return DeviceLayout(base_address, models)


def symbol_value(model_id: int, point: str, symbol: str) -> int:
    """The numeric value of an enum or bit symbol, e.g. ``symbol_value(704, "WSetMod", "WATTS")``."""
    points, _ = _model_points(model_id)
    for candidate in points:
        if candidate.name == point:
            try:
                return candidate.symbols[symbol]
            except KeyError:
                raise KeyError(f"{model_id}.{point} has no symbol {symbol!r}") from None
    raise KeyError(f"model {model_id} has no point {point!r}")


# ------------------------------------------------------------------------------------ value encoding


def encode_value(point: PointDef, raw: int | str | None) -> list[int]:
    """Registers for a raw (unscaled) value; None gives the point's "not implemented" value."""
    if point.type == "string":
        data = (raw if isinstance(raw, str) else "").encode("utf-8")[: point.size * 2]
        data = data.ljust(point.size * 2, b"\0")
        return list(struct.unpack(f">{point.size}H", data))
    value = point.unimplemented if raw is None else int(raw)
    bits = 16 * point.size
    if value < 0:
        if not point.signed:
            raise ValueError(f"{point.name} is {point.type}; cannot hold {value}")
        value += 1 << bits
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{point.name} ({point.type}) cannot hold {raw}")
    return [(value >> (16 * (point.size - 1 - i))) & 0xFFFF for i in range(point.size)]


def decode_value(point: PointDef, registers: Sequence[int]) -> int | str | None:
    """Raw value of a point from its registers; None when it holds the "not implemented" value."""
    if len(registers) != point.size:
        raise ValueError(f"{point.name} needs {point.size} registers, got {len(registers)}")
    if point.type == "string":
        data = struct.pack(f">{point.size}H", *registers)
        return data.rstrip(b"\0").decode("utf-8", errors="replace")
    value = 0
    for register in registers:
        value = (value << 16) | (register & 0xFFFF)
    if value == point.unimplemented and point.type not in ("acc16", "acc32", "acc64", "count"):
        return None
    if point.signed and value >= 1 << (16 * point.size - 1):
        value -= 1 << (16 * point.size)
    return value


def scale(raw: int, sf: int) -> float:
    """Engineering value of a raw integer with scale factor ``sf`` (value = raw * 10**sf)."""
    return raw * 10.0**sf


def unscale(value: float, sf: int) -> int:
    """Raw integer for an engineering value with scale factor ``sf`` (rounded to nearest)."""
    return round(value / 10.0**sf)
