"""The simulator's register image: layout from pysunspec2's models, scaling, strict write checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.sunspec.layout import BASE_ADDRESS, CABINET_MODELS, device_layout, symbol_value
from simulators.registers import (
    ILLEGAL_DATA_ADDRESS,
    ILLEGAL_DATA_VALUE,
    RegisterImage,
    WriteRefused,
    fit_scale_factor,
)


def cabinet_image(w_sf: int = 1) -> RegisterImage:
    layout = device_layout(CABINET_MODELS)
    sfs: dict[tuple[int, str], int] = {}
    for model in layout.models.values():
        for point in model.points.values():
            if point.type == "sunssf":
                sfs[(model.model_id, point.name)] = 0
    sfs[(701, "W_SF")] = w_sf
    sfs[(704, "WSet_SF")] = w_sf
    sfs[(802, "CellV_SF")] = -3
    return RegisterImage(CABINET_MODELS, sfs)


def test_markers_and_model_headers() -> None:
    image = cabinet_image()
    assert image.read(BASE_ADDRESS, 2) == [0x5375, 0x6E53]  # "SunS"
    for model in image.layout.models.values():
        assert image.read(model.address, 2) == [model.model_id, model.length]
    end = image.layout.end_marker_address
    assert image.read(end, 2) == [0xFFFF, 0]
    assert len(image.registers) == end + 2 - BASE_ADDRESS


def test_scale_factors_are_served_and_applied() -> None:
    image = cabinet_image(w_sf=2)
    assert image.get_raw(701, "W_SF") == 2
    image.set(701, "W", -12_345.0)
    assert image.get_raw(701, "W") == -123  # 100 W resolution
    assert image.get(701, "W") == pytest.approx(-12_300.0)
    image.set(802, "CellVMax", 3.4567)
    assert image.get_raw(802, "CellVMax") == 3457


def test_values_saturate_instead_of_wrapping() -> None:
    image = cabinet_image(w_sf=0)
    image.set(701, "W", 1e9)
    assert image.get_raw(701, "W") == 32767
    image.set(701, "W", -1e9)
    assert image.get_raw(701, "W") == -32767  # never the "not implemented" 0x8000
    image.set(701, "W", None)
    assert image.get_raw(701, "W") is None


def test_fit_scale_factor() -> None:
    assert fit_scale_factor(150_000.0, "int16", 0) == 1
    assert fit_scale_factor(30_000.0, "int16", 0) == 0
    assert fit_scale_factor(3.65, "uint16", -3) == -3
    assert fit_scale_factor(2_000_000.0, "uint16", 0) == 2


def test_write_to_read_only_point_is_illegal_address() -> None:
    image = cabinet_image()
    with pytest.raises(WriteRefused) as refused:
        image.check_write(image.layout.point(802, "SoC").address, [1])
    assert refused.value.code == ILLEGAL_DATA_ADDRESS
    with pytest.raises(WriteRefused):
        image.check_write(image.layout.model(704).address, [704])  # model header


def test_write_splitting_a_32_bit_point_is_refused() -> None:
    image = cabinet_image()
    with pytest.raises(WriteRefused, match="splits WSet") as refused:
        image.check_write(image.layout.point(704, "WSet").address, [0])
    assert refused.value.code == ILLEGAL_DATA_ADDRESS


def test_enum_write_outside_symbols_is_illegal_value() -> None:
    image = cabinet_image()
    with pytest.raises(WriteRefused) as refused:
        image.check_write(image.layout.point(704, "WSetMod").address, [7])
    assert refused.value.code == ILLEGAL_DATA_VALUE


def test_block_write_of_writable_points_is_accepted() -> None:
    image = cabinet_image()
    address = image.layout.point(704, "WSetEna").address
    enabled = symbol_value(704, "WSetEna", "ENABLED")
    watts = symbol_value(704, "WSetMod", "WATTS")
    raw = (-4000) & 0xFFFFFFFF
    values = [enabled, watts, raw >> 16, raw & 0xFFFF]
    changes = dict((point.name, value) for point, value in image.check_write(address, values))
    assert changes == {"WSetEna": enabled, "WSetMod": watts, "WSet": -4000}
    image.apply_write(address, values)
    assert image.get(704, "WSet") == pytest.approx(-40_000.0)  # W_SF 1


@settings(max_examples=100, deadline=None)
@given(value=st.floats(-300_000.0, 300_000.0), sf=st.integers(1, 3))
def test_set_get_round_trip_within_resolution(value: float, sf: int) -> None:
    image = cabinet_image(w_sf=sf)
    image.set(704, "WSet", value)
    read = image.get(704, "WSet")
    assert read is not None
    assert abs(read - value) <= 10.0**sf / 2 + 1e-6
