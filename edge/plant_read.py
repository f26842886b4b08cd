"""One cycle's reads: the cabinet device and the site meter, concurrently, each problem classified.

A read never raises: it gives a reading, or a communication problem (no answer in time, an error answer, a
closed link; :mod:`edge.comm_loss` decides what missing data means), or invalid data (the device answered
with something the edge cannot trust, an interlock). A broken connection is dropped here; the link
reconnects in the background.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from edge.comm_loss import CommProblem, CommSource
from edge.device_io import CabinetDevice, DeviceError, DeviceLink, MeterDevice
from edge.snapshot import CabinetReading, DeviceDataError, MeterReading

_ReadingT = TypeVar("_ReadingT")


@dataclass(frozen=True)
class CycleRead:
    """What one cycle's reads returned."""

    cabinet: CabinetReading | None
    meter: MeterReading | None
    problems: tuple[CommProblem, ...]
    invalid: tuple[str, ...]  # answered with data that cannot be trusted (trips at once)


async def read_plant(cabinet: CabinetDevice, meter: MeterDevice) -> CycleRead:
    cabinet_result, meter_result = await asyncio.gather(
        _read_device(CommSource.DEVICE, cabinet.link, cabinet.read),
        _read_device(CommSource.METER, meter.link, meter.read),
    )
    cabinet_reading, cabinet_problem, cabinet_invalid = cabinet_result
    meter_reading, meter_problem, meter_invalid = meter_result
    problems = tuple(p for p in (cabinet_problem, meter_problem) if p is not None)
    invalid = tuple(p for p in (cabinet_invalid, meter_invalid) if p)
    return CycleRead(cabinet_reading, meter_reading, problems, invalid)


async def _read_device(
    source: CommSource, link: DeviceLink, read: Callable[[], Awaitable[_ReadingT]]
) -> tuple[_ReadingT | None, CommProblem | None, str]:
    """(reading, communication problem, invalid-data problem)."""
    label = source.value
    if not link.ready:
        return None, CommProblem(source, f"{label}: {link.last_error}", link.lost_while_late), ""
    try:
        return await read(), None, ""
    except DeviceDataError as exc:
        return None, None, f"{label}: {exc}"
    except DeviceError as exc:
        if exc.connection_broken:
            link.lose(str(exc), edge_late=exc.edge_late)
        return None, CommProblem(source, f"{label}: {exc}", exc.edge_late), ""
