"""The demo's copy of the site file: free loopback ports and every state directory under the output dir.

A demo must never collide with something already listening (a real EMS on the default ports, another
demo) and must never write into the repository, so it runs on a rewritten copy of the user's site file:
every address becomes ``127.0.0.1:<free port>``, and the PKI, the edges' and the central's state, and the
simulators' profile point into (or at) absolute paths. Everything else (limits, cabinets, tuning) is kept.
"""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.demo.tomlwrite import dumps
from shared.site import SiteConfig, load_site

LOOPBACK = "127.0.0.1"


class PortPicker:
    """Hands out TCP ports on 127.0.0.1 that are free now and never the same one twice."""

    def __init__(self) -> None:
        self._handed_out: set[int] = set()

    def port(self) -> int:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = int(sock.getsockname()[1])
            if port not in self._handed_out:
                self._handed_out.add(port)
                return port

    def address(self) -> str:
        return f"{LOOPBACK}:{self.port()}"


@dataclass(frozen=True)
class DemoPaths:
    """Where one demo run keeps its files (all under ``out_dir``)."""

    out_dir: Path

    @property
    def site_file(self) -> Path:
        return self.out_dir / "site.toml"

    @property
    def dayahead_file(self) -> Path:
        return self.out_dir / "day-ahead.json"

    @property
    def logs_dir(self) -> Path:
        return self.out_dir / "logs"

    @property
    def state_dir(self) -> Path:
        return self.out_dir / "state"

    @property
    def pki_dir(self) -> Path:
        return self.out_dir / "pki"

    @property
    def edge_state_dir(self) -> Path:
        return self.state_dir / "edge"

    @property
    def central_database(self) -> Path:
        return self.state_dir / "central.sqlite3"

    def create(self) -> None:
        for directory in (self.out_dir, self.logs_dir, self.state_dir, self.edge_state_dir):
            directory.mkdir(parents=True, exist_ok=True)


def rewrite_site(
    source: Path,
    paths: DemoPaths,
    profile: Path,
    ports: PortPicker,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> SiteConfig:
    """Write the demo's site copy to ``paths.site_file`` and return it parsed.

    ``source`` must already be a valid site file (it is loaded first, so a bad one is refused with the
    file and key named before anything is written). ``profile`` is the day-ahead file the simulators take
    their load and PV from. ``overrides`` sets keys of the optional tables (``{"edge": {"cycle_ms": 50}}``).
    """
    load_site(source)
    raw: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    raw["site"]["meter_modbus_address"] = ports.address()
    for cabinet in raw["cabinets"]:
        cabinet["modbus_address"] = ports.address()
        cabinet["opcua_endpoint"] = f"opc.tcp://{ports.address()}/ems/edge"
    edge = raw.setdefault("edge", {})
    edge["state_dir"] = str(paths.edge_state_dir.resolve())
    central = raw.setdefault("central", {})
    central["http_address"] = ports.address()
    central["database_path"] = str(paths.central_database.resolve())
    opcua = raw.setdefault("opcua", {})
    opcua["pki_dir"] = str(paths.pki_dir.resolve())
    opcua.pop("users_file", None)  # the default, PKI_DIR/users.toml, is what `ems certs` writes
    sim = raw.setdefault("sim", {})
    sim["control_address"] = ports.address()
    sim["profile"] = str(profile.resolve())
    for table, values in (overrides or {}).items():
        raw.setdefault(table, {}).update(values)
    paths.site_file.write_text(
        f"# Written by `ems demo` from {source}: free loopback ports, state under this directory.\n"
        + dumps(raw),
        encoding="utf-8",
    )
    return load_site(paths.site_file)
