"""Regenerate examples/day-ahead.json and examples/day-ahead.csv (deterministic).

96 quarter-hours of a sunny late-autumn weekday: day-ahead prices with a morning and an evening peak and a
midday dip (slightly negative at noon), an office-like load, and a clear-sky PV day of a 250 kWp roof.

Run: ``python examples/make_dayahead.py`` rewrites the shipped files (dated 2026-11-24).
``python examples/make_dayahead.py --start today --out DIR`` writes the same day dated today (UTC) into
DIR, for a central service on the real clock (``--start`` also takes ``now`` or an ISO UTC time; ``ems
upload FILE --start today`` re-dates any file the same way).
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import UploadError
from shared.redate import START_HELP, resolve_start

STEPS = 96
START = datetime(2026, 11, 24, tzinfo=UTC)


def price_per_kwh(hour: float) -> float:
    base = 0.11
    morning = 0.10 * math.exp(-(((hour - 8.0) / 1.3) ** 2))
    evening = 0.17 * math.exp(-(((hour - 18.5) / 1.6) ** 2))
    midday_dip = -0.13 * math.exp(-(((hour - 13.0) / 1.8) ** 2))
    night = -0.03 * math.exp(-(((hour - 3.5) / 2.0) ** 2))
    return round(base + morning + evening + midday_dip + night, 4)


def load_kw(hour: float, step: int) -> float:
    occupied = 1.0 / (1.0 + math.exp(-(hour - 7.0) * 2.0)) * 1.0 / (1.0 + math.exp((hour - 18.5) * 1.5))
    lunch = 25.0 * math.exp(-(((hour - 12.5) / 0.7) ** 2))
    wiggle = 6.0 * math.sin(step * 1.7) + 4.0 * math.sin(step * 0.37)
    return round(90.0 + 260.0 * occupied + lunch + wiggle, 1)


def pv_kw(hour: float) -> float:
    # Clear-sky bell between sunrise 7:30 and sunset 16:30 UTC; 250 kWp at a low November sun.
    if not 7.5 < hour < 16.5:
        return 0.0
    return round(215.0 * math.sin(math.pi * (hour - 7.5) / 9.0) ** 1.6, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the example day-ahead files (JSON and CSV).")
    parser.add_argument("--start", help=f"date the day: {START_HELP} (default {START:%Y-%m-%d})")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent, help="directory (default examples/)"
    )
    args = parser.parse_args(argv)
    try:
        start = START if args.start is None else resolve_start(args.start, 15, START, datetime.now(UTC))
    except UploadError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    write(start, args.out)
    print(
        f"wrote day-ahead.json and day-ahead.csv to {args.out}: {STEPS} x 15 min from {start:%Y-%m-%dT%H:%M}Z"
    )


def write(start: datetime, out: Path) -> None:
    hours = [(i + 0.5) * 0.25 for i in range(STEPS)]
    imports = [price_per_kwh(h) for h in hours]
    data = {
        "start": start.isoformat().replace("+00:00", "Z"),
        "interval_minutes": 15,
        "import_price_per_kwh": imports,
        "export_price_per_kwh": [round(p - 0.03, 4) for p in imports],
        "load_kw": [load_kw(h, i) for i, h in enumerate(hours)],
        "pv_kw": [pv_kw(h) for h in hours],
        "initial_soc_pct": {"cab-1": 50.0, "cab-2": 50.0, "cab-3": 40.0},
    }
    (out / "day-ahead.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    lines = ["start,import_price_per_kwh,export_price_per_kwh,load_kw,pv_kw"]
    for i in range(STEPS):
        stamp = (start + timedelta(minutes=15 * i)).isoformat().replace("+00:00", "Z")
        row = [data[k][i] for k in ("import_price_per_kwh", "export_price_per_kwh", "load_kw", "pv_kw")]  # type: ignore[index]
        lines.append(",".join([stamp, *(repr(float(v)) for v in row)]))
    (out / "day-ahead.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
