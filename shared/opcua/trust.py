"""Trust lists: a directory of peer certificates, and the checks a peer certificate must pass.

A peer is trusted when its exact certificate (SHA-256 fingerprint) is in the directory (pinning), or when a
CA certificate in the directory issued it and that CA's certificate revocation list (``*.crl``, also in the
directory) is current and does not list it. A certificate a known CA issued is checked against the CRL even
when it is also pinned; a CA without a current CRL vouches for nobody (fail closed). Removing a pinned file
revokes that peer; a new CRL revokes CA-issued peers. The directory is re-read when its contents change,
without a restart: at once when a file is added, removed or renamed (the directory's own modification
time changes), within :data:`RESCAN_S` when a file is rewritten in place. Between those, a check costs
one ``stat`` of the directory, not one per file, so a central pinning 1000 edges does not pay O(N) per
connection attempt. A missing or unreadable directory trusts nobody.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.opcua.ca import crl_issued_by, is_authority, issued_by, read_crl
from shared.opcua.pki import RENEW_BEFORE_DAYS, certificate_uris, describe, fingerprint, read_certificate

_log = logging.getLogger(__name__)

_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")
_CRL_SUFFIX = ".crl"
RESCAN_S = 1.0  # the longest a file rewritten in place (same name) goes unnoticed


class PeerRole(StrEnum):
    CLIENT = "client"
    SERVER = "server"


@dataclass(frozen=True)
class _Authority:
    certificate: x509.Certificate
    crl: x509.CertificateRevocationList | None  # the newest CRL it signed, if any


@dataclass(frozen=True)
class _Snapshot:
    signature: tuple[tuple[str, int, int, int], ...]
    certificates: tuple[x509.Certificate, ...]  # pinned end-entity certificates
    fingerprints: frozenset[str]
    authorities: tuple[_Authority, ...]
    by_uri: dict[str, tuple[x509.Certificate, ...]]  # pinned certificates per application URI


class TrustList:
    """The certificates (``*.der``, ``*.pem``, ``*.crt``, ``*.cer``) and CRLs (``*.crl``) in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._snapshot = _Snapshot((), (), frozenset(), (), {})
        self._loaded = False
        self._directory_stamp: tuple[int, int] | None = None
        self._scanned_at = 0.0

    def certificates(self) -> tuple[x509.Certificate, ...]:
        """The pinned certificates (CA certificates are not among them)."""
        return self._current().certificates

    def has_authorities(self) -> bool:
        return bool(self._current().authorities)

    def is_trusted(self, certificate: x509.Certificate, now: datetime | None = None) -> bool:
        return self.problem(certificate, now or datetime.now(UTC)) is None

    def problem(self, certificate: x509.Certificate, now: datetime) -> Refusal | None:
        """Why ``certificate`` is not trusted by this list at ``now`` (pinning, CA, CRL), or None."""
        snapshot = self._current()
        shown = describe(certificate)
        issuer = next((a for a in snapshot.authorities if issued_by(certificate, a.certificate)), None)
        if issuer is None:
            if fingerprint(certificate) in snapshot.fingerprints:
                return None
            return Refusal(
                RefusalKind.UNTRUSTED, f"certificate {shown} is not in the trust list {self.directory}"
            )
        authority = issuer.certificate
        if not authority.not_valid_before_utc <= now < authority.not_valid_after_utc:
            return Refusal(RefusalKind.UNTRUSTED, f"the CA {describe(authority)} of {shown} is not valid now")
        crl = issuer.crl
        if crl is None:
            return Refusal(
                RefusalKind.REVOCATION_UNKNOWN,
                f"no CRL of the CA {describe(authority)} in {self.directory}: {shown} cannot be checked",
            )
        if crl.next_update_utc is None or crl.next_update_utc <= now:
            return Refusal(
                RefusalKind.REVOCATION_UNKNOWN,
                f"the CRL of the CA {describe(authority)} expired on {crl.next_update_utc}: run `ems certs`",
            )
        if crl.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None:
            return Refusal(RefusalKind.REVOKED, f"certificate {shown} is revoked by the CA's CRL")
        return None

    def find_by_uri(self, application_uri: str, now: datetime) -> x509.Certificate | None:
        """The newest currently valid pinned certificate for ``application_uri`` (certificate pinning).

        Indexed by URI when the directory is read, so a fleet of N edges does not pay O(N) per lookup."""
        candidates = [
            c
            for c in self._current().by_uri.get(application_uri, ())
            if c.not_valid_before_utc <= now < c.not_valid_after_utc
        ]
        return max(candidates, key=lambda c: c.not_valid_before_utc, default=None)

    def _current(self) -> _Snapshot:
        stamp = self._stamp()
        now = time.monotonic()
        if self._loaded and stamp == self._directory_stamp and now - self._scanned_at < RESCAN_S:
            return self._snapshot
        self._directory_stamp, self._scanned_at = stamp, now
        signature = self._signature()
        if not self._loaded or signature != self._snapshot.signature:
            self._snapshot = self._load(signature)
            self._loaded = True
        return self._snapshot

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.directory)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _signature(self) -> tuple[tuple[str, int, int, int], ...]:
        try:
            entries = [
                e
                for e in os.scandir(self.directory)
                if e.name.lower().endswith((*_CERT_SUFFIXES, _CRL_SUFFIX))
            ]
            return tuple(
                sorted((e.name, (st := e.stat()).st_ino, st.st_mtime_ns, st.st_size) for e in entries)
            )
        except OSError:
            return ()

    def _load(self, signature: tuple[tuple[str, int, int, int], ...]) -> _Snapshot:
        pinned: list[x509.Certificate] = []
        authorities: list[x509.Certificate] = []
        crls: list[x509.CertificateRevocationList] = []
        for name, *_ in signature:
            path = self.directory / name
            try:
                if name.lower().endswith(_CRL_SUFFIX):
                    crls.append(read_crl(path.read_bytes()))
                    continue
                certificate = read_certificate(path)
            except (OSError, ValueError) as exc:
                _log.warning("trust list: ignoring %s: not a readable certificate or CRL (%s)", path, exc)
                continue
            (authorities if is_authority(certificate) else pinned).append(certificate)
        known = tuple(_Authority(a, _newest_crl(a, crls)) for a in authorities)
        if not pinned and not known:
            _log.warning("trust list %s is empty or missing: no peer will be accepted", self.directory)
        else:
            _log.info(
                "trust list %s: %d pinned certificates, %d CAs", self.directory, len(pinned), len(known)
            )
        for authority in known:
            _warn_about_crl(self.directory, authority)
        by_uri: dict[str, list[x509.Certificate]] = {}
        for certificate in pinned:
            for uri in set(certificate_uris(certificate)):
                by_uri.setdefault(uri, []).append(certificate)
        return _Snapshot(
            signature,
            tuple(pinned),
            frozenset(fingerprint(c) for c in pinned),
            known,
            {uri: tuple(certificates) for uri, certificates in by_uri.items()},
        )


