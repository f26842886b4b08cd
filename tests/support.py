"""Helpers shared by the tests: free loopback ports and site files that use them."""

from __future__ import annotations

from pathlib import Path

from lab.loopback import free_port, loopback_site_toml
from shared.site import SiteConfig, load_site

__all__ = ["free_port", "site_toml", "write_site"]


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
    return loopback_site_toml(
        cabinets,
        name=name,
        grid_import_limit_kw=grid_import_limit_kw,
        grid_export_limit_kw=grid_export_limit_kw,
        site_lines=["demand_charge_per_kw = 0.0"],
        cabinet_lines=[cabinet_extra] if cabinet_extra else [],
        extra=extra,
    )


def write_site(directory: Path, cabinets: int = 3, **kwargs: object) -> tuple[Path, SiteConfig]:
    """Write a site file with free ports into ``directory``; return its path and parsed config."""
    path = directory / "site.toml"
    path.write_text(site_toml(cabinets, **kwargs), encoding="utf-8")  # type: ignore[arg-type]
    return path, load_site(path)
