"""What ``ems certs`` makes for a site: node keys and certificates, trust directories, the optional site CA
and its CRL, and the HTTP API's TLS certificate.

Idempotent: a key and certificate that are still usable are kept; missing, unusable, soon expiring,
revoked ones, and ones not issued the way the site works (self-signed, or by the site CA) are (re)made.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from shared.errors import Problem
from shared.opcua import ca
from shared.opcua.common import central_application_uri, edge_application_uri, endpoint_host
from shared.opcua.pki import (
    CENTRAL_HTTP_NODE,
    CENTRAL_NODE,
    DEFAULT_KEY_BITS,
    DEFAULT_VALIDITY_DAYS,
    RENEW_BEFORE_DAYS,
    PkiError,
    PkiLayout,
    certificate_hosts,
    create_identity,
    edge_node,
    host_names,
    load_identity,
    read_certificate,
    subject_builder,
    subject_name,
    write_identity,
)
from shared.opcua.users import write_private
from shared.site import SiteConfig, parse_host_port
from shared.tls import http_certificate_hosts, is_loopback


@dataclass
class PkiReport:
    """What ``ensure_site_pki`` did, one line per item."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Node:
    name: str
    common_name: str
    uri: str
    hosts: list[str]
    server: bool


@dataclass(frozen=True)
class _Issuing:
    """How certificates are issued on this run."""

    now: datetime
    force: bool
    key_bits: int
    validity_days: int
    authority: ca.SiteAuthority | None
    crl: x509.CertificateRevocationList | None


def ensure_site_pki(
    site: SiteConfig,
    layout: PkiLayout,
    *,
    now: datetime | None = None,
    force: bool = False,
    key_bits: int = DEFAULT_KEY_BITS,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    central_hosts: Sequence[str] = (),
    create_ca: bool = False,
) -> PkiReport:
    """Create the keys and certificates a site needs and fill the trust directories.

    A site CA is used when ``PKI_DIR/ca`` holds one; ``create_ca`` makes one when it does not. ``force``
    remakes every node key and certificate (not the CA). See the module docstring for what is kept.
    """
    moment = now or datetime.now(UTC)
    for directory in (layout.own_dir, layout.trusted_clients_dir, layout.trusted_servers_dir):
        directory.mkdir(parents=True, exist_ok=True)
    layout.own_dir.chmod(0o700)
    report = PkiReport()
    authority = _ensure_authority(site, layout, moment, create_ca, key_bits, report)
    crl = None if authority is None else _ensure_crl(layout, authority, moment, report)
    issuing = _Issuing(moment, force, key_bits, validity_days, authority, crl)
    hosts = list(central_hosts) or ["localhost", socket.gethostname()]
    for node in _nodes(site, hosts):
        _ensure_node(layout, node, issuing, report)
    _ensure_http(site, layout, list(central_hosts), issuing, report)
    return report


def _nodes(site: SiteConfig, central_hosts: list[str]) -> list[_Node]:
    name = site.site.name
    nodes = [
        _Node(CENTRAL_NODE, f"hybrid-ems central {name}", central_application_uri(name), central_hosts, False)
    ]
    for cabinet in site.cabinets:
        nodes.append(
            _Node(
                edge_node(cabinet.id),
                f"hybrid-ems edge {cabinet.id} {name}",
                edge_application_uri(name, cabinet.id),
                _edge_hosts(endpoint_host(cabinet.opcua_endpoint)),
                True,
            )
        )
    return nodes