def _newest_crl(
    authority: x509.Certificate, crls: list[x509.CertificateRevocationList]
) -> x509.CertificateRevocationList | None:
    own = [crl for crl in crls if crl_issued_by(crl, authority)]
    return max(own, key=lambda crl: crl.last_update_utc, default=None)


def _warn_about_crl(directory: Path, authority: _Authority) -> None:
    shown = describe(authority.certificate)
    crl = authority.crl
    if crl is None:
        _log.warning("trust list %s: no CRL of the CA %s: its certificates are refused", directory, shown)
        return
    next_update = crl.next_update_utc
    if next_update is not None and next_update - datetime.now(UTC) < timedelta(days=RENEW_BEFORE_DAYS):
        _log.warning(
            "trust list %s: the CRL of the CA %s expires on %s; renew it with `ems certs`",
            directory,
            shown,
            next_update,
        )


class RefusalKind(StrEnum):
    UNTRUSTED = "untrusted"
    REVOKED = "revoked"
    REVOCATION_UNKNOWN = "revocation-unknown"
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

    Checked: trusted by the list (pinned, or issued by a CA in it and not revoked), valid at ``now``
    (wall clock), the claimed application URI is in the certificate, key usage allows RSA signing and key
    transport, extended key usage (if present) fits ``role``.
    """
    shown = describe(certificate)
    refusal = trust.problem(certificate, now)
    if refusal is not None:
        return refusal
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
