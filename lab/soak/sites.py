"""The campaign's three views of one site: the simulator's, the edges' and the central's.

Every link the campaign breaks runs through a :class:`lab.faultproxy.FaultProxy`, so the processes must
dial the proxies, not each other:

- ``site.toml`` (the simulator's view, also ``ems certs``): every address is the real one;
- ``site-edges.toml``: each cabinet's ``modbus_address`` and the ``meter_modbus_address`` are the Modbus
  proxies in front of the simulator; the edges serve OPC UA on the real ``opcua_endpoint``;
- ``site-central.toml``: each cabinet's ``opcua_endpoint`` is the OPC UA proxy in front of that edge.

OPC UA needs nothing more: the client opens its socket and sends its Hello and CreateSession with the URL
it was given (the proxy's), asyncua's server does not compare that URL with its own, and the central pins
the edge by the certificate's application URI, not by host or port. The proxies listen on 127.0.0.1 like
the edges, so the certificates' host names (127.0.0.1, localhost) still match.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.demo.sitecopy import DemoPaths, PortPicker, rewrite_site
from lab.demo.tomlwrite import dumps
from shared.site import SiteConfig, load_site, parse_host_port


@dataclass(frozen=True)
class Link:
    """One proxied link: clients dial ``listen``, the proxy forwards to ``upstream``."""

    name: str  # "opcua:CAB", "modbus:CAB" or "modbus:meter"
    listen: str  # host:port
    upstream: str  # host:port

    @property
    def listen_port(self) -> int:
        return parse_host_port(self.listen)[1]


@dataclass(frozen=True)
class SiteViews:
    sim: SiteConfig
    edges: SiteConfig
    central: SiteConfig
    sim_file: Path
    edges_file: Path
    central_file: Path
    links: tuple[Link, ...]


def _endpoint_address(endpoint: str) -> str:
    return endpoint.removeprefix("opc.tcp://").split("/", 1)[0]


def write_site_views(
    source: Path, paths: DemoPaths, profile: Path, overrides: Mapping[str, Mapping[str, Any]]
) -> SiteViews:
    """Write the three views next to each other in ``paths.out_dir``; return them parsed, with the links."""
    ports = PortPicker()
    sim = rewrite_site(source, paths, profile, ports, overrides)
    raw: dict[str, Any] = tomllib.loads(paths.site_file.read_text(encoding="utf-8"))
    edges_raw, central_raw = copy.deepcopy(raw), copy.deepcopy(raw)
    links: list[Link] = []
    meter = Link("modbus:meter", ports.address(), raw["site"]["meter_modbus_address"])
    edges_raw["site"]["meter_modbus_address"] = meter.listen
    links.append(meter)
    for index, cabinet in enumerate(raw["cabinets"]):
        modbus = Link(f"modbus:{cabinet['id']}", ports.address(), cabinet["modbus_address"])
        edges_raw["cabinets"][index]["modbus_address"] = modbus.listen
        opcua = Link(f"opcua:{cabinet['id']}", ports.address(), _endpoint_address(cabinet["opcua_endpoint"]))
        central_raw["cabinets"][index]["opcua_endpoint"] = f"opc.tcp://{opcua.listen}/ems/edge"
        links += [modbus, opcua]
    edges_file = paths.out_dir / "site-edges.toml"
    central_file = paths.out_dir / "site-central.toml"
    header = "# Written by `ems soak`: the {} view, through the campaign's fault proxies.\n"
    edges_file.write_text(header.format("edges'") + dumps(edges_raw), encoding="utf-8")
    central_file.write_text(header.format("central's") + dumps(central_raw), encoding="utf-8")
    return SiteViews(
        sim,
        load_site(edges_file),
        load_site(central_file),
        paths.site_file,
        edges_file,
        central_file,
        tuple(links),
    )
