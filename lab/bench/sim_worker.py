"""The simulator side of ``ems bench edge``, run as its own process (as a real device is not in the edge).

``python -m lab.bench.sim_worker SITE CABINET_ID RT_PRIORITY`` serves the site's devices (with SCHED_FIFO
at RT_PRIORITY when it is > 0) and answers commands on stdin, one JSON object per line on stdout:

- ``inject KIND``: set fault KIND on the cabinet, wait until the device receives ``WSet`` = 0 W, clear the
  fault, answer ``{"reaction_ms": ...}`` (``null`` when 0 W did not arrive within 2 s);
- ``stop``: stop the simulator and exit.

The reaction time is measured inside the device process, from the moment the fault is set to the moment
the device handles the write of 0 W: the whole path through a real Modbus TCP read, the edge's
interlocks and a real write. The write is observed by wrapping the simulated device's write handler.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable

REACTION_TIMEOUT_S = 2.0


def _emit(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _serve(site_path: str, cabinet_id: str) -> None:
    import logging

    from shared.clock import RealClock
    from shared.site import load_site
    from simulators import SiteSimulator

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    site = load_site(site_path)
    async with SiteSimulator(site, RealClock()) as sim:
        cabinet = sim.cabinet(cabinet_id)
        wset = cabinet.image.layout.point(704, "WSet")
        pending: list[asyncio.Future[float]] = []
        original = cabinet.write_registers

        def recording(address: int, values: list[int]) -> int | None:
            code = original(address, values)
            covers = address <= wset.address < address + len(values)
            if code is None and covers and pending and cabinet.image.get(704, "WSet") == 0.0:
                future = pending.pop()
                if not future.done():
                    future.set_result(time.monotonic())
            return code

        cabinet.write_registers = recording  # type: ignore[method-assign]
        inject: dict[str, Callable[[], None]] = {
            "over_temperature": lambda: cabinet.faults.over_temperature(75.0),
            "cell_over_voltage": lambda: cabinet.faults.cell_over_voltage(3.9),
            "cell_under_voltage": lambda: cabinet.faults.cell_under_voltage(2.4),
            "alarm_bit": lambda: cabinet.faults.alarm_bit("GROUND_FAULT"),
            "state_fault": lambda: cabinet.faults.state_fault(),
        }
        _emit({"ready": True, "faults": sorted(inject)})
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if not line or line == "stop":
                break
            command, _, kind = line.partition(" ")
            if command != "inject" or kind not in inject:
                _emit({"error": f"unknown command {line!r}"})
                continue
            future: asyncio.Future[float] = loop.create_future()
            pending.append(future)
            started = time.monotonic()
            inject[kind]()
            try:
                seen = await asyncio.wait_for(future, REACTION_TIMEOUT_S)
                reaction_ms: float | None = (seen - started) * 1000.0
            except TimeoutError:
                reaction_ms = None
                pending.clear()
            cabinet.faults.clear_all()
            _emit({"kind": kind, "reaction_ms": reaction_ms})
    _emit({"stopped": True})


def main() -> None:
    if len(sys.argv) != 4:
        sys.stderr.write("usage: python -m lab.bench.sim_worker SITE CABINET_ID RT_PRIORITY (0: normal)\n")
        sys.exit(2)
    priority = int(sys.argv[3])
    if priority > 0:  # the device is other hardware in reality; keep it from being starved by the edge
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    asyncio.run(_serve(sys.argv[1], sys.argv[2]))


if __name__ == "__main__":
    main()
