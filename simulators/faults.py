"""Fault injection: what can go wrong with a device, set and cleared from tests or the control interface.

Communication faults (every device, the meter too): ``no_response`` (requests are read and never answered),
``delay`` (every answer late by the given wall-clock milliseconds), ``modbus_exception`` (every request
answered with that exception code), ``freeze`` (the register image stops updating; writes still land).

Cabinet faults: ``over_temperature`` (the cabinet reads the given temperature), ``cell_over_voltage`` and
``cell_under_voltage`` (the highest / lowest cell reads the given voltage), ``alarm_bit`` (an 802 ``Evt1``
bit is set; several may be), ``state_fault`` (802 ``State`` = FAULT and the PCS stops), ``derate`` (the
BMS limits ``WChaRteMax``/``WDisChaRteMax`` drop to the given share of the rating [%]).

Every fault is set by calling its method and cleared with ``clear(name)`` or ``clear_all()``. A bad
argument raises ``ValueError`` with one line saying why and changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import StrEnum

from shared.sunspec.layout import symbol_value

# Modbus exception codes a device may answer with (pymodbus ExcCodes).
MODBUS_EXCEPTION_CODES: Mapping[int, str] = {
    1: "ILLEGAL_FUNCTION",
    2: "ILLEGAL_ADDRESS",
    3: "ILLEGAL_VALUE",
    4: "DEVICE_FAILURE",
    5: "ACKNOWLEDGE",
    6: "DEVICE_BUSY",
    7: "NEGATIVE_ACKNOWLEDGE",
    8: "MEMORY_PARITY_ERROR",
    10: "GATEWAY_PATH_UNAVAILABLE",
    11: "GATEWAY_NO_RESPONSE",
}
MAX_DELAY_MS = 60_000.0


class FaultName(StrEnum):
    NO_RESPONSE = "no_response"
    DELAY = "delay"
    MODBUS_EXCEPTION = "modbus_exception"
    FREEZE = "freeze"
    OVER_TEMPERATURE = "over_temperature"
    CELL_OVER_VOLTAGE = "cell_over_voltage"
    CELL_UNDER_VOLTAGE = "cell_under_voltage"
    ALARM_BIT = "alarm_bit"
    STATE_FAULT = "state_fault"
    DERATE = "derate"


COMM_FAULTS = (FaultName.NO_RESPONSE, FaultName.DELAY, FaultName.MODBUS_EXCEPTION, FaultName.FREEZE)
CABINET_FAULTS = (
    *COMM_FAULTS,
    FaultName.OVER_TEMPERATURE,
    FaultName.CELL_OVER_VOLTAGE,
    FaultName.CELL_UNDER_VOLTAGE,
    FaultName.ALARM_BIT,
    FaultName.STATE_FAULT,
    FaultName.DERATE,
)

# Value of a fault: None (on/off fault), a number, or the set of injected alarm bits.
FaultValue = float | int | frozenset[int] | None
ChangeHook = Callable[[FaultName, bool], None]


class CommFaults:
    """Communication faults of one simulated device. ``on_change(name, active)`` runs after each change."""

    supported: tuple[FaultName, ...] = COMM_FAULTS

    def __init__(self, on_change: ChangeHook | None = None) -> None:
        self._active: dict[FaultName, FaultValue] = {}
        self._on_change = on_change

    # ------------------------------------------------------------------------------ setting

    def no_response(self) -> None:
        """Requests are received and never answered (the client times out)."""
        self._set(FaultName.NO_RESPONSE, None)

    def delay(self, ms: float) -> None:
        """Every answer is sent ``ms`` wall-clock milliseconds late (answers stay in order)."""
        value = _finite(ms, "delay ms")
        if not 0.0 < value <= MAX_DELAY_MS:
            raise ValueError(f"delay must be > 0 and <= {MAX_DELAY_MS:g} ms, got {ms}")
        self._set(FaultName.DELAY, value)

    def modbus_exception(self, code: int = 4) -> None:
        """Every request is answered with Modbus exception ``code`` (default 4, device failure)."""
        number = _integer(code, "exception code")
        if number not in MODBUS_EXCEPTION_CODES:
            known = ", ".join(f"{c} {n}" for c, n in MODBUS_EXCEPTION_CODES.items())
            raise ValueError(f"unknown Modbus exception code {code} (known: {known})")
        self._set(FaultName.MODBUS_EXCEPTION, number)

    def freeze(self) -> None:
        """The register image stops updating: measurements, state and heartbeat keep their values."""
        self._set(FaultName.FREEZE, None)

    def set(self, name: str, value: float | str | None = None) -> None:
        """Set fault ``name`` with its one optional argument (the control interface's entry point)."""
        fault = self._known(name)
        setter = self._setters().get(fault)
        if setter is None:  # pragma: no cover - every supported fault has a setter
            raise ValueError(f"fault {name!r} cannot be set")
        setter(value)

    def _setters(self) -> dict[FaultName, Callable[[float | str | None], None]]:
        return {
            FaultName.NO_RESPONSE: lambda v: self._no_argument(FaultName.NO_RESPONSE, v, self.no_response),
            FaultName.DELAY: lambda v: self.delay(_finite(_required(FaultName.DELAY, v), "delay ms")),
            FaultName.MODBUS_EXCEPTION: lambda v: self.modbus_exception(
                4 if v is None else _integer(v, "code")
            ),
            FaultName.FREEZE: lambda v: self._no_argument(FaultName.FREEZE, v, self.freeze),
        }

    # ------------------------------------------------------------------------------ clearing

    def clear(self, name: str) -> None:
        """Clear fault ``name`` (no effect when it is not set)."""
        fault = self._known(name)
        if fault in self._active:
            del self._active[fault]
            self._changed(fault, False)

    def clear_all(self) -> None:
        for fault in list(self._active):
            self.clear(fault)

    # ------------------------------------------------------------------------------ reading

    @property
    def active(self) -> dict[str, object]:
        """Active faults and their values (JSON-friendly)."""
        shown: dict[str, object] = {}
        for fault, value in self._active.items():
            shown[fault.value] = sorted(value) if isinstance(value, frozenset) else value
        return shown

    def is_set(self, name: str) -> bool:
        return self._known(name) in self._active

    @property
    def responding(self) -> bool:
        return FaultName.NO_RESPONSE not in self._active

    @property
    def delay_s(self) -> float:
        value = self._active.get(FaultName.DELAY)
        return float(value) / 1000.0 if isinstance(value, float | int) else 0.0

    @property
    def exception_code(self) -> int | None:
        value = self._active.get(FaultName.MODBUS_EXCEPTION)
        return value if isinstance(value, int) else None

    @property
    def frozen(self) -> bool:
        return FaultName.FREEZE in self._active

    # ------------------------------------------------------------------------------ internals

    def _known(self, name: str) -> FaultName:
        try:
            fault = FaultName(name)
        except ValueError:
            fault = None
        if fault is None or fault not in self.supported:
            known = ", ".join(f.value for f in self.supported)
            raise ValueError(f"unknown fault {name!r} for this device (known: {known})")
        return fault

    def _set(self, fault: FaultName, value: FaultValue) -> None:
        self._active[fault] = value
        self._changed(fault, True)

    def _changed(self, fault: FaultName, active: bool) -> None:
        if self._on_change is not None:
            self._on_change(fault, active)

    def _no_argument(self, fault: FaultName, value: object, setter: Callable[[], None]) -> None:
        if value is not None:
            raise ValueError(f"fault {fault.value!r} takes no value, got {value!r}")
        setter()


class CabinetFaults(CommFaults):
    """Faults of a cabinet (PCS and BMS): communication faults plus battery and state faults."""

    supported = CABINET_FAULTS

    def over_temperature(self, temperature_degc: float = 65.0) -> None:
        """The cabinet temperature reads ``temperature_degc`` (the device derates and alarms on it)."""
        value = _finite(temperature_degc, "temperature")
        if not -40.0 <= value <= 150.0:
            raise ValueError(f"temperature must be -40..150 degC, got {temperature_degc}")
        self._set(FaultName.OVER_TEMPERATURE, value)

    def cell_over_voltage(self, cell_voltage_v: float = 3.80) -> None:
        """The highest cell reads ``cell_voltage_v``."""
        self._set(FaultName.CELL_OVER_VOLTAGE, _cell_voltage(cell_voltage_v))

    def cell_under_voltage(self, cell_voltage_v: float = 2.50) -> None:
        """The lowest cell reads ``cell_voltage_v``."""
        self._set(FaultName.CELL_UNDER_VOLTAGE, _cell_voltage(cell_voltage_v))

    def alarm_bit(self, bit: int | str) -> None:
        """Set 802 ``Evt1`` bit ``bit`` (0-31 or a symbol such as ``OVER_TEMP_ALARM``), keeping the others."""
        number = _alarm_bit_number(bit)
        bits = self._active.get(FaultName.ALARM_BIT)
        current = bits if isinstance(bits, frozenset) else frozenset()
        self._set(FaultName.ALARM_BIT, current | {number})

    def clear_alarm_bit(self, bit: int | str) -> None:
        """Clear one injected ``Evt1`` bit (``clear("alarm_bit")`` clears them all)."""
        number = _alarm_bit_number(bit)
        bits = self._active.get(FaultName.ALARM_BIT)
        current = bits if isinstance(bits, frozenset) else frozenset()
        if number not in current:
            return
        if current == {number}:
            self.clear(FaultName.ALARM_BIT)
        else:
            self._set(FaultName.ALARM_BIT, current - {number})

    def state_fault(self) -> None:
        """802 ``State`` reads FAULT and the PCS goes to 0 W until cleared."""
        self._set(FaultName.STATE_FAULT, None)

    def derate(self, share_pct: float = 50.0) -> None:
        """The BMS charge and discharge limits drop to ``share_pct`` % of what they would be (0-100)."""
        value = _finite(share_pct, "derate share")
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"derate share must be 0-100 %, got {share_pct}")
        self._set(FaultName.DERATE, value)

    def _setters(self) -> dict[FaultName, Callable[[float | str | None], None]]:
        setters = super()._setters()
        setters.update(
            {
                FaultName.OVER_TEMPERATURE: lambda v: self.over_temperature(
                    65.0 if v is None else _finite(v, "temperature")
                ),
                FaultName.CELL_OVER_VOLTAGE: lambda v: self.cell_over_voltage(
                    3.80 if v is None else _finite(v, "cell voltage")
                ),
                FaultName.CELL_UNDER_VOLTAGE: lambda v: self.cell_under_voltage(
                    2.50 if v is None else _finite(v, "cell voltage")
                ),
                FaultName.ALARM_BIT: lambda v: self.alarm_bit(
                    v if isinstance(v, str) else _integer(_required(FaultName.ALARM_BIT, v), "alarm bit")
                ),
                FaultName.STATE_FAULT: lambda v: self._no_argument(
                    FaultName.STATE_FAULT, v, self.state_fault
                ),
                FaultName.DERATE: lambda v: self.derate(50.0 if v is None else _finite(v, "derate share")),
            }
        )
        return setters

    @property
    def temperature_override_degc(self) -> float | None:
        return self._number(FaultName.OVER_TEMPERATURE)

    @property
    def cell_voltage_max_override_v(self) -> float | None:
        return self._number(FaultName.CELL_OVER_VOLTAGE)

    @property
    def cell_voltage_min_override_v(self) -> float | None:
        return self._number(FaultName.CELL_UNDER_VOLTAGE)

    @property
    def alarm_bits(self) -> int:
        """Injected ``Evt1`` bits as a mask."""
        bits = self._active.get(FaultName.ALARM_BIT)
        mask = 0
        for bit in bits if isinstance(bits, frozenset) else ():
            mask |= 1 << bit
        return mask

    @property
    def limit_factor(self) -> float:
        """Factor [0..1] on the BMS limits (1 without a ``derate`` fault)."""
        share = self._number(FaultName.DERATE)
        return 1.0 if share is None else share / 100.0

    @property
    def state_faulted(self) -> bool:
        return FaultName.STATE_FAULT in self._active

    def _number(self, fault: FaultName) -> float | None:
        value = self._active.get(fault)
        return float(value) if isinstance(value, float | int) else None


def _finite(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def _integer(value: object, what: str) -> int:
    number = _finite(value, what)
    if number != int(number):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def _required(fault: FaultName, value: float | str | None) -> float | str:
    if value is None:
        raise ValueError(f"fault {fault.value!r} needs a value")
    return value


def _cell_voltage(value: float) -> float:
    number = _finite(value, "cell voltage")
    if not 0.0 < number <= 5.0:
        raise ValueError(f"cell voltage must be > 0 and <= 5 V, got {value}")
    return number


def _alarm_bit_number(bit: int | str) -> int:
    if isinstance(bit, str) and not bit.strip().lstrip("-").isdigit():
        try:
            return symbol_value(802, "Evt1", bit.strip())
        except KeyError:
            raise ValueError(f"unknown Evt1 alarm {bit!r}") from None
    number = _integer(bit, "alarm bit")
    if not 0 <= number <= 31:
        raise ValueError(f"alarm bit must be 0-31, got {bit}")
    return number
