"""Pure logic of the edge: register decoding, interlocks, setpoint chain, schedules, persistence, timing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.fallback import fallback_setpoint_kw
from edge.interlocks import (
    EVT1_COMMUNICATION_ERROR,
    Condition,
    Finding,
    FrozenDataDetector,
    InterlockLatch,
    InterlockLimits,
    check_cabinet,
    check_setpoint_readback,
)
from edge.persistence import EdgeDatabase, EventKind
from edge.schedule_store import ScheduleStore
from edge.setpoint_chain import (
    ChainInputs,
    apply_bms_limits,
    apply_device_limits,
    apply_poc_limits,
    apply_ramp,
    apply_soc_window,
    run_chain,
)
from edge.snapshot import (
    STATE_FAULT,
    CabinetModels,
    CabinetReading,
    DeviceDataError,
    MeterModels,
    RegisterImage,
    Span,
    decode_cabinet,
    decode_meter,
    plan_spans,
)
from edge.timing import CycleStats, DeadlineSchedule, percentile
from shared.schedule import CabinetSchedule
from shared.site import EdgeSettings, FallbackMode
from shared.sunspec.layout import CABINET_MODELS, METER_MODELS, device_layout, encode_value, symbol_value

T0 = datetime(2026, 11, 24, tzinfo=UTC)
LIMITS = InterlockLimits.from_settings(EdgeSettings())


# ------------------------------------------------------------------------------------------ registers


def _cabinet_layout() -> CabinetModels:
    layout = device_layout(CABINET_MODELS)
    return CabinetModels(layout.model(701), layout.model(704), layout.model(802))


def _image_for(
    models: dict[int, object], values: dict[tuple[int, str], int | None], spans: tuple[Span, ...]
) -> RegisterImage:
    """A RegisterImage with ``values`` (raw) encoded at the layout's addresses, zero elsewhere."""
    registers: dict[int, int] = {}
    for (model_id, name), raw in values.items():
        point = models[model_id].point(name)  # type: ignore[attr-defined]
        for offset, word in enumerate(encode_value(point, raw)):
            registers[point.address + offset] = word
    blocks = [(s, [registers.get(a, 0) for a in range(s.address, s.end)]) for s in spans]
    return RegisterImage(blocks)


CABINET_RAW: dict[tuple[int, str], int | None] = {
    (701, "W"): -4200,
    (701, "W_SF"): 1,  # -42 kW (+ discharge, so charging)
    (701, "TmpCab"): 315,
    (701, "Tmp_SF"): -1,
    (704, "WSetEna"): 1,
    (704, "WSetMod"): 1,
    (704, "WSet"): -420,
    (704, "WSet_SF"): 2,
    (802, "WChaRteMax"): 900,
    (802, "WDisChaRteMax"): 1000,
    (802, "WChaDisChaMax_SF"): 2,
    (802, "SoC"): 5512,
    (802, "SoC_SF"): -2,
    (802, "Hb"): 0xFFFF,  # a heartbeat may pass through the "not implemented" pattern
    (802, "State"): 3,
    (802, "Evt1"): 0,
    (802, "CellVMax"): 3412,
    (802, "CellVMin"): 3301,
    (802, "CellV_SF"): -3,
    (802, "SetOp"): 1,
}


def test_cabinet_points_are_read_in_two_requests_and_decoded_with_scale_factors() -> None:
    models = _cabinet_layout()
    spans = plan_spans(models.read_points())
    assert len(spans) == 2
    assert all(span.count <= 125 for span in spans)
    reading = decode_cabinet(_image_for(models.by_id(), CABINET_RAW, spans), models)  # type: ignore[arg-type]
    assert reading.active_power_kw == pytest.approx(-42.0)
    assert reading.setpoint_readback_kw == pytest.approx(-42.0)
    assert reading.temperature_degc == pytest.approx(31.5)
    assert reading.soc_pct == pytest.approx(55.12)
    assert reading.charge_rate_max_kw == pytest.approx(90.0)
    assert reading.discharge_rate_max_kw == pytest.approx(100.0)
    assert reading.cell_voltage_max_v == pytest.approx(3.412)
    assert reading.heartbeat == 0xFFFF
    assert reading.setpoint_enabled and reading.setpoint_mode_watts
    assert reading.wset_sf == 2


