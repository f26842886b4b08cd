"""``ems validate FILE [--site S] [--strict]``: is a site file or a day-ahead upload valid and plausible?

Exit status: 0 valid (warnings and notes are printed, one line each); 2 invalid, or with ``--strict``
any warning. Problems and findings go to stderr, the one-line verdict to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.dayahead import check_against_site, load_dayahead, upload_format
from shared.errors import InputError
from shared.plausibility import Finding, Severity, check_dayahead, check_site, refusals
from shared.site import SiteConfig, load_site
from shared.timeutil import format_utc


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a site file (.toml) or a day-ahead upload (.json/.csv)",
        description="Check a site file (.toml) or a day-ahead upload (.json, .csv): that it is valid, and "
        "that it is plausible (a SoC window inside the edge's hard limits is required; values that look "
        "like the wrong unit are warnings). Prints one line per problem, warning or note; exits 2 when "
        "the file is not valid, or with --strict when there is a warning.",
    )
    parser.add_argument("file", type=Path, help="site .toml, or day-ahead .json/.csv")
    parser.add_argument(
        "--site",
        type=Path,
        help="site file: also check the upload against it (cabinet ids, limits, prices)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) on warnings too, as [central] strict_plausibility does",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        if path.suffix.lower() == ".toml":
            site = load_site(path)
            findings = {str(path): check_site(site)}
            verdict = f"{path}: valid site file: site {site.site.name!r}, {len(site.cabinets)} cabinets"
        else:
            findings, verdict = _upload(path, args.site)
    except InputError as exc:
        for line in exc.lines():
            print(f"invalid: {line}", file=sys.stderr)
        return 2
    refused = _print_findings(findings, strict=args.strict)
    if refused:
        print(f"{path}: refused: {_count(refused)}", file=sys.stderr)
        return 2
    print(verdict)
    return 0


def _upload(path: Path, site_path: Path | None) -> tuple[dict[str, list[Finding]], str]:
    """Findings per file (the site's first) and the verdict line; InputError when invalid."""
    dayahead = load_dayahead(path)
    site: SiteConfig | None = None
    findings: dict[str, list[Finding]] = {}
    if site_path is not None:
        site = load_site(site_path)
        findings[str(site_path)] = check_site(site)
        check_against_site(dayahead, site, str(path))
    findings[str(path)] = check_dayahead(dayahead, site, upload_format(path))
    verdict = (
        f"{path}: valid day-ahead upload: {dayahead.steps} intervals of {dayahead.interval_minutes} min "
        f"from {format_utc(dayahead.start)}"
        + ("" if site is not None else " (not checked against a site: give --site)")
    )
    return findings, verdict


def _print_findings(findings: dict[str, list[Finding]], *, strict: bool) -> list[Finding]:
    """Print every finding (refusals first, as ``invalid:``); return the refusals."""
    refused: list[Finding] = []
    for source, items in findings.items():
        refusing = refusals(items, strict=strict)
        refused += refusing
        for finding in items:
            label = "invalid" if finding in refusing else finding.severity.value
            print(f"{label}: {source}: {finding}", file=sys.stderr)
    return refused


def _count(refused: Sequence[Finding]) -> str:
    errors = sum(1 for f in refused if f.severity is Severity.ERROR)
    warnings = len(refused) - errors  # refusals only when --strict
    parts = [_plural(errors, "error")] if errors else []
    if warnings:
        parts.append(_plural(warnings, "warning") + " (--strict)")
    return ", ".join(parts)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"