def _ensure_node(layout: PkiLayout, node: _Node, issuing: _Issuing, report: PkiReport) -> None:
    reason = "forced" if issuing.force else _reuse_problem(layout, node, issuing)
    if reason is not None:
        key, certificate = create_identity(
            node.common_name,
            node.uri,
            node.hosts,
            server=node.server,
            now=issuing.now,
            key_bits=issuing.key_bits,
            validity_days=issuing.validity_days,
            issuer=issuing.authority,
        )
        write_identity(layout, node.name, key, certificate)
        how = "issued by the site CA" if issuing.authority is not None else "self-signed"
        report.created.append(f"{node.name}: new key and certificate for {node.uri}, {how} ({reason})")
    else:
        report.kept.append(f"{node.name}: kept {layout.cert_path(node.name)}")
    pinned = layout.trusted_copy(node.name)
    if issuing.authority is None:
        pinned.write_bytes(layout.cert_path(node.name).read_bytes())
    elif pinned.exists():
        # The CA vouches for the node now; an old pinned copy would keep trusting a replaced key.
        pinned.unlink()
        report.removed.append(f"{pinned}: pinned copy of {node.name} (the site CA vouches for it)")


def _edge_hosts(host: str) -> list[str]:
    """Names for an edge certificate: its endpoint host, and this machine's name when that is loopback
    (asyncua warns when the local host name is missing; it only fits when the edge runs here)."""
    return [host, "localhost", socket.gethostname()] if is_loopback(host) else [host]


def _reuse_problem(layout: PkiLayout, node: _Node, issuing: _Issuing) -> str | None:
    if not (layout.cert_path(node.name).is_file() and layout.key_path(node.name).is_file()):
        return "none yet"
    try:
        identity = load_identity(layout, node.name, node.uri, issuing.now)
    except PkiError as exc:
        return exc.problems[0].message
    return _issuing_problem(identity.certificate, issuing)


def _issuing_problem(certificate: x509.Certificate, issuing: _Issuing) -> str | None:
    """Why an existing certificate must be replaced under ``issuing``, or None."""
    if certificate.not_valid_after_utc - issuing.now < timedelta(days=RENEW_BEFORE_DAYS):
        return "expires soon"
    if issuing.authority is None:
        return None if ca.issued_by(certificate, certificate) else "not self-signed, and there is no site CA"
    if not issuing.authority.issued(certificate):
        return "not issued by the site CA"
    if ca.is_revoked(issuing.crl, certificate):
        return "revoked"
    return None


# ------------------------------------------------------------------------------------------- site CA


def _ensure_authority(
    site: SiteConfig, layout: PkiLayout, now: datetime, create: bool, key_bits: int, report: PkiReport
) -> ca.SiteAuthority | None:
    """The site CA: loaded when there is one (a broken one is an error), made when ``create``."""
    if layout.ca_cert_path.exists() or layout.ca_key_path.exists():
        authority = ca.load_authority(layout)
        if authority.certificate.not_valid_after_utc - now < timedelta(days=RENEW_BEFORE_DAYS):
            raise PkiError(
                str(layout.ca_cert_path),
                [Problem("", "the site CA expires within 30 days: replace it (new ca/, then --force)")],
            )
        report.kept.append(f"site CA: kept {layout.ca_cert_path}")
        return authority
    if not create:
        return None
    authority = ca.create_authority(site.site.name, now, key_bits=max(key_bits, ca.CA_KEY_BITS))
    ca.write_authority(layout, authority)
    report.created.append(f"site CA: new key and certificate {layout.ca_cert_path}")
    return authority


def _ensure_crl(
    layout: PkiLayout, authority: ca.SiteAuthority, now: datetime, report: PkiReport
) -> x509.CertificateRevocationList:
    """The CA's CRL, re-signed when missing or close to its next update; always published."""
    crl = ca.load_crl(layout, authority)
    renew = crl is None or (crl.next_update_utc or now) - now < timedelta(days=ca.CRL_RENEW_BEFORE_DAYS)
    if crl is None or renew:
        entries = [] if crl is None else ca.revoked_entries(crl)
        number = 1 if crl is None else ca.crl_number(crl) + 1
        crl = ca.build_crl(authority, entries, now, number=number)
        report.created.append(f"CRL: {layout.ca_crl_path} ({len(entries)} revoked)")
    ca.publish(layout, authority, crl)
    return crl


# --------------------------------------------------------------------------------------- HTTP API


