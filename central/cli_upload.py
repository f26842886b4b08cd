"""``ems upload FILE [--url URL] [--token T] [--cafile F] [--start now|today|ISO]``: hand a day-ahead file
to the central service.

The file goes to ``POST /api/v1/day-ahead`` byte for byte (the service validates it), or with ``--start``
re-dated to that start (same intervals and values); the command waits for the resulting plan and prints
its summary, the service's plausibility warnings and the push outcome of every edge. Over HTTPS the
service's certificate is verified (TLS 1.2+, host name checked) against ``--cafile``, else the site's
``trusted/http-ca.pem``, else the system's trust store; there is no way to skip the check.

Exit status: 0 plan made and accepted by every edge; 1 the upload was stored but the plan failed, is still
being made, a newer upload superseded it before its run, or an edge did not accept it, or the service
could not be reached; 2 the upload was refused (every problem is printed with its row or field) or the
command line is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from central.cli_http import CallFailedError, add_service_options, post, service_target
from shared.cli_clock import add_clock_option, clock_from_option
from shared.redate import START_HELP

CONTENT_TYPES = {"json": "application/json", "csv": "text/csv"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="upload a day-ahead file (JSON or CSV) to the central service and print the plan",
        description="Upload a day-ahead file (.json or .csv) to a running central service (re-dated first "
        "with --start), wait for the plan it makes and print its summary, the service's plausibility "
        "warnings and the push outcome per edge. Exit "
        "status: 0 all edges accepted the plan; 1 stored, but no plan or not every edge accepted it, or "
        "the service is unreachable; 2 refused (problems printed) or bad arguments.",
    )
    parser.add_argument("file", type=Path, help="day-ahead file, .json or .csv")
    add_service_options(parser)
    parser.add_argument(
        "--timeout-s", type=float, default=120.0, help="how long to wait for the plan [s] (default 120)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the service's JSON answer as the last line"
    )
    parser.add_argument(
        "--start",
        metavar="WHEN",
        help=f"re-date the file before sending it: {START_HELP}; the intervals and values stay",
    )
    add_clock_option(parser)  # what "now" and "today" mean
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path = args.file
    body, content_type = _body(path, args.start, args.clock)  # InputError: printed by `ems`, exit 2
    if not args.timeout_s > 0:
        print("error: --timeout-s must be > 0", file=sys.stderr)
        return 2
    target = service_target(args)
    try:
        answer = post(
            target, "/api/v1/day-ahead", timeout_s=args.timeout_s, content=body, content_type=content_type
        )
    except CallFailedError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    code = _report(path, answer.status, answer.body)
    if args.json:
        print(json.dumps(answer.body))
    return code


def _body(path: Path, start: str | None, clock_spec: str | None) -> tuple[bytes, str]:
    """What to send and its Content-Type: the file as it is, or re-dated to ``start``."""
    from shared.dayahead import parse_dayahead, read_upload_file, render_dayahead, upload_format

    fmt = upload_format(path)
    raw = read_upload_file(path)
    if start is not None:
        from shared.redate import redate

        dayahead = redate(parse_dayahead(raw, fmt, str(path)), start, clock_from_option(clock_spec).now())
        raw = render_dayahead(dayahead, fmt).encode()
    return raw, CONTENT_TYPES[fmt]


def _report(path: Path, status: int, answer: dict[str, Any]) -> int:
    if status == 422:
        _print_refusal(path, answer)
        return 2
    if status not in (201, 202):
        print(f"error: HTTP {status}: {answer.get('detail', '')}", file=sys.stderr)
        return 2 if status in (400, 401, 403, 413, 415) else 1  # 429 (blocked for a while): 1
    upload = answer["upload"]
    print(
        f"upload {upload['upload_id']} accepted ({upload['format']}): {upload['steps']} x "
        f"{upload['interval_minutes']} min from {upload['start']} to {upload['end']}"
    )
    for finding in answer.get("warnings", []):
        print(f"{finding.get('severity', 'warning')}: {finding.get('location')}: {finding.get('message')}")
    run = answer.get("run")
    if answer.get("planning") == "superseded":
        print(f"plan: none for this upload: superseded by {answer.get('superseded_by')} before its run")
        return 1
    if run is None:
        print("plan: still being made; see GET /api/v1/plan/latest")
        return 1
    return print_run(run)


def _print_refusal(path: Path, answer: dict[str, Any]) -> None:
    """One line per problem (the service's ``detail`` repeats the first one, so it is shown only when the
    answer lists no problems)."""
    from shared.errors import printable

    problems = answer.get("problems") or []
    if not problems:
        print(f"refused: {path}: {answer.get('detail', 'upload refused')}", file=sys.stderr)
    for problem in problems:
        where = printable(str(problem.get("location") or "(upload)"))
        print(f"refused: {path}: {where}: {printable(str(problem.get('message')))}", file=sys.stderr)


def print_run(run: dict[str, Any]) -> int:
    """Print an optimization run (the ``run`` object of the API); return the exit status it means."""
    plan = run.get("plan")
    if plan is None or not run.get("ok"):
        print(f"plan: FAILED: {run.get('message')}")
        return 1
    print(
        f"plan {plan['plan_id']}: {plan['status']}, objective {plan['objective_total']:.2f}, "
        f"{plan['steps']} x {plan['interval_minutes']} min from {plan['start']} to {plan['end']} "
        f"(optimize {run['optimize_wall_s']:.2f} s)"
    )
    for violation in plan.get("violations", []):
        print(f"  violation: {violation}")
    soc = run.get("initial_soc", {})
    if soc:
        shown = ", ".join(f"{cab} {c['soc_pct']:.1f} % ({c['source']})" for cab, c in soc.items())
        print(f"  initial SoC: {shown}")
    guessed = [cab for cab, c in soc.items() if c.get("source") == "default"]
    if guessed:
        print(
            f"  warning: {', '.join(guessed)} planned from the default SoC {soc[guessed[0]]['soc_pct']:g} %: "
            "no live SoC from the edge, and the upload gives none for the start of this horizon"
        )
    header = ("cabinet", "push", "first kW", "max dis kW", "max ch kW", "final SoC")
    print("  {:<12} {:<12} {:>9} {:>10} {:>10} {:>9}".format(*header))
    all_accepted = True
    push = run.get("push", {})
    for cabinet_id, cab in plan["cabinets"].items():
        outcome = push.get(cabinet_id, {})
        status = outcome.get("status", "?")
        all_accepted = all_accepted and status == "accepted"
        row = (cabinet_id, status, cab["first_setpoint_kw"], cab["max_discharge_kw"], cab["max_charge_kw"])
        line = "  {:<12} {:<12} {:>9.1f} {:>10.1f} {:>10.1f}".format(*row)
        line += f" {cab['final_soc_pct']:>8.1f}%"
        if status != "accepted":
            line += f"  ({outcome.get('message', '')})"
        print(line)
    return 0 if all_accepted else 1
