"""The day-aheads the campaign uploads: the site's day, shifted to each simulated day, re-priced on re-upload.

The simulator repeats the day-ahead file's load and PV every day (docs/simulators.md), so every day's upload
keeps them and only the start moves; a re-upload (a trader's correction) keeps the day and draws new prices
from its seed (each price times a factor in 0.8-1.2). Only the first day carries the file's
``initial_soc_pct``: later days are planned from the live SoC, as a trading system that does not know the
batteries would send them.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

from lab.soak.schedule import DAY_S
from shared.dayahead import DayAhead

PRICE_FACTOR_RANGE = (0.8, 1.2)


def day_dayahead(base: DayAhead, day: int) -> DayAhead:
    """``base`` moved ``day`` days later (the first day unchanged)."""
    if day == 0:
        return base
    return replace(base, start=base.start + timedelta(seconds=day * DAY_S), initial_soc_pct={})


def repriced(dayahead: DayAhead, seed: int) -> DayAhead:
    """The same day with every price multiplied by a factor drawn from ``seed``."""
    rng = random.Random(seed)
    factors = [rng.uniform(*PRICE_FACTOR_RANGE) for _ in range(dayahead.steps)]
    return replace(
        dayahead,
        import_price_per_kwh=tuple(
            round(p * f, 5) for p, f in zip(dayahead.import_price_per_kwh, factors, strict=True)
        ),
        export_price_per_kwh=tuple(
            round(p * f, 5) for p, f in zip(dayahead.export_price_per_kwh, factors, strict=True)
        ),
        initial_soc_pct={},
    )
