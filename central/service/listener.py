"""Where and how the HTTP API may listen: TLS, or plain HTTP on loopback only (docs/security.md).

A non-loopback address without a TLS certificate is refused before anything starts, unless ``[central]
insecure_http = true``, which is then logged as a warning at every start.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from shared.errors import ConfigError, Problem
from shared.tls import is_loopback, server_context

log = logging.getLogger(__name__)


def exposure_problem(host: str, tls: bool, insecure_http: bool) -> str | None:
    """Why the API must not listen on ``host`` as configured (plain HTTP off loopback), or None."""
    if tls or insecure_http or is_loopback(host):
        return None
    return (
        f"http_address {host!r} is not a loopback address and there is no TLS: set [central] tls_cert_file "
        "and tls_key_file (`ems certs` makes them), or insecure_http = true"
    )


def listener_context(
    host: str, cert_file: Path | None, key_file: Path | None, insecure_http: bool
) -> ssl.SSLContext | None:
    """The TLS context of the listener, or None for plain HTTP; :class:`ConfigError` naming the key when
    the address may not be served as configured or a TLS file is unusable."""
    tls = cert_file is not None and key_file is not None
    problem = exposure_problem(host, tls, insecure_http)
    if problem is not None:
        raise ConfigError("site", [Problem("central.http_address", problem)])
    if cert_file is not None and key_file is not None:
        return server_context(cert_file, key_file)
    if not is_loopback(host):
        log.warning(
            "[central] insecure_http = true: the HTTP API on %s is PLAIN HTTP: tokens and day-ahead data "
            "cross the network in clear text. Never use this on a real plant; set tls_cert_file and "
            "tls_key_file.",
            host,
        )
    return None
