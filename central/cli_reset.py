"""``ems reset-interlock CABINET [--url URL] [--token T] [--site S] [--cafile F]``: reset a cabinet's latched
interlock.

Asks the central service (``POST /api/v1/cabinets/{id}/reset-interlock``, operator role), which calls the
edge's ``ResetInterlock`` over OPC UA; prints the edge's answer. The service is found and its TLS
certificate verified as for ``ems upload`` (:mod:`central.cli_http`).

Exit status: 0 the edge accepted the reset; 1 the edge refused it (its message says why, e.g. the
condition is still there), the edge or the service could not be reached; 2 unknown cabinet, token
refused, or bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from central.cli_http import CallFailedError, add_service_options, post, service_target

TIMEOUT_S = 30.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "reset-interlock",
        help="reset a cabinet's latched interlock through the central service",
        description="Ask the central service to call the cabinet's ResetInterlock on its edge. The edge "
        "clears a latched interlock only when its condition is gone; the central records who asked in its "
        "audit trail. Exit "
        "status: 0 accepted; 1 refused by the edge, or the edge or service unreachable; 2 unknown "
        "cabinet, token refused, or bad arguments.",
    )
    parser.add_argument("cabinet", help="the cabinet's id in the site file, e.g. cab-1")
    add_service_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = f"/api/v1/cabinets/{quote(args.cabinet, safe='')}/reset-interlock"
    try:
        answer = post(service_target(args), path, timeout_s=TIMEOUT_S)
    except CallFailedError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    return _report(args.cabinet, answer.status, answer.body)


def _report(cabinet_id: str, status: int, answer: dict[str, Any]) -> int:
    if status in (200, 409) and "accepted" in answer:
        verdict = "accepted" if answer["accepted"] else "refused"
        print(f"{cabinet_id}: reset {verdict} by the edge: {answer.get('message', '')}")
        return 0 if answer["accepted"] else 1
    print(f"error: HTTP {status}: {answer.get('detail', '')}", file=sys.stderr)
    return 2 if status in (400, 401, 403, 404, 422) else 1
