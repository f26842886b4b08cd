"""What the user asked ``ems soak`` for, validated before anything starts (bad input: one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

from lab.soak.campaign import DEFAULT_SPEED, SoakOptions, check_out_dir, check_speed, new_schedule
from lab.soak.schedule import load_schedule
from shared.dayahead import check_against_site, load_dayahead
from shared.errors import InputError, Problem
from shared.site import load_site


def resolve_options(
    *,
    site_path: Path,
    dayahead_path: Path,
    days: float | None,
    seed: int | None,
    speed: float | None,
    out_dir: Path,
    json_line: bool,
    replay_from: Path | None,
) -> SoakOptions:
    site = load_site(site_path)
    dayahead = load_dayahead(dayahead_path)
    check_against_site(dayahead, site, str(dayahead_path))
    if dayahead.steps * dayahead.interval_minutes != 24 * 60:
        raise InputError(
            "--day-ahead",
            [
                Problem(
                    "",
                    f"must cover exactly one day (it repeats every day), got {dayahead.steps} "
                    f"x {dayahead.interval_minutes} min",
                )
            ],
        )
    if replay_from is not None:
        if days is not None or seed is not None:
            raise InputError(
                "--replay-from", [Problem("", "takes --days and --seed from the file; give neither")]
            )
        try:
            schedule = load_schedule(replay_from)
        except ValueError as exc:
            raise InputError("--replay-from", [Problem("", str(exc))]) from None
        if set(schedule.cabinet_ids) != set(site.cabinet_ids):
            raise InputError(
                "--replay-from",
                [
                    Problem(
                        "",
                        f"drawn for cabinets {', '.join(schedule.cabinet_ids)}, the site has "
                        f"{', '.join(site.cabinet_ids)}",
                    )
                ],
            )
        replay_speed = _file_speed(replay_from)
        chosen = speed if speed is not None else (replay_speed or DEFAULT_SPEED)
    else:
        if days is None or seed is None:
            missing = "--days" if days is None else "--seed"
            raise InputError(missing, [Problem("", "is required (or give --replay-from FILE)")])
        schedule = new_schedule(seed, days, site)
        chosen = DEFAULT_SPEED if speed is None else speed
    check_speed(chosen)
    check_out_dir(out_dir)
    return SoakOptions(
        site_path, dayahead_path, out_dir.resolve(), site, dayahead, schedule, chosen, json_line, replay_from
    )


def _file_speed(path: Path) -> float | None:
    import json

    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("speed")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None