def test_a_needed_point_not_implemented_makes_the_reading_invalid() -> None:
    models = _cabinet_layout()
    spans = plan_spans(models.read_points())
    raw = dict(CABINET_RAW)
    raw[(802, "CellVMax")] = None  # 0xFFFF: not implemented
    with pytest.raises(DeviceDataError, match="CellVMax"):
        decode_cabinet(_image_for(models.by_id(), raw, spans), models)  # type: ignore[arg-type]
    raw = dict(CABINET_RAW)
    raw[(802, "SoC_SF")] = None  # a missing scale factor is just as untrustworthy
    with pytest.raises(DeviceDataError, match="SoC_SF"):
        decode_cabinet(_image_for(models.by_id(), raw, spans), models)  # type: ignore[arg-type]


def test_a_scale_factor_outside_sunspec_range_makes_the_reading_invalid() -> None:
    models = _cabinet_layout()
    spans = plan_spans(models.read_points())
    raw = dict(CABINET_RAW)
    raw[(701, "Tmp_SF")] = 400  # 10**400 would overflow; a real device never sends it
    with pytest.raises(DeviceDataError, match="Tmp_SF"):
        decode_cabinet(_image_for(models.by_id(), raw, spans), models)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_modbus_garbage_decodes_or_is_refused_as_invalid(data: st.DataObject) -> None:
    models = _cabinet_layout()
    spans = plan_spans(models.read_points())
    blocks = [
        (span, data.draw(st.lists(st.integers(0, 0xFFFF), min_size=span.count, max_size=span.count)))
        for span in spans
    ]
    try:
        reading = decode_cabinet(RegisterImage(blocks), models)
    except DeviceDataError:
        return
    assert math.isfinite(reading.temperature_degc) and math.isfinite(reading.soc_pct)


def test_meter_power_keeps_its_sign_as_import() -> None:
    layout = device_layout(METER_MODELS)
    models = MeterModels(layout.model(203))
    spans = plan_spans(models.read_points())
    assert len(spans) == 1
    image = _image_for({203: layout.model(203)}, {(203, "W"): -1234, (203, "W_SF"): 1}, spans)
    assert decode_meter(image, models).grid_power_kw == pytest.approx(-12.34)


@given(st.lists(st.tuples(st.integers(40000, 40500), st.integers(1, 4)), min_size=1, max_size=40))
def test_planned_spans_cover_every_point_within_the_request_limit(points: list[tuple[int, int]]) -> None:
    from shared.sunspec.layout import PointDef

    defs = [PointDef(f"p{i}", "uint16", size, addr, None, False, {}) for i, (addr, size) in enumerate(points)]
    spans = plan_spans(defs)
    for span in spans:
        assert 1 <= span.count <= 125
    for d in defs:
        assert any(s.address <= d.address and d.address + d.size <= s.end for s in spans)


# ------------------------------------------------------------------------------------------ interlocks


def _reading(**changes: object) -> CabinetReading:
    base: dict[str, object] = {
        "soc_pct": 50.0,
        "active_power_kw": 0.0,
        "charge_rate_max_kw": 100.0,
        "discharge_rate_max_kw": 100.0,
        "cell_voltage_max_v": 3.4,
        "cell_voltage_min_v": 3.3,
        "temperature_degc": 30.0,
        "alarm_bits": 0,
        "state": symbol_value(802, "State", "CONNECTED"),
        "heartbeat": 1,
        "control_heartbeat": 0,
        "setpoint_readback_kw": 0.0,
        "setpoint_enabled": True,
        "setpoint_mode_watts": True,
        "set_op": 1,
        "wset_sf": 0,
    }
    base.update(changes)
    return CabinetReading(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "condition"),
    [
        ({"alarm_bits": 1 << symbol_value(802, "Evt1", "OVER_TEMP_ALARM")}, Condition.ALARM),
        ({"alarm_bits": 1 << 31}, Condition.ALARM),  # a bit the model does not name: trip
        ({"cell_voltage_max_v": 3.70}, Condition.CELL_OVER_VOLTAGE),
        ({"cell_voltage_min_v": 2.70}, Condition.CELL_UNDER_VOLTAGE),
        ({"temperature_degc": 56.0}, Condition.OVER_TEMPERATURE),
        ({"soc_pct": 1.0}, Condition.SOC_OUT_OF_LIMITS),
        ({"soc_pct": 99.0}, Condition.SOC_OUT_OF_LIMITS),
        ({"state": STATE_FAULT}, Condition.DEVICE_FAULT),
        ({"state": 42}, Condition.DEVICE_FAULT),  # unknown state: fail-safe
    ],
)
def test_each_condition_is_found(changes: dict[str, object], condition: Condition) -> None:
    findings = check_cabinet(_reading(**changes), LIMITS)
    assert [f.condition for f in findings] == [condition]


