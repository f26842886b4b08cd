"""The SunSpec device simulators: the plant that the edges control (battery cabinets with models 1, 701,
704, 802, and the site meter with models 1, 203).

Served over real Modbus TCP with pymodbus, physics stepped on the injected clock, faults injectable from
Python (``sim.cabinet("cab-1").faults.over_temperature()``) or from another process (the control
interface, :mod:`simulators.control`). See docs/simulators.md.
"""

from simulators.cabinet_device import CabinetSimulator, CabinetState
from simulators.control import ControlError, control_request
from simulators.faults import CabinetFaults, CommFaults, FaultName
from simulators.meter import MeterSimulator, MeterState
from simulators.site import SiteSimulator

__all__ = [
    "CabinetFaults",
    "CabinetSimulator",
    "CabinetState",
    "CommFaults",
    "ControlError",
    "FaultName",
    "MeterSimulator",
    "MeterState",
    "SiteSimulator",
    "control_request",
]
