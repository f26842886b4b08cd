"""A battery cabinet as one SunSpec device (PCS and BMS): models 1, 701, 704 and 802, unit id 1.

The device follows 704 ``WSet`` (``WSetEna`` ENABLED, ``WSetMod`` WATTS or W_MAX_PCT) through the physics of
:mod:`simulators.physics`, and protects itself like real hardware:

- ``WSetRvrtTms`` > 0: when neither ``WSet``, ``WSetPct`` nor ``WSetRvrtTms`` is written for that many
  seconds, the device reverts until the next such write: ``WSetRvrt`` (0 W unless a client wrote another
  value) when ``WSetEnaRvrt`` is ENABLED, else no setpoint (0 W); ``reverted`` in the state, ``WSetRvrtRem``
  counts down.
- heartbeat: when 802 ``CtrlHb`` has not changed for the heartbeat timeout, the device goes to STANDBY
  (0 W, ``Evt1`` COMMUNICATION_ERROR) until ``CtrlHb`` changes again. The watchdog runs from power-up.
- 802 ``SetOp`` DISCONNECT opens the AC contactor: 0 W, State DISCONNECTED, until CONNECT.

The two watchdog timers (and the device's own heartbeat ``Hb``) run on wall-clock time when ``wall_time``
is given (``[sim] watchdog_clock = "wall"``, the default: the edge's control loop runs in wall time even
when the simulated clock is 100x faster, as a controller of real hardware does), otherwise on the
simulated clock (deterministic tests).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from shared import __version__
from shared.clock import Clock
from shared.site import CabinetConfig, SimSettings
from shared.sunspec.layout import CABINET_MODELS, symbol_value
from simulators.faults import CabinetFaults, FaultName
from simulators.physics import BatteryParams, BatteryPhysics
from simulators.registers import RegisterImage, WriteRefused, fit_scale_factor

UNIT_ID = 1
GRID_LINE_V = 400.0  # line-to-line [V]
GRID_PHASE_V = 230.0
GRID_HZ = 50.0
MIN_SUBSTEP_S = 1.0  # physics sub-step [simulated s], longer only for very long jumps
MAX_SUBSTEPS = 10_000

# The device's own alarm thresholds (802 Evt1).
OVER_TEMP_ALARM_DEGC = 60.0
OVER_TEMP_WARNING_DEGC = 50.0
UNDER_TEMP_ALARM_DEGC = -10.0
UNDER_TEMP_WARNING_DEGC = 0.0
OVER_VOLT_ALARM_V = 3.70
OVER_VOLT_WARNING_V = 3.60
UNDER_VOLT_ALARM_V = 2.60
UNDER_VOLT_WARNING_V = 2.80

_STATE = {
    name: symbol_value(802, "State", name) for name in ("DISCONNECTED", "CONNECTED", "STANDBY", "FAULT")
}
_STATE_SOC_PROTECTION = symbol_value(802, "State", "SOC PROTECTION")
_STATE_NAMES = {
    value: name
    for name, value in (
        ("DISCONNECTED", _STATE["DISCONNECTED"]),
        ("CONNECTED", _STATE["CONNECTED"]),
        ("STANDBY", _STATE["STANDBY"]),
        ("FAULT", _STATE["FAULT"]),
        ("SOC PROTECTION", _STATE_SOC_PROTECTION),
    )
}
_ENABLED = symbol_value(704, "WSetEna", "ENABLED")
_WATTS = symbol_value(704, "WSetMod", "WATTS")
_CONNECT = symbol_value(802, "SetOp", "CONNECT")


@cache
def _symbol(model_id: int, point: str, name: str) -> int:
    return symbol_value(model_id, point, name)


@cache
def _evt1(name: str) -> int:
    return 1 << symbol_value(802, "Evt1", name)


@dataclass(frozen=True)
class CabinetState:
    """What the cabinet is doing now. Powers AC [kW], + discharge; the values its registers report."""

    cabinet_id: str
    time_s: float  # simulated Unix time of this snapshot [s]
    soc_pct: float
    energy_kwh: float  # stored energy
    active_power_kw: float  # 701 W
    setpoint_kw: float  # 704 WSet as written by the client
    target_kw: float  # what the PCS is driving to after enable, mode, revert, standby, limits
    charge_limit_kw: float  # 802 WChaRteMax (derated)
    discharge_limit_kw: float  # 802 WDisChaRteMax (derated)
    temperature_degc: float  # 701 TmpCab
    cell_voltage_max_v: float
    cell_voltage_min_v: float
    cell_voltage_avg_v: float
    pack_voltage_v: float
    pack_current_a: float  # + discharge
    connected: bool  # AC contactor closed (SetOp CONNECT and no FAULT)
    state: str  # 802 State symbol name
    standby: bool  # heartbeat lost
    reverted: bool  # WSet revert timeout expired
    alarms: int  # 802 Evt1 bits
    heartbeat: int  # last CtrlHb value written
    charged_ac_kwh: float  # AC energy absorbed since start (701 TotWhAbs)
    discharged_ac_kwh: float  # AC energy delivered since start (701 TotWhInj)


class CabinetSimulator:
    """One simulated cabinet. ``state`` and the register image are brought to the clock's now on access."""

    def __init__(
        self,
        config: CabinetConfig,
        settings: SimSettings,
        clock: Clock,
        *,
        initial_soc_pct: float = 50.0,
        heartbeat_timeout_s: float = 3.0,
        wall_time: Callable[[], float] | None = None,
    ) -> None:
        if not heartbeat_timeout_s >= 0.0:
            raise ValueError(f"heartbeat timeout must be >= 0 s, got {heartbeat_timeout_s}")
        self.id = config.id
        self.config = config
        self.unit_id = UNIT_ID
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._clock = clock
        self._wall_time = wall_time  # watchdog time base; None: the simulated clock
        self.physics = BatteryPhysics(BatteryParams.from_cabinet(config, settings), initial_soc_pct)
        self.faults = CabinetFaults(on_change=self._fault_changed)
        self.image = RegisterImage(CABINET_MODELS, self._scale_factors())
        now_s = clock.time_s()
        self._time_s = now_s
        self._setpoint_written_s = self._watchdog_now(now_s)  # watchdog time base
        self._heartbeat_changed_s = self._watchdog_now(now_s)
        self._heartbeat = 0
        self._standby = False
        self._reverted = False
        self._connected = True
        self._command_kw = 0.0  # from WSet/WSetPct, enable, mode, WMaxLimPct
        self._revert_kw = 0.0
        self._setpoint_kw = 0.0
        self._image_stale = True
        # When (time.monotonic(), system-wide) the device saw each fault set and the safe-state commands
        # arrive, so a test measures a controller's reaction at the device, not at its own poll.
        self.fault_set_mono_s: dict[str, float] = {}
        self.disconnect_mono_s: float | None = None  # last SetOp DISCONNECT written
        self.zero_setpoint_mono_s: float | None = None  # last WSet written 0 after a non-zero setpoint
        self._write_static_points()
        self._refresh_image()

    # ---------------------------------------------------------------------------------- public

    @property
    def state(self) -> CabinetState:
        """The state at the clock's present time."""
        self.step(self._clock.time_s())
        return self._snapshot()

    def step(self, now_s: float) -> None:
        """Advance the physics and the device protections to simulated time ``now_s``."""
        wall_time = self._wall_time
        wall = wall_time is not None
        if wall_time is not None:
            self._protect(wall_time())  # the watchdogs decide for the whole step that follows
        start_s = self._time_s
        if now_s > start_s:  # same time, or a clock that went backwards: nothing to integrate
            substep_s = max(MIN_SUBSTEP_S, (now_s - start_s) / MAX_SUBSTEPS)
            t = start_s
            while t < now_s:
                end = min(now_s, t + substep_s)
                if not wall:
                    self._protect(t)
                    for deadline in (self._revert_deadline_s(), self._heartbeat_deadline_s()):
                        if deadline is not None and t < deadline < end:
                            end = deadline  # land exactly on a protection deadline
                self.physics.step(end - t, self._target_kw(), self.faults.temperature_override_degc)
                t = end
            self._time_s = now_s
        if not wall:
            self._protect(self._time_s)
        self._image_stale = True

    def status(self) -> dict[str, Any]:
        """State and active faults, JSON-friendly (control interface)."""
        state = self.state
        return {
            "kind": "cabinet",
            "state": state.__dict__,
            "faults": self.faults.active,
            "timing": {
                "fault_set_mono_s": dict(self.fault_set_mono_s),
                "disconnect_mono_s": self.disconnect_mono_s,
                "zero_setpoint_mono_s": self.zero_setpoint_mono_s,
                "setop_disconnected": not self._connected,
            },
        }

    # ---------------------------------------------------------------------------------- Modbus side

    def read_registers(self, address: int, count: int) -> list[int]:
        """Registers for a client read (bounds are checked by the server)."""
        self.step(self._clock.time_s())
        if self._image_stale and not self.faults.frozen:
            self._refresh_image()
        return self.image.read(address, count)

    def write_registers(self, address: int, values: list[int]) -> int | None:
        """Apply a client write; return a Modbus exception code when the device refuses it."""
        try:
            changes = self.image.check_write(address, values)
        except WriteRefused as exc:
            return exc.code
        now_s = self._clock.time_s()
        self.step(now_s)  # the old setpoint applies up to now
        self.image.apply_write(address, values)
        written = {point.name: raw for point, raw in changes}
        before_kw = self._setpoint_kw
        if written.keys() & {"WSet", "WSetPct", "WSetRvrtTms"}:
            self._setpoint_written_s = self._watchdog_now(now_s)
            self._reverted = False
        if "CtrlHb" in written and written["CtrlHb"] != self._heartbeat:
            self._heartbeat = written["CtrlHb"]
            self._heartbeat_changed_s = self._watchdog_now(now_s)
            self._standby = False
        if "SetOp" in written:
            self._connected = written["SetOp"] == _CONNECT
        self._update_command()
        self._note_safe_state(written, before_kw)
        self._image_stale = True
        return None

    def _note_safe_state(self, written: dict[str, int], before_kw: float) -> None:
        if "SetOp" in written and written["SetOp"] != _CONNECT:
            self.disconnect_mono_s = time.monotonic()
        if "WSet" in written and before_kw != 0.0 and self._setpoint_kw == 0.0:
            self.zero_setpoint_mono_s = time.monotonic()

    # ---------------------------------------------------------------------------------- control logic

    def _watchdog_now(self, simulated_s: float) -> float:
        return self._wall_time() if self._wall_time is not None else simulated_s

    def _update_command(self) -> None:
        image = self.image
        self._setpoint_kw = (image.get(704, "WSet") or 0.0) / 1000.0
        # After a revert, WSetEna takes the value of WSetEnaRvrt and the setpoint that of WSetRvrt.
        revert_enabled = image.get_raw(704, "WSetEnaRvrt") == _ENABLED
        self._revert_kw = (image.get(704, "WSetRvrt") or 0.0) / 1000.0 if revert_enabled else 0.0
        command = 0.0
        if image.get_raw(704, "WSetEna") == _ENABLED:
            if image.get_raw(704, "WSetMod") == _WATTS:
                command = self._setpoint_kw
            else:
                pct = image.get(704, "WSetPct") or 0.0
                rating = self.config.discharge_limit_kw if pct >= 0 else self.config.charge_limit_kw
                command = pct / 100.0 * rating
        if image.get_raw(704, "WMaxLimPctEna") == _ENABLED:
            cap_kw = (image.get(704, "WMaxLimPct") or 0.0) / 100.0 * self.physics.params.rated_kw
            command = min(max(command, -cap_kw), cap_kw)
        self._command_kw = command

    def _target_kw(self) -> float:
        if self.faults.state_faulted or not self._connected or self._standby:
            return 0.0
        return self._revert_kw if self._reverted else self._command_kw

    def _revert_deadline_s(self) -> float | None:
        timeout = self.image.get_raw(704, "WSetRvrtTms")
        if self._reverted or not isinstance(timeout, int) or timeout <= 0:
            return None
        return self._setpoint_written_s + timeout

    def _heartbeat_deadline_s(self) -> float | None:
        if self._standby or self.heartbeat_timeout_s <= 0.0:
            return None
        return self._heartbeat_changed_s + self.heartbeat_timeout_s

    def _protect(self, t: float) -> None:
        deadline = self._revert_deadline_s()
        if deadline is not None and t >= deadline:
            self._reverted = True
        deadline = self._heartbeat_deadline_s()
        if deadline is not None and t >= deadline:
            self._standby = True

    def set_soc_pct(self, soc_pct: float) -> None:
        """Jump the state of charge to ``soc_pct`` now (the ``set_soc`` control request)."""
        self.step(self._clock.time_s())
        self.physics.set_soc_pct(soc_pct)
        self._image_stale = True

    def _fault_changed(self, fault: FaultName, active: bool) -> None:
        self.physics.limit_factor = self.faults.limit_factor
        if active:
            self.fault_set_mono_s[fault.value] = time.monotonic()
        if fault is FaultName.FREEZE and active:
            # Freeze the values of this moment, not those of the last read.
            self.step(self._clock.time_s())
            self._refresh_image()
        self._image_stale = True

    # ---------------------------------------------------------------------------------- snapshot

    def _state_value(self, soc_pct: float) -> int:
        if self.faults.state_faulted:
            return _STATE["FAULT"]
        if not self._connected:
            return _STATE["DISCONNECTED"]
        if self._standby:
            return _STATE["STANDBY"]
        if soc_pct <= 0.1 or soc_pct >= 99.9:
            return _STATE_SOC_PROTECTION
        return _STATE["CONNECTED"]

    def _snapshot(self) -> CabinetState:
        physics = self.physics
        faults = self.faults
        temperature = faults.temperature_override_degc
        if temperature is None:
            temperature = physics.temperature_degc
        cells = physics.cell_voltages()
        cell_max = faults.cell_voltage_max_override_v
        cell_max = cells.max_v if cell_max is None else cell_max
        cell_min = faults.cell_voltage_min_override_v
        cell_min = cells.min_v if cell_min is None else cell_min
        soc = physics.soc_pct
        charge_limit = physics.charge_limit_kw(temperature)
        discharge_limit = physics.discharge_limit_kw(temperature)
        target = min(max(self._target_kw(), -charge_limit), discharge_limit)
        return CabinetState(
            cabinet_id=self.id,
            time_s=self._time_s,
            soc_pct=soc,
            energy_kwh=physics.energy_kwh,
            active_power_kw=physics.power_kw,
            setpoint_kw=self._setpoint_kw,
            target_kw=target,
            charge_limit_kw=charge_limit,
            discharge_limit_kw=discharge_limit,
            temperature_degc=temperature,
            cell_voltage_max_v=cell_max,
            cell_voltage_min_v=cell_min,
            cell_voltage_avg_v=cells.average_v,
            pack_voltage_v=cells.average_v * physics.params.cells_in_series,
            pack_current_a=physics.pack_current_a(),
            connected=self._connected and not faults.state_faulted,
            state=_STATE_NAMES[self._state_value(soc)],
            standby=self._standby,
            reverted=self._reverted,
            alarms=self._alarms(temperature, cell_max, cell_min),
            heartbeat=self._heartbeat,
            charged_ac_kwh=physics.charged_ac_kwh,
            discharged_ac_kwh=physics.discharged_ac_kwh,
        )

    def _alarms(self, temperature_degc: float, cell_max_v: float, cell_min_v: float) -> int:
        bits = self.faults.alarm_bits
        if self._standby:
            bits |= _evt1("COMMUNICATION_ERROR")
        if temperature_degc >= OVER_TEMP_ALARM_DEGC:
            bits |= _evt1("OVER_TEMP_ALARM")
        elif temperature_degc >= OVER_TEMP_WARNING_DEGC:
            bits |= _evt1("OVER_TEMP_WARNING")
        if temperature_degc <= UNDER_TEMP_ALARM_DEGC:
            bits |= _evt1("UNDER_TEMP_ALARM")
        elif temperature_degc <= UNDER_TEMP_WARNING_DEGC:
            bits |= _evt1("UNDER_TEMP_WARNING")
        if cell_max_v >= OVER_VOLT_ALARM_V:
            bits |= _evt1("OVER_VOLT_ALARM")
        elif cell_max_v >= OVER_VOLT_WARNING_V:
            bits |= _evt1("OVER_VOLT_WARNING")
        if cell_min_v <= UNDER_VOLT_ALARM_V:
            bits |= _evt1("UNDER_VOLT_ALARM")
        elif cell_min_v <= UNDER_VOLT_WARNING_V:
            bits |= _evt1("UNDER_VOLT_WARNING")
        return bits

    # ---------------------------------------------------------------------------------- registers

    def _scale_factors(self) -> dict[tuple[int, str], int]:
        params = self.physics.params
        rated_w = params.rated_kw * 1000.0
        dc_w = rated_w / min(params.charge_efficiency, params.discharge_efficiency)
        ac_a = rated_w / (math.sqrt(3.0) * GRID_LINE_V)
        dc_a = dc_w / (params.cells_in_series * 2.5)
        w_sf = fit_scale_factor(1.5 * rated_w, "int16", 0)
        return {
            (701, "A_SF"): fit_scale_factor(1.5 * ac_a, "int16", -1),
            (701, "V_SF"): -1,
            (701, "Hz_SF"): -2,
            (701, "W_SF"): w_sf,
            (701, "PF_SF"): -3,
            (701, "VA_SF"): w_sf,
            (701, "Var_SF"): w_sf,
            (701, "TotWh_SF"): 0,
            (701, "TotVarh_SF"): 0,
            (701, "Tmp_SF"): -1,
            (704, "PF_SF"): -3,
            (704, "WMaxLimPct_SF"): -1,
            (704, "WSet_SF"): w_sf,
            (704, "WSetPct_SF"): -1,
            (704, "VarSet_SF"): w_sf,
            (704, "VarSetPct_SF"): -1,
            (802, "AHRtg_SF"): fit_scale_factor(
                params.capacity_kwh * 1000.0 / params.nominal_pack_v, "uint16", -1
            ),
            (802, "WHRtg_SF"): fit_scale_factor(params.capacity_kwh * 1000.0, "uint16", 0),
            (802, "WChaDisChaMax_SF"): fit_scale_factor(rated_w, "uint16", 0),
            (802, "DisChaRte_SF"): 0,
            (802, "SoC_SF"): -2,
            (802, "DoD_SF"): -2,
            (802, "SoH_SF"): 0,
            (802, "V_SF"): fit_scale_factor(params.cells_in_series * 3.8, "uint16", -1),
            (802, "CellV_SF"): -3,
            (802, "A_SF"): fit_scale_factor(1.5 * dc_a, "int16", -1),
            (802, "AMax_SF"): fit_scale_factor(1.5 * dc_a, "uint16", -1),
            (802, "W_SF"): fit_scale_factor(1.5 * dc_w, "int16", 0),
        }

    def _write_static_points(self) -> None:
        image = self.image
        params = self.physics.params
        image.set_raw(1, "Mn", "hybrid-ems")
        image.set_raw(1, "Md", "sim-cabinet")
        image.set_raw(1, "Vr", __version__)
        image.set_raw(1, "SN", f"SIM-{self.id}"[:32])
        image.set_raw(1, "DA", self.unit_id)
        image.set_raw(701, "ACType", _symbol(701, "ACType", "THREE_PHASE"))
        image.set_raw(701, "DERMode", 1 << _symbol(701, "DERMode", "GRID_FOLLOWING"))
        image.set_raw(701, "MnAlrmInfo", "")
        for name in ("Var", "VarL1", "VarL2", "VarL3"):
            image.set(701, name, 0.0)
        for name in ("TotVarhInj", "TotVarhAbs"):
            image.set_raw(701, name, 0)
        # 704: every control disabled and zero until a client writes it; WSetMod WATTS.
        for name, point in image.layout.model(704).points.items():
            if point.writable:
                image.set_raw(704, name, min(point.symbols.values()) if point.symbols else 0)
        image.set_raw(704, "WSetMod", _WATTS)
        image.set(704, "WMaxLimPct", 100.0)
        image.set(704, "WMaxLimPctRvrt", 100.0)
        for name in ("PFWInj.PF", "PFWInjRvrt.PF", "PFWAbs.PF", "PFWAbsRvrt.PF"):
            image.set(704, name, 1.0)
        for name in ("PFWInjRvrtRem", "PFWAbsRvrtRem", "WMaxLimPctRvrtRem", "WSetRvrtRem", "VarSetRvrtRem"):
            image.set_raw(704, name, 0)
        # 802 ratings and fixed values.
        capacity_wh = params.capacity_kwh * 1000.0
        image.set(802, "AHRtg", capacity_wh / params.nominal_pack_v)
        image.set(802, "WHRtg", capacity_wh)
        image.set(802, "SoCMax", 100.0)
        image.set(802, "SoCMin", 0.0)
        image.set(802, "SocRsvMax", self.config.soc_max_pct)
        image.set(802, "SoCRsvMin", self.config.soc_min_pct)
        image.set(802, "SoH", 100.0)
        image.set_raw(802, "LocRemCtl", _symbol(802, "LocRemCtl", "REMOTE"))
        image.set_raw(802, "CtrlHb", 0)
        image.set_raw(802, "AlmRst", 0)
        image.set_raw(802, "Typ", _symbol(802, "Typ", "LITHIUM_ION"))
        for name in ("Evt2", "EvtVnd1", "EvtVnd2"):
            image.set_raw(802, name, 0)
        image.set(802, "VMax", params.cells_in_series * 3.65)
        image.set(802, "VMin", params.cells_in_series * 2.5)
        image.set_raw(802, "CellVMaxStr", 1)
        image.set_raw(802, "CellVMinStr", 1)
        image.set_raw(802, "CellVMaxMod", 1)
        image.set_raw(802, "CellVMinMod", 2)
        image.set_raw(802, "ReqInvState", _symbol(802, "ReqInvState", "NO REQUEST"))
        image.set(802, "ReqW", 0.0)
        image.set_raw(802, "SetOp", _CONNECT)
        image.set_raw(802, "SetInvState", _symbol(802, "SetInvState", "INVERTER_STARTED"))

    def _refresh_image(self) -> None:
        state = self._snapshot()
        physics = self.physics
        image = self.image
        power_w = state.active_power_kw * 1000.0
        running = state.connected and not state.standby
        image.set_raw(701, "St", 1 if running else 0)
        image.set_raw(701, "InvSt", self._inverter_state(state))
        image.set_raw(701, "ConnSt", 1 if state.connected else 0)
        alarm = 0
        if state.alarms & _evt1("OVER_TEMP_ALARM"):
            alarm |= 1 << _symbol(701, "Alrm", "OVER_TEMP")
        if not self._connected:
            alarm |= 1 << _symbol(701, "Alrm", "MANUAL_SHUTDOWN")
        image.set_raw(701, "Alrm", alarm)
        image.set(701, "W", power_w)
        image.set(701, "VA", abs(power_w))
        image.set(701, "PF", 1.0)
        current_a = abs(power_w) / (math.sqrt(3.0) * GRID_LINE_V)
        image.set(701, "A", current_a)
        image.set(701, "LLV", GRID_LINE_V)
        image.set(701, "LNV", GRID_PHASE_V)
        image.set(701, "Hz", GRID_HZ)
        image.set(701, "TotWhInj", physics.discharged_ac_kwh * 1000.0)
        image.set(701, "TotWhAbs", physics.charged_ac_kwh * 1000.0)
        image.set(701, "TmpAmb", physics.params.ambient_temperature_degc)
        image.set(701, "TmpCab", state.temperature_degc)
        for phase, line in (("L1", "VL1L2"), ("L2", "VL2L3"), ("L3", "VL3L1")):
            image.set(701, f"W{phase}", power_w / 3.0)
            image.set(701, f"VA{phase}", abs(power_w) / 3.0)
            image.set(701, f"PF{phase}", 1.0)
            image.set(701, f"A{phase}", current_a)
            image.set(701, line, GRID_LINE_V)
            image.set(701, f"V{phase}", GRID_PHASE_V)
        rated = physics.params.rated_kw
        available = min(state.charge_limit_kw, state.discharge_limit_kw)
        throttle_pct = 100.0 * available / rated if rated > 0 else 100.0
        image.set(701, "ThrotPct", throttle_pct)
        derated = throttle_pct < 99.95
        image.set_raw(701, "ThrotSrc", (1 << _symbol(701, "ThrotSrc", "DERATED")) if derated else 0)
        deadline = self._revert_deadline_s()
        remaining_s = 0.0 if deadline is None else max(0.0, deadline - self._watchdog_now(self._time_s))
        image.set_raw(704, "WSetRvrtRem", math.ceil(remaining_s))
        image.set(802, "WChaRteMax", state.charge_limit_kw * 1000.0)
        image.set(802, "WDisChaRteMax", state.discharge_limit_kw * 1000.0)
        image.set(802, "SoC", state.soc_pct)
        image.set(802, "DoD", 100.0 - state.soc_pct)
        throughput_kwh = physics.charged_ac_kwh + physics.discharged_ac_kwh
        image.set_raw(802, "NCyc", int(throughput_kwh / (2.0 * physics.params.capacity_kwh)))
        image.set_raw(802, "ChaSt", self._charge_status(state))
        image.set_raw(802, "Hb", int(self._watchdog_now(self._time_s)) & 0xFFFF)  # +1 per second
        image.set_raw(802, "State", self._state_value(state.soc_pct))
        image.set_raw(802, "Evt1", state.alarms)
        image.set(802, "V", state.pack_voltage_v)
        image.set(802, "CellVMax", state.cell_voltage_max_v)
        image.set(802, "CellVMin", state.cell_voltage_min_v)
        image.set(802, "CellVAvg", state.cell_voltage_avg_v)
        image.set(802, "A", state.pack_current_a)
        image.set(802, "AChaMax", state.charge_limit_kw * 1000.0 / state.pack_voltage_v)
        image.set(802, "ADisChaMax", state.discharge_limit_kw * 1000.0 / state.pack_voltage_v)
        image.set(802, "W", physics.dc_power_kw() * 1000.0)
        self._image_stale = False

    def _inverter_state(self, state: CabinetState) -> int:
        if self.faults.state_faulted:
            return _symbol(701, "InvSt", "FAULT")
        if not state.connected:
            return _symbol(701, "InvSt", "OFF")
        if state.standby:
            return _symbol(701, "InvSt", "STANDBY")
        throttled = abs(state.target_kw) + 1e-6 < abs(self._target_kw())
        return _symbol(701, "InvSt", "THROTTLED" if throttled else "RUNNING")

    def _charge_status(self, state: CabinetState) -> int:
        if not state.connected:
            name = "OFF"
        elif state.soc_pct >= 99.9:
            name = "FULL"
        elif state.soc_pct <= 0.1:
            name = "EMPTY"
        elif state.active_power_kw > 0.05:
            name = "DISCHARGING"
        elif state.active_power_kw < -0.05:
            name = "CHARGING"
        else:
            name = "HOLDING"
        return _symbol(802, "ChaSt", name)