def test_healthy_reading_and_warnings_do_not_trip() -> None:
    assert check_cabinet(_reading(), LIMITS) == []
    warning = 1 << symbol_value(802, "Evt1", "OVER_TEMP_WARNING")
    assert check_cabinet(_reading(alarm_bits=warning), LIMITS) == []
    stale = _reading(alarm_bits=EVT1_COMMUNICATION_ERROR)
    assert check_cabinet(stale, LIMITS, ignore_bits=EVT1_COMMUNICATION_ERROR) == []
    assert check_cabinet(stale, LIMITS)[0].condition is Condition.ALARM


def test_setpoint_readback() -> None:
    assert check_setpoint_readback(_reading(setpoint_readback_kw=10.0), None, 1.0) is None
    assert check_setpoint_readback(_reading(setpoint_readback_kw=10.0), 10.5, 1.0) is None
    mismatch = check_setpoint_readback(_reading(setpoint_readback_kw=0.0), 10.0, 1.0)
    assert mismatch is not None and mismatch.condition is Condition.SETPOINT_MISMATCH
    disabled = check_setpoint_readback(_reading(setpoint_enabled=False), 0.0, 1.0)
    assert disabled is not None and disabled.condition is Condition.SETPOINT_MISMATCH


def test_comm_timeout_defaults_to_three_cycles() -> None:
    assert EdgeSettings(cycle_ms=10.0).effective_comm_timeout_ms == 30.0
    assert EdgeSettings(cycle_ms=10.0, comm_timeout_ms=200.0).effective_comm_timeout_ms == 200.0


def test_frozen_data_detector() -> None:
    frozen = FrozenDataDetector(timeout_s=2.0)
    assert frozen.update(5, 0.0) is None
    assert frozen.update(5, 1.9) is None
    assert frozen.update(6, 2.5) is None  # changed: restarts
    assert frozen.update(6, 4.4) is None
    stuck = frozen.update(6, 4.6)
    assert stuck is not None and stuck.condition is Condition.FROZEN_DATA


def test_latch_keeps_first_reason_until_reset() -> None:
    latch = InterlockLatch()
    assert not latch.active and latch.reason == ""
    hot = Finding(Condition.OVER_TEMPERATURE, "TmpCab 70 > 55")
    new = latch.trip([hot], at_s=10.0)
    assert [t.finding for t in new] == [hot]
    assert latch.trip([hot], at_s=11.0) == []  # already latched: not new
    latch.trip([Finding(Condition.ALARM, "Evt1 X")], at_s=12.0)
    assert latch.reason.startswith("over_temperature: TmpCab 70 > 55")
    assert "also: alarm" in latch.reason
    cleared = latch.reset()
    assert {t.finding.condition for t in cleared} == {Condition.OVER_TEMPERATURE, Condition.ALARM}
    assert not latch.active


# ------------------------------------------------------------------------------------------ setpoint chain


