"""SunSpec register maps built from the model definitions that pysunspec2 ships (never hand-typed offsets).

Used by the device simulators (to serve) and the edge (to read and write): see :mod:`shared.sunspec.layout`.
"""

from shared.sunspec.layout import (
    BASE_ADDRESS,
    CABINET_MODELS,
    METER_MODELS,
    DeviceLayout,
    ModelLayout,
    PointDef,
    decode_value,
    device_layout,
    encode_value,
    scale,
    symbol_value,
    unscale,
)

__all__ = [
    "BASE_ADDRESS",
    "CABINET_MODELS",
    "METER_MODELS",
    "DeviceLayout",
    "ModelLayout",
    "PointDef",
    "decode_value",
    "device_layout",
    "encode_value",
    "scale",
    "symbol_value",
    "unscale",
]
