"""What the user asked ``ems demo`` for, validated before anything starts."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from lab.demo.scenarios import SCENARIOS, Scenario
from shared.dayahead import DayAhead, check_against_site, load_dayahead
from shared.errors import InputError, Problem
from shared.site import SiteConfig, load_site

DEFAULT_SITE = Path("examples/site.toml")
DEFAULT_DAYAHEAD = Path("examples/day-ahead.json")
DEFAULT_OUT = Path("demo-out")
TARGET_WALL_S = 180.0  # the default speed runs the window in about 3 minutes
MAX_SPEED = 2000.0  # faster makes a 100 ms control cycle longer than the sampling period
OUT_MARKER = ".ems-demo"  # marks a directory as a demo's own, so a re-run may clear it
OWNED_ENTRIES = (
    "logs",
    "state",
    "pki",
    "site.toml",
    "day-ahead.json",
    "upload-1.json",
    "upload-2.json",
    "summary.json",
    "samples.csv",
    "prices.png",
    "power.png",
    "soc.png",
    "grid.png",
    "modes.png",
)


@dataclass(frozen=True)
class DemoOptions:
    site_path: Path
    dayahead_path: Path
    out_dir: Path
    scenario: Scenario
    site: SiteConfig
    dayahead: DayAhead  # the demo window: the first ``hours`` of the file
    speed: float  # simulated seconds per wall second
    console: bool = False  # print the operator console's URL and token; keep it open after the day

    @property
    def window_s(self) -> float:
        return (self.dayahead.end - self.dayahead.start).total_seconds()


def resolve_options(
    site_path: Path,
    dayahead_path: Path,
    hours: float | None,
    speed: float | None,
    scenario: str,
    out_dir: Path,
    console: bool = False,
) -> DemoOptions:
    """Validate everything; raise :class:`InputError` with one line per problem."""
    if scenario not in SCENARIOS:
        raise InputError(
            "--scenario", [Problem("", f"unknown scenario {scenario!r}; one of {', '.join(SCENARIOS)}")]
        )
    site = load_site(site_path)
    full = load_dayahead(dayahead_path)
    check_against_site(full, site, str(dayahead_path))
    horizon_h = full.steps * full.interval_h
    if hours is not None and not (math.isfinite(hours) and 0 < hours <= horizon_h):
        raise InputError(
            "--hours",
            [Problem("", f"must be > 0 and at most the day-ahead's {horizon_h:g} h, got {hours:g}")],
        )
    steps = full.steps if hours is None else max(1, math.ceil(hours * 60.0 / full.interval_minutes - 1e-9))
    scenario_obj = SCENARIOS[scenario]
    if scenario_obj.first_upload_fraction < 1.0 and steps < 4:
        raise InputError(
            "--hours",
            [
                Problem(
                    "",
                    f"scenario {scenario} needs at least 4 day-ahead intervals "
                    f"({4 * full.interval_minutes} min)",
                )
            ],
        )
    window = truncate(full, steps)
    window_s = steps * full.interval_s
    chosen_speed = window_s / TARGET_WALL_S if speed is None else speed
    if not (math.isfinite(chosen_speed) and 1.0 <= chosen_speed <= MAX_SPEED):
        raise InputError(
            "--speed", [Problem("", f"must be between 1 and {MAX_SPEED:g}, got {chosen_speed:g}")]
        )
    check_out_dir(out_dir)
    # Absolute: the children run with the output directory as their working directory.
    return DemoOptions(
        site_path, dayahead_path, out_dir.resolve(), scenario_obj, site, window, chosen_speed, console
    )


def truncate(dayahead: DayAhead, steps: int) -> DayAhead:
    """The first ``steps`` intervals of ``dayahead`` (initial SoC kept)."""
    commitment = dayahead.grid_commitment_kw
    return replace(
        dayahead,
        import_price_per_kwh=dayahead.import_price_per_kwh[:steps],
        export_price_per_kwh=dayahead.export_price_per_kwh[:steps],
        load_kw=dayahead.load_kw[:steps],
        pv_kw=dayahead.pv_kw[:steps],
        grid_commitment_kw=None if commitment is None else commitment[:steps],
    )


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output directory that holds something other than a previous demo's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("--out", [Problem("", f"{out_dir} exists and is not a directory")])
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / OUT_MARKER).exists():
        raise InputError(
            "--out",
            [
                Problem(
                    "", f"{out_dir} is not empty and not a previous demo's output; choose another directory"
                )
            ],
        )


def prepare_out_dir(out_dir: Path) -> None:
    """Create the output directory, or clear a previous demo's files from it (nothing else)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in OWNED_ENTRIES:
        path = out_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    (out_dir / OUT_MARKER).write_text(
        "written by `ems demo`; the demo may clear this directory\n", encoding="utf-8"
    )


def default_input(given: Path | None, default: Path) -> Path:
    """``given``, else ``default`` relative to the working directory, else to the repository checkout."""
    if given is not None:
        return given
    if default.exists():
        return default
    checkout = Path(__file__).resolve().parents[2] / default
    return checkout if checkout.exists() else default
