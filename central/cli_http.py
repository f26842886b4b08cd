"""What the central's HTTP clients on the command line share: where the service is, the token, answers.

``ems upload`` and ``ems reset-interlock`` take ``--url``, ``--token`` and ``--site`` the same way:
the URL from ``--url``, else ``$EMS_CENTRAL_URL``, else ``http://`` + ``[central] http_address`` of
``--site``, else ``http://127.0.0.1:8080``; the token from ``--token``, else ``$EMS_API_TOKEN``, else
``[central] api_token`` of ``--site``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "EMS_CENTRAL_URL"
TOKEN_ENV = "EMS_API_TOKEN"


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--token`` and ``--site``."""
    parser.add_argument(
        "--url",
        help=f"service base URL (default: ${URL_ENV}, else from --site, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token", help=f"API bearer token (default: ${TOKEN_ENV}, else [central] api_token of --site)"
    )
    parser.add_argument(
        "--site", type=Path, help="site file: take the URL and token from its [central] table"
    )


def service_target(args: argparse.Namespace) -> tuple[str, str | None]:
    """The service's base URL and the API token (None when none is given anywhere)."""
    url: str | None = args.url or os.environ.get(URL_ENV)
    token: str | None = args.token or os.environ.get(TOKEN_ENV)
    if args.site is not None and (url is None or token is None):
        from shared.site import load_site

        site = load_site(args.site)  # InputError: printed by `ems`, exit 2
        url = url or f"http://{site.central.http_address}"
        token = token or site.central.api_token
    return url or DEFAULT_URL, token


def no_token_message() -> str:
    return f"error: no API token: give --token, set ${TOKEN_ENV}, or --site with [central] api_token"


def response_json(response: Any) -> dict[str, Any]:
    """The answer's JSON object; a non-JSON answer as ``{"detail": <its text>}``."""
    try:
        data = response.json()
    except ValueError:
        return {"detail": response.text.strip()[:200] or f"HTTP {response.status_code}"}
    return data if isinstance(data, dict) else {"detail": str(data)}
