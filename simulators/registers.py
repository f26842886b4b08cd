"""The register image of a simulated SunSpec device, built from :mod:`shared.sunspec.layout`.

The image is the list of holding registers from the ``SunS`` marker at 40000 through the end marker. Points
are set with engineering values and scaled with the device's scale factors, which are fixed when the device
is built (a real device never changes a ``*_SF`` at run time). Writes from a client are checked the way a
strict device checks them: only writable points, never half of a multi-register point, enum values from
the model's symbols.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.sunspec.layout import (
    END_MODEL_ID,
    SUNS_MARKER,
    DeviceLayout,
    PointDef,
    decode_value,
    device_layout,
    encode_value,
)

# Modbus exception codes a device answers with when it refuses a request.
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03

# Largest magnitude a point type can hold without colliding with its "not implemented" value.
_RAW_MAX: Mapping[str, int] = {
    "int16": 0x7FFF,
    "uint16": 0xFFFE,
    "int32": 0x7FFFFFFF,
    "uint32": 0xFFFFFFFE,
    "acc32": 0xFFFFFFFF,
    "int64": 0x7FFFFFFFFFFFFFFF,
    "uint64": 0xFFFFFFFFFFFFFFFE,
    "acc64": 0x7FFFFFFFFFFFFFFF,
    "count": 0xFFFF,
    "acc16": 0xFFFF,
}
_ENUM_TYPES = frozenset({"enum16", "enum32"})


class WriteRefused(Exception):
    """A client write the device refuses; ``code`` is the Modbus exception code to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def fit_scale_factor(bound: float, point_type: str, finest: int) -> int:
    """The smallest scale factor >= ``finest`` at which ``bound`` (engineering units) fits ``point_type``."""
    limit = _RAW_MAX[point_type]
    sf = finest
    while abs(bound) / 10.0**sf > limit:
        sf += 1
    return sf


@dataclass(frozen=True)
class _Slot:
    point: PointDef
    offset: int  # index into the image
    sf: int | None  # the scale factor's value, None for unscaled points
    raw_min: int
    raw_max: int