def test_each_step() -> None:
    assert apply_bms_limits(150.0, 80.0, 90.0) == 90.0
    assert apply_bms_limits(-150.0, 80.0, 90.0) == -80.0
    assert apply_soc_window(50.0, soc_pct=10.0, soc_min_pct=10.0, soc_max_pct=90.0) == 0.0
    assert apply_soc_window(-50.0, soc_pct=10.0, soc_min_pct=10.0, soc_max_pct=90.0) == -50.0
    assert apply_soc_window(-50.0, soc_pct=90.0, soc_min_pct=10.0, soc_max_pct=90.0) == 0.0
    assert apply_ramp(100.0, previous_kw=0.0, ramp_kw_per_s=10.0, elapsed_s=0.5) == 5.0
    assert apply_ramp(-100.0, previous_kw=0.0, ramp_kw_per_s=10.0, elapsed_s=0.5) == -5.0
    # Import 450 kW against a 400 kW limit, one third share: discharge at least 50/3 kW more.
    assert apply_poc_limits(-100.0, -100.0, 450.0, 400.0, 300.0, 1 / 3) == pytest.approx(-100.0 + 50 / 3)
    # Export 280 kW with a 300 kW limit, alone: at most 20 kW more discharge.
    assert apply_poc_limits(100.0, 50.0, -280.0, 400.0, 300.0, 1.0) == pytest.approx(70.0)
    assert apply_device_limits(120.0, 100.0, 100.0, 100.0, 60.0) == 60.0


def test_fallback_modes() -> None:
    assert fallback_setpoint_kw(FallbackMode.IDLE, 10.0, 50.0, 0.5, 100.0) == 0.0
    # Self-consumption: import 30 kW, half share, already delivering 10: deliver 25.
    assert fallback_setpoint_kw(FallbackMode.SELF_CONSUMPTION, 10.0, 30.0, 0.5, 100.0) == 25.0
    assert fallback_setpoint_kw(FallbackMode.SELF_CONSUMPTION, 0.0, -40.0, 1.0, 100.0) == -40.0
    # Peak shave: import 130 kW above a 100 kW threshold: discharge 30; below: never charge.
    assert fallback_setpoint_kw(FallbackMode.PEAK_SHAVE, 0.0, 130.0, 1.0, 100.0) == 30.0
    assert fallback_setpoint_kw(FallbackMode.PEAK_SHAVE, 0.0, 60.0, 1.0, 100.0) == 0.0


finite = st.floats(min_value=-1000.0, max_value=1000.0, allow_nan=False)
positive = st.floats(min_value=0.0, max_value=500.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    target=finite,
    previous=finite,
    active=finite,
    grid=finite,
    bms_charge=positive,
    bms_discharge=positive,
    soc=st.floats(0.0, 100.0),
    share=st.floats(0.01, 1.0),
)
def test_chain_never_leaves_device_and_bms_limits(
    target: float,
    previous: float,
    active: float,
    grid: float,
    bms_charge: float,
    bms_discharge: float,
    soc: float,
    share: float,
) -> None:
    result = run_chain(
        ChainInputs(
            target_kw=target,
            previous_kw=previous,
            elapsed_s=0.1,
            soc_pct=soc,
            active_power_kw=active,
            grid_power_kw=grid,
            charge_rate_max_kw=bms_charge,
            discharge_rate_max_kw=bms_discharge,
            soc_min_pct=10.0,
            soc_max_pct=90.0,
            ramp_kw_per_s=100.0,
            import_limit_kw=400.0,
            export_limit_kw=300.0,
            share=share,
            charge_limit_kw=100.0,
            discharge_limit_kw=120.0,
        )
    )
    assert math.isfinite(result.setpoint_kw)
    assert -min(100.0, bms_charge) - 1e-9 <= result.setpoint_kw <= min(120.0, bms_discharge) + 1e-9
    assert abs(result.after_ramp_kw - previous) <= 10.0 + 1e-9


# ------------------------------------------------------------------------------------------ schedules


def _schedule(sid: str, start: datetime, values: list[float], interval_s: int = 60) -> CabinetSchedule:
    return CabinetSchedule(sid, start, interval_s, tuple(values))


