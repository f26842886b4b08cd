"""Shared models, configuration, units and the clock of hybrid-ems.

Conventions, stated once for the whole project (see docs/interfaces.md):

* Units are part of every public name: ``_kw``, ``_kwh``, ``_pct`` (0-100), ``_s``, ``_ms``, ``_degc``,
  ``_v``, ``_per_kwh`` (currency per kWh), ``_per_kw``. Nothing public carries a unit-less power or energy.
* Sign of a cabinet's power: **positive when it discharges** (delivers to the AC bus), negative when it
  charges, as SunSpec model 704 ``WSet``.
* Sign of grid power: **positive when the site imports** from the grid.
* Every timestamp on the wire and in storage is UTC (ISO 8601 with ``Z`` in JSON/CSV). Intervals are
  half-open ``[start, start + interval)``.
* Every component takes its time from an injectable :class:`shared.clock.Clock`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
