"""Helpers shared by the tests: free loopback ports and site files that use them."""

from __future__ import annotations

import socket
from pathlib import Path

from shared.site import SiteConfig, load_site

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and not handed out before in this test run."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def site_toml(
    cabinets: int = 3,
    *,
    name: str = "test-site",
    grid_import_limit_kw: float = 400.0,
    grid_export_limit_kw: float = 300.0,
    extra: str = "",
    cabinet_extra: str = "",
) -> str:
    """Site TOML with ``cabinets`` cabinets (100 kW / 200 kWh each) on free loopback ports."""
    lines = [
        "[site]",
        f'name = "{name}"',
        f"grid_import_limit_kw = {grid_import_limit_kw}",
        f"grid_export_limit_kw = {grid_export_limit_kw}",
        "demand_charge_per_kw = 0.0",
        f'meter_modbus_address = "127.0.0.1:{free_port()}"',
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
            cabinet_extra,
            "",
        ]
    lines.append(extra)
    return "\n".join(lines) + "\n"


def write_site(directory: Path, cabinets: int = 3, **kwargs: object) -> tuple[Path, SiteConfig]:
    """Write a site file with free ports into ``directory``; return its path and parsed config."""
    path = directory / "site.toml"
    path.write_text(site_toml(cabinets, **kwargs), encoding="utf-8")  # type: ignore[arg-type]
    return path, load_site(path)
