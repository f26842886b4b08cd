"""SunSpec device simulators: battery cabinets (models 1, 701, 704, 802) and the site meter (1, 203).

Served over real Modbus TCP with pymodbus, physics stepped on the injected clock, faults injectable from
Python (``sim.cabinet("cab-1").faults.over_temperature()``) or from another process (the control
interface, :mod:`edge.sim.control`). See docs/simulators.md.
"""

from edge.sim.cabinet_device import CabinetSimulator, CabinetState
from edge.sim.control import ControlError, control_request
from edge.sim.faults import CabinetFaults, CommFaults, FaultName
from edge.sim.meter import MeterSimulator, MeterState
from edge.sim.site import SiteSimulator

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
