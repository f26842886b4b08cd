"""``ems upload FILE [--url URL] [--token T] [--cafile F] [--start now|today|ISO]``: hand a day-ahead file
to the central service.

The file goes to ``POST /api/v1/day-ahead`` byte for byte (the service validates it), or with ``--start``
re-dated to that start (same intervals and values); the command waits for the resulting plan and prints
its summary, the service's plausibility warnings and the push outcome of every edge. Over HTTPS the
service's certificate is verified (TLS 1.2+, host name checked) against ``--cafile``, else the site's
``trusted/http-ca.pem``, else the system's trust store; there is no way to skip the check.

Exit status: 0 plan made and accepted by every edge; 1 the upload was stored but the plan failed, is still
being made, or an edge did not accept it, or the service could not be reached; 2 the upload was refused
(every problem is printed with its row or field) or the command line is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from shared.cli_clock import add_clock_option, clock_from_option
from shared.redate import START_HELP

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "EMS_CENTRAL_URL"
TOKEN_ENV = "EMS_API_TOKEN"  # nosec B105  # the name of a variable, not a secret
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
    parser.add_argument(
        "--url",
        help=f"service base URL (default: ${URL_ENV}, else from --site, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", help=f"API bearer token (default: ${TOKEN_ENV}, else [central] api_token of --site)"
    )
    parser.add_argument(
        "--site",
        type=Path,
        help="site file: take the URL and token from its [central] table, and the CA file from its PKI",
    )
    parser.add_argument(
        "--cafile",
        type=Path,
        help="PEM file to verify the service's TLS certificate with (default: PKI_DIR/trusted/http-ca.pem "
        "of --site, else the system's trust store)",
    )
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
    import ssl

    import httpx

    from shared.tls import client_context

    path: Path = args.file
    body, content_type = _body(path, args.start, args.clock)  # InputError: printed by `ems`, exit 2
    url, token, cafile = _target(args)
    if not token:
        print(
            f"error: no API token: give --token, set ${TOKEN_ENV}, or --site with [central] api_token",
            file=sys.stderr,
        )
        return 2
    if not args.timeout_s > 0:
        print("error: --timeout-s must be > 0", file=sys.stderr)
        return 2
    endpoint = url.rstrip("/") + "/api/v1/day-ahead"
    try:
        verify = client_context(cafile)
    except (OSError, ssl.SSLError) as exc:
        print(f"error: --cafile {cafile}: not a usable PEM file: {exc}", file=sys.stderr)
        return 2
    try:
        response = httpx.post(
            endpoint,
            content=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
            timeout=args.timeout_s,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the central service at {endpoint}: {exc}", file=sys.stderr)
        return 1
    answer = _json(response)
    code = _report(path, response.status_code, answer)
    if args.json:
        print(json.dumps(answer))
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


def _target(args: argparse.Namespace) -> tuple[str, str | None, Path | None]:
    """URL, token and CA file: the options, then the environment, then the site file."""
    url: str | None = args.url or os.environ.get(URL_ENV)
    token: str | None = args.token or os.environ.get(TOKEN_ENV)
    cafile: Path | None = args.cafile
    if args.site is not None:
        from shared.opcua.pki import pki_layout
        from shared.site import load_site

        site = load_site(args.site)  # InputError: printed by `ems`, exit 2
        scheme = "http" if site.central.tls_cert_file is None else "https"
        url = url or f"{scheme}://{site.central.http_address}"
        token = token or site.central.api_token
        trust = pki_layout(site).http_trust_path
        if cafile is None and trust.is_file():
            cafile = trust
    return url or DEFAULT_URL, token, cafile


def _json(response: Any) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {"detail": response.text.strip()[:200] or f"HTTP {response.status_code}"}
    return data if isinstance(data, dict) else {"detail": str(data)}


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
    if run is None:
        print("plan: still being made; see GET /api/v1/plan/latest")
        return 1
    return print_run(run)


def _print_refusal(path: Path, answer: dict[str, Any]) -> None:
    """One line per problem (the service's ``detail`` repeats the first one, so it is shown only when the
    answer lists no problems)."""
    problems = answer.get("problems") or []
    if not problems:
        print(f"refused: {path}: {answer.get('detail', 'upload refused')}", file=sys.stderr)
    for problem in problems:
        where = problem.get("location") or "(upload)"
        print(f"refused: {path}: {where}: {problem.get('message')}", file=sys.stderr)


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
