"""Units: the wrong units a value is most often given in, and what hybrid-ems expects instead.

Every public name carries its unit (``_kw``, ``_kwh``, ``_pct`` 0-100, ``_per_kwh``; docs/glossary.md).
A value that is valid but sits a factor 1000 (or 100) away from anything real was almost always given in
a neighbouring unit; :class:`ProbableUnit` is how messages say which.
"""

from __future__ import annotations

from enum import StrEnum


class ProbableUnit(StrEnum):
    """The unit a value was probably given in, and the unit expected (the text ends a message)."""

    W = "looks like W; kW expected"
    WH = "looks like Wh; kWh expected"
    PER_MWH = "looks like currency per MWh; currency per kWh expected"
    FRACTION = "looks like a fraction 0-1; percent 0-100 expected"