def test_schedule_refusals_leave_the_store_unchanged() -> None:
    store = ScheduleStore(charge_limit_kw=100.0, discharge_limit_kw=100.0)
    good = _schedule("a", T0, [10.0, 20.0])
    assert store.problem(good, T0) is None
    store.add(good, T0)
    bad = [
        (_schedule("b", T0, []), "empty"),
        (_schedule("b", T0, [float("nan")]), "finite"),
        (_schedule("b", T0, [150.0]), "discharge limit"),
        (_schedule("b", T0, [-150.0]), "charge limit"),
        (_schedule("b", T0 - timedelta(hours=1), [1.0]), "before now"),
        (_schedule("a", T0, [11.0, 20.0]), "different content"),
        (CabinetSchedule("b", datetime(2026, 11, 24), 60, (1.0,)), "time zone"),
    ]
    for schedule, reason in bad:
        problem = store.problem(schedule, T0)
        assert problem is not None and reason in problem
    assert store.active(T0) == good


def test_newest_schedule_wins_where_it_covers_and_switches_at_boundaries() -> None:
    store = ScheduleStore(100.0, 100.0)
    old = _schedule("old", T0, [10.0, 20.0, 30.0, 40.0])
    new = _schedule("new", T0 + timedelta(seconds=120), [-50.0])
    store.add(old, T0)
    store.add(new, T0 + timedelta(seconds=5))
    just_before = T0 + timedelta(seconds=119, microseconds=999_999)
    assert store.active(just_before) == old and old.setpoint_at(just_before) == 20.0
    at_boundary = T0 + timedelta(seconds=120)
    assert store.active(at_boundary) == new and new.setpoint_at(at_boundary) == -50.0
    assert store.active(T0 + timedelta(seconds=180)) == old  # new ended: old covers its last interval
    assert store.valid_until(T0) == T0 + timedelta(seconds=240)
    assert store.active(T0 + timedelta(seconds=240)) is None
    assert store.prune(T0 + timedelta(seconds=240)) == ["old", "new"]


# ------------------------------------------------------------------------------------------ persistence


def test_database_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cab-1.sqlite3"
    db = EdgeDatabase(path)
    schedule = _schedule("s1", T0, [1.5, -2.25])
    db.save_schedule(schedule, T0, 7)
    latch = InterlockLatch()
    db.save_latch(latch.trip([Finding(Condition.OVER_TEMPERATURE, "hot")], 123.0))
    db.log_event(T0, EventKind.TRIP, "over_temperature: hot", "over_temperature")
    db.close()
    again = EdgeDatabase(path)
    [restored] = again.load_schedules()
    assert restored.schedule == schedule and restored.sequence == 7
    [trip] = again.load_latch()
    assert trip.finding.condition is Condition.OVER_TEMPERATURE and trip.at_s == 123.0
    assert [(e.kind, e.message, e.subject) for e in again.events()] == [
        (EventKind.TRIP, "over_temperature: hot", "over_temperature")
    ]
    assert again.events()[0].at.endswith("Z")
    again.clear_latch()
    again.delete_schedules(["s1"])
    assert again.load_latch() == [] and again.load_schedules() == []
    mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    again.close()


# ------------------------------------------------------------------------------------------ timing


def test_deadlines_do_not_drift_and_skip_missed_ones() -> None:
    deadlines = DeadlineSchedule(period_s=0.01, start_s=100.0)
    deadline, missed = deadlines.next_after(100.004)
    assert deadline == pytest.approx(100.01) and missed == 0
    deadline, missed = deadlines.next_after(100.0195)  # late work, same grid
    assert deadline == pytest.approx(100.02) and missed == 0
    deadline, missed = deadlines.next_after(100.0555)  # overran: 100.03..100.05 missed
    assert deadline == pytest.approx(100.06) and missed == 3


def test_cycle_stats() -> None:
    stats = CycleStats(cycle_s=0.01, keep_all=True)
    for k in range(101):
        stats.cycle_started(k * 0.01 + (0.003 if k == 50 else 0.0))
        stats.cycle_finished(0.001, 1 if k == 50 else 0)
    summary = stats.summary(full=True)
    assert summary.cycles == 101 and summary.overruns == 1
    assert summary.period.count == 100
    assert summary.period.max_ms == pytest.approx(13.0)
    assert summary.period_error.p50_ms == pytest.approx(0.0, abs=1e-6)
    assert summary.period_error.max_ms == pytest.approx(3.0)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
