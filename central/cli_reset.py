"""``ems reset-interlock CABINET [--url URL] [--token T] [--site S]``: reset a cabinet's latched interlock.

Asks the central service (``POST /api/v1/cabinets/{id}/reset-interlock``), which calls the edge's
``ResetInterlock`` over OPC UA; prints the edge's answer.

Exit status: 0 the edge accepted the reset; 1 the edge refused it (its message says why, e.g. the
condition is still there), the edge or the service could not be reached; 2 unknown cabinet, token
refused, or bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any
from urllib.parse import quote

from central.cli_http import add_service_options, no_token_message, response_json, service_target

TIMEOUT_S = 30.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reset-interlock",
        help="reset a cabinet's latched interlock through the central service",
        description="Ask the central service to call the cabinet's ResetInterlock on its edge. The edge "
        "clears a latched interlock only when its condition is gone; the central logs who asked. Exit "
        "status: 0 accepted; 1 refused by the edge, or the edge or service unreachable; 2 unknown "
        "cabinet, token refused, or bad arguments.",
    )
    parser.add_argument("cabinet", help="the cabinet's id in the site file, e.g. cab-1")
    add_service_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one INFO line per request
    url, token = service_target(args)
    if not token:
        print(no_token_message(), file=sys.stderr)
        return 2
    endpoint = f"{url.rstrip('/')}/api/v1/cabinets/{quote(args.cabinet, safe='')}/reset-interlock"
    try:
        response = httpx.post(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        print(f"error: cannot reach the central service at {endpoint}: {exc}", file=sys.stderr)
        return 1
    return _report(args.cabinet, response.status_code, response_json(response))


def _report(cabinet_id: str, status: int, answer: dict[str, Any]) -> int:
    if status in (200, 409) and "accepted" in answer:
        verdict = "accepted" if answer["accepted"] else "refused"
        print(f"{cabinet_id}: reset {verdict} by the edge: {answer.get('message', '')}")
        return 0 if answer["accepted"] else 1
    print(f"error: HTTP {status}: {answer.get('detail', '')}", file=sys.stderr)
    return 2 if status in (400, 401, 403, 404, 422) else 1