class RegisterImage:
    """Holding registers of one SunSpec device (models in order, SunS marker, end marker).

    ``scale_factors`` maps ``(model_id, sf_point_name)`` to the value of that ``*_SF`` point; every scale
    factor a model declares must be given (they are what makes ``set`` and ``get`` scale).
    """

    def __init__(self, model_ids: Sequence[int], scale_factors: Mapping[tuple[int, str], int]) -> None:
        self.layout: DeviceLayout = device_layout(model_ids)
        self.base_address = self.layout.base_address
        self.registers: list[int] = [0] * self.layout.register_count
        self._owner: list[PointDef | None] = [None] * self.layout.register_count
        self._slots: dict[tuple[int, str], _Slot] = {}
        self._write_slots: dict[int, _Slot] = {}  # first offset of each writable point
        self.registers[0:2] = list(SUNS_MARKER)
        for model in self.layout.models.values():
            start = model.address - self.base_address
            self.registers[start] = model.model_id
            self.registers[start + 1] = model.length
            for point in model.points.values():
                offset = point.address - self.base_address
                for index in range(point.size):
                    self._owner[offset + index] = point
                if point.name in ("ID", "L"):
                    continue
                if point.type == "sunssf":
                    if (model.model_id, point.name) not in scale_factors:
                        raise ValueError(f"model {model.model_id}: no value for scale factor {point.name}")
                    self._write_raw(point, offset, scale_factors[(model.model_id, point.name)])
                else:
                    self._write_raw(point, offset, None)
        for model in self.layout.models.values():
            for point in model.points.values():
                sf = None
                if point.sf is not None:
                    sf = scale_factors[(model.model_id, point.sf)]
                raw_max = _RAW_MAX.get(point.type, 0)
                raw_min = -raw_max if point.signed else 0
                slot = _Slot(point, point.address - self.base_address, sf, raw_min, raw_max)
                self._slots[(model.model_id, point.name)] = slot
                if point.writable:
                    self._write_slots[slot.offset] = slot
        end = self.layout.end_marker_address - self.base_address
        self.registers[end : end + 2] = [END_MODEL_ID, 0]

    # ------------------------------------------------------------------------------------ access

    def slot(self, model_id: int, name: str) -> _Slot:
        try:
            return self._slots[(model_id, name)]
        except KeyError:
            raise KeyError(f"model {model_id} has no point {name!r}") from None

    def scale_factor(self, model_id: int, name: str) -> int:
        """The scale factor that applies to point ``name`` (0 for an unscaled point)."""
        return self.slot(model_id, name).sf or 0

    def set(self, model_id: int, name: str, value: float | None) -> None:
        """Store an engineering value (scaled, rounded, saturated to the type); None = not implemented."""
        slot = self.slot(model_id, name)
        if value is None or not math.isfinite(value):
            self._write_raw(slot.point, slot.offset, None)
            return
        raw = round(value / 10.0**slot.sf) if slot.sf is not None else round(value)
        self._write_raw(slot.point, slot.offset, min(max(raw, slot.raw_min), slot.raw_max))

    def set_raw(self, model_id: int, name: str, raw: int | str | None) -> None:
        """Store a raw value (enum, bitfield, string, counter)."""
        slot = self.slot(model_id, name)
        self._write_raw(slot.point, slot.offset, raw)

    def get_raw(self, model_id: int, name: str) -> int | str | None:
        slot = self.slot(model_id, name)
        return decode_value(slot.point, self.registers[slot.offset : slot.offset + slot.point.size])

    def get(self, model_id: int, name: str) -> float | None:
        """Engineering value of a numeric point; None when it holds "not implemented"."""
        slot = self.slot(model_id, name)
        raw = decode_value(slot.point, self.registers[slot.offset : slot.offset + slot.point.size])
        if raw is None or isinstance(raw, str):
            return None
        return raw * 10.0**slot.sf if slot.sf is not None else float(raw)

    def read(self, address: int, count: int) -> list[int]:
        offset = address - self.base_address
        return self.registers[offset : offset + count]

    def _write_raw(self, point: PointDef, offset: int, raw: int | str | None) -> None:
        self.registers[offset : offset + point.size] = encode_value(point, raw)

    # ------------------------------------------------------------------------------------ writes

    def check_write(self, address: int, values: Sequence[int]) -> list[tuple[PointDef, int]]:
        """The points a client write changes, with their new raw values; raise :class:`WriteRefused`."""
        offset = address - self.base_address
        if offset < 0 or offset + len(values) > len(self.registers) or not values:
            raise WriteRefused(ILLEGAL_DATA_ADDRESS, f"write of {len(values)} at {address} outside the map")
        changes: list[tuple[PointDef, int]] = []
        index = 0
        while index < len(values):
            slot = self._write_slots.get(offset + index)
            if slot is None:
                owner = self._owner[offset + index]
                what = f"point {owner.name}" if owner is not None else "a model header"
                raise WriteRefused(
                    ILLEGAL_DATA_ADDRESS, f"register {address + index} ({what}) is not writable"
                )
            size = slot.point.size
            if index + size > len(values):
                raise WriteRefused(ILLEGAL_DATA_ADDRESS, f"write splits {slot.point.name} ({size} registers)")
            registers = list(values[index : index + size])
            raw = decode_value(slot.point, registers)
            enum = slot.point.type in _ENUM_TYPES and slot.point.symbols
            if enum and (raw is None or raw not in slot.point.symbols.values()):
                raise WriteRefused(ILLEGAL_DATA_VALUE, f"{slot.point.name}: {raw} is not a valid value")
            value = 0 if raw is None or isinstance(raw, str) else raw
            changes.append((slot.point, value))
            index += size
        return changes

    def apply_write(self, address: int, values: Sequence[int]) -> None:
        """Store registers a client wrote (after :meth:`check_write` accepted them)."""
        offset = address - self.base_address
        self.registers[offset : offset + len(values)] = list(values)
