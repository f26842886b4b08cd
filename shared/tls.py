"""TLS for the central's HTTP API: the SSL contexts of server and clients (standard library only, so
``ems upload`` starts fast).

The certificate (``ems certs`` writes ``PKI_DIR/own/central-http.key.pem`` and ``.cert.pem``, see
:mod:`shared.opcua.provision`) is an ECDSA P-256 server certificate whose subjectAltName lists the names
clients use. ``PKI_DIR/trusted/http-ca.pem`` is what a client verifies it against (the site CA and its CRL,
or the certificate itself).

Both ends speak TLS 1.2 or newer only; TLS 1.2 is limited to forward-secret AEAD cipher suites.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Sequence
from pathlib import Path

from shared.errors import ConfigError, Problem

# TLS 1.2 suites (TLS 1.3 has only AEAD suites and needs no list): ECDHE key exchange, AES-GCM or ChaCha20.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_unspecified(host: str) -> bool:
    """True for listen addresses that mean every interface (``0.0.0.0``, ``::``, empty)."""
    try:
        return host == "" or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def http_certificate_hosts(http_host: str, central_hosts: Sequence[str], machine_name: str) -> list[str]:
    """Names for the HTTP API certificate: the listen address (unless it is a wildcard), the names given
    with ``--central-host`` (default: ``localhost`` and this machine's name), ``localhost`` when the address
    is loopback."""
    names = [] if is_unspecified(http_host) else [http_host]
    names += list(central_hosts) or ["localhost", machine_name]
    if is_loopback(http_host):
        names.append("localhost")
    return list(dict.fromkeys(names))


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The HTTP API's server context: TLS 1.2+, no client certificates; :class:`ConfigError` naming the
    ``[central]`` key when a file is missing or the key does not fit the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    for key, path in (("central.tls_cert_file", cert_file), ("central.tls_key_file", key_file)):
        if not path.is_file():
            hint = "run `ems certs --site SITE` to create it"
            raise ConfigError("site", [Problem(key, f"{path} does not exist ({hint})")])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        problem = f"{cert_file} and {key_file} are not a usable certificate and key: {exc}"
        raise ConfigError("site", [Problem("central.tls_cert_file", problem)]) from exc
    return context


def client_context(cafile: Path | None) -> ssl.SSLContext:
    """A verifying client context, TLS 1.2+: trusts ``cafile`` (and checks its CRLs, if it has any), else
    the system's trust store. Host names are always checked."""
    context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is not None and b"-----BEGIN X509 CRL-----" in cafile.read_bytes():
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context
