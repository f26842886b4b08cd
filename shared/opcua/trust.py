"""Trust lists: a directory of peer certificates, and the checks a peer certificate must pass.

A peer is trusted when its exact certificate (SHA-256 fingerprint) is in the directory. Removing a file
revokes the peer: the directory is re-read whenever its contents change, without a restart.
A missing or unreadable directory trusts nobody (fail closed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.opcua.pki import certificate_uris, describe, fingerprint, read_certificate

_log = logging.getLogger(__name__)

_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class PeerRole(StrEnum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class _Snapshot:
    signature: tuple[tuple[str, int, int], ...]
    certificates: tuple[x509.Certificate, ...]
    fingerprints: frozenset[str]


class TrustList:
    """The certificates in one directory (``*.der``, ``*.pem``, ``*.crt``, ``*.cer``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._snapshot = _Snapshot((), (), frozenset())
        self._loaded = False

    def certificates(self) -> tuple[x509.Certificate, ...]:
        return self._current().certificates

    def is_trusted(self, certificate: x509.Certificate) -> bool:
        return fingerprint(certificate) in self._current().fingerprints

    def find_by_uri(self, application_uri: str, now: datetime) -> x509.Certificate | None:
        """The newest currently valid trusted certificate for ``application_uri`` (certificate pinning)."""
        candidates = [
            c
            for c in self._current().certificates
            if application_uri in certificate_uris(c)
            and c.not_valid_before_utc <= now < c.not_valid_after_utc
        ]
        return max(candidates, key=lambda c: c.not_valid_before_utc, default=None)

    def _current(self) -> _Snapshot:
        signature = self._signature()
        if not self._loaded or signature != self._snapshot.signature:
            self._snapshot = self._load(signature)
            self._loaded = True
        return self._snapshot

    def _signature(self) -> tuple[tuple[str, int, int], ...]:
        try:
            entries = [e for e in os.scandir(self.directory) if e.name.lower().endswith(_CERT_SUFFIXES)]
            return tuple(sorted((e.name, (st := e.stat()).st_mtime_ns, st.st_size) for e in entries))
        except OSError:
            return ()

    def _load(self, signature: tuple[tuple[str, int, int], ...]) -> _Snapshot:
        certificates = []
        for name, _, _ in signature:
            path = self.directory / name
            try:
                certificates.append(read_certificate(path))
            except (OSError, ValueError) as exc:
                _log.warning("trust list: ignoring %s: not a readable certificate (%s)", path, exc)
        if not certificates:
            _log.warning("trust list %s is empty or missing: no peer will be accepted", self.directory)
        else:
            _log.info("trust list %s: %d certificates", self.directory, len(certificates))
        return _Snapshot(signature, tuple(certificates), frozenset(fingerprint(c) for c in certificates))


class RefusalKind(StrEnum):
    UNTRUSTED = "untrusted"
    TIME = "time"
    URI = "uri"
    USAGE = "usage"


@dataclass(frozen=True)
class Refusal:
    """Why a peer certificate is refused."""

    kind: RefusalKind
    message: str

    def __str__(self) -> str:
        return self.message


def peer_problem(
    certificate: x509.Certificate,
    trust: TrustList,
    role: PeerRole,
    now: datetime,
    claimed_uri: str | None = None,
) -> Refusal | None:
    """Why a peer presenting ``certificate`` must be refused, or None when it is acceptable.

    Checked: in the trust list, valid at ``now`` (wall clock), the claimed application URI is in the
    certificate, key usage allows RSA signing and key transport, extended key usage (if present) fits
    ``role``.
    """
    shown = describe(certificate)
    if not trust.is_trusted(certificate):
        return Refusal(
            RefusalKind.UNTRUSTED, f"certificate {shown} is not in the trust list {trust.directory}"
        )
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        return Refusal(
            RefusalKind.TIME,
            f"certificate {shown} is valid only from {certificate.not_valid_before_utc}"
            f" to {certificate.not_valid_after_utc}",
        )
    if claimed_uri is not None and claimed_uri not in certificate_uris(certificate):
        return Refusal(RefusalKind.URI, f"application URI {claimed_uri!r} is not in certificate {shown}")
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return Refusal(RefusalKind.USAGE, f"certificate {shown} has no key usage extension")
    if not (usage.digital_signature and usage.key_encipherment):
        return Refusal(
            RefusalKind.USAGE, f"certificate {shown} key usage lacks digitalSignature/keyEncipherment"
        )
    wanted = ExtendedKeyUsageOID.CLIENT_AUTH if role is PeerRole.CLIENT else ExtendedKeyUsageOID.SERVER_AUTH
    try:
        extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None  # optional in OPC UA; key usage and the trust list already decided
    if wanted not in extended:
        return Refusal(RefusalKind.USAGE, f"certificate {shown} is not for {role.value} authentication")
    return None
