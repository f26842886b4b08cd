"""``ems validate FILE [--site S]``: is a site file or a day-ahead upload valid?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shared.dayahead import check_against_site, load_dayahead
from shared.errors import InputError
from shared.site import load_site


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a site file (.toml) or a day-ahead upload (.json/.csv)",
        description="Check a site file (.toml) or a day-ahead upload (.json, .csv). Prints one line per "
        "problem and exits 2 when the file is not valid.",
    )
    parser.add_argument("file", type=Path, help="site .toml, or day-ahead .json/.csv")
    parser.add_argument("--site", type=Path, help="site file: also check the upload's cabinet ids against it")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        if path.suffix.lower() == ".toml":
            site = load_site(path)
            print(f"{path}: valid site file: site {site.site.name!r}, {len(site.cabinets)} cabinets")
            return 0
        dayahead = load_dayahead(path)
        if args.site is not None:
            check_against_site(dayahead, load_site(args.site), str(path))
    except InputError as exc:
        for line in exc.lines():
            print(f"invalid: {line}", file=sys.stderr)
        return 2
    print(
        f"{path}: valid day-ahead upload: {dayahead.steps} intervals of {dayahead.interval_minutes} min "
        f"from {dayahead.start.isoformat().replace('+00:00', 'Z')}"
    )
    return 0
