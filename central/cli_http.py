"""What the central's HTTP clients on the command line share: where the service is, the token, the TLS
check, one POST and its answer.

``ems upload`` and ``ems reset-interlock`` take ``--url``, ``--token``, ``--site`` and ``--cafile`` the same
way: the URL from ``--url``, else ``$EMS_CENTRAL_URL``, else ``[central] http_address`` of ``--site``
(``https://`` when the site sets ``tls_cert_file``), else ``http://127.0.0.1:8080``; the token from
``--token``, else ``$EMS_API_TOKEN``, else ``[central] api_token`` of ``--site``. Over HTTPS the service's
certificate is verified (TLS 1.2+, host name checked) against ``--cafile``, else the site's
``PKI_DIR/trusted/http-ca.pem``, else the system's trust store; there is no way to skip the check.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "EMS_CENTRAL_URL"
TOKEN_ENV = "EMS_API_TOKEN"  # nosec B105  # the name of a variable, not a secret


@dataclass(frozen=True)
class ServiceTarget:
    """Where the service is, the bearer token (None when none is given anywhere), the CA file to trust."""

    url: str
    token: str | None
    cafile: Path | None


@dataclass(frozen=True)
class Answer:
    """The service's HTTP status and JSON object."""

    status: int
    body: dict[str, Any]


class CallFailedError(Exception):
    """The request could not be made or answered; ``exit_code`` is what the command returns (1 or 2)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_service_options(parser: argparse.ArgumentParser) -> None:
    """``--url``, ``--token``, ``--site`` and ``--cafile``."""
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


def service_target(args: argparse.Namespace) -> ServiceTarget:
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
    return ServiceTarget(url or DEFAULT_URL, token, cafile)


def post(
    target: ServiceTarget,
    path: str,
    *,
    timeout_s: float,
    content: bytes = b"",
    content_type: str | None = None,
) -> Answer:
    """POST to ``target.url`` + ``path`` with the bearer token; :class:`CallFailedError` when there is no
    token, the CA file is unusable (exit 2) or the service cannot be reached (exit 1)."""
    import ssl

    import httpx

    from shared.tls import client_context

    if not target.token:
        message = f"error: no API token: give --token, set ${TOKEN_ENV}, or --site with [central] api_token"
        raise CallFailedError(message, 2)
    try:
        verify = client_context(target.cafile)
    except (OSError, ssl.SSLError) as exc:
        raise CallFailedError(f"error: --cafile {target.cafile}: not a usable PEM file: {exc}", 2) from None
    endpoint = target.url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {target.token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    try:
        response = httpx.post(endpoint, content=content, headers=headers, timeout=timeout_s, verify=verify)
    except httpx.HTTPError as exc:
        raise CallFailedError(f"error: cannot reach the central service at {endpoint}: {exc}", 1) from None
    return Answer(response.status_code, _json(response))


def _json(response: Any) -> dict[str, Any]:
    """The answer's JSON object; a non-JSON answer as ``{"detail": <its text>}``."""
    try:
        data = response.json()
    except ValueError:
        return {"detail": response.text.strip()[:200] or f"HTTP {response.status_code}"}
    return data if isinstance(data, dict) else {"detail": str(data)}
