"""Loopback sites for the benchmarks, the demo and the tests: free ports and generated site files.

Every generated cabinet is the same 200 kWh / 100 kW cabinet; the caller adds what it measures through
``site_lines`` (more ``[site]`` keys) and ``extra`` (more tables, e.g. ``[edge]``).
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before by this process."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def loopback_site_toml(
    cabinets: int,
    *,
    name: str,
    grid_import_limit_kw: float = 400.0,
    grid_export_limit_kw: float = 300.0,
    site_lines: Sequence[str] = (),
    cabinet_lines: Sequence[str] = (),
    extra: str = "",
) -> str:
    """Site TOML with ``cabinets`` cabinets ``cab-1`` ... whose devices and edges use free loopback ports."""
    lines = [
        "[site]",
        f'name = "{name}"',
        f"grid_import_limit_kw = {grid_import_limit_kw}",
        f"grid_export_limit_kw = {grid_export_limit_kw}",
        f'meter_modbus_address = "127.0.0.1:{free_port()}"',
        *site_lines,
        "",
    ]
    for index in range(1, cabinets + 1):
        lines += [
            "[[cabinets]]",
            f'id = "cab-{index}"',
            "capacity_kwh = 200.0",
            "charge_limit_kw = 100.0",
            "discharge_limit_kw = 100.0",
            "charge_efficiency = 0.95",
            "discharge_efficiency = 0.95",
            "soc_min_pct = 10.0",
            "soc_max_pct = 90.0",
            "cycle_cost_per_kwh = 0.01",
            f'opcua_endpoint = "opc.tcp://127.0.0.1:{free_port()}/ems/edge"',
            f'modbus_address = "127.0.0.1:{free_port()}"',
            *cabinet_lines,
            "",
        ]
    lines.append(extra)
    return "\n".join(lines) + "\n"


def opcua_node_cache_dir() -> Path:
    """Where the lab's edges keep OPC UA's standard nodes between starts (see edge.opcua.aspace_cache):
    one directory per machine, so tests and benchmarks start their servers in a fraction of a second."""
    return Path(tempfile.gettempdir()) / "hybrid-ems-opcua-node-cache"