def _ensure_http(
    site: SiteConfig, layout: PkiLayout, central_hosts: list[str], issuing: _Issuing, report: PkiReport
) -> None:
    """The HTTP API's TLS key and certificate, and the file clients verify it with."""
    host, _ = parse_host_port(site.central.http_address)
    hosts = http_certificate_hosts(host, central_hosts, socket.gethostname())
    key_path, cert_path = layout.key_path(CENTRAL_HTTP_NODE), layout.http_cert_path
    reason = "forced" if issuing.force else _http_reuse_problem(layout, hosts, issuing)
    if reason is not None:
        key, certificate = create_tls_certificate(
            f"hybrid-ems central HTTP API {site.site.name}",
            hosts,
            now=issuing.now,
            validity_days=issuing.validity_days,
            issuer=issuing.authority,
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(key_path, pem_key)
        cert_path.write_bytes(pem(certificate))
        report.created.append(f"{CENTRAL_HTTP_NODE}: TLS certificate for {', '.join(hosts)} ({reason})")
    else:
        report.kept.append(f"{CENTRAL_HTTP_NODE}: kept {cert_path}")
    write_http_trust(layout, issuing.authority, issuing.crl)


def write_http_trust(
    layout: PkiLayout, authority: ca.SiteAuthority | None, crl: x509.CertificateRevocationList | None
) -> None:
    """``trusted/http-ca.pem``: the site CA and its CRL, or without a CA the API's own certificate."""
    if authority is not None and crl is not None:
        trust = pem(authority.certificate) + crl.public_bytes(serialization.Encoding.PEM)
    else:
        trust = layout.http_cert_path.read_bytes()
    layout.http_trust_path.write_bytes(trust)


def revoke_node(
    layout: PkiLayout, node: str, now: datetime
) -> tuple[x509.Certificate, x509.CertificateRevocationList]:
    """Put ``node``'s current certificate (``central``, ``central-http``, ``edge-ID``) on the site CA's CRL
    and publish it; return the certificate and the new CRL. :class:`PkiError` when there is no CA, no such
    certificate, or the CA did not issue it."""
    authority = ca.load_authority(layout)
    path = layout.http_cert_path if node == CENTRAL_HTTP_NODE else layout.cert_path(node)
    if not path.is_file():
        known = sorted(p.name.split(".", 1)[0] for p in layout.own_dir.glob("*.cert.*"))
        raise PkiError("--revoke", [Problem("", f"no certificate {path} (nodes: {', '.join(known)})")])
    try:
        certificate = read_certificate(path)
    except (OSError, ValueError) as exc:
        raise PkiError(str(path), [Problem("", f"not a certificate: {exc}")]) from exc
    crl = ca.revoke(layout, authority, certificate, now)
    write_http_trust(layout, authority, crl)
    return certificate, crl


def create_tls_certificate(
    common_name: str,
    hosts: Sequence[str],
    *,
    now: datetime,
    validity_days: int,
    issuer: ca.SiteAuthority | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new P-256 key and a TLS server certificate for ``hosts``, self-signed or issued by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    builder = (
        subject_builder(common_name, public, now, validity_days)
        .add_extension(x509.SubjectAlternativeName(host_names(hosts)), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if issuer is not None:
        return key, issuer.sign(builder)
    certificate = (
        builder.issuer_name(subject_name(common_name))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _http_reuse_problem(layout: PkiLayout, hosts: list[str], issuing: _Issuing) -> str | None:
    key_path, cert_path = layout.key_path(CENTRAL_HTTP_NODE), layout.http_cert_path
    if not (key_path.is_file() and cert_path.is_file()):
        return "none yet"
    try:
        certificate = read_certificate(cert_path)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return f"unreadable: {exc}"
    public = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(public, ec.EllipticCurvePublicKey):
        return "not an ECDSA key and certificate"
    if key.public_key().public_numbers() != public.public_numbers():
        return "the key does not belong to the certificate"
    missing = sorted(set(hosts) - certificate_hosts(certificate))
    if missing:
        return f"does not name {', '.join(missing)}"
    return _issuing_problem(certificate, issuing)
