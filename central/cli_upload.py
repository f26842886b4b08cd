"""``ems upload FILE [--url URL] [--token T]``: hand a day-ahead file to the central service.

The file goes to ``POST /api/v1/day-ahead`` byte for byte (the service validates it); the command waits
for the resulting plan and prints its summary and the push outcome of every edge.

Exit status: 0 plan made and accepted by every edge; 1 the upload was stored but the plan failed, is still
being made, a newer upload superseded it before its run, or an edge did not accept it, or the service
could not be reached; 2 the upload was refused (every problem is printed with its row or field) or the
command line is wrong.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from central.cli_http import add_service_options, no_token_message, response_json, service_target

CONTENT_TYPES = {".json": "application/json", ".csv": "text/csv"}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "upload",
        help="upload a day-ahead file (JSON or CSV) to the central service and print the plan",
        description="Upload a day-ahead file (.json or .csv) to a running central "
        "service, wait for the plan it makes and print its summary and the push outcome per edge. Exit "
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
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per request
    path: Path = args.file
    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        print(f"error: {path}: a day-ahead file must end in .json or .csv", file=sys.stderr)
        return 2
    try:
        body = path.read_bytes()
    except OSError as exc:
        print(f"error: {path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 2
    url, token = service_target(args)
    if not token:
        print(no_token_message(), file=sys.stderr)
        return 2
    if not args.timeout_s > 0:
        print("error: --timeout-s must be > 0", file=sys.stderr)
        return 2
    endpoint = url.rstrip("/") + "/api/v1/day-ahead"
    try:
        response = httpx.post(
            endpoint,
            content=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
            timeout=args.timeout_s,
        )
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the central service at {endpoint}: {exc}", file=sys.stderr)
        return 1
    answer = response_json(response)
    code = _report(path, response.status_code, answer)
    if args.json:
        print(json.dumps(answer))
    return code


def _report(path: Path, status: int, answer: dict[str, Any]) -> int:
    if status == 422:
        print(f"refused: {answer.get('detail', 'upload refused')}", file=sys.stderr)
        for problem in answer.get("problems", []):
            where = problem.get("location") or "(upload)"
            print(f"  {where}: {problem.get('message')}", file=sys.stderr)
        return 2
    if status not in (201, 202):
        print(f"error: HTTP {status}: {answer.get('detail', '')}", file=sys.stderr)
        return 2 if status in (400, 401, 403, 413, 415) else 1
    upload = answer["upload"]
    print(
        f"upload {upload['upload_id']} accepted ({upload['format']}): {upload['steps']} x "
        f"{upload['interval_minutes']} min from {upload['start']} to {upload['end']}"
    )
    run = answer.get("run")
    if answer.get("planning") == "superseded":
        print(f"plan: none for this upload: superseded by {answer.get('superseded_by')} before its run")
        return 1
    if run is None:
        print("plan: still being made; see GET /api/v1/plan/latest")
        return 1
    return print_run(run)


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
